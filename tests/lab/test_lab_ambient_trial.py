"""Issue 16's new-user trial as a test: a namespace enrolled in ambient whose Deployment still carries the
sidecar-era ``traffic.sidecar.istio.io/excludeOutboundPorts: "5432"`` and ``excludeInboundPorts: "9090"``
(``rules/ambient/shop.yaml``, read in place), taken through ``migrate --to ambient``, ``compile``, ``trace`` and
the lab (``up``, real connections, ``verify``, ``down``). Each step must say the same thing: the annotations stop
applying, and ports 5432 (outbound) and 9090 (inbound) are captured by ztunnel (15001, 15006), where the sidecar
let them bypass. The lab half needs root.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from conftest import require_root
from test_lab_ambient_root import DB, FROM
from test_lab_root import APP_PY, CLIENT, assert_nothing_left, in_ns, netsim, recorded_pids, wait_record

from netsim.lab.state import run_dir

SHOP = "rules/ambient/shop.yaml"  # relative to the repository (netsim() runs there)
POD, NODE, SERVICE, CLIENT_IP = "10.244.0.5", "10.244.0.1", "10.96.0.20", "10.1.2.3"
ANNOTATIONS = ("traffic.sidecar.istio.io/excludeOutboundPorts", "traffic.sidecar.istio.io/excludeInboundPorts")


def test_migrate_names_both_annotations_and_the_ports_they_no_longer_exclude() -> None:
    doc = json.loads(netsim("migrate", "--pod", SHOP, "--to", "ambient", "--format", "json").stdout)
    ignored = {f["message"].split("=")[0].removeprefix("annotation ") for f in doc["findings"]
               if f["check"] == "annotation-ignored"}
    assert ignored == set(ANNOTATIONS)
    now = [f for f in doc["findings"] if f["check"] == "excluded-now-captured"]
    assert any("5432" in f["message"] and "captured-outbound 15001 with ztunnel" in f["message"] for f in now)
    assert any("9090" in f["message"] and "captured-inbound 15006 with ztunnel" in f["message"] for f in now)
    rows = {m: {(r["direction"], r["peer"], r["port"]): r for r in doc["matrix"][m]} for m in ("sidecar", "ambient")}
    for key, verdict, listener in ((("outbound", SERVICE, 5432), "captured-outbound", 15001),
                                   (("inbound", CLIENT_IP, 9090), "captured-inbound", 15006)):
        assert rows["sidecar"][key]["verdict"] == "bypassed"
        assert (rows["ambient"][key]["verdict"], rows["ambient"][key]["listener"], rows["ambient"][key]["owner"]) == \
            (verdict, listener, "ztunnel")


def test_compile_drops_the_exclusions_the_sidecar_had() -> None:
    ambient = netsim("compile", "--pod", SHOP)
    assert "ambient mode: namespace shop's label istio.io/dataplane-mode=ambient" in ambient.stderr
    assert "5432" not in ambient.stdout and "9090" not in ambient.stdout
    assert "--to-ports 15001" in ambient.stdout and "--to-ports 15006" in ambient.stdout
    sidecar = netsim("compile", "--pod", SHOP, "--mode", "sidecar").stdout
    assert "--dport 5432 -j RETURN" in sidecar and "--dport 9090 -j RETURN" in sidecar


@pytest.mark.parametrize(("args", "mode", "verdict", "port"), [
    (("--dst", f"{SERVICE}:5432"), "ambient", "captured-outbound", 15001),
    (("--from", CLIENT_IP, "--dst", f"{POD}:9090"), "ambient", "captured-inbound", 15006),
    (("--dst", f"{SERVICE}:5432"), "sidecar", "bypassed", None),
    (("--from", CLIENT_IP, "--dst", f"{POD}:9090"), "sidecar", "bypassed", None),
])
def test_trace_captures_both_ports_in_ambient_only(args: tuple[str, ...], mode: str, verdict: str,
                                                    port: int | None) -> None:
    doc = json.loads(netsim("trace", "--pod", SHOP, "--mode", mode, *args, "--format", "json").stdout)
    assert doc["verdict"] == verdict
    if port is not None:
        assert doc["listener"]["port"] == port and doc["listener"]["owner"] == "ztunnel"


@pytest.mark.root
def test_the_lab_runs_it_captures_both_ports_verifies_and_cleans_up() -> None:
    require_root("iptables-restore", "iptables-save", "setpriv", "ss", "xtables-monitor", "nft")
    name = f"at{uuid.uuid4().hex[:6]}"
    node = f"{name}-node"
    procs: list[subprocess.Popen[str]] = []
    try:
        up = netsim("lab", "up", "--pod", SHOP, "--name", name)
        assert "mode ambient" in up.stdout and "namespace shop's label" in up.stdout
        pids = recorded_pids(name)
        for ns, argv in ((name, (APP_PY, "-c", DB, "0.0.0.0", "9090")), (node, (APP_PY, "-c", DB, NODE, "5432"))):
            procs.append(subprocess.Popen(in_ns(ns, *argv), stdout=subprocess.PIPE, text=True))
            assert procs[-1].stdout is not None and procs[-1].stdout.readline().strip() == "ready"
        # inbound 9090: the sidecar excluded it; ztunnel's 15006 takes it and connects from the client's address
        got = subprocess.run(in_ns(node, APP_PY, "-c", FROM, NODE, POD, "9090"), capture_output=True, text=True,
                             timeout=30, check=True).stdout.strip()
        assert got == f"db saw {NODE}"
        wait_record(run_dir(name) / "listener-15006.log",
                    lambda r: r.get("stage") == "dial" and r.get("original_dst") == f"{POD}:9090"
                    and r.get("result") == "relayed")
        # outbound 5432: likewise through 15001
        got = subprocess.run(in_ns(name, APP_PY, "-c", CLIENT, NODE, "5432"), capture_output=True, text=True,
                             timeout=30, check=True).stdout.strip()
        assert got == f"db saw {POD}"
        wait_record(run_dir(name) / "listener-15001.log",
                    lambda r: r.get("stage") == "dial" and r.get("original_dst") == f"{NODE}:5432"
                    and r.get("result") == "relayed")
        done = netsim("lab", "verify", name, "--probes", "15", "--seed", "5432", "--format", "json", check=False,
                      timeout=300)
        report = json.loads(done.stdout)
        assert done.returncode == 0 and report["agreed"] and report["probes"] > 15
        for p in procs:
            p.kill()
            p.wait()
        procs.clear()
        assert netsim("lab", "down", name).stdout.strip() == f"lab {name} down"
        assert_nothing_left(name, pids)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        netsim("lab", "down", name, check=False)
