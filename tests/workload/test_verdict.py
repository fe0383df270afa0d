"""The verdict is a value computed from the trace's steps; every sentence, matrix cell, JSON field and
exit status is rendered from it (issue 11). Each test here is one symptom of the issue's "Why" and
failed before the verdict was computed from the steps."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import REPO

from netsim.commands.trace import trace_cmd

MTLS = REPO / "rules" / "mtls-503"
TPROXY = REPO / "rules" / "tproxy"
POD = str(MTLS / "pod.yaml")


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(trace_cmd, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def as_json(*args: str) -> dict[str, Any]:
    code, out = run(*args, "--format", "json")
    assert code == 0, out
    data: dict[str, Any] = json.loads(out)
    return data


def last_line(*args: str) -> str:
    code, out = run(*args)
    assert code == 0, out
    return out.strip().splitlines()[-1]


def test_listening_keeps_the_sidecars_own_ports() -> None:
    """--listening says what the app listens on: the REDIRECT to 15006 still reaches the sidecar."""
    line = last_line("--pod", POD, "--from", "10.1.2.3", "--dst", "10.244.0.5:80", "--listening", "80")
    assert line.startswith("Captured by the sidecar's inbound listener 15006 via nat ISTIO_IN_REDIRECT rule 1")
    data = as_json("--pod", POD, "--from", "10.1.2.3", "--dst", "10.244.0.5:80", "--listening", "80")
    assert data["verdict"] == "captured-inbound" and data["listener"]["port"] == 15006


def test_app_traffic_to_a_remote_port_15001_is_captured_in_sentence_matrix_and_json() -> None:
    data = as_json("--pod", POD, "--pod-ip", "10.244.0.5", "--dst", "10.96.0.10:15001")
    assert data["verdict"] == "captured-outbound"
    assert data["decided_by"]["chain"] == "ISTIO_REDIRECT" and data["listener"]["port"] == 15001
    assert data["summary"].startswith("Captured by the sidecar's outbound listener 15001")
    assert data["hops"][1]["packet"]["dst"] == "10.96.0.10" and data["hops"][1]["packet"]["dport"] == 15001
    rows = as_json("--pod", POD, "--pod-ip", "10.244.0.5", "--matrix")
    (cell,) = [r for r in rows if (r["family"], r["direction"], r["proto"], r["port"], r["who"]) ==
               (4, "outbound", "tcp", 15001, "app")]  # the matrix's remote is 10.96.0.10 too
    assert {k: cell[k] for k in ("verdict", "decided_by", "listener")} == \
        {k: data[k] for k in ("verdict", "decided_by", "listener")}
    assert cell["cell"] == "captured" and cell["summary"] == data["summary"]


def test_tproxy_excluded_port_is_decided_by_the_mangle_return() -> None:
    data = as_json("--pod", str(TPROXY / "pod.yaml"), "--from", "10.1.2.3", "--dst", "10.244.0.5:9000")
    assert data["verdict"] == "bypassed" and data["listener"] is None
    assert data["decided_by"] == {"table": "mangle", "chain": "ISTIO_INBOUND", "position": 6,
                                  "rule": "-A ISTIO_INBOUND -p tcp -m tcp --dport 9000 -j RETURN"}
    assert "mangle ISTIO_INBOUND rule 6" in data["summary"] and "nat table absent" not in data["summary"]


@pytest.mark.parametrize("pod_dir", ["mtls-503", "tproxy"])
@pytest.mark.parametrize("question", [("--from", "10.1.2.3", "--dst", "10.244.0.5:80"),
                                      ("--from", "10.1.2.3", "--dst", "10.244.0.5:15020"),
                                      ("--dst", "10.96.0.10:443"), ("--dst", "10.96.0.10:15001"),
                                      ("--dst", "10.244.0.5:8080", "--uid", "1337")])
def test_rules_give_the_same_answer_as_the_pod(pod_dir: str, question: tuple[str, ...]) -> None:
    pod = as_json("--pod", str(REPO / "rules" / pod_dir / "pod.yaml"), "--pod-ip", "10.244.0.5", *question)
    dump = as_json("--rules", str(REPO / "rules" / pod_dir / "current.iptables-save"), "--pod-ip", "10.244.0.5",
                   *question)
    assert (dump["summary"], dump["verdict"], dump["decided_by"], dump["listener"]) == \
        (pod["summary"], pod["verdict"], pod["decided_by"], pod["listener"])


def test_a_deployment_takes_the_arriving_packets_destination_as_its_address() -> None:
    data = as_json("--pod", POD, "--from", "10.1.2.3", "--dst", "10.12.0.7:80")
    assert data["verdict"] == "captured-inbound"
    assert any("taking the destination 10.12.0.7 as the pod's" in n for n in data["notes"])
    assert not any("assuming 10.244.0.5" in n for n in data["notes"])


def test_a_trace_to_an_address_the_pod_does_not_own_says_so() -> None:
    data = as_json("--pod", str(TPROXY / "pod.yaml"), "--from", "10.1.2.3", "--dst", "10.12.0.7:80")
    assert any(n.startswith("10.12.0.7 is not an address of the pod (10.244.0.5)") for n in data["notes"])


@pytest.mark.parametrize(("args", "message"), [
    (("--src", "10.244.0.5", "--in-iface", "eth1"), "--in-iface is the device an arriving packet comes in on"),
    (("--src", "10.244.0.5", "--from", "10.1.2.3"), "--src is the source of a locally generated packet"),
])
def test_options_that_would_be_ignored_are_errors(args: tuple[str, ...], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--pod", POD, "--dst", "10.96.0.10:80", *args],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith(f"Error: {message}") and r.stderr.count("\n") == 1


@pytest.mark.parametrize(("question", "expect", "code"), [
    (("--dst", "10.96.0.10:80"), "captured", 0),
    (("--dst", "10.96.0.10:80"), "bypassed", 1),
    (("--dst", "10.96.0.10:80", "--uid", "1337"), "bypassed", 0),
    (("--dst", "10.96.0.10:80", "--uid", "1337"), "dropped", 1),
])
def test_expect_sets_the_exit_status(question: tuple[str, ...], expect: str, code: int) -> None:
    got, _ = run("--pod", POD, *question, "--expect", expect)
    assert got == code
    assert run("--pod", POD, *question)[0] == 0  # without --expect any completed answer is 0


def test_follow_up_packets_carry_the_decision() -> None:
    data = as_json("--pod", POD, "--proto", "udp", "--dst", "10.96.0.10:53", "--follow-up")
    for part in (data["first"], data["second"]):
        assert {"verdict", "decided_by", "listener"} <= set(part)
