"""The ambient options' refusals and notes, each through the command a user types: one line, exit 2 for a
refusal, the note on standard error for what was assumed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

POD4, POD6 = "10.244.0.5", "fd00:10:244::5"


def _pod(tmp_path: Path, labels: dict[str, str] | None = None) -> Path:
    doc = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "shop", "labels": labels or {}},
           "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8080}]}]},
           "status": {"podIPs": [{"ip": POD4}, {"ip": POD6}]}}
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(*args: str) -> tuple[int, str, str]:
    r = subprocess.run([sys.executable, "-m", "netsim", *args], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def _refused(message: str, *args: str) -> None:
    code, _, err = _run(*args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], (code, err)


def test_compile_refuses_ambient_options_for_a_sidecar_pod(tmp_path: Path) -> None:
    pod = str(_pod(tmp_path))
    _refused("option --ambient-config: the pod is compiled in sidecar mode", "compile", "--pod", pod,
             "--ambient-config", "RedirectDNS=false")
    code, out, _ = _run("compile", "--pod", pod, "--mode", "ambient", "--ambient-config", "RedirectDNS=false")
    assert code == 0 and "15053" not in out  # the hint the refusal gives is what works, and the setting applies


@pytest.mark.parametrize("option", [["--node"], ["--ambient-config", "RedirectDNS=false"]])
def test_mode_sidecar_refuses_ambients_options(tmp_path: Path, option: list[str]) -> None:
    """Not silently ignored (compile used to print the sidecar's rules), as trace refuses them."""
    pod = str(_pod(tmp_path, {"istio.io/dataplane-mode": "ambient"}))
    _refused(f"option {option[0]}: the pod is compiled in sidecar mode (--mode sidecar)", "compile", "--pod", pod,
             "--mode", "sidecar", *option)
    if option[0] == "--ambient-config":  # trace has no --node
        _refused("option --ambient-config: the pod is traced in sidecar mode (--mode sidecar)", "trace", "--pod",
                 pod, "--mode", "sidecar", "--dst", "10.96.0.10:80", *option)


@pytest.mark.parametrize("option", [["--mark", "0x539"], ["--as", "ztunnel"]])
def test_an_arriving_packet_has_no_socket(tmp_path: Path, option: list[str]) -> None:
    _refused(f"{option[0]} describes the socket of a locally generated packet; an arriving one (--from) has no "
             "socket", "trace", "--pod", str(_pod(tmp_path, {"istio.io/dataplane-mode": "ambient"})),
             "--dst", f"{POD4}:8080", "--from", "10.1.2.3", *option)


def test_enable_ipv6_off_notes_the_missing_policy_route(tmp_path: Path) -> None:
    pod = str(_pod(tmp_path, {"istio.io/dataplane-mode": "ambient"}))
    notes = {}
    for value in ("true", "false"):
        code, out, _ = _run("trace", "--pod", pod, "--ambient-config", f"EnableIPv6={value}",
                            "--dst", "10.96.0.10:80", "--format", "json")
        assert code == 0, out
        notes[value] = " ".join(json.loads(out)["notes"])
    assert "no IPv6 policy route" in notes["false"] and "no IPv6 policy route" not in notes["true"]


@pytest.mark.parametrize(("version", "refused"), [("1.23.0", True), ("1.23.1", False), ("1.24.0", False),
                                                  ("1.25.0", True)])
def test_tproxy_redirection_is_an_option_of_1_23_1_to_1_24(tmp_path: Path, version: str, refused: bool) -> None:
    args = ("compile", "--pod", str(_pod(tmp_path, {"istio.io/dataplane-mode": "ambient"})),
            "--istio-version", version, "--ambient-config", "TPROXYRedirection=true")
    if refused:
        _refused("TPROXY inbound redirection is an option of 1.23.1–1.24 only", *args)
    else:
        code, out, err = _run(*args)
        assert code == 0 and "TPROXY" in out, err


def test_virtual_interface_without_an_address_is_noted(tmp_path: Path) -> None:
    pod = str(_pod(tmp_path, {"istio.io/dataplane-mode": "ambient"}))
    base = ("trace", "--pod", pod, "--dst", f"{POD4}:8080", "--from", "10.1.2.3", "--in-iface", "net1",
            "--format", "json")
    code, out, _ = _run(*base)
    assert code == 0, out
    assert any("--in-iface net1: no address known for it" in n for n in json.loads(out)["notes"])
    code, out, _ = _run(*base, "--iface-addr", "net1=10.9.9.9")
    assert code == 0, out
    assert not any("no address known" in n for n in json.loads(out)["notes"])


def test_trace_mode_sidecar_forces_the_sidecar_on_an_enrolled_pod(tmp_path: Path) -> None:
    pod = str(_pod(tmp_path, {"istio.io/dataplane-mode": "ambient"}))
    owners = {}
    for mode in ("ambient", "sidecar"):
        code, out, err = _run("trace", "--pod", pod, "--mode", mode, "--dst", "10.96.0.10:80", "--format", "json")
        assert code == 0, err
        j = json.loads(out)
        assert j["verdict"] == "captured-outbound"
        owners[mode] = j["listener"]["owner"]
    assert owners["ambient"] == "ztunnel" and owners["sidecar"] != "ztunnel"


@pytest.mark.parametrize(("version", "refused"), [("1.2", True), ("1.26", True), ("1.27", False)])
def test_nft_backend_before_1_27_is_refused_by_trace_as_by_compile(tmp_path: Path, version: str,
                                                                    refused: bool) -> None:
    """trace --backend nft traced nft rules Istio 1.2 never wrote; it now refuses as compile --format nft does."""
    pod = str(_pod(tmp_path))
    trace = _run("trace", "--pod", pod, "--backend", "nft", "--istio-version", version, "--dst", "10.96.0.10:80")
    compiled = _run("compile", "--pod", pod, "--format", "nft", "--istio-version", version)
    for code, out, err in (trace, compiled):
        if refused:
            assert code == 2 and "wrote no nftables rules (istio-iptables' nftables backend came in 1.27)" in err
        else:
            assert code == 0 and "istio-proxy-nat" in out, err
