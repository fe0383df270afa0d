"""The lab on a real kernel (root): issue 5's "Done when", end to end.

A lab is brought up from ``lab/example`` (a pod with DNS capture, a Service 10.96.0.20 and a ServiceEntry
``se.example.com`` without addresses). On the node side the test runs what a cluster would: dnsmasq as the
cluster DNS 10.96.0.10 (the agent's upstream) and a TCP server on the ClusterIP 10.96.0.20:80; in the pod, an
app on 8080 that reports the peer it sees. Every namespace is created by the lab or by this test, uniquely
named, and removed in ``finally``; only addresses inside those namespaces and loopback are used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_root

from netsim.lab.runner import netns_argv
from netsim.lab.state import run_dir

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "lab" / "example"
POD_IP, NODE_IP, CLUSTER_DNS, CLUSTER_IP = "10.244.0.5", "10.244.0.1", "10.96.0.10", "10.96.0.20"
APP_UID = 1000
PY = sys.executable  # the venv's interpreter, readable by the app and proxy uids

pytestmark = pytest.mark.root

# A node-side "ClusterIP backend": answers every connection with "hello from <local address>".
BACKEND = """
import socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
while True:
    c, peer = s.accept(); c.sendall(f"hello from {sys.argv[1]}:{sys.argv[2]} to {peer[0]}\\n".encode()); c.close()
"""
# A client: connect, print what the server sent.
CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(c.recv(200).decode().strip())
"""


