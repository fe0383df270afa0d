"""The lab as a user keeps track of it, without root: the manifest's namespace, ``list`` and ``down --all``,
``exec``'s signals and status, ``verify``'s progress line, the relays' two records, the cluster DNS stand-in's
answers, and one ``Error:`` line naming the extra for a missing optional dependency."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from lab_helpers import EXAMPLE, REPO, exit_on_signal, run_cli, run_root_fixture  # noqa: F401  (the run_root fixture)

from netsim.commands import progress
from netsim.commands.progress import ProgressLine
from netsim.dns.resolve import Forward, Reply, make_query, resolve
from netsim.k8s import parse_objects
from netsim.lab import cli as lab_cli
from netsim.lab import listeners
from netsim.lab import runner as runner_mod
from netsim.lab import state as st
from netsim.lab.clusterdns import answer, kube_dns_view
from netsim.lab.control import LabSpec, up
from netsim.lab.inputs import lab_spec
from netsim.lab.runner import RecordingRunner

# --- the manifest's namespace -----------------------------------------------------------------------------

def demo_pod(tmp_path: Path, namespace: str | None) -> Path:
    text = (EXAMPLE / "pod.yaml").read_text()
    text = text.replace("  namespace: default\n", f"  namespace: {namespace}\n" if namespace else "")
    pod = tmp_path / "pod.yaml"
    pod.write_text(text)
    return pod


def test_up_takes_the_namespace_from_the_manifest(tmp_path: Path) -> None:
    spec = lab_spec(str(demo_pod(tmp_path, "demo")))
    assert spec.dns.namespace == "demo" and spec.notes == ()
    assert spec.search[0] == "demo.svc.cluster.local" and "search demo.svc.cluster.local " in spec.resolv_conf()
    assert lab_spec(str(demo_pod(tmp_path, None))).dns.namespace == "default"  # none named: kubectl's default


def test_an_explicit_namespace_wins_and_says_so(tmp_path: Path) -> None:
    pod = demo_pod(tmp_path, "demo")
    spec = lab_spec(str(pod), namespace="other")
    assert spec.dns.namespace == "other" and spec.search[0] == "other.svc.cluster.local"
    assert spec.notes == (f"namespace other (from --namespace; {pod} says demo)",)
    assert lab_spec(str(pod), namespace="demo").notes == ()  # the same as the manifest's: nothing to say
    assert lab_spec(str(pod), namespace="other").digest == spec.digest  # the note is not an input


# --- list and down --all ----------------------------------------------------------------------------------

def test_list_shows_every_recorded_lab_with_pod_age_and_health(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str],
                                                              run_root: Path) -> None:
    r = RecordingRunner()
    monkeypatch.setattr(lab_cli, "_runner", lambda: r)
    code, out, _ = run_cli(["lab", "list"], capsys)
    assert (code, out) == (0, f"no labs (nothing recorded in {run_root})\n")
    dead = up(r, LabSpec(name="b2", pod="web")).state.of(st.Process)[-1]
    up(r, LabSpec(name="a1", pod="api"))
    r.processes.discard((dead.pid, dead.start_time))  # b2's last process died
    code, out, _ = run_cli(["lab", "list"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["NAME", "POD", "AGE", "HEALTH"]
    assert lines[1].split()[:3] == ["a1", "default/api", "0s"] and lines[1].endswith("healthy")
    assert lines[2].split()[:2] == ["b2", "default/web"] and "is not running" in lines[2]
    code, out, _ = run_cli(["lab", "list", "--format", "json"], capsys)
    rows = json.loads(out)
    assert [(x["name"], x["pod"], x["healthy"]) for x in rows] == [("a1", "api", True), ("b2", "web", False)]


def test_down_all_removes_every_recorded_lab_and_only_those(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], run_root: Path) -> None:
    r = RecordingRunner()
    monkeypatch.setattr(lab_cli, "_runner", lambda: r)
    up(r, LabSpec(name="b2"))
    up(r, LabSpec(name="a1"))
    r.namespaces["someone-elses"] = 1
    code, out, _ = run_cli(["lab", "down", "--all"], capsys)
    assert (code, out) == (0, "lab a1 down\nlab b2 down\n")
    assert r.namespaces == {"someone-elses": 1} and r.processes == set()
    code, out, _ = run_cli(["lab", "down", "--all"], capsys)
    assert (code, out) == (0, f"no labs (nothing recorded in {run_root}); nothing to do\n")
    for argv in (["lab", "down"], ["lab", "down", "a1", "--all"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and err.startswith("Error: give a lab NAME or --all")


# --- exec ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 7), (signal.SIGINT, 8), (signal.SIGHUP, 9)])
def test_exec_passes_signals_on_and_returns_the_commands_status(sig: signal.Signals, code: int) -> None:
    runner = ("import sys; from netsim.lab.cli import run_forwarding_signals; "
              "sys.exit(run_forwarding_signals(sys.argv[1:]))")
    assert exit_on_signal([sys.executable, "-c", runner], sig, code) == code


def test_exec_reports_a_command_killed_by_a_signal_as_a_shell_does() -> None:
    assert lab_cli.run_forwarding_signals(["sh", "-c", "exit 5"]) == 5
    assert lab_cli.run_forwarding_signals(["sh", "-c", "kill -KILL $$"]) == 128 + 9


# --- verify's progress line ------------------------------------------------------------------------------

def test_the_progress_line_is_written_only_to_a_terminal_and_erased_at_the_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(10**6))  # a clock 1 ms per reading: a loaded machine must not widen the interval
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: 100.0 + next(ticks) / 1000))
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w") as tty:
        line = ProgressLine(tty, "verify", "probes sent and traced")
        line(25, 1000)
        line(26, 1000)  # within the interval: not redrawn
        line(1000, 1000)  # the last one always is
        line.done()
    expected = (b"\rverify: 25/1000 probes sent and traced\rverify: 1000/1000 probes sent and traced"
                b"\r\x1b[K")
    seen = b""
    while len(seen) < len(expected):  # a pty may hand the bytes over in more than one read
        chunk = os.read(leader, 4096)
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert seen == expected
    read, write = os.pipe()
    with os.fdopen(write, "w") as pipe:
        quiet = ProgressLine(pipe, "verify", "probes sent and traced")
        quiet(1, 2)
        quiet.done()
    with os.fdopen(read) as got:
        assert got.read() == ""


# --- the relays' two records -----------------------------------------------------------------------------

def relay_once(monkeypatch: pytest.MonkeyPatch, client_port: int = 0,
               probe_sports: range = range(0)) -> list[dict[str, Any]]:
    """One connection through :func:`listeners.handle` on loopback (``transparent``: the accepted socket's own
    address is the original destination, so no NAT is needed), its records as the log would hold them."""
    out: list[dict[str, Any]] = []
    monkeypatch.setattr(listeners, "emit", out.append)
    target = socket.create_server(("127.0.0.1", 0))
    port = target.getsockname()[1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    client.bind(("127.0.0.1", client_port))
    client.connect(("127.0.0.1", port))
    conn, _ = target.accept()
    relay = threading.Thread(target=listeners.handle, args=(conn, port, "original", True, probe_sports))
    relay.start()
    upstream, _ = target.accept()  # the relay's own dial to the original destination (this listener)
    upstream.close()
    client.close()
    relay.join(5)
    target.close()
    return out


def test_a_relay_logs_the_accept_at_once_then_the_dial_as_a_second_record(monkeypatch: pytest.MonkeyPatch) -> None:
    accepted, dialed = relay_once(monkeypatch)
    assert accepted["stage"] == "accept" and dialed["stage"] == "dial" and accepted["conn"] == dialed["conn"]
    assert accepted["original_dst"] == dialed["original_dst"] == accepted["local"]
    assert "result" not in accepted and dialed["result"] == "relayed"
    assert "probe" not in accepted and "probe" not in dialed


def test_a_relay_marks_a_peer_from_the_probe_source_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a free port to stand in for one of lab verify's probe source ports
        s.bind(("127.0.0.1", 0))
        sport = s.getsockname()[1]
    records = relay_once(monkeypatch, sport, listeners.port_range(f"{sport}-{sport}"))
    assert [r.get("probe") for r in records] == [True, True]
    assert listeners.port_range("20000-29999") == range(20000, 30000)


# --- the cluster DNS stand-in ----------------------------------------------------------------------------

OBJECTS = """\
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: demo, annotations: {networking.istio.io/exportTo: "."}}
spec:
  clusterIPs: [10.96.0.20, "fd00:96::20"]
  ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP}, {port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: demo}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: 15432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: demo, labels: {app: db}}
