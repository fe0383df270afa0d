"""``netsim trace --config``: the kernel's trace continued through the sidecar's Envoy hop (issue 8 §2).

Each case is checked against ``netsim mesh hop`` on the same objects, pod and destination: the
trace must reach the same listener, cluster and verdict as the hop command decides on its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import REPO

from netsim.commands.trace import trace_cmd
from netsim.mesh.cli import mesh_group
from tests.cli.compile_runner import netsim

MESH = REPO / "rules" / "mesh"
HAZEL = MESH / "hazelcast-externalname"
HAZEL_POD = str(HAZEL / "pod.yaml")  # manager-0, 10.12.0.11
HAZEL_OBJ = str(HAZEL / "objects.yaml")
ROUTING = MESH / "serviceentry-vm-host-routing"
MTLS = MESH / "mtls-503-containerport"  # the server's Deployment (no IP: --pod-ip 10.244.1.10), no containerPort 80


def trace(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(trace_cmd, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, r.output


def trace_json(*args: str) -> dict[str, Any]:
    code, out = trace(*args, "--format", "json")
    assert code == 0, out
    data: dict[str, Any] = json.loads(out)
    return data


def mesh_hop(*args: str) -> dict[str, Any]:
    r = CliRunner().invoke(mesh_group, ["hop", *args, "--format", "json"])
    assert r.exit_code == 0, r.output
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def same_decision(ours: dict[str, Any], hop: dict[str, Any]) -> None:
    for key in ("direction", "listener", "filter_chain", "virtual_host", "cluster", "cluster_type", "upstream_tls",
                "verdict", "reason"):
        assert ours[key] == hop[key], key


# ---------------------------------------------------------------------------------------------- outbound

@pytest.mark.parametrize(("version", "listener", "cluster"), [
    ("1.5", "0.0.0.0_5701", "outbound|5701||app-ext.app.svc.cluster.local"),
    ("current", "virtualOutbound", "PassthroughCluster"),
])
def test_outbound_hazelcast_text_after_the_kernel_hops(version: str, listener: str, cluster: str) -> None:
    code, out = trace("--pod", HAZEL_POD, "--config", HAZEL_OBJ, "--istio-version", version, "--dst", "10.12.2.8:5701")
    assert code == 0
    lines = out.rstrip("\n").splitlines()
    envoy = lines.index(next(ln for ln in lines if ln.startswith("== Envoy")))
    # after the app's kernel steps, before the sidecar's connection that Envoy's decision opens
    assert lines.index("== Hop 1: app (uid 0, gid 0)") < envoy < lines.index("== Hop 2: sidecar (uid 1337, gid 1337)")
    assert lines[envoy + 1].split()[:2] == ["listener", listener]
    assert any(ln.split()[:2] == ["cluster", cluster] for ln in lines[envoy:])
    hop = mesh_hop("--config", HAZEL_OBJ, "--istio-version", version, "--proxy-ip", "10.12.0.11",
                   "--namespace", "manager", "--dst", "10.12.2.8:5701")
    assert hop["listener"] == listener and hop["cluster"] == cluster
    last = lines[-1]  # one sentence: the kernel's, then what the sidecar does with it
    assert last.startswith("Captured by the sidecar's outbound listener 15001")
    assert last.endswith(hop["reason"]) and "In the sidecar, under Istio " in last


@pytest.mark.parametrize("version", ["1.5", "current"])
def test_outbound_hazelcast_json_is_mesh_hop_s_decision(version: str) -> None:
    data = trace_json("--pod", HAZEL_POD, "--config", HAZEL_OBJ, "--istio-version", version,
                      "--dst", "10.12.2.8:5701")
    assert data["verdict"] == "captured-outbound"
    hop = mesh_hop("--config", HAZEL_OBJ, "--istio-version", version, "--proxy-ip", "10.12.0.11",
                   "--namespace", "manager", "--dst", "10.12.2.8:5701")
    same_decision(data["mesh"], hop)
    assert [s["kind"] for s in data["mesh"]["steps"]] == ["listener", "filter_chain", "cluster", "upstream", "verdict"]
    assert data["mesh"]["config_errors"] == [] and data["summary"].endswith(hop["reason"])
    plain = trace_json("--pod", HAZEL_POD, "--istio-version", version, "--dst", "10.12.2.8:5701")
    assert data["hops"][0] == plain["hops"][0] and "mesh" not in plain  # the app's packet: the plain trace's
    if version == "current":  # PassthroughCluster: Envoy connects to the original destination, as netsim assumes
        assert data["hops"] == plain["hops"]


def test_hop_2_goes_where_envoy_connects_the_externalname_target() -> None:
    """Istio 1.5: the ExternalName Service's 0.0.0.0_5701 listener sends 10.12.2.8:5701 to its STRICT_DNS
    cluster, whose target idle.manager.svc.cluster.local is the Service idle (10.0.31.7): hop 2 goes there,
    and the sentence says so (today's main traced hop 2 to 10.12.2.8 and said "the original destination")."""
    data = trace_json("--pod", HAZEL_POD, "--config", HAZEL_OBJ, "--istio-version", "1.5", "--dst", "10.12.2.8:5701")
    assert data["verdict"] == "captured-outbound" and data["listener"]["port"] == 15001
    assert (data["hops"][1]["packet"]["dst"], data["hops"][1]["packet"]["dport"]) == ("10.0.31.7", 5701)
    assert "the DNS target idle.manager.svc.cluster.local" in data["summary"] and "10.0.31.7:5701" in data["summary"]
    assert "original destination" not in data["summary"]


def test_send_http_host_and_path() -> None:
    args = ("--config", str(ROUTING / "objects.yaml"), "--dst", "240.240.0.1:80", "--send", "http",
            "--host", "xxx.example.com")
    data = trace_json("--pod", str(ROUTING / "pod.yaml"), *args, "--path", "/index.html")
    hop = mesh_hop("--proxy-ip", "10.244.2.9", *args, "--path", "/index.html")
    same_decision(data["mesh"], hop)
    assert data["mesh"]["virtual_host"] == "xxx.example.com:80"
    assert data["mesh"]["cluster"] == "outbound|80||xxx.example.com"
    # without the Host header the connection is plain TCP: no route, passthrough
    tcp = trace_json("--pod", str(ROUTING / "pod.yaml"), "--config", str(ROUTING / "objects.yaml"),
                     "--dst", "240.240.0.1:80")
    assert tcp["mesh"]["virtual_host"] != "xxx.example.com:80"


def test_send_tls_with_sni() -> None:
    args = ("--config", str(ROUTING / "objects.yaml"), "--dst", "240.240.0.1:443", "--send", "tls",
            "--sni", "xxx.example.com")
    data = trace_json("--pod", str(ROUTING / "pod.yaml"), *args)
    same_decision(data["mesh"], mesh_hop("--proxy-ip", "10.244.2.9", *args))


# ----------------------------------------------------------------------------------------------- inbound

def test_inbound_hazelcast_text_and_json() -> None:
    args = ("--pod", HAZEL_POD, "--config", HAZEL_OBJ, "--from", "10.12.2.8", "--dst", "10.12.0.11:5701",
            "--send", "mtls")
    data = trace_json(*args)
    assert data["verdict"] == "captured-inbound"
    hop = mesh_hop("--config", HAZEL_OBJ, "--proxy-ip", "10.12.0.11", "--direction", "inbound",
                   "--dst", "10.12.0.11:5701", "--send", "mtls")
    same_decision(data["mesh"], hop)
    assert data["mesh"]["listener"] == "virtualInbound" and data["mesh"]["cluster"] == "inbound|5701||"
    _, out = trace(*args)
    assert "== Envoy: inbound, Istio (current)" in out
    assert out.rstrip().splitlines()[-1].startswith("Captured by the sidecar's inbound listener 15006")


def test_inbound_strict_server_resets_plaintext_and_1_2_bypasses() -> None:
    base = ("--pod", str(MTLS / "pod.yaml"), "--pod-ip", "10.244.1.10", "--config", str(MTLS / "objects.yaml"),
            "--from", "10.244.1.20", "--dst", "10.244.1.10:80")
    hop_args = ("--config", str(MTLS / "objects.yaml"), "--proxy-ip", "10.244.1.10", "--namespace", "kangxzh",
                "--direction", "inbound", "--dst", "10.244.1.10:80")
    for send, verdict in (("mtls", "captured"), ("http", "reset-no-filter-chain")):
        data = trace_json(*base, "--send", send, "--host", "flaskapp")
        same_decision(data["mesh"], mesh_hop(*hop_args, "--send", send, "--host", "flaskapp"))
        assert data["mesh"]["verdict"] == verdict
    # Istio 1.2: port 80 is not captured inbound, so the kernel's verdict stands and there is no Envoy hop
    old = trace_json(*base, "--istio-version", "1.2", "--send", "mtls")
    assert old["verdict"] == "bypassed" and old["mesh"] is None
    assert mesh_hop(*hop_args, "--istio-version", "1.2", "--send", "mtls")["verdict"] == "bypass"
    assert any("no Envoy hop" in n for n in old["notes"])


def test_not_captured_has_no_envoy_steps() -> None:
    code, out = trace("--pod", HAZEL_POD, "--config", HAZEL_OBJ, "--dst", "10.12.2.8:5701", "--uid", "1337")
    assert code == 0 and "== Envoy" not in out
    assert "Note: --config: no Envoy hop to show" in out and "kernel verdict: bypassed" in out
    assert out.rstrip().splitlines()[-1].startswith("Bypasses the sidecar")


def test_rules_dump_with_config_finds_the_pod_by_pod_ip(tmp_path: Path) -> None:
    """--rules has no pod file: the sidecar is the Pod in --config whose IP is --pod-ip."""
    from netsim.capture.compiled import compile_config
    from netsim.netfilter import render_save
    from netsim.spec.pod import load_pod
    from netsim.spec.resolve import resolve

    cfg = resolve(pod=load_pod(HAZEL_POD)).config
    assert cfg is not None
    dump = tmp_path / "pod.iptables-save"
    dump.write_text(render_save(compile_config(cfg).ruleset_v4))
    data = trace_json("--rules", str(dump), "--pod-ip", "10.12.0.11", "--config", HAZEL_OBJ, "--istio-version", "1.5",
                      "--dst", "10.12.2.8:5701")
    assert data["mesh"]["listener"] == "0.0.0.0_5701"


def test_mesh_config_is_used(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n")
    args = ("--config", str(ROUTING / "objects.yaml"), "--mesh-config", str(mesh), "--dst", "10.9.9.9:5555")
    data = trace_json("--pod", str(ROUTING / "pod.yaml"), *args)
    same_decision(data["mesh"], mesh_hop("--proxy-ip", "10.244.2.9", *args))
    assert data["mesh"]["cluster"] == "BlackHoleCluster" and data["mesh"]["verdict"] == "blackhole"


# -------------------------------------------------------------------------------------------------- errors

def test_missing_config_path_is_one_error_line() -> None:
    code, out, err = netsim("trace", "--pod", HAZEL_POD, "--config", "/nonexistent/objects.yaml",
                            "--dst", "10.12.2.8:5701")
    assert code == 2 and out == ""
    assert err == "Error: /nonexistent/objects.yaml: no such file or directory\n"


def test_bad_mesh_config_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "mesh.yaml"
    bad.write_text("outboundTrafficPolicy: [\n")
    code, _, err = netsim("trace", "--pod", HAZEL_POD, "--config", HAZEL_OBJ, "--mesh-config", str(bad),
                          "--dst", "10.12.2.8:5701")
    assert code == 2 and err.startswith(f"Error: {bad}") and "invalid YAML" in err and err.count("\n") == 1


def test_broken_document_in_config_is_an_error_as_for_mesh_hop(tmp_path: Path) -> None:
    """An invalid document is exit 2 with file, document and line, as `mesh hop` says of the same file
    (it was a note, and a trace resting on a file that was not read exited 0)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Service\nmetadata: {name: x, namespace: manager}\nspec: {ports: [{port: abc}]}\n")
    code, _, err = netsim("trace", "--pod", HAZEL_POD, "--config", HAZEL_OBJ, str(bad), "--istio-version", "1.5",
                          "--dst", "10.12.2.8:5701")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"Error: {bad}: document 1: line 1: Service manager/x: spec.ports[0].port")
    hop_code, _, hop_err = netsim("mesh", "hop", "--config", HAZEL_OBJ, str(bad), "--proxy-ip", "10.12.0.11",
                                  "--namespace", "manager", "--dst", "10.12.2.8:5701")
    assert hop_code == 2 and hop_err == err


def test_broken_document_with_keep_going_is_named_and_the_rest_loads(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Service\nmetadata: {name: x, namespace: manager}\nspec: {ports: [{port: abc}]}\n")
    data = trace_json("--pod", HAZEL_POD, "--config", HAZEL_OBJ, "--config", str(bad), "--istio-version", "1.5",
                      "--keep-going", "--dst", "10.12.2.8:5701")
    assert data["mesh"]["listener"] == "0.0.0.0_5701"
    assert any(n.startswith(f"skipped (--keep-going): {bad}: document 1: line 1: Service manager/x: "
                            "spec.ports[0].port") for n in data["notes"])
    assert data["mesh"]["config_errors"] and str(bad) in data["mesh"]["config_errors"][0]


def test_keep_going_without_config_is_an_error() -> None:
    code, _, err = netsim("trace", "--pod", HAZEL_POD, "--keep-going", "--dst", "10.12.2.8:5701")
    assert code == 2 and err.startswith("Error: --keep-going describes the sidecar's hop")


@pytest.mark.parametrize(("args", "message"), [
    (("--send", "http"), "Error: --send describes the sidecar's hop: give the mesh objects with --config PATH"),
    (("--host", "a", "--sni", "b"), "Error: --host, --sni describe the sidecar's hop: give the mesh objects with"),
    (("--mesh-config", "m.yaml"), "Error: --mesh-config describes"),
    (("--path", "/x"), "Error: --path describes"),
    (("--config", HAZEL_OBJ, "--matrix"), "Error: --config continues one trace in text or JSON; it does not "
                                          "apply to --matrix"),
    (("--config", HAZEL_OBJ, "--format", "xtables-trace"), "it does not apply to --format xtables-trace"),
    (("--config", HAZEL_OBJ, "--pcap", "x.pcap"), "it does not apply to --pcap"),
    (("--config", HAZEL_OBJ, "--send", "quic"), "Error: Invalid value for '--send': 'quic' is not one of"),
])
def test_option_errors_are_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    code, out, err = netsim("trace", "--pod", HAZEL_POD, "--dst", "10.12.2.8:5701", *args)
    assert code == 2 and out == ""
    assert message in err and err.startswith("Error: ") and err.count("\n") == 1, err


def test_bad_istio_version_for_the_mesh_is_one_line() -> None:
    code, _, err = netsim("trace", "--rules", str(REPO / "rules" / "mtls-503" / "current.iptables-save"),
                          "--config", HAZEL_OBJ, "--istio-version", "2.0", "--dst", "10.12.2.8:5701")
    assert code == 2 and err.startswith("Error: --istio-version '2.0'") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------ help, imports

def test_help_lists_the_mesh_options() -> None:
    code, out = trace("--help")
    assert code == 0
    for opt in ("--config", "--mesh-config", "--send [tcp|http|tls|mtls]", "--host", "--path", "--sni"):
        assert opt in out


HEAVY = ("yaml", "dnslib", "scapy", "pyroute2", "netsim.mesh")


@pytest.mark.parametrize("argv", [
    ["trace", "--help"],
    # a whole trace without --config (a rules dump, so no manifest is read): the mesh stays unloaded
    ["trace", "--rules", str(REPO / "rules" / "mtls-503" / "current.iptables-save"), "--dst", "10.0.0.5:80"],
])
def test_trace_without_config_imports_nothing_heavy(argv: list[str]) -> None:
    code = ("import sys, json\nfrom netsim.cli import main\ntry:\n    main(" + repr(argv) + ")\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
