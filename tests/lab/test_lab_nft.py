"""An nft lab on a real kernel (root): ``lab up --backend nft`` loads Istio's native nftables rules with
``nft -f``; ``lab verify`` reads ``nft monitor trace`` and agrees with netsim's ``--format nft-trace`` step for
step on every bundled example (``rules/*/pod.yaml``) and on a dual-stack TPROXY pod; ``status`` and ``down``
handle it.

Every namespace is created by the lab under a unique name and removed in ``finally``; nothing touches the
host namespace.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import require_root
from test_lab_root import (
    POD_IP,
    PY,
    TPROXY_POD,
    assert_nothing_left,
    in_ns,
    log_records,
    netsim,
    recorded_pids,
    wait_record,
)

from netsim.lab.control import nft_identity
from netsim.lab.inputs import lab_spec
from netsim.lab.state import run_dir
from netsim.lab.verify import NFT_TRACE_RULES

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"
EXAMPLES = sorted(p.parent.name for p in RULES.glob("*/pod.yaml"))
PROBES = 30  # per family

pytestmark = pytest.mark.root


def _nft_listing(name: str) -> str:
    return subprocess.run(["ip", "netns", "exec", name, "nft", "list", "ruleset"], capture_output=True, text=True,
                          check=True).stdout


def _up_verify_down(pod: Path) -> None:
    require_root("nft", "stdbuf", "setpriv", "ss")
    name = f"nn{uuid.uuid4().hex[:6]}"
    pids: list[int] = []
    try:
        up = netsim("lab", "up", "--pod", str(pod), "--name", name, "--backend", "nft")
        assert f"lab {name} up" in up.stdout and "nftables rules" in up.stdout, up.stdout
        pids = recorded_pids(name)
        listing = _nft_listing(name)
        assert "table inet istio-proxy-nat" in listing
        assert "table ip " not in listing and "table ip6 " not in listing  # no iptables-nft tables at all
        state = json.loads((run_dir(name) / "state.json").read_text())
        assert state["info"]["backend"] == "nft"

        done = netsim("lab", "verify", name, "--probes", str(PROBES), "--format", "json", check=False, timeout=300)
        report = json.loads(done.stdout)
        differ = [r for r in report["results"] if not r["agreed"]]
        assert done.returncode == 0 and not differ, json.dumps(differ[:3], indent=1)
        families = sorted(f"ipv{i.version}" for i in lab_spec(str(pod)).pod_ips)
        assert report["backend"] == "nft" and not report["unsent"]
        assert sorted(report["families"]) == families and report["probes"] == PROBES * len(families)
        # every probe passes a base chain of Istio's tables, so the kernel traced each one: agreement is not
        # two empty traces
        assert all(r["kernel"] for r in report["results"]), [r["probe"] for r in report["results"] if not r["kernel"]]
        assert nft_identity(_nft_listing(name)) == nft_identity(listing)  # verify's trace table is gone again

        status = netsim("lab", "status", name, "--format", "json")
        body = json.loads(status.stdout)
        assert body["healthy"] and body["info"]["backend"] == "nft", body["problems"]
        assert list(body["rules"]) == ["nft"] and "istio-proxy-nat" in body["rules"]["nft"]
        # verify took its monitor out of the record again, status changed nothing: the record is up's
        assert json.loads((run_dir(name) / "state.json").read_text()) == state
    finally:
        down = netsim("lab", "down", name, check=False)
        assert down.returncode == 0, down.stderr
        assert_nothing_left(name, pids)


@pytest.mark.parametrize("example", EXAMPLES)
def test_an_nft_lab_of_each_bundled_example_verifies_with_no_mismatch(example: str) -> None:
    _up_verify_down(RULES / example / "pod.yaml")


def test_an_nft_lab_of_a_dual_stack_tproxy_pod_verifies_both_families(tmp_path: Path) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text(TPROXY_POD)
    _up_verify_down(pod)


def test_an_nft_labs_status_sees_a_changed_rule_and_up_with_the_other_backend_is_refused() -> None:
    require_root("nft", "setpriv", "ss")
    name = f"nn{uuid.uuid4().hex[:6]}"
    pod = str(RULES / "tproxy" / "pod.yaml")
    pids: list[int] = []
    try:
        netsim("lab", "up", "--pod", pod, "--name", name, "--backend", "nft")
        pids = recorded_pids(name)
        again = netsim("lab", "up", "--pod", pod, "--name", name, "--backend", "nft")
        assert "is already up; nothing changed" in again.stdout
        other = netsim("lab", "up", "--pod", pod, "--name", name, check=False)
        assert other.returncode == 2 and "is up from other inputs" in other.stderr, other.stderr
        # a verify killed midway leaves its trace table: status says so, the next verify removes it first
        subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], input=NFT_TRACE_RULES, text=True, check=True)
        assert netsim("lab", "status", name, check=False).returncode == 1
        done = netsim("lab", "verify", name, "--probes", "10", check=False)
        assert done.returncode == 0 and "agreement: 10/10 probes" in done.stdout, done.stdout + done.stderr
        assert netsim("lab", "status", name).returncode == 0
        subprocess.run(["ip", "netns", "exec", name, "nft", "add", "rule", "inet", "istio-proxy-nat", "istio-output",
                        "counter", "return"], check=True)
        status = netsim("lab", "status", name, check=False)
        assert status.returncode == 1
        assert status.stdout.splitlines()[0] == (f"lab {name}: the nftables rules differ from what up loaded "
                                                 "(1 line added)"), status.stdout
        assert "--- nft rules (nft list ruleset)" in status.stdout
    finally:
        down = netsim("lab", "down", name, check=False)
        assert down.returncode == 0, down.stderr
        assert_nothing_left(name, pids)


def test_nft_before_1_27_and_a_bad_backend_are_one_line_exit_2_and_leave_nothing() -> None:
    require_root("nft", "setpriv")
    name = f"nn{uuid.uuid4().hex[:6]}"
    pod = str(RULES / "mtls-503" / "pod.yaml")
    old = netsim("lab", "up", "--pod", pod, "--name", name, "--backend", "nft", "--istio-version", "1.2", check=False)
    assert (old.returncode, old.stderr) == (2, "Error: --backend nft: Istio 1.2 wrote no nftables rules "
                                               "(istio-iptables' nftables backend came in 1.27); leave out --backend "
                                               "nft\n")
    bad = netsim("lab", "up", "--pod", pod, "--name", name, "--backend", "bpf", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "'bpf' is not one of 'iptables', 'nft'" in bad.stderr
    assert_nothing_left(name, [])


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_a_tproxy_labs_15006_survives_a_connection_to_itself_and_verify_leaves_the_lab_healthy(backend: str) -> None:
    """A connection from the node to the pod's own 15006 is TPROXYed to the inbound relay, whose upstream would
    be that same 15006 again: the relay refuses it (Envoy's inbound listener has no route for its own port)
    instead of relaying to itself until it runs out of descriptors and dies, after which the kernel's tproxy
    finds no socket and nft's trace no longer matches. And verify leaves no table behind that up did not make."""
    require_root("nft", "stdbuf", "setpriv", "ss")
    name = f"nn{uuid.uuid4().hex[:6]}"
    pids: list[int] = []
    try:
        netsim("lab", "up", "--pod", str(RULES / "tproxy" / "pod.yaml"), "--name", name, "--backend", backend)
        pids = recorded_pids(name)
        for _ in range(3):
            subprocess.run(in_ns(f"{name}-node", PY, "-c", LOOP_CLIENT, POD_IP, "15006"), check=True, timeout=30)
        rec = wait_record(run_dir(name) / "listener-15006.log", lambda r: r.get("stage") == "dial")
        assert rec["result"] == "refused: the original destination is this listener (would loop)", rec
        assert len([r for r in log_records(run_dir(name) / "listener-15006.log") if r.get("stage") == "accept"]) == 3
        done = netsim("lab", "verify", name, "--probes", "20", check=False)
        assert done.returncode == 0 and "agreement: 20/20 probes" in done.stdout, done.stdout + done.stderr
        status = netsim("lab", "status", name, check=False)
        assert status.returncode == 0, status.stdout.splitlines()[0]
    finally:
        down = netsim("lab", "down", name, check=False)
        assert down.returncode == 0, down.stderr
        assert_nothing_left(name, pids)


# connect, wait for the relay to close the connection (it must not hang on a relay to itself)
LOOP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
assert c.recv(10) == b""
"""