spec: {hostname: db-0, subdomain: db, containers: [{name: c, image: x}]}
status: {podIP: 10.244.1.7}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: demo, labels: {app: db}}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.244.1.8}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: demo}
spec: {hosts: [se.example.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}
"""


def ask(name: str, qtype: str = "A") -> tuple[str, list[str], int]:
    import dnslib

    view = kube_dns_view(parse_objects(OBJECTS, "objects.yaml").objects)
    query = make_query(name, getattr(dnslib.QTYPE, qtype), qid=9)
    decision = resolve(query, view.lookup)
    if isinstance(decision, Reply):
        wire = decision.wire
    else:
        assert isinstance(decision, Forward)
        wire = answer(view, decision)[0]
    msg = dnslib.DNSRecord.parse(wire)
    return dnslib.RCODE[msg.header.rcode], [str(rr.rdata) for rr in msg.rr], len(msg.auth)


def test_the_cluster_dns_answers_services_as_kube_dns() -> None:
    assert ask("backend.demo.svc.cluster.local.") == ("NOERROR", ["10.96.0.20"], 0)  # exportTo is Istio's
    assert ask("backend.demo.svc.cluster.local.", "AAAA") == ("NOERROR", ["fd00:96::20"], 0)
    assert ask("BACKEND.demo.svc.cluster.local.")[1] == ["10.96.0.20"]
    assert ask("_http._tcp.backend.demo.svc.cluster.local.", "SRV") == (
        "NOERROR", ["0 100 80 backend.demo.svc.cluster.local."], 0)
    assert ask("_dns._udp.backend.demo.svc.cluster.local.", "SRV")[1] == ["0 100 53 backend.demo.svc.cluster.local."]


def test_the_cluster_dns_answers_a_headless_service_and_its_pods() -> None:
    assert sorted(ask("db.demo.svc.cluster.local.")[1]) == ["10.244.1.7", "10.244.1.8"]
    assert ask("db-0.db.demo.svc.cluster.local.")[1] == ["10.244.1.7"]  # hostname + subdomain
    assert ask("10-244-1-8.db.demo.svc.cluster.local.")[1] == ["10.244.1.8"]  # no subdomain: its address
    assert sorted(ask("_pg._tcp.db.demo.svc.cluster.local.", "SRV")[1]) == [
        "0 50 15432 10-244-1-8.db.demo.svc.cluster.local.", "0 50 15432 db-0.db.demo.svc.cluster.local."]


def test_other_cluster_names_get_nxdomain_and_nothing_is_forwarded() -> None:
    assert ask("nope.demo.svc.cluster.local.") == ("NXDOMAIN", [], 1)  # with the zone's SOA
    assert ask("backend.default.svc.cluster.local.")[0] == "NXDOMAIN"
    assert ask("se.example.com.demo.svc.cluster.local.")[0] == "NXDOMAIN"  # a search-list name
    assert ask("demo.svc.cluster.local.") == ("NOERROR", [], 1)  # an ancestor of a name: it exists
    assert ask("backend.demo.svc.cluster.local.", "TXT") == ("NOERROR", [], 1)
    assert ask("_http._tcp.db.demo.svc.cluster.local.", "SRV")[0] == "NXDOMAIN"
    assert ask("se.example.com.") == ("REFUSED", [], 0)  # not the cluster's: refused at once
    assert ask("cluster.local.example.") == ("REFUSED", [], 0)


# --- a missing optional dependency ----------------------------------------------------------------------

def without(module: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``module`` made unimportable, as when its extra is not installed."""
    prelude = f"import sys; sys.modules[{module!r}] = None\nfrom netsim.cli import main\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=REPO,
                          check=False, timeout=60)


