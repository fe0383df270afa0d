"""``up``/``down`` through the recording runner: what ``up`` would run, that ``down`` undoes exactly that,
idempotency, crash recovery, and that a failing ``up`` leaves nothing behind. No root needed."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import IPv4Interface, IPv6Interface, ip_network
from pathlib import Path

import pytest
from lab_helpers import run_root_fixture  # noqa: F401  (the run_root fixture)

from netsim.errors import LabError
from netsim.lab import state as st
from netsim.lab.control import DnsAgent, LabSpec, down, up, up_plan
from netsim.lab.runner import (
    AddrAdd,
    Command,
    Exec,
    Kill,
    KillNamespace,
    LinkUp,
    Listening,
    NetnsAdd,
    NetnsDel,
    Outcome,
    RecordingRunner,
    RemovePath,
    Restore,
    RouteAdd,
    RuleAdd,
    Spawn,
    VethAdd,
    WriteFile,
)
from netsim.netfilter.model import Family

RULES = ("*nat\n-N ISTIO_REDIRECT\n-A OUTPUT -p tcp -j ISTIO_REDIRECT\n"
         "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n")


def reads_rules(c: Command | Restore) -> bool:
    """``iptables-save``/``ip6tables-save`` in a lab namespace: what health reads, changing nothing."""
    return isinstance(c, Exec) and c.argv[0].endswith("tables-save")


def spec(name: str = "t1", **kw: object) -> LabSpec:
    return replace(LabSpec(name=name, rules_v4=RULES, dns=DnsAgent(configs=(Path("/x/se.yaml"),))), **kw)


def test_up_creates_two_namespaces_a_veth_between_them_and_nothing_in_the_host(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec())
    netlink = [c for c in r.log if isinstance(c, NetnsAdd | VethAdd | LinkUp | AddrAdd | RouteAdd | RuleAdd)]
    assert netlink[:2] == [NetnsAdd("t1-node"), NetnsAdd("t1")]
    assert VethAdd(netns="t1-node", ifname="vpod0", peer_netns="t1", peer_ifname="eth0") in netlink
    for c in netlink[2:]:
        assert getattr(c, "netns", None) in ("t1", "t1-node"), c  # every link/addr/route names a lab namespace
    assert AddrAdd(netns="t1", ifname="eth0", address=IPv4Interface("10.244.0.5/24")) in netlink
    assert AddrAdd(netns="t1-node", ifname="vpod0", address=IPv4Interface("10.244.0.1/24")) in netlink
    default = RouteAdd(netns="t1", dst=ip_network("0.0.0.0/0"), gateway=IPv4Interface("10.244.0.1/24").ip, dev="eth0")
    assert default in netlink


def test_up_restores_rules_then_writes_resolv_conf_and_starts_agent_and_listeners(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec())
    assert Restore("t1", Family.IPV4, RULES) in r.log
    writes = [c for c in r.log if isinstance(c, WriteFile)]
    assert [w.path.name for w in writes] == ["resolv.conf"]
    assert writes[0].text.splitlines()[0] == "nameserver 10.96.0.10"
    spawns = [c for c in r.log if isinstance(c, Spawn)]
    assert [c.netns for c in spawns] == ["t1"] * 3 + ["t1-node"]
    # every process starts as root (it must read netsim wherever it is installed) and drops privileges itself
    assert all((c.uid, c.gid) == (None, None) for c in spawns)
    dns, out, inb, cluster = (c.argv for c in spawns)
    assert dns[-12:] == ("--namespace", "default", "--config", "/x/se.yaml", "--listen", "127.0.0.1:15053",
                         "--upstream", "10.96.0.10:53", "--user", "1337", "--group", "1337")
    assert out[-10:] == ("--port", "15001", "--dial", "original", "--user", "1337", "--group", "1337",
                         "--probe-sports", "20000-29999")
    assert inb[-10:-6] == ("--port", "15006", "--dial", "app")
    # the cluster DNS stand-in: the same Services, at the pod's nameserver address, in the node namespace
    assert cluster[-10:] == ("--namespace", "default", "--user", "65534", "--group", "65534", "--config",
                             "/x/se.yaml", "--listen", "10.96.0.10")
    assert AddrAdd(netns="t1-node", ifname="lo", address=IPv4Interface("10.96.0.10/32")) in r.log


def test_before_1_3_one_relay_on_15001_takes_both_directions_by_destination(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec(proxy_port=15001, inbound_port=15001))
    listeners = [c.argv for c in r.log if isinstance(c, Spawn) and "--port" in c.argv]
    assert len(listeners) == 1, listeners
    (argv,) = listeners
    assert argv[argv.index("--port"):argv.index("--port") + 6] == ("--port", "15001", "--dial", "by-destination",
                                                                   "--local", "10.244.0.5")


def test_down_undoes_exactly_what_up_made_in_reverse(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec())
    made = list(r.log)
    r.log.clear()
    assert down(r, "t1")
    # the recorder numbers what it makes: namespaces 1001 (node), 1002 (pod), processes 1003..1006
    assert len([c for c in made if isinstance(c, Spawn)]) == 4
    assert [c for c in r.log if isinstance(c, Kill)] == [Kill(1006, 7), Kill(1005, 7), Kill(1004, 7), Kill(1003, 7)]
    assert [c for c in r.log if isinstance(c, KillNamespace)] == [KillNamespace("t1", 1002),
                                                                 KillNamespace("t1-node", 1001)]
    removed = [c.path.name for c in r.log if isinstance(c, RemovePath)]
    assert removed == ["cluster-dns.log", "listener-15006.log", "listener-15001.log", "dns.log", "resolv.conf", "t1"]
    assert [c for c in r.log if isinstance(c, NetnsDel)] == [NetnsDel("t1", 1002), NetnsDel("t1-node", 1001)]
    # the recorder's world is empty again, and so is the run directory
    assert r.namespaces == {} and r.processes == set() and r.files == set()
    assert not (run_root / "t1").exists()


def test_down_is_idempotent_and_a_missing_lab_is_not_an_error(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec())
    assert down(r, "t1")
    r.log.clear()
    assert not down(r, "t1")
    assert r.log == []


def test_up_twice_with_the_same_inputs_changes_nothing(run_root: Path) -> None:
    r = RecordingRunner()
    first = up(r, spec())
    r.log.clear()
    second = up(r, spec())
    assert first.changed and not second.changed
    assert [c for c in r.log if not reads_rules(c)] == []  # not a single mutating command


def test_up_with_other_inputs_while_up_is_an_error_and_changes_nothing(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec())
    r.log.clear()
    with pytest.raises(LabError, match="is up from other inputs; run `netsim lab down t1` first"):
        up(r, spec(rules_v4=RULES.replace("15001", "15002")))
    assert [c for c in r.log if not reads_rules(c)] == []


def test_up_after_the_processes_were_killed_tears_down_and_rebuilds(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec())
    r.crash()
    r.log.clear()
    result = up(r, spec())
    assert result.changed and "is not running" in result.note
    kinds = [type(c).__name__ for c in r.log]
    assert kinds.index("NetnsDel") < kinds.index("NetnsAdd")  # old lab removed before the new one
    assert len(r.processes) == 4 and set(r.namespaces) == {"t1", "t1-node"}


@pytest.mark.parametrize("fail_at", ["veth", "restore", "listener"])
def test_a_failing_up_removes_everything_it_made(run_root: Path, fail_at: str) -> None:
    plan = up_plan(spec())
    target: Command | Restore = {
        "veth": next(s.action for s in plan if isinstance(s.action, VethAdd)),
        "restore": next(s.action for s in plan if isinstance(s.action, Restore)),
        "listener": [s.action for s in plan if isinstance(s.action, Spawn)][-1],
    }[fail_at]
    r = RecordingRunner(fail_on=target)
    with pytest.raises(LabError, match="recorded failure"):
        up(r, spec())
    assert r.namespaces == {} and r.processes == set() and r.files == set()
    assert st.load("t1") is None and not (run_root / "t1").exists()


def test_a_name_already_used_by_something_else_is_refused_before_anything_is_made(run_root: Path) -> None:
    r = RecordingRunner(namespaces={"t1-node": 42})
    with pytest.raises(LabError, match="network namespace t1-node already exists and netsim lab did not create it"):
        up(r, spec())
    assert r.log == [] and r.namespaces == {"t1-node": 42}


class CrashAt(RecordingRunner):
    """Checks the record on disk at the moment a command runs (the intent log), then dies like SIGKILL."""

    def __init__(self, at: Command) -> None:
        super().__init__()
        self.at = at
        self.seen: st.LabState | None = None

    def run(self, command: Command) -> Outcome:
        if command == self.at:
            self.seen = st.load("t1")
            raise SystemExit("killed")
        return super().run(command)


def test_every_resource_is_recorded_before_it_is_created(run_root: Path) -> None:
    r = CrashAt(NetnsAdd("t1"))
    with pytest.raises(SystemExit):
        up(r, spec())
    assert r.seen is not None
    assert st.Namespace("t1") in r.seen.resources  # recorded (inode unknown yet) before creation
    assert r.namespaces == {}  # and the failure path removed the node namespace made before it


def test_down_finishes_a_lab_whose_up_was_killed(run_root: Path) -> None:
    r = RecordingRunner()
    steps = up_plan(spec())
    state = st.LabState(name="t1", digest="x")
    st.save(state)
    # replay the first half of up by hand, as if the process died there
    from netsim.lab.control import _execute

    _execute(r, state, steps[: len(steps) // 2])
    assert r.namespaces
    assert down(r, "t1")
    assert r.namespaces == {} and r.files == set()


def test_state_round_trips_through_json(run_root: Path) -> None:
    r = RecordingRunner()
    made = up(r, spec(pod_ips=(IPv4Interface("10.244.0.5/24"), IPv6Interface("fd00::5/64")),
                      node_ips=(IPv4Interface("10.244.0.1/24"), IPv6Interface("fd00::1/64")),
                      rules_v6=RULES)).state
    text = (run_root / "t1" / "state.json").read_text()
    assert st.from_json(text, "x") == made
    assert json.loads(text)["complete"] is True


def test_ipv6_pod_gets_a_v6_default_route_and_a_v6_dns_listener(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec(pod_ips=(IPv4Interface("10.244.0.5/24"), IPv6Interface("fd00::5/64")),
               node_ips=(IPv4Interface("10.244.0.1/24"), IPv6Interface("fd00::1/64")), rules_v6=RULES))
    assert RouteAdd(netns="t1", dst=ip_network("::/0"), gateway=IPv6Interface("fd00::1/64").ip, dev="eth0") in r.log
    assert Restore("t1", Family.IPV6, RULES) in r.log
    dns = next(c for c in r.log if isinstance(c, Spawn))
    assert "[::1]:15053" in dns.argv


def test_unreadable_state_is_one_line_error(run_root: Path) -> None:
    (run_root / "t1").mkdir(parents=True)
    (run_root / "t1" / "state.json").write_text("{not json")
    with pytest.raises(LabError, match=r"state.json: unreadable lab state"):
        st.load("t1")


def test_without_services_the_agent_gets_an_empty_table_file_that_down_removes(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec(dns=DnsAgent()))
    empty = run_root / "t1" / "no-services.yaml"
    assert WriteFile(empty, "# netsim lab: no --services given; the agent knows no names and forwards every "
                            "query\napiVersion: v1\nkind: List\nitems: []\n") in r.log
    dns = next(c for c in r.log if isinstance(c, Spawn))
    assert ("--config", str(empty)) == dns.argv[dns.argv.index("--config"):][:2]
    down(r, "t1")
    assert RemovePath(empty) in r.log and r.files == set()


def test_up_upstream_replaces_the_pod_nameservers_as_the_agents_upstream(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec(dns=DnsAgent(configs=(Path("/x/se.yaml"),), upstreams=("192.0.2.53:5353", "[fd00::53]:53"))))
    dns = next(c for c in r.log if isinstance(c, Spawn)).argv
    assert [dns[i + 1] for i, a in enumerate(dns) if a == "--upstream"] == ["192.0.2.53:5353", "[fd00::53]:53"]


class NeverListens(RecordingRunner):
    """Every process starts but never binds; with ``dies``, it is gone at the first look."""

    def __init__(self, dies: bool) -> None:
        super().__init__()
        self.dies = dies

    def run(self, command: Command) -> Outcome:
        if isinstance(command, Listening):
            if self.dies:
                self.crash()
            return Outcome(truth=False)
        return super().run(command)


def test_an_agent_that_exits_during_start_up_fails_up_with_its_last_log_line(run_root: Path) -> None:
    r = NeverListens(dies=True)
    log = run_root / "t1" / "dns.log"
    with pytest.raises(LabError, match=rf"^dns exited during start-up: no log at {log}$"):
        up(r, spec())
    assert r.namespaces == {} and r.files == set() and st.load("t1") is None


def test_an_agent_that_never_listens_fails_up_naming_its_port_and_log(run_root: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from netsim.lab import control

    monkeypatch.setattr(control, "READY_TIMEOUT_SECONDS", 0.0)
    r = NeverListens(dies=False)
    with pytest.raises(LabError, match=rf"^dns did not listen on port 15053 within 0s: see {run_root}/t1/dns.log$"):
        up(r, spec())
    assert r.namespaces == {} and r.processes == set() and st.load("t1") is None


def test_an_etc_netns_directory_the_lab_did_not_make_is_refused(run_root: Path) -> None:
    from netsim.lab import control

    (control.ETC_NETNS / "t1").mkdir(parents=True)
    r = RecordingRunner()
    with pytest.raises(LabError, match=r"etc-netns/t1 already exists and netsim lab did not create it; choose another"):
        up(r, spec())
    assert r.log == [] and (control.ETC_NETNS / "t1").is_dir()


def test_a_failing_down_keeps_the_record_and_a_second_down_finishes(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec())
    r.fail_on = Kill(1005, 7)
    with pytest.raises(LabError, match=rf"^lab t1: recorded failure of Kill \(record kept in {run_root}/t1\)$"):
        down(r, "t1")
    assert r.namespaces == {}  # everything else was still removed
    assert st.load("t1") is not None
    r.fail_on = None
    assert down(r, "t1") and st.load("t1") is None


def test_a_state_file_of_another_version_is_refused(run_root: Path) -> None:
    (run_root / "t1").mkdir(parents=True)
    (run_root / "t1" / "state.json").write_text('{"version": 2}')
    with pytest.raises(LabError, match=r"state.json: state version 2, expected 1$"):
        st.load("t1")


def test_status_health_compares_the_rules_with_what_up_loaded(run_root: Path) -> None:
    from netsim.lab.control import health, rules_identity

    loaded = "# Generated by iptables-save\n*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n"
    r = RecordingRunner(outputs={("iptables-save",): loaded})
    state = up(r, spec()).state
    assert state.info["loaded_v4"] == rules_identity(loaded)
    assert rules_identity(loaded) == "*nat\n:OUTPUT ACCEPT\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n"
    assert health(r, state) == []
    # counters and comments move by themselves: not a difference
    counted = loaded.replace("[0:0]", "[7:420]").replace("-A OUTPUT", "[3:180] -A OUTPUT")
    assert health(r, state, {Family.IPV4: "# Completed\n" + counted}) == []
    # a rule added behind the lab's back (or verify's TRACE rules while it runs) is one
    more = loaded.replace("COMMIT", "-A OUTPUT -j RETURN\nCOMMIT")
    assert health(r, state, {Family.IPV4: more}) == ["the IPv4 rules differ from what up loaded (1 line added)"]
    r.outputs[("iptables-save",)] = "*nat\nCOMMIT\n"
    assert health(r, state) == ["the IPv4 rules differ from what up loaded (2 lines removed)"]


def test_recorded_lists_only_labs_with_a_state_file_in_the_run_root(run_root: Path) -> None:
    r = RecordingRunner()
    up(r, spec("b1"))
    up(r, spec("a1"))
    (run_root / "stray").mkdir()
    (run_root / "notes.txt").write_text("x")
    assert st.recorded() == ["a1", "b1"]


def test_exec_runs_as_the_app_uid_of_up_unless_uid_is_given(run_root: Path) -> None:
    from netsim.lab.control import exec_argv

    state = up(RecordingRunner(), spec(app_uid=2000)).state
    assert exec_argv(state, ("id",), None) == Exec(netns="t1", argv=("id",), uid=2000, gid=2000, check=False)
    assert exec_argv(state, ("id",), 1337) == Exec(netns="t1", argv=("id",), uid=1337, gid=1337, check=False)