def netsim(*args: str, check: bool = True, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([PY, "-m", "netsim", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"netsim {' '.join(args)} → {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def in_ns(ns: str, *argv: str, uid: int | None = None) -> list[str]:
    return netns_argv(ns, argv, uid, uid)


def wait_listening(ns: str, port: int, udp: bool = False, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hln" + ("u" if udp else "t"), f"sport = :{port}"],
                             capture_output=True, text=True, check=False).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} in {ns}")


def log_records(path: Path) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if "event" not in r]


def wait_record(path: Path, pred: Any, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in log_records(path):
            if pred(r):
                return r
        time.sleep(0.05)
    raise AssertionError(f"no matching record in {path}:\n{path.read_text()}")


def assert_nothing_left(name: str, pids: list[int]) -> None:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not re.search(rf"^{name}(-node)?( |$)", namespaces, re.M), namespaces
    assert not Path(f"/run/netns/{name}").exists() and not Path(f"/run/netns/{name}-node").exists()
    assert not Path(f"/etc/netns/{name}").exists()
    assert not run_dir(name).exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "vpod0" not in host_links  # the veth never existed in, and never leaked to, the host namespace


def recorded_pids(name: str) -> list[int]:
    state = json.loads((run_dir(name) / "state.json").read_text())
    return [r["pid"] for r in state["resources"] if r["kind"] == "process"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_root("iptables-restore", "iptables-save", "setpriv", "getent", "dnsmasq", "ss")
    name = f"nl{uuid.uuid4().hex[:6]}"
    node = f"{name}-node"
    tmp = tmp_path_factory.mktemp("lab")
    helpers: list[subprocess.Popen[bytes]] = []
    pids: list[int] = []
    try:
        up = netsim("lab", "up", "--pod", str(EXAMPLE / "pod.yaml"), "--name", name,
                    "--services", str(EXAMPLE / "services.yaml"))
        assert f"lab {name} up" in up.stdout
        pids = recorded_pids(name)
        # the cluster, on the node side: kube-dns (dnsmasq, the agent's upstream) and a ClusterIP backend
        for addr in (CLUSTER_DNS, CLUSTER_IP):
            subprocess.run(["ip", "-n", node, "addr", "add", f"{addr}/32", "dev", "lo"], check=True)
        dns_log = tmp / "dnsmasq.log"
        helpers.append(subprocess.Popen(in_ns(node, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                                              "--bind-interfaces", f"--listen-address={CLUSTER_DNS}", "--user=root",
                                              "--address=/upstream.test/192.0.2.7", "--log-queries",
                                              f"--log-facility={dns_log}", "--pid-file=")))
        helpers.append(subprocess.Popen(in_ns(node, PY, "-c", BACKEND, CLUSTER_IP, "80")))
        # the app, in the pod, as the app uid: reports the peer it sees
        helpers.append(subprocess.Popen(in_ns(name, PY, "-c", BACKEND, "0.0.0.0", "8080", uid=APP_UID)))
        wait_listening(node, 53, udp=True)
        wait_listening(node, 80)
        wait_listening(name, 8080)
        yield {"name": name, "node": node, "dns_log": dns_log, "run": run_dir(name)}
    finally:
        for p in helpers:
            p.kill()
            p.wait()
        down = netsim("lab", "down", name, check=False)
        assert down.returncode == 0, down.stderr
        assert_nothing_left(name, pids + [p.pid for p in helpers])


def test_getent_of_a_serviceentry_host_returns_its_auto_allocated_address(lab: dict[str, Any]) -> None:
    out = netsim("lab", "exec", lab["name"], "--", "getent", "hosts", "se.example.com").stdout
    assert re.match(r"240\.240\.\d+\.\d+\s+se\.example\.com", out), out


def test_exec_runs_as_the_app_uid(lab: dict[str, Any]) -> None:
    assert netsim("lab", "exec", lab["name"], "--", "id", "-u").stdout.strip() == str(APP_UID)
    assert netsim("lab", "exec", lab["name"], "--uid", "1337", "--", "id", "-u").stdout.strip() == "1337"
    assert netsim("lab", "exec", lab["name"], "--", "sh", "-c", "exit 3", check=False).returncode == 3  # its status


def test_an_unknown_name_is_forwarded_to_the_upstream_on_the_node_side(lab: dict[str, Any]) -> None:
    out = netsim("lab", "exec", lab["name"], "--", "getent", "hosts", "upstream.test").stdout
    assert out.split()[0] == "192.0.2.7", out
    # dnsmasq saw the query come from the pod's address: the agent (uid 1337) forwarded it uncaptured
    log = lab["dns_log"].read_text()
    assert re.search(rf"query\[A\] upstream\.test from {re.escape(POD_IP)}", log), log


def test_a_connect_to_a_clusterip_is_logged_by_15001_with_its_original_destination(lab: dict[str, Any]) -> None:
    out = netsim("lab", "exec", lab["name"], "--", PY, "-c", CLIENT, CLUSTER_IP, "80").stdout
    # relayed end to end: the backend saw the 15001 listener's own dial from the pod address
    assert out.strip() == f"hello from {CLUSTER_IP}:80 to {POD_IP}", out
    rec = wait_record(lab["run"] / "listener-15001.log", lambda r: r.get("original_dst") == f"{CLUSTER_IP}:80")
    assert rec["local"] == "127.0.0.1:15001" and rec["result"] == "relayed"
    assert rec["peer"].startswith(f"{POD_IP}:")


def test_a_connect_from_the_node_to_pod_ip_8080_is_logged_by_15006(lab: dict[str, Any]) -> None:
    out = subprocess.run(in_ns(lab["node"], PY, "-c", CLIENT, POD_IP, "8080"), capture_output=True, text=True,
                         check=True, timeout=30).stdout
    # the app got it through 15006, from Istio's inbound source 127.0.0.6 (netfilter.md §1.11)
    assert out.strip() == "hello from 0.0.0.0:8080 to 127.0.0.6", out
    rec = wait_record(lab["run"] / "listener-15006.log", lambda r: r.get("original_dst") == f"{POD_IP}:8080")
    assert rec["peer"].startswith(f"{NODE_IP}:") and rec["source"].startswith("127.0.0.6:")


def test_up_again_with_the_same_inputs_changes_nothing(lab: dict[str, Any]) -> None:
    before = (lab["run"] / "state.json").read_text()
    again = netsim("lab", "up", "--pod", str(EXAMPLE / "pod.yaml"), "--name", lab["name"],
                   "--services", str(EXAMPLE / "services.yaml"))
    assert again.stdout.strip() == f"lab {lab['name']} is already up; nothing changed"
    assert (lab["run"] / "state.json").read_text() == before


def test_status_shows_live_counters_and_recent_connections(lab: dict[str, Any]) -> None:
    netsim("lab", "exec", lab["name"], "--", PY, "-c", CLIENT, CLUSTER_IP, "80")
    status = json.loads(netsim("lab", "status", lab["name"], "--format", "json").stdout)
    assert status["healthy"] is True
    redirect = [ln for ln in status["rules"]["ipv4"].splitlines() if "--to-ports 15001" in ln]
    assert redirect and not redirect[0].startswith("[0:0]"), redirect  # the counter moved
    assert any(r["original_dst"] == f"{CLUSTER_IP}:80" for r in status["connections"]["listener-15001"])


def test_verify_reports_full_agreement(lab: dict[str, Any]) -> None:
    done = netsim("lab", "verify", lab["name"], "--probes", "30", "--seed", "5", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"agreement: 30/30 probes", done.stdout), done.stdout


def test_killing_the_labs_processes_mid_run_then_down_still_cleans_everything() -> None:
    require_root("iptables-restore", "iptables-save", "setpriv")
    name = f"nk{uuid.uuid4().hex[:6]}"
    pids: list[int] = []
    try:
        netsim("lab", "up", "--pod", str(EXAMPLE / "pod.yaml"), "--name", name,
               "--services", str(EXAMPLE / "services.yaml"))
        pids = recorded_pids(name)
        # a stray process left in the pod by `lab exec` (no record of it anywhere) ...
        stray = subprocess.Popen(in_ns(name, "sleep", "600", uid=APP_UID), start_new_session=True)
        pids.append(stray.pid)
        # ... and every process the lab started, killed behind its back
        for pid in recorded_pids(name):
            os.kill(pid, 9)
        status = json.loads(netsim("lab", "status", name, "--format", "json").stdout)
        assert not status["healthy"] and any("is not running" in p for p in status["problems"])
    finally:
        down = netsim("lab", "down", name, check=False)
        assert down.returncode == 0, down.stderr
        with_stray = [p for p in pids]
        time.sleep(0.1)
        assert_nothing_left(name, with_stray)


def test_errors_are_one_line_exit_2_and_leave_nothing(tmp_path: Path) -> None:
    require_root("iptables-restore", "iptables-save", "setpriv")
    name = f"ne{uuid.uuid4().hex[:6]}"
    pod = ["lab", "up", "--pod", str(EXAMPLE / "pod.yaml"), "--name", name]

    # a name already used by a namespace netsim did not create: refused, and that namespace is untouched
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        done = netsim(*pod, check=False)
        assert done.returncode == 2
        assert done.stderr == (f"Error: network namespace {name} already exists and netsim lab did not create it "
                               f"(no record in {run_dir(name)}); choose another --name\n")
        assert Path(f"/run/netns/{name}").exists() and not Path(f"/run/netns/{name}-node").exists()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)

    # a pod spec that does not compile
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  annotations:\n"
                   "    traffic.sidecar.istio.io/includeInboundPorts: '80-'\nspec:\n  containers: []\n")
    done = netsim("lab", "up", "--pod", str(bad), "--name", name, check=False)
    assert done.returncode == 2 and done.stderr.startswith("Error: ") and done.stderr.count("\n") == 1, done.stderr
    assert str(bad) in done.stderr

    # not root
    done = subprocess.run(["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "--", PY, "-m", "netsim",
                           *pod], capture_output=True, text=True, cwd=REPO, check=False)
    assert (done.returncode, done.stderr) == (2, "Error: the lab needs root (network namespaces, iptables): "
                                                 "run it with sudo\n")

    # iptables missing: a PATH with only iproute2 and setpriv on it
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ip", "setpriv"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or tool)
    done = netsim(*pod, check=False, env={**os.environ, "PATH": str(bin_dir)})
    assert (done.returncode, done.stderr) == (2, "Error: iptables-restore not found: install the iptables package\n")

    assert_nothing_left(name, [])


TPROXY_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: dual
  annotations:
    sidecar.istio.io/interceptionMode: TPROXY
    proxy.istio.io/config: |
      proxyMetadata:
        ISTIO_DUAL_STACK: "true"
spec:
  containers:
  - name: app
    image: example.com/app:1
    ports:
    - containerPort: 8080
status:
  podIPs:
  - ip: 10.244.0.5
  - ip: fd00:10:244::5
"""


def test_a_dual_stack_tproxy_pod_gets_policy_routing_and_a_transparent_15006(tmp_path: Path) -> None:
    require_root("iptables-restore", "iptables-save", "ip6tables-restore", "setpriv", "ss")
    name = f"nt{uuid.uuid4().hex[:6]}"
    pod = tmp_path / "pod.yaml"
    pod.write_text(TPROXY_POD)
    app: subprocess.Popen[bytes] | None = None
    pids: list[int] = []
    try:
        netsim("lab", "up", "--pod", str(pod), "--name", name)
        pids = recorded_pids(name)
        rules = subprocess.run(["ip", "-n", name, "-4", "rule"], capture_output=True, text=True, check=True).stdout
        rules6 = subprocess.run(["ip", "-n", name, "-6", "rule"], capture_output=True, text=True, check=True).stdout
        assert "fwmark 0x539 lookup 133" in rules and "fwmark 0x539 lookup 133" in rules6
        lo = subprocess.run(["ip", "-n", name, "addr", "show", "lo"], capture_output=True, text=True, check=True)
        assert "inet6 ::6/128" in lo.stdout
        app = subprocess.Popen(in_ns(name, PY, "-c", BACKEND, "::", "8080", uid=APP_UID))  # v4-mapped too
        wait_listening(name, 8080)
        for dst, source in ((POD_IP, "::ffff:127.0.0.6"), ("fd00:10:244::5", "::6")):
            out = subprocess.run(in_ns(f"{name}-node", PY, "-c", CLIENT, dst, "8080"), capture_output=True,
                                 text=True, check=True, timeout=30).stdout
            assert out.strip() == f"hello from :::8080 to {source}", out  # the app sees Istio's inbound source
            want = f"[{dst}]:8080" if ":" in dst else f"{dst}:8080"
            rec = wait_record(run_dir(name) / "listener-15006.log", lambda r, w=want: r.get("original_dst") == w)
            assert rec["local"] == want  # TPROXY rewrites nothing: the accepted socket's own address is the answer
        done = netsim("lab", "verify", name, "--probes", "40", check=False)  # 40 per family
        assert done.returncode == 0 and "agreement: 80/80 probes" in done.stdout, done.stdout + done.stderr
        assert "IPv4 40/40" in done.stdout and "IPv6 40/40" in done.stdout
    finally:
        if app is not None:
            app.kill()
            app.wait()
        down = netsim("lab", "down", name, check=False)
        assert down.returncode == 0, down.stderr
        assert_nothing_left(name, pids)


@pytest.mark.parametrize("then", ["down", "up"])
@pytest.mark.parametrize("after", ["namespaces", "listener"])
def test_an_up_killed_midway_is_finished_by_down_or_rebuilt_by_up(after: str, then: str) -> None:
    require_root("iptables-restore", "iptables-save", "setpriv")
    name = f"nc{uuid.uuid4().hex[:6]}"
    argv = [PY, "-m", "netsim", "lab", "up", "--pod", str(EXAMPLE / "pod.yaml"), "--name", name,
            "--services", str(EXAMPLE / "services.yaml")]
    # the moment to SIGKILL `up`: once its pod namespace exists, or once its first listener is logging
    ready = {"namespaces": lambda: Path(f"/run/netns/{name}").exists(),
             "listener": lambda: (run_dir(name) / "listener-15001.log").exists()}[after]
    try:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.kill()
        proc.wait()
        assert (run_dir(name) / "state.json").exists()  # the intent log is there whatever the moment
        if then == "down":
            return  # `finally` downs it and checks that nothing is left
        # `up` again: rebuilds what the killed one left (or finds it complete), and works
        again = netsim(*argv[3:])
        assert f"lab {name}" in again.stdout
        status = json.loads(netsim("lab", "status", name, "--format", "json").stdout)
        assert status["healthy"], status["problems"]
    finally:
        pids = recorded_pids(name) if (run_dir(name) / "state.json").exists() else []
        down = netsim("lab", "down", name, check=False)
        assert down.returncode == 0, down.stderr
        assert_nothing_left(name, pids)
