"""The ambient lab on a real kernel (root): issue 16's "Lab", end to end.

A dual-stack pod in a namespace labelled ``istio.io/dataplane-mode: ambient`` is brought up; the lab loads
istio-cni's in-pod rules and §7's policy routes and runs ztunnel's stand-ins. Traffic is then sent for real: the
app's DNS through the agent on 15053 (whose own upstream query must not be captured again: its mark), a remote
client to the app through 15006 (the stand-in connects from the client's own address and the app's replies come
back by the connmark 0x111 / table 100 path), HBONE to 15008, kubelet's probe from the SNAT address straight to the
app, the app's outbound through 15001; then ``lab verify`` (0 mismatches, both families) and ``lab down`` (nothing
left). Every namespace is the lab's, uniquely named; only addresses inside them are used.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_root
from test_lab_root import APP_PY, CLIENT, assert_nothing_left, in_ns, netsim, recorded_pids, wait_listening, wait_record

from netsim.capture import ambient as amb
from netsim.lab.state import run_dir

pytestmark = pytest.mark.root

POD4, POD6, NODE4 = "10.244.0.5", "fd00:244::5", "10.244.0.1"
APP_UID = 1000
POD = """apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  containers: [{name: app, image: web:1, ports: [{containerPort: 8080}]}]
status:
  podIPs: [{ip: 10.244.0.5}, {ip: "fd00:244::5"}]
