"""``netsim compile`` in ambient mode: the mode decision (pod and namespace labels, the opt-out, sidecars),
``--ambient-config``, the pod's ambient annotations, ``--node``, every format, one-line errors, and what a
cold ambient compile imports."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from netsim.capture.ambient import PodOverrides, agent_defaults, compile_ambient
from netsim.netfilter.dump import parse_dump
from netsim.spec.ambient import decide_mode, namespace_labels, parse_ambient_config, split_interfaces
from netsim.spec.pod import load_pod
from tests.cli.compile_runner import netsim

SHOP = REPO / "rules" / "ambient" / "shop.yaml"


def pod_file(tmp_path: Path, *, labels: str = "", ns_labels: str | None = "istio.io/dataplane-mode: ambient",
             annotations: str = "", containers: str = "") -> str:
    ns = "" if ns_labels is None else (f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"
                                       f"  labels:\n    {ns_labels}\n---\n")
    text = (ns + "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n"
            + (f"  labels:\n    {labels}\n" if labels else "")
            + (f"  annotations:\n{annotations}" if annotations else "")
            + "spec:\n  containers:\n  - name: app\n    image: web\n" + containers)
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    return str(path)


def _one_error(code: int, err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if not line.startswith("netsim: note:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], err


# ------------------------------------------------------------------------------------------ the mode


def test_namespace_label_in_the_same_file_enrolls_the_pod(tmp_path: Path) -> None:
    code, out, err = netsim("compile", "--pod", pod_file(tmp_path), "--format", "golden")
    assert code == 0 and "namespace shop's label istio.io/dataplane-mode=ambient" in err
    assert out == compile_ambient(agent_defaults()).golden()


def test_namespace_from_config(tmp_path: Path) -> None:
    path = pod_file(tmp_path, ns_labels=None)
    ns = tmp_path / "ns.yaml"
    ns.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n"
                  "    istio.io/dataplane-mode: ambient\n")
    sidecar = netsim("compile", "--pod", path)
    assert sidecar[0] == 0 and "ISTIO_INBOUND" in sidecar[1]  # not enrolled without the Namespace
    code, out, _ = netsim("compile", "--pod", path, "--config", str(ns))
    assert code == 0 and "ISTIO_PRERT" in out and "ISTIO_INBOUND" not in out


def test_pod_label_enrolls_and_none_opts_out(tmp_path: Path) -> None:
    code, out, _ = netsim("compile", "--pod", pod_file(tmp_path, labels="istio.io/dataplane-mode: ambient",
                                                       ns_labels=None))
    assert code == 0 and "-j REDIRECT --to-ports 15006" in out
    opted = pod_file(tmp_path, labels="istio.io/dataplane-mode: none")
    code, out, err = netsim("compile", "--pod", opted, "--mode", "ambient")
    assert code == 0 and out == "" and "no ambient rules: the pod's label istio.io/dataplane-mode=none" in err
    code, out, err = netsim("compile", "--pod", opted)
    assert code == 0 and "ISTIO_INBOUND" in out and "sidecar capture: the pod's label" in err


def test_a_pod_with_a_sidecar_is_not_ambient(tmp_path: Path) -> None:
    pod = load_pod(pod_file(tmp_path, containers="  - name: istio-proxy\n    image: proxyv2\n"))
    decision = decide_mode(pod, {"shop": {"istio.io/dataplane-mode": "ambient"}})
    assert decision.mode == "sidecar" and "runs a sidecar" in decision.reason


def test_mode_sidecar_forces_the_sidecar_rules(tmp_path: Path) -> None:
    code, out, _ = netsim("compile", "--pod", pod_file(tmp_path), "--mode", "sidecar")
    assert code == 0 and "ISTIO_INBOUND" in out


def test_namespace_labels_reader() -> None:
    objs = [{"kind": "Namespace", "metadata": {"name": "a", "labels": {"x": 1}}}, {"kind": "Pod", "metadata": {}},
            {"kind": "Namespace", "metadata": {"name": "b"}}]
    assert namespace_labels(objs) == {"a": {"x": "1"}, "b": {}}


# ------------------------------------------------------------------------------------- the agent's settings


def test_ambient_config_by_the_agents_names() -> None:
    assert parse_ambient_config("EnableIPv6=false, RedirectDNS=0,HostProbeV6SNATAddress=FD00::0001,"
                                "HostProbeSNATAddress=169.254.1.1,NativeNftables=true,KubeletUID=1000") == {
        "enable_ipv6": False, "redirect_dns": False, "host_probe_v6_snat_address": "fd00::1",
        "host_probe_snat_address": "169.254.1.1", "native_nftables": True, "kubelet_uid": 1000}


@pytest.mark.parametrize(("setting", "needle"), [
    ("Foo=1", 'option --ambient-config "Foo": unknown setting (known: EnableIPv6'),
    ("EnableIPv6=maybe", 'option --ambient-config EnableIPv6="maybe": not a boolean'),
    ("HostProbeSNATAddress=fd00::1", 'HostProbeSNATAddress="fd00::1": not an IPv4 address'),
    ("HostProbeV6SNATAddress=1.2.3.4", 'HostProbeV6SNATAddress="1.2.3.4": not an IPv6 address'),
    ("EnableIPv6", 'option --ambient-config "EnableIPv6": expected KEY=VALUE'),
    ("KubeletUID=-1", 'KubeletUID="-1": not a UID'),
])
def test_bad_ambient_config_is_one_line(setting: str, needle: str) -> None:
    _one_error(*netsim("compile", "--mode", "ambient", "--ambient-config", setting)[::2], needle)


def test_ambient_config_changes_the_rules() -> None:
    code, out, _ = netsim("compile", "--mode", "ambient", "--ambient-config", "EnableIPv6=false,RedirectDNS=false",
                          "--format", "golden")
    cfg = dataclasses.replace(agent_defaults(), enable_ipv6=False, redirect_dns=False)
    assert code == 0 and out == compile_ambient(cfg).golden() and "* raw" not in out


def test_release_defaults_follow_istio_version() -> None:
    out = netsim("compile", "--mode", "ambient", "--istio-version", "1.24", "--format", "json")[1]
    doc = json.loads(out)
    assert doc["release"] == "1.24.0" and doc["config"]["redirect_dns"] is False
    assert doc["effective"] == {"dns_capture": False, "inbound": "redirect", "ipv6": True}
    _one_error(*netsim("compile", "--mode", "ambient", "--istio-version", "1.20")[::2], "from 1.21")
    _one_error(*netsim("compile", "--mode", "ambient", "--istio-version", "1.27", "--format", "nft")[::2],
               "nftables backend came in 1.28")


# ------------------------------------------------------------------------------------ the pod's overrides


def test_pod_annotations_are_read(tmp_path: Path) -> None:
    ann = ('    ambient.istio.io/bypass-inbound-capture: "true"\n    ambient.istio.io/dns-capture: "false"\n'
           '    istio.io/reroute-virtual-interfaces: "eth1,,eth2"\n')
    code, out, _ = netsim("compile", "--pod", pod_file(tmp_path, annotations=ann), "--format", "golden")
    pod = PodOverrides(ingress_mode=True, dns_capture=False, virtual_interfaces=("eth1", "eth2"))
    assert code == 0 and out == compile_ambient(agent_defaults(), pod).golden()
    assert "--to-ports 15006" not in out and "-i eth2" in out


def test_virtual_interfaces_trimmed_and_empty_items_dropped() -> None:
    assert split_interfaces(" eth1, ,eth2 ,") == ("eth1", "eth2") and split_interfaces("") == ()


def test_bad_boolean_annotation_is_one_line(tmp_path: Path) -> None:
    path = pod_file(tmp_path, annotations='    ambient.istio.io/bypass-inbound-capture: "sometimes"\n')
    _one_error(*netsim("compile", "--pod", path)[::2],
               'annotation ambient.istio.io/bypass-inbound-capture: "sometimes": not a boolean')


def test_sidecar_options_are_refused_in_ambient(tmp_path: Path) -> None:
    _one_error(*netsim("compile", "--pod", pod_file(tmp_path), "-o", "80")[::2],
               "option --istio-local-outbound-ports-exclude: istio-iptables' option, not ambient's")
    code, out, err = netsim("compile", "--pod", pod_file(tmp_path, ns_labels=None), "--node")
    assert code == 0 and "ISTIO_POSTRT" in out and "--node: the node namespace's" in err
    _one_error(*netsim("compile", "--pod", pod_file(tmp_path, ns_labels=None), "--ambient-config",
                       "EnableIPv6=true")[::2], "option --ambient-config: the pod is compiled in sidecar mode")


# ----------------------------------------------------------------------------------------------- formats


def test_iptables_save_loads_and_carries_the_routes() -> None:
    code, out, _ = netsim("compile", "--pod", str(SHOP))
    assert code == 0
    dump = parse_dump(out)
    v4, v6 = compile_ambient(agent_defaults()).rulesets()
    assert set(dump) == {v4.family, v6.family if v6 else v4.family}
    assert "#   ip -4 rule add fwmark 0x111/0xfff lookup 100 pref 32764" in out
    assert "#   ip -6 route replace local ::/0 dev lo scope host table 100" in out
    code, out4, _ = netsim("compile", "--pod", str(SHOP), "--family", "4")
    assert code == 0 and "::1/128" not in out4 and out4.startswith("*mangle")


def test_nft_and_json_formats() -> None:
    code, out, _ = netsim("compile", "--pod", str(SHOP), "--format", "nft")
    nft = compile_ambient(dataclasses.replace(agent_defaults(), native_nftables=True))
    assert code == 0 and out.startswith(nft.nft_text()) and "# policy routing" in out
    doc = json.loads(netsim("compile", "--pod", str(SHOP), "--format", "json", "--backend", "nft")[1])
    assert doc["backend"] == "nft" and doc["nft"] == nft.nft_text() and doc["families"] is None
    assert [r["argv"][2] for r in doc["routes"]] == ["route", "route", "rule", "rule"]
    doc = json.loads(netsim("compile", "--pod", str(SHOP), "--format", "json")[1])
    assert doc["schema"] == "netsim.compile.ambient/v1" and doc["mode"] == "ambient"
    assert "ISTIO_PRERT" in {c["name"] for t in doc["families"]["ipv4"]["tables"] for c in t["chains"]}
    assert all(p["why"] for p in doc["planned"])


@pytest.mark.parametrize(("args", "needle"), [
    (["--format", "nft", "--ambient-config", "NativeNftables=false"],
     "option --format nft: --ambient-config NativeNftables=false chooses the agent's iptables backend"),
    (["--format", "nft", "--backend", "iptables"], "option --format nft: --backend iptables chooses"),
    (["--format", "iptables-save", "--ambient-config", "NativeNftables=true"],
     "option --format iptables-save: --ambient-config NativeNftables=true chooses the agent's native nftables"),
    (["--format", "iptables-restore", "--backend", "nft"], "option --format iptables-restore: --backend nft"),
    (["--format", "golden", "--family", "6"], "option --family 6: not available with --format golden"),
    (["--format", "nft", "--family", "4"], "option --family 4: not available with --format nft (one inet table"),
])
def test_a_format_the_chosen_backend_does_not_write_is_one_error(args: list[str], needle: str) -> None:
    _one_error(*netsim("compile", "--pod", str(SHOP), *args)[::2], needle)


def test_the_format_chooses_the_backend_only_when_nothing_else_does() -> None:
    """``--format nft`` alone compiles the nft backend; an explicit choice that agrees is no conflict; the
    golden and JSON formats follow the chosen backend."""
    nft = compile_ambient(dataclasses.replace(agent_defaults(), native_nftables=True)).nft_text()
    for extra in ([], ["--ambient-config", "NativeNftables=true"], ["--backend", "nft"]):
        code, out, err = netsim("compile", "--pod", str(SHOP), "--format", "nft", *extra)
        assert code == 0 and out.startswith(nft), err
    doc = json.loads(netsim("compile", "--pod", str(SHOP), "--format", "json", "--ambient-config",
                            "NativeNftables=false")[1])
    assert doc["backend"] == "iptables"
    code, out, _ = netsim("compile", "--pod", str(SHOP), "--format", "golden", "--ambient-config",
                          "NativeNftables=true")
    assert code == 0 and out == compile_ambient(dataclasses.replace(agent_defaults(), native_nftables=True)).golden()


def test_node_rules() -> None:
    code, out, _ = netsim("compile", "--node", "--format", "golden")
    assert code == 0 and out == compile_ambient(agent_defaults(), node=True).golden()
    code, out, _ = netsim("compile", "--node", "--format", "nft", "--ambient-config", "KubeletUID=1000")
    assert code == 0 and out.startswith("add table inet istio-ambient-nat\nadd set inet istio-ambient-nat "
                                        "istio-inpod-probes-v4 { type ipv4_addr ;")
    assert "skuid 1000 ip daddr @istio-inpod-probes-v4 counter snat to 169.254.7.127" in out and "policy" not in out


def test_the_checked_in_ambient_example() -> None:
    code, out, err = netsim("compile", "--pod", str(SHOP), "--format", "golden")
    assert code == 0 and out == compile_ambient(agent_defaults()).golden()
    assert "namespace shop's label" in err


def test_cold_ambient_compile_loads_only_what_it_uses() -> None:
    needless = ("netsim.spec.explain", "netsim.capture.nft", "netsim.capture.dryrun", "netsim.mesh", "netsim.dns",
                "netsim.registry", "netsim.lab", "netsim.workload")
    code = ("import sys, json; from netsim.cli import main\n"
            f"try:\n    main(['compile', '--pod', {str(SHOP)!r}])\nexcept SystemExit as e:\n    assert not e.code\n"
            f"print(json.dumps([m for m in sys.modules if m.startswith({needless!r})]), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
