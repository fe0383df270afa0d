"""``netsim migrate --to ambient``: a finding per sidecar annotation and proxy.istio.io/config capture setting,
and on every rules/ example; each matrix row agrees with tracing the pod in each mode on its own
(``Workload.from_pod(mode=...)``), and every changed row has its finding (and no finding without one)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from netsim.workload.model import Workload
from tests.cli.compile_runner import netsim

EXAMPLES = sorted([*REPO.glob("rules/*/pod.yaml"), REPO / "rules" / "ambient" / "shop.yaml"])
ROW_CHECKS = {"excluded-now-captured", "captured-now-bypassed", "listener-changed", "dns-query", "probe-path",
              "proxy-uid-exemption", "hbone-port", "sidecar-port-captured"}


def migrate_json(path: Path | str, *extra: str) -> dict[str, Any]:
    code, out, err = netsim("migrate", "--pod", str(path), "--to", "ambient", "--format", "json", *extra)
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) >= {"pod", "findings", "matrix"}
    return doc


def _cell(w: Workload, row: dict[str, Any]) -> tuple[str, int | None]:
    peer = ipaddress.ip_address(row["peer"])
    if row["direction"] == "outbound":
        uid = 1337 if row["why"] == "the proxy's uid 1337" else None
        f = w.trace((peer, row["port"]), proto=row["proto"], uid=uid)
    else:
        f = w.trace((w.addresses[0], row["port"]), proto=row["proto"], from_=(peer, 40000))
    d = f.decision
    return d.verdict.value, d.listener.port if d.listener is not None else None


def assert_agrees_with_tracing(path: Path | str, doc: dict[str, Any]) -> None:
    """Each matrix cell is what tracing the pod in that mode says, and the row findings are the changed rows."""
    sidecar = Workload.from_pod(str(path), mode="sidecar")
    ambient = Workload.from_pod(str(path), mode="ambient")
    side, amb = doc["matrix"]["sidecar"], doc["matrix"]["ambient"]
    assert len(side) == len(amb) > 10
    changed = 0
    for s, a in zip(side, amb, strict=True):
        assert (s["verdict"], s["listener"]) == _cell(sidecar, s), s
        assert (a["verdict"], a["listener"]) == _cell(ambient, a), a
        changed += (s["verdict"], s["listener"]) != (a["verdict"], a["listener"])
    assert changed == sum(f["check"] in ROW_CHECKS for f in doc["findings"])


def pod(tmp_path: Path, annotations: dict[str, str], *, uid: int | None = None) -> Path:
    ann = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in annotations.items())
    sec = f"    securityContext: {{runAsUser: {uid}}}\n" if uid is not None else ""
    path = tmp_path / "pod.yaml"
    path.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n"
                    + (f"  annotations:\n{ann}" if ann else "")
                    + "spec:\n  containers:\n  - name: app\n    image: web\n    ports: [{containerPort: 8080}]\n"
                    + sec + "status:\n  podIP: 10.244.0.5\n")
    return path


def find(doc: dict[str, Any], check: str, needle: str = "") -> dict[str, Any]:
    hits = [f for f in doc["findings"] if f["check"] == check and needle in f["message"]]
    assert hits, f"no {check} finding with {needle!r}: {[f['message'] for f in doc['findings']]}"
    return hits[0]


PROXY_CONFIG = "proxy.istio.io/config"
# annotation → (value, the row finding it causes: check, a text in its message, before verdict, after verdict)
ANNOTATIONS: dict[str, tuple[str, str, str, str, str]] = {
    "traffic.sidecar.istio.io/excludeOutboundPorts": ("5432", "excluded-now-captured", "10.96.0.20:5432",
                                                      "bypassed", "captured-outbound 15001"),
    "traffic.sidecar.istio.io/excludeInboundPorts": ("9090", "excluded-now-captured", "to port 9090", "bypassed",
                                                     "captured-inbound 15006"),
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": ("10.10.0.0/16", "excluded-now-captured", "10.10.0.1:80",
                                                         "bypassed", "captured-outbound 15001"),
    "traffic.sidecar.istio.io/includeOutboundIPRanges": ("10.200.0.0/16", "excluded-now-captured", "10.96.0.20:80",
                                                         "bypassed", "captured-outbound 15001"),
    "traffic.sidecar.istio.io/includeInboundPorts": ("9443", "excluded-now-captured", "to port 8080",
                                                     "bypassed", "captured-inbound 15006"),
}


@pytest.mark.parametrize("key", sorted(ANNOTATIONS))
def test_each_capture_annotation(key: str, tmp_path: Path) -> None:
    value, check, where, before, after = ANNOTATIONS[key]
    path = pod(tmp_path, {key: value})
    doc = migrate_json(path)
    ignored = find(doc, "annotation-ignored", key)
    assert ignored["severity"] == "warning" and ignored["after"].startswith("ignored: ")
    row = find(doc, check, where)
    assert row["before"].startswith(before) and row["after"].startswith(after) and row["severity"] == "warning"
    assert_agrees_with_tracing(path, doc)


def test_include_outbound_ports(tmp_path: Path) -> None:
    """includeOutboundPorts captures a port whatever the destination; with an include range that leaves the
    remote out, ambient captures the rest too."""
    path = pod(tmp_path, {"traffic.sidecar.istio.io/includeOutboundPorts": "5000",
                          "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.200.0.0/16"})
    doc = migrate_json(path)
    assert find(doc, "annotation-ignored", "includeOutboundPorts")["severity"] == "info"
    side = {(r["peer"], r["port"]): r["verdict"] for r in doc["matrix"]["sidecar"] if r["direction"] == "outbound"}
    assert side[("10.96.0.20", 5000)] == "captured-outbound" and side[("10.96.0.20", 80)] == "bypassed"
    find(doc, "excluded-now-captured", "10.96.0.20:80")
    assert_agrees_with_tracing(path, doc)


def test_exclude_interfaces_and_kubevirt(tmp_path: Path) -> None:
    path = pod(tmp_path, {"traffic.sidecar.istio.io/excludeInterfaces": "net1",
                          "traffic.sidecar.istio.io/kubevirtInterfaces": "vm0"})
    doc = migrate_json(path)
    assert "captured like any other" in find(doc, "annotation-ignored", "excludeInterfaces")["after"]
    assert "istio.io/reroute-virtual-interfaces" in find(doc, "annotation-ignored", "kubevirtInterfaces")["after"]


def test_interception_mode_annotation(tmp_path: Path) -> None:
    doc = migrate_json(pod(tmp_path, {"sidecar.istio.io/interceptionMode": "TPROXY"}))
    find(doc, "annotation-ignored", "interceptionMode=TPROXY")
    mode = find(doc, "interception-mode", "TPROXY")
    assert mode["before"].startswith("TPROXY") and "client's address" in mode["after"]
    redirect = find(migrate_json(pod(tmp_path, {})), "interception-mode")
    assert "127.0.0.6" in redirect["before"] and redirect["severity"] == "warning"


def test_status_port_annotation(tmp_path: Path) -> None:
    doc = migrate_json(pod(tmp_path, {"status.sidecar.istio.io/port": "15999"}))
    find(doc, "annotation-ignored", "status.sidecar.istio.io/port=15999")


@pytest.mark.parametrize(("metadata", "check", "needle"), [
    ({"ISTIO_META_DNS_CAPTURE": "true"}, "proxy-config-ignored", "ISTIO_META_DNS_CAPTURE=true"),
    ({"ISTIO_OUTBOUND_OWNER_GROUPS": "1000"}, "proxy-config-ignored", "ISTIO_OUTBOUND_OWNER_GROUPS=1000"),
    ({"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "0"}, "proxy-config-ignored", "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=0"),
    ({"ISTIO_META_DNS_CAPTURE": "true", "CAPTURE_ALL_DNS": "true"}, "proxy-config-ignored", "CAPTURE_ALL_DNS=true"),
    ({"INVALID_DROP": "true"}, "proxy-config-ignored", "INVALID_DROP=true"),
    ({"ISTIO_DUAL_STACK": "true"}, "proxy-config-ignored", "ISTIO_DUAL_STACK=true"),
    ({"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.1/8"}, "proxy-config-ignored",
     "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=127.0.0.1/8"),
    ({"ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE": "6379"}, "proxy-config-ignored", "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"),
])
def test_each_proxy_config_capture_setting(metadata: dict[str, str], check: str, needle: str,
                                           tmp_path: Path) -> None:
    text = "proxyMetadata:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in metadata.items())
    path = pod(tmp_path, {PROXY_CONFIG: text})
    doc = migrate_json(path)
    f = find(doc, check, needle)
    assert f["before"].startswith("read by istio-init")
    if "OWNER_GROUPS" in needle:  # the filter bypassed the app's traffic; ambient captures it: said and traced
        assert f["severity"] == "warning" and "→ captured-outbound 15001" in f["after"]
        assert "no longer applies" in find(doc, "excluded-now-captured", "10.96.0.20:80")["message"]
    if "PORTS_EXCLUDE" in needle:  # an env-only input: its port gets a row, named after it
        row = find(doc, "excluded-now-captured", "10.96.0.20:6379")
        assert "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE no longer applies" in row["message"]
        assert f["severity"] == "warning"
    assert_agrees_with_tracing(path, doc)


def test_proxy_config_interception_mode(tmp_path: Path) -> None:
    doc = migrate_json(pod(tmp_path, {PROXY_CONFIG: "interceptionMode: TPROXY\n"}))
    assert find(doc, "interception-mode")["before"].startswith("TPROXY")


def test_dns_capture_findings(tmp_path: Path) -> None:
    off = migrate_json(pod(tmp_path, {}))
    assert find(off, "dns-capture")["message"] == "DNS capture turns on"
    assert find(off, "dns-query", "10.96.0.10:53")["after"].startswith("captured-dns 15053")
    on = migrate_json(pod(tmp_path, {PROXY_CONFIG: "proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n"}))
    assert "every server" in find(on, "dns-capture")["message"]
    assert find(on, "dns-query", "8.8.8.8:53")["before"].startswith("bypassed")
    stays_off = migrate_json(pod(tmp_path, {}), "--ambient-config", "RedirectDNS=false")
    assert find(stays_off, "dns-capture")["message"] == "DNS capture stays off"
    assert not [f for f in stays_off["findings"] if f["check"] == "dns-query"]


def test_probes_and_proxy_uid(tmp_path: Path) -> None:
    doc = migrate_json(pod(tmp_path, {}))
    probe = find(doc, "probe-path", "port 8080")
    assert probe["before"].startswith("captured-inbound 15006") and probe["after"].startswith("bypassed")
    assert "-s 169.254.7.127/32" in probe["after"]
    assert find(doc, "proxy-uid-exemption")["before"].startswith("bypassed")


def test_older_release(tmp_path: Path) -> None:
    """1.24's agent: DNS capture off by default, so DNS does not turn on."""
    doc = migrate_json(pod(tmp_path, {}), "--istio-version", "1.24")
    assert find(doc, "dns-capture")["message"] == "DNS capture stays off"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_rules_examples(path: Path) -> None:
    doc = migrate_json(path)
    assert doc["findings"] and all(set(f) >= {"check", "severity", "message", "before", "after"}
                                   for f in doc["findings"])
    assert all(f["severity"] in ("warning", "info") for f in doc["findings"])
    assert_agrees_with_tracing(path, doc)
    code, text, _ = netsim("migrate", "--pod", str(path), "--to", "ambient")
    assert code == 0 and "capture matrix" in text and text.count("[warning]") == sum(
        f["severity"] == "warning" for f in doc["findings"])


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    code, _, err = netsim("migrate", "--pod", str(tmp_path / "missing.yaml"), "--to", "ambient")
    assert code == 2 and err.count("\n") == 1 and err.startswith("Error: ")
    code, _, err = netsim("migrate", "--pod", str(EXAMPLES[0]), "--to", "sidecar")
    assert code == 2 and "Invalid value for '--to': 'sidecar' is not 'ambient'" in err
    code, _, err = netsim("migrate", "--pod", str(EXAMPLES[0]), "--to", "ambient", "--ambient-config", "X=1")
    assert code == 2 and 'option --ambient-config "X": unknown setting' in err


def test_enrolment_note_from_the_file_or_config(tmp_path: Path) -> None:
    shop = REPO / "rules" / "ambient" / "shop.yaml"
    assert any("already enrolled in ambient: namespace shop's label" in n for n in migrate_json(shop)["notes"])
    path = pod(tmp_path, {})
    assert migrate_json(path)["notes"] == []
    ns = tmp_path / "ns.yaml"
    ns.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n"
                  "    istio.io/dataplane-mode: ambient\n")
    assert migrate_json(path, "--config", str(ns))["notes"][0].startswith("the pod is already enrolled")


def test_nft_backend_gives_the_same_cells() -> None:
    """NativeNftables=true: ztunnel's side is traced through the nftables rules; every cell is the iptables one."""
    shop = REPO / "rules" / "ambient" / "shop.yaml"
    ipt, nft = migrate_json(shop), migrate_json(shop, "--ambient-config", "NativeNftables=true")
    cells = [[(r["verdict"], r["listener"]) for r in doc["matrix"]["ambient"]] for doc in (ipt, nft)]
    assert cells[0] == cells[1]
    assert "istio-ambient-nat istio-output" in find(nft, "excluded-now-captured", "5432")["after"]
