"""The lab on a real kernel (root): issues 5's and 12's "Done when", end to end.

A lab is brought up from ``lab/example`` (a pod with DNS capture, a Service 10.96.0.20 and a ServiceEntry
``se.example.com`` without addresses). The lab itself runs the cluster DNS 10.96.0.10 (its kube-dns stand-in,
the agent's upstream) on the node side; the test adds what a cluster would have besides: a TCP server on the
ClusterIP 10.96.0.20:80, and in the pod an app on 8080 that reports the peer it sees. Every namespace is
created by the lab or by this test, uniquely named, and removed in ``finally``; only addresses inside those
namespaces and loopback are used.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_root
from lab_helpers import exit_on_signal

from netsim.lab.runner import netns_argv
from netsim.lab.state import run_dir

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "lab" / "example"
POD_IP, NODE_IP, CLUSTER_DNS, CLUSTER_IP = "10.244.0.5", "10.244.0.1", "10.96.0.10", "10.96.0.20"
APP_UID = 1000
PY = sys.executable  # the venv's interpreter: maybe only root can run it (pyenv in a mode-700 home)
# What the test runs as the app's uid needs an interpreter every uid can run (the lab's own processes do not:
# they start as root).
APP_PY = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), PY)

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
    require_root("iptables-restore", "iptables-save", "setpriv", "getent", "dig", "ss")
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
        # the cluster, on the node side, besides the lab's cluster DNS: a ClusterIP backend
        subprocess.run(["ip", "-n", node, "addr", "add", f"{CLUSTER_IP}/32", "dev", "lo"], check=True)
        helpers.append(subprocess.Popen(in_ns(node, PY, "-c", BACKEND, CLUSTER_IP, "80")))
        # the app, in the pod, as the app uid: reports the peer it sees
        helpers.append(subprocess.Popen(in_ns(name, APP_PY, "-c", BACKEND, "0.0.0.0", "8080", uid=APP_UID)))
        wait_listening(node, 53, udp=True)
        wait_listening(node, 80)
        wait_listening(name, 8080)
        yield {"name": name, "node": node, "tmp": tmp, "run": run_dir(name)}
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


def timed(argv: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    return done, time.monotonic() - start


def test_getent_of_a_serviceentry_host_and_a_service_answers_in_under_a_second(lab: dict[str, Any]) -> None:
    # as the app would: its uid, the pod's resolv.conf (search list first, ndots:5), through the capture
    done, took = timed(in_ns(lab["name"], "getent", "hosts", "se.example.com", uid=APP_UID))
    assert done.returncode == 0 and re.match(r"240\.240\.\d+\.\d+\s+se\.example\.com", done.stdout), done
    assert took < 1.0, took
    done, took = timed(in_ns(lab["name"], "getent", "hosts", "backend", uid=APP_UID))
    assert done.returncode == 0 and done.stdout.split() == [CLUSTER_IP, "backend.default.svc.cluster.local"], done
    assert took < 1.0, took


def test_an_unknown_cluster_local_name_gets_nxdomain_in_under_a_second(lab: dict[str, Any]) -> None:
    done, took = timed(in_ns(lab["name"], "dig", "+tries=1", "+time=5", "nope.default.svc.cluster.local",
                             uid=APP_UID))
    assert "status: NXDOMAIN" in done.stdout and "SOA" in done.stdout, done.stdout
    assert took < 1.0, took
    done, took = timed(in_ns(lab["name"], "getent", "hosts", "nope", uid=APP_UID))
    assert done.returncode == 2 and took < 1.0, (done, took)


def test_the_cluster_dns_answers_srv_for_named_ports(lab: dict[str, Any]) -> None:
    done = subprocess.run(in_ns(lab["name"], "dig", "+short", "+tries=1", "SRV",
                                "_http._tcp.backend.default.svc.cluster.local", uid=APP_UID),
                          capture_output=True, text=True, check=True, timeout=30)
    assert done.stdout.split() == ["0", "100", "80", "backend.default.svc.cluster.local."], done.stdout


def test_the_agent_and_relays_run_as_the_proxy_and_the_owner_match_sees_1337(lab: dict[str, Any]) -> None:
    state = json.loads((lab["run"] / "state.json").read_text())
    for proc in (r for r in state["resources"] if r["kind"] == "process"):
        status = Path(f"/proc/{proc['pid']}/status").read_text()
        ids = "65534" if proc["role"] == "cluster-dns" else "1337"
        assert re.search(rf"^Uid:\s+{ids}\s+{ids}\s+{ids}\s+{ids}$", status, re.M), (proc["role"], status)
        assert re.search(rf"^Gid:\s+{ids}\s+{ids}\s+{ids}\s+{ids}$", status, re.M), (proc["role"], status)
        assert re.search(r"^Groups:\s*$", status, re.M), (proc["role"], status)
    # the kernel's owner match counts the agent's upstream queries as uid 1337's (a rule without a target)
    rule = ["-p", "udp", "-d", CLUSTER_DNS, "--dport", "53", "-m", "owner", "--uid-owner", "1337"]
    subprocess.run(in_ns(lab["name"], "iptables", "-t", "raw", "-I", "OUTPUT", *rule), check=True)
    try:
        subprocess.run(in_ns(lab["name"], "getent", "hosts", "counted.default", uid=APP_UID), check=False, timeout=30)
        counted = subprocess.run(in_ns(lab["name"], "iptables", "-t", "raw", "-L", "OUTPUT", "-v", "-n", "-x"),
                                 capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run(in_ns(lab["name"], "iptables", "-t", "raw", "-D", "OUTPUT", *rule), check=True)
    line = next(ln for ln in counted.splitlines() if "owner UID match 1337" in ln)
    assert int(line.split()[0]) > 0, counted


def test_exec_runs_as_the_app_uid(lab: dict[str, Any]) -> None:
    assert netsim("lab", "exec", lab["name"], "--", "id", "-u").stdout.strip() == str(APP_UID)
    assert netsim("lab", "exec", lab["name"], "--uid", "1337", "--", "id", "-u").stdout.strip() == "1337"
    assert netsim("lab", "exec", lab["name"], "--", "sh", "-c", "exit 3", check=False).returncode == 3  # its status


def test_an_unknown_name_is_forwarded_to_the_cluster_dns_which_forwards_nothing(lab: dict[str, Any]) -> None:
    done, took = timed(in_ns(lab["name"], "getent", "hosts", "upstream.test", uid=APP_UID))
    assert done.returncode == 2 and took < 1.0, (done, took)
    # the stand-in saw the query come from the pod's address (the agent, uid 1337, forwarded it uncaptured)
    # and refused it: nothing leaves the lab
    rec = wait_record(lab["run"] / "cluster-dns.log", lambda r: r.get("name") == "upstream.test.")
    assert rec["peer"].startswith(f"{POD_IP}:") and rec["rcode"] == "REFUSED"


def test_a_connect_to_a_clusterip_is_logged_by_15001_with_its_original_destination(lab: dict[str, Any]) -> None:
    out = netsim("lab", "exec", lab["name"], "--", APP_PY, "-c", CLIENT, CLUSTER_IP, "80").stdout
    # relayed end to end: the backend saw the 15001 listener's own dial from the pod address
    assert out.strip() == f"hello from {CLUSTER_IP}:80 to {POD_IP}", out
    rec = wait_record(lab["run"] / "listener-15001.log",
                      lambda r: r.get("original_dst") == f"{CLUSTER_IP}:80" and r["stage"] == "dial")
    assert rec["local"] == "127.0.0.1:15001" and rec["result"] == "relayed"
    assert rec["peer"].startswith(f"{POD_IP}:")


def test_a_connect_from_the_node_to_pod_ip_8080_is_logged_by_15006(lab: dict[str, Any]) -> None:
    out = subprocess.run(in_ns(lab["node"], PY, "-c", CLIENT, POD_IP, "8080"), capture_output=True, text=True,
                         check=True, timeout=30).stdout
    # the app got it through 15006, from Istio's inbound source 127.0.0.6 (netfilter.md §1.11)
    assert out.strip() == "hello from 0.0.0.0:8080 to 127.0.0.6", out
    rec = wait_record(lab["run"] / "listener-15006.log",
                      lambda r: r.get("original_dst") == f"{POD_IP}:8080" and r["stage"] == "dial")
    assert rec["peer"].startswith(f"{NODE_IP}:") and rec["source"].startswith("127.0.0.6:")


def test_up_again_with_the_same_inputs_changes_nothing(lab: dict[str, Any]) -> None:
    before = (lab["run"] / "state.json").read_text()
    again = netsim("lab", "up", "--pod", str(EXAMPLE / "pod.yaml"), "--name", lab["name"],
                   "--services", str(EXAMPLE / "services.yaml"))
    assert again.stdout.strip() == f"lab {lab['name']} is already up; nothing changed"
    assert (lab["run"] / "state.json").read_text() == before


def test_status_shows_live_counters_and_recent_connections(lab: dict[str, Any]) -> None:
    netsim("lab", "exec", lab["name"], "--", APP_PY, "-c", CLIENT, CLUSTER_IP, "80")
    status = json.loads(netsim("lab", "status", lab["name"], "--format", "json").stdout)
    assert status["healthy"] is True
    redirect = [ln for ln in status["rules"]["ipv4"].splitlines() if "--to-ports 15001" in ln]
    assert redirect and not redirect[0].startswith("[0:0]"), redirect  # the counter moved
    assert any(r["original_dst"] == f"{CLUSTER_IP}:80" for r in status["connections"]["listener-15001"])


def test_verify_reports_full_agreement(lab: dict[str, Any]) -> None:
    done = netsim("lab", "verify", lab["name"], "--probes", "30", "--seed", "5", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"agreement: 30/30 probes", done.stdout), done.stdout
    assert done.stderr == ""  # no progress line: stderr is not a terminal


def test_verify_json_marks_its_probes_in_the_logs_and_status_does_not_show_them(lab: dict[str, Any]) -> None:
    done = netsim("lab", "verify", lab["name"], "--probes", "30", "--seed", "8", "--format", "json", check=False)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["agreed"] is True, done.stdout
    assert (report["probes"], report["agreeing"], report["seed"]) == (30, 30, 8)
    assert report["families"] == {"ipv4": {"probes": 30, "agreed": 30}}
    relayed = {r["sport"] for r in report["results"] if r["proto"] == "tcp" and r["dport"] in (80, 8080)}
    records = log_records(lab["run"] / "listener-15001.log") + log_records(lab["run"] / "listener-15006.log")
    probes = [r for r in records if r.get("probe")]
    assert probes and all(20000 <= int(r["peer"].rsplit(":", 1)[1]) <= 29999 for r in probes)
    assert not [r for r in records if not r.get("probe") and int(r["peer"].rsplit(":", 1)[1]) in relayed]
    status = json.loads(netsim("lab", "status", lab["name"], "--format", "json").stdout)
    shown = [c for conns in status["connections"].values() for c in conns]
    assert not [c for c in shown if 20000 <= int(c["peer"].rsplit(":", 1)[1]) <= 29999]
    assert sum(status["probe_connections"].values()) > 0


def test_verify_shows_progress_on_a_terminal(lab: dict[str, Any]) -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        done = subprocess.run([PY, "-m", "netsim", "lab", "verify", lab["name"], "--probes", "5"],
                              stdout=subprocess.PIPE, stderr=follower, text=True, cwd=REPO, check=False, timeout=120)
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert done.returncode == 0, done.stdout
    assert b"verify: 5/5 probes sent and traced" in seen and seen.endswith(b"\r\x1b[K"), seen


def test_a_connection_to_a_vip_without_backend_shows_in_status_within_a_second(lab: dict[str, Any]) -> None:
    vip = "10.96.0.99"  # no address anywhere in the lab: the relay's dial waits for its timeout (5 s)
    client = subprocess.Popen(in_ns(lab["name"], APP_PY, "-c",
                                    "import socket, sys, time; s = socket.create_connection((sys.argv[1], 80)); "
                                    "print(time.time(), flush=True); time.sleep(10)", vip, uid=APP_UID),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        connected = float(client.stdout.readline())  # the relay accepted at once
        start = time.monotonic()
        status = json.loads(netsim("lab", "status", lab["name"], "--format", "json").stdout)
        took = time.monotonic() - start
    finally:
        client.kill()
        client.wait()
    conn = next(c for c in status["connections"]["listener-15001"] if c["original_dst"] == f"{vip}:80")
    accepted = datetime.datetime.fromisoformat(conn["time"]).timestamp()
    assert abs(accepted - connected) < 1.0 and "dial" not in conn, conn  # logged at accept; still dialing
    assert took < 3.0, took
    # the dial result follows as a second record, and status shows it with the first
    rec = wait_record(lab["run"] / "listener-15001.log",
                      lambda r: r.get("original_dst") == f"{vip}:80" and r.get("stage") == "dial")
    assert rec["conn"] == conn["conn"] and rec["result"].startswith("dial failed")
    out = netsim("lab", "status", lab["name"]).stdout
    assert re.search(rf"-> {re.escape(vip)}:80: accepted; \S+ dial failed", out), out


def test_exec_passes_sigterm_and_sigint_on_and_returns_the_commands_status(lab: dict[str, Any]) -> None:
    for sig, code in ((signal.SIGTERM, 7), (signal.SIGINT, 8)):
        assert exit_on_signal([PY, "-m", "netsim", "lab", "exec", lab["name"], "--"], sig, code) == code


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
        done = netsim("lab", "status", name, "--format", "json", check=False)
        status = json.loads(done.stdout)
        assert done.returncode == 1 and not status["healthy"]
        assert any("is not running" in p for p in status["problems"])
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

    # not root (where uid 1000 can run this installation at all; a private one is root's alone)
    as_user = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "--", PY]
    if subprocess.run([*as_user, "-c", "import netsim"], capture_output=True, cwd=REPO, check=False).returncode == 0:
        done = subprocess.run([*as_user, "-m", "netsim", *pod], capture_output=True, text=True, cwd=REPO, check=False)
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
        app = subprocess.Popen(in_ns(name, APP_PY, "-c", BACKEND, "::", "8080", uid=APP_UID))  # v4-mapped too
        wait_listening(name, 8080)
        for dst, source in ((POD_IP, "::ffff:127.0.0.6"), ("fd00:10:244::5", "::6")):
            out = subprocess.run(in_ns(f"{name}-node", PY, "-c", CLIENT, dst, "8080"), capture_output=True,
                                 text=True, check=True, timeout=30).stdout
            assert out.strip() == f"hello from :::8080 to {source}", out  # the app sees Istio's inbound source
            want = f"[{dst}]:8080" if ":" in dst else f"{dst}:8080"
            rec = wait_record(run_dir(name) / "listener-15006.log",
                              lambda r, w=want: r.get("original_dst") == w and r["stage"] == "dial")
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


def test_a_1_2_pod_has_one_15001_relay_for_both_directions_told_apart_by_destination() -> None:
    """Before 1.3 the rules sent inbound and outbound alike to 15001: the lab runs one relay there, which hands
    a connection to the pod's own address to the app on loopback (1.2's inbound cluster) and relays any other
    to its original destination; none loops through the rules again."""
    require_root("iptables-restore", "iptables-save", "setpriv", "ss")
    name = f"no{uuid.uuid4().hex[:6]}"
    node = f"{name}-node"
    helpers: list[subprocess.Popen[bytes]] = []
    pids: list[int] = []
    try:
        up = netsim("lab", "up", "--pod", str(REPO / "rules" / "mtls-503" / "pod.yaml"), "--name", name,
                    "--istio-version", "1.2")
        assert "; relays 15001, DNS agent 15053;" in up.stdout, up.stdout
        pids = recorded_pids(name)
        state = json.loads((run_dir(name) / "state.json").read_text())
        roles = sorted(r["role"] for r in state["resources"] if r["kind"] == "process")
        assert roles == ["cluster-dns", "dns", "listener-15001"], roles
        subprocess.run(["ip", "-n", node, "addr", "add", f"{CLUSTER_IP}/32", "dev", "lo"], check=True)
        helpers.append(subprocess.Popen(in_ns(node, PY, "-c", BACKEND, CLUSTER_IP, "80")))
        helpers.append(subprocess.Popen(in_ns(name, APP_PY, "-c", BACKEND, "0.0.0.0", "8080", uid=APP_UID)))
        wait_listening(node, 80)
        wait_listening(name, 8080)
        out = subprocess.run(in_ns(node, PY, "-c", CLIENT, POD_IP, "8080"), capture_output=True, text=True,
                             check=True, timeout=30).stdout
        assert out.strip() == "hello from 0.0.0.0:8080 to 127.0.0.1", out  # inbound: the app on loopback
        log = run_dir(name) / "listener-15001.log"
        rec = wait_record(log, lambda r: r.get("original_dst") == f"{POD_IP}:8080" and r["stage"] == "dial")
        assert rec["upstream"] == "127.0.0.1:8080" and rec["result"] == "relayed", rec
        out = netsim("lab", "exec", name, "--", APP_PY, "-c", CLIENT, CLUSTER_IP, "80").stdout
        assert out.strip() == f"hello from {CLUSTER_IP}:80 to {POD_IP}", out  # outbound: the original destination
        rec = wait_record(log, lambda r: r.get("original_dst") == f"{CLUSTER_IP}:80" and r["stage"] == "dial")
        assert rec["upstream"] == f"{CLUSTER_IP}:80" and rec["result"] == "relayed", rec
        status = netsim("lab", "status", name, check=False)
        assert "not running" not in status.stdout + status.stderr, status.stdout
    finally:
        for p in helpers:
            p.kill()
            p.wait()
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


def test_list_and_down_all_cover_every_lab_of_the_state_directory_and_nothing_else(tmp_path: Path) -> None:
    require_root("iptables-restore", "iptables-save", "setpriv", "ss")
    env = {**os.environ, "NETSIM_LAB_RUN_DIR": str(tmp_path / "run")}  # never the labs of other users
    names = [f"nl{uuid.uuid4().hex[:6]}" for _ in range(2)]
    bystander = f"nb{uuid.uuid4().hex[:6]}"
    pids: list[int] = []
    subprocess.run(["ip", "netns", "add", bystander], check=True)  # not netsim's: down --all leaves it
    try:
        assert netsim("lab", "list", env=env).stdout.startswith("no labs")
        demo = tmp_path / "pod.yaml"
        demo.write_text((EXAMPLE / "pod.yaml").read_text().replace("namespace: default", "namespace: demo"))
        for n in names:
            up = netsim("lab", "up", "--pod", str(demo), "--name", n, env=env).stdout
            assert "namespace demo" in up, up
        # the search list follows the manifest's namespace
        resolv = Path(f"/etc/netns/{names[0]}/resolv.conf").read_text()
        assert "search demo.svc.cluster.local svc.cluster.local cluster.local" in resolv, resolv
        rows = json.loads(netsim("lab", "list", "--format", "json", env=env).stdout)
        assert [(r["name"], r["pod"], r["namespace"], r["healthy"]) for r in rows] == \
            [(n, "web", "demo", True) for n in sorted(names)]
        assert all(0 <= r["age_seconds"] < 120 for r in rows)
        text = netsim("lab", "list", env=env).stdout.splitlines()
        assert text[0].split() == ["NAME", "POD", "AGE", "HEALTH"] and len(text) == 3
        assert all(ln.split()[1] == "demo/web" and ln.endswith("healthy") for ln in text[1:])
        # an explicit --namespace wins, and says so
        again = netsim("lab", "up", "--pod", str(demo), "--name", names[0], "--namespace", "other", check=False,
                       env=env)
        assert again.stdout.startswith(f"namespace other (from --namespace; {demo} says demo)\n"), again.stdout
        pids = [p for n in names for p in json.loads((tmp_path / "run" / n / "state.json").read_text())["resources"]
                if p["kind"] == "process" for p in [p["pid"]]]
        down = netsim("lab", "down", "--all", env=env).stdout
        assert down.splitlines() == [f"lab {n} down" for n in sorted(names)]
        assert netsim("lab", "list", env=env).stdout.startswith("no labs")
        assert Path(f"/run/netns/{bystander}").exists()
    finally:
        netsim("lab", "down", "--all", env=env, check=False)
        subprocess.run(["ip", "netns", "del", bystander], check=False)
    for n in names:
        assert not Path(f"/run/netns/{n}").exists() and not Path(f"/etc/netns/{n}").exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