"""
# The app: answers each connection with the peer address it sees, and records it.
APP = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(f"app saw {peer[0]}\\n".encode()); print(peer[0], flush=True); c.close()
"""
# A node-side server: answers each connection with the peer address it sees.
DB = """
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(f"db saw {peer[0]}".encode()); c.close()
"""
# A client bound to a source address: connect, print what the server sent.
FROM = """
import socket, sys
c = socket.socket(); c.bind((sys.argv[1], 0)); c.settimeout(5); c.connect((sys.argv[2], int(sys.argv[3])))
print(c.recv(200).decode().strip())
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_root("iptables-restore", "iptables-save", "setpriv", "getent", "dig", "ss", "xtables-monitor", "nft")
    name = f"am{uuid.uuid4().hex[:6]}"
    pod = tmp_path_factory.mktemp("ambient") / "pod.yaml"
    pod.write_text(POD)
    procs: list[subprocess.Popen[str]] = []
    try:
        up = netsim("lab", "up", "--pod", str(pod), "--name", name, "--app-uid", str(APP_UID))
        app = subprocess.Popen(in_ns(name, APP_PY, "-c", APP, "8080", uid=APP_UID), stdout=subprocess.PIPE, text=True)
        procs.append(app)
        assert app.stdout is not None and app.stdout.readline().strip() == "ready"
        yield {"name": name, "up": up, "app": app, "pids": recorded_pids(name)}
    finally:
        for p in procs:
            p.kill()
            p.wait()
        netsim("lab", "down", name, check=False)


def test_up_loads_the_compiled_rules_and_routes_and_starts_ztunnels_sockets(lab: dict[str, Any]) -> None:
    name = lab["name"]
    assert "mode ambient: ztunnel stand-ins 15001, 15006, 15008 (mark 0x539)" in lab["up"].stdout
    assert "namespace shop's label istio.io/dataplane-mode=ambient" in lab["up"].stdout
    for v in ("-4", "-6"):
        rules = subprocess.run(["ip", "-n", name, v, "rule"], capture_output=True, text=True, check=True).stdout
        assert "32764:\tfrom all fwmark 0x111/0xfff lookup 100" in rules
        table = subprocess.run(["ip", "-n", name, v, "route", "show", "table", "100"], capture_output=True, text=True,
                               check=True).stdout
        assert table.startswith("local default dev lo")
    status = json.loads(netsim("lab", "status", name, "--format", "json").stdout)
    assert status["healthy"] and status["info"]["mode"] == "ambient"
    assert "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001" in \
        status["rules"]["ipv4"]
    for port in (15001, 15006, 15008):
        wait_listening(name, port)
        listening = json.loads(Path(run_dir(name) / f"listener-{port}.log").read_text().splitlines()[0])
        assert listening["mark"] == amb.MARK and listening["ztunnel"] and listening["uid"] == 0
    wait_listening(name, 15053, udp=True)
    text = netsim("lab", "status", name).stdout
    assert "mode ambient: ztunnel stand-ins on 15001, 15006, 15008, DNS 15053 (mark 0x539)" in text


def test_the_apps_dns_goes_through_the_agent_whose_marked_upstream_query_is_not_captured(lab: dict[str, Any]) -> None:
    name = lab["name"]
    done = subprocess.run(in_ns(name, "dig", "+time=3", "+tries=1", "+short", "kubernetes.default.svc.cluster.local",
                                uid=APP_UID), capture_output=True, text=True, timeout=30, check=False)
    assert "timed out" not in done.stdout, done.stdout  # an unmarked upstream query would loop back to 15053
    queries = [json.loads(ln) for ln in (run_dir(name) / "cluster-dns.log").read_text().splitlines()]
    asked = [q for q in queries if q.get("name") == "kubernetes.default.svc.cluster.local."]
    assert asked and asked[-1]["peer"].startswith(f"{POD4}:")  # the agent asked upstream, from the pod
    conntrack = subprocess.run(["ip", "netns", "exec", name, "cat", "/proc/net/nf_conntrack"], capture_output=True,
                               text=True, check=True).stdout
    # the app's query (redirected to 15053) in zone 0, the agent's upstream one (mark 0x539) in zone 1 (§3 15, 16)
    redirected = [ln for ln in conntrack.splitlines() if "dport=53 " in ln and "sport=15053 " in ln]
    assert redirected and not any("zone=1" in ln for ln in redirected)
    assert any("dport=53 " in ln and "src=10.96.0.10" in ln and "zone=1" in ln for ln in conntrack.splitlines())


def test_a_remote_client_reaches_the_app_through_15006_from_its_own_address(lab: dict[str, Any]) -> None:
    name, node = lab["name"], f"{lab['name']}-node"
    got = subprocess.run(in_ns(node, APP_PY, "-c", FROM, NODE4, POD4, "8080"), capture_output=True, text=True,
                         timeout=30, check=True).stdout.strip()
    # ztunnel connects to the app from the client's address (IP_TRANSPARENT); the app's reply comes back to it
    # only through the connmark 0x111 / table 100 path, else it would leave by eth0
    assert got == f"app saw {NODE4}"
    log = run_dir(name) / "listener-15006.log"
    rec = wait_record(log, lambda r: r.get("stage") == "dial" and r.get("original_dst") == f"{POD4}:8080")
    assert rec["result"] == "relayed" and rec["source"].startswith(f"{NODE4}:")
    counters = subprocess.run(["ip", "netns", "exec", name, "iptables-save", "-c", "-t", "mangle"],
                              capture_output=True, text=True, check=True).stdout
    restore = next(ln for ln in counters.splitlines() if "--restore-mark" in ln)
    assert not restore.startswith("[0:")  # the app's replies took the connection mark


def test_hbone_goes_to_15008_and_kubelets_probe_straight_to_the_app(lab: dict[str, Any]) -> None:
    name, node = lab["name"], f"{lab['name']}-node"
    subprocess.run(in_ns(node, APP_PY, "-c", FROM, NODE4, POD4, "15008"), capture_output=True, text=True,
                   timeout=30, check=False)
    rec = wait_record(run_dir(name) / "listener-15008.log", lambda r: r.get("stage") == "dial")
    assert rec["original_dst"] == f"{POD4}:15008" and rec["result"].startswith("accepted")
    before = (run_dir(name) / "listener-15006.log").read_text().count('"stage": "accept"')
    got = subprocess.run(in_ns(node, APP_PY, "-c", FROM, amb.DEFAULT_SNAT_V4, POD4, "8080"), capture_output=True,
                         text=True, timeout=30, check=True).stdout.strip()
    assert got == f"app saw {amb.DEFAULT_SNAT_V4}"
    time.sleep(0.2)
    assert (run_dir(name) / "listener-15006.log").read_text().count('"stage": "accept"') == before


def test_the_apps_outbound_goes_through_15001_whose_own_dial_is_not_captured(lab: dict[str, Any]) -> None:
    name, node = lab["name"], f"{lab['name']}-node"
    server = subprocess.Popen(in_ns(node, APP_PY, "-c", DB, NODE4, "5432"), stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        got = subprocess.run(in_ns(name, APP_PY, "-c", CLIENT, NODE4, "5432", uid=APP_UID), capture_output=True,
                             text=True, timeout=30, check=True).stdout.strip()
        assert got == f"db saw {POD4}"
        rec = wait_record(run_dir(name) / "listener-15001.log",
                          lambda r: r.get("stage") == "dial" and r.get("original_dst") == f"{NODE4}:5432")
        assert rec["result"] == "relayed"
    finally:
        server.kill()
        server.wait()


def test_verify_agrees_with_the_kernel_in_both_families(lab: dict[str, Any]) -> None:
    done = netsim("lab", "verify", lab["name"], "--probes", "20", "--seed", "16", "--format", "json", check=False,
                  timeout=300)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["agreed"], json.dumps([r for r in report["results"] if not r["agreed"]])
    assert set(report["families"]) == {"ipv4", "ipv6"}
    for fam in report["families"].values():
        assert fam["probes"] > 20 and fam["agreed"] == fam["probes"]  # the §10 table's probes come on top
    marked = [r for r in report["results"] if r["mark"] == amb.MARK and r["transparent"]]
    assert marked and all(r["agreed"] and r["kernel"] for r in marked)
    kubelet = [r for r in report["results"] if r["inbound"] and r["src"] in (amb.DEFAULT_SNAT_V4, amb.DEFAULT_SNAT_V6)
               and not r["probe"].startswith("reply to")]
    assert len(kubelet) == 4 and all(r["kernel"] for r in kubelet)  # to the app's port and to 15008, per family
    # the reply direction: each answered probe's first reply, traced by the kernel and by netsim
    replies = [r for r in report["results"] if r["probe"].startswith("reply to")]
    assert len(replies) == 12 and all(r["agreed"] and r["kernel"] for r in replies)
    # ztunnel's spoofed connection: the SYN-ACK gets mark 0x111 (mangle ISTIO_OUTPUT's restore) and comes back in
    # through PREROUTING (table 100, lo); kubelet's probe's SYN-ACK leaves by eth0 (no PREROUTING pass)
    spoofed = [r for r in replies if r["transparent"]]
    assert len(spoofed) == 2
    for r in spoofed:
        assert any(ln.startswith("TRACE: mangle:ISTIO_OUTPUT:rule:1:CONTINUE") for ln in r["kernel"])
        assert any(":PREROUTING:" in ln for ln in r["kernel"])
    assert all(not any(":PREROUTING:" in ln for ln in r["kernel"]) for r in replies if r["src"] in (
        amb.DEFAULT_SNAT_V4, amb.DEFAULT_SNAT_V6))


def test_down_removes_everything(lab: dict[str, Any]) -> None:
    name = lab["name"]
    lab["app"].kill()
    lab["app"].wait()
    assert netsim("lab", "down", name).stdout.strip() == f"lab {name} down"
    assert_nothing_left(name, lab["pids"])


def test_the_native_nftables_backend_runs_and_verifies_too(tmp_path: Path) -> None:
    """``NativeNftables=true`` (or ``--backend nft``): the agent's inet tables loaded with ``nft -f``; verify reads
    ``nft monitor trace`` for both families (the §10 probes and the answered ones' replies included) and agrees;
    down removes everything."""
    name = f"an{uuid.uuid4().hex[:6]}"
    pod = tmp_path / "pod.yaml"
    pod.write_text(POD)
    try:
        up = netsim("lab", "up", "--pod", str(pod), "--name", name, "--ambient-config", "NativeNftables=true")
        assert "mode ambient" in up.stdout and "nftables rules" in up.stdout
        listing = subprocess.run(["ip", "netns", "exec", name, "nft", "list", "ruleset"], capture_output=True,
                                 text=True, check=True).stdout
        assert "table inet istio-ambient-nat" in listing and "redirect to :15006" in listing
        pids = recorded_pids(name)
        done = netsim("lab", "verify", name, "--probes", "15", "--seed", "28", "--format", "json", check=False,
                      timeout=300)
        report = json.loads(done.stdout)
        assert done.returncode == 0 and report["agreed"] and set(report["families"]) == {"ipv4", "ipv6"}
        assert any(r["mark"] == amb.MARK and r["transparent"] and r["kernel"] for r in report["results"])
        replies = [r for r in report["results"] if r["probe"].startswith("reply to")]
        assert len(replies) == 12 and all(r["agreed"] and r["kernel"] for r in replies)
        # nft prints the mark on policy lines: the SYN-ACK to ztunnel's spoofed connection leaves mangle output
        # with the connection's 0x111 (it left its listener with 0x539)
        spoofed = [r for r in replies if r["transparent"]]
        assert spoofed and all(any("istio-ambient-mangle output policy accept meta mark 0x00000111" in ln
                                   for ln in r["kernel"]) for r in spoofed)
        assert netsim("lab", "down", name).stdout.strip() == f"lab {name} down"
        assert_nothing_left(name, pids)
    finally:
        netsim("lab", "down", name, check=False)