@pytest.mark.parametrize("argv", [["lab", "up", "--pod", "lab/example/pod.yaml"], ["lab", "status", "x"],
                                  ["lab", "list"], ["lab", "down", "--all"]])
def test_a_lab_command_without_pyroute2_is_one_line_naming_the_lab_extra(argv: list[str]) -> None:
    done = without("pyroute2", f"main({argv!r})")
    assert (done.returncode, done.stderr) == (
        2, "Error: the lab needs pyroute2, which is not installed: pip install 'netsim[lab]'\n")


def test_trace_pcap_without_scapy_is_one_line_naming_the_pcap_extra(tmp_path: Path) -> None:
    pcap = tmp_path / "x.pcap"
    pcap.write_bytes(b"")
    done = without("scapy", f"main(['trace', '--pod', 'lab/example/pod.yaml', '--pcap', {str(pcap)!r}])")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: ") and "pip install 'netsim[pcap]'" in done.stderr


def test_any_command_that_needs_a_missing_extra_is_one_line_naming_it() -> None:
    # a command whose module needs uvloop outright (the agent itself falls back to asyncio's loop)
    done = without("uvloop", "import netsim.cli as c\nc._COMMANDS['fast'] = ('uvloop:run', 'x')\nmain(['fast'])")
    assert (done.returncode, done.stderr) == (
        2, "Error: uvloop is not installed; this command needs it: pip install 'netsim[fast]'\n")
    done = without("yaml", "main(['compile', '--pod', 'lab/example/pod.yaml'])")  # a required one: a bug, loud
    assert done.returncode == 1 and "Traceback" in done.stderr


def test_the_agent_falls_back_to_asyncios_loop_without_uvloop() -> None:
    done = without("uvloop", "from netsim.dns.server import loop_factory; print(loop_factory())")
    assert done.stdout.strip() == "None" and done.returncode == 0


def test_up_without_the_lab_extra_names_it_before_checking_anything_else(monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(runner_mod.os, "geteuid", lambda: 1000)  # not root either: the extra is named first
    start = time.monotonic()
    code, _, err = run_cli(["lab", "up", "--pod", str(EXAMPLE / "pod.yaml")], capsys)
    assert (code, err) == (2, "Error: the lab needs pyroute2, which is not installed: pip install 'netsim[lab]'\n")
    assert time.monotonic() - start < 5
