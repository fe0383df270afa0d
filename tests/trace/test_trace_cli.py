"""``netsim trace`` through click's CliRunner: every option, the hop sentences, and the errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import CONFORMANCE, REPO

from netsim.commands.trace import trace_cmd
from netsim.netfilter.dump import split_families
from netsim.workload.model import parse_endpoint
from tests.cli.compile_runner import run as netsim

RULES = CONFORMANCE / "istio-iptables" / "kernel" / "ipnets.v4.iptables-save"
MTLS = REPO / "rules" / "mtls-503" / "pod.yaml"
DNS = REPO / "rules" / "dns-capture" / "pod.yaml"
TPROXY = REPO / "rules" / "tproxy" / "pod.yaml"


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(trace_cmd, list(args))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def test_outbound_redirected_and_followed_to_upstream() -> None:
    code, out = run("--rules", str(RULES), "--dst", "10.0.0.5:80", "--uid", "1000")
    assert code == 0
    assert out.strip().splitlines()[-1].startswith("Captured by the sidecar's outbound listener 15001")
    assert "== Hop 2: sidecar (uid 1337, gid 1337)" in out


def test_outbound_excluded_destination_bypasses() -> None:
    code, out = run("--rules", str(RULES), "--dst", "192.168.0.1:80")
    assert code == 0 and "Bypasses the sidecar" in out.splitlines()[-1]


def test_xtables_format_and_json() -> None:
    _, out = run("--rules", str(RULES), "--dst", "10.0.0.5:80", "--format", "xtables-trace", "--uid", "1337")
    assert "TRACE: nat:ISTIO_OUTPUT:rule:4:RETURN  -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in out
    _, out = run("--rules", str(RULES), "--dst", "10.0.0.5:80", "--format", "json", "--gid", "5")
    data = json.loads(out)
    assert data["verdict"] == "captured-outbound" and data["hops"][0]["packet"]["gid"] == 5


def test_mtls_503_scenario_names_the_missing_rule() -> None:
    _, old = run("--pod", str(MTLS), "--istio-version", "1.2", "--from", "10.1.2.3", "--dst", "10.244.0.5:80",
                 "--pod-ip", "10.244.0.5")
    last = old.strip().splitlines()[-1]
    assert last.startswith("Bypasses the sidecar")
    assert "--dport 8080 -j ISTIO_IN_REDIRECT" in last and "destination port is 80" in last
    _, cur = run("--pod", str(MTLS), "--from", "10.1.2.3", "--dst", "10.244.0.5:80", "--pod-ip", "10.244.0.5")
    assert cur.strip().splitlines()[-1].startswith("Captured by the sidecar's inbound listener 15006")
    assert "from 127.0.0.6" in cur.strip().splitlines()[-1]


def test_dns_goes_to_15053() -> None:
    _, out = run("--pod", str(DNS), "--proto", "udp", "--dst", "10.96.0.10:53", "--pod-ip", "10.244.0.5")
    assert out.strip().splitlines()[-1].startswith("Captured by the DNS proxy on port 15053")


def test_tproxy_inbound() -> None:
    _, out = run("--pod", str(TPROXY), "--from", "10.1.2.3", "--dst", "10.244.0.5:8080", "--pod-ip", "10.244.0.5")
    assert "via TPROXY" in out.strip().splitlines()[-1]
    _, out = run("--pod", str(TPROXY), "--from", "10.1.2.3", "--dst", "10.244.0.5:8080", "--pod-ip", "10.244.0.5",
                 "--listening", "")
    # --listening says what the app listens on; the sidecar's transparent 15006 stays (issue 11)
    assert out.strip().splitlines()[-1].endswith("reaching the app's port (nothing listens there).")


def test_src_in_iface_and_listening() -> None:
    _, out = run("--rules", str(RULES), "--src", "127.0.0.6:5555", "--dst", "10.244.0.5:8080", "--uid", "1337",
                 "--listening", "8080", "--format", "json")
    hop = json.loads(out)["hops"][0]
    assert hop["packet"]["sport"] == 5555 and hop["final"]["local_port"] == 8080
    _, out = run("--rules", str(RULES), "--from", "10.1.2.3", "--dst", "10.244.0.5:8080", "--in-iface", "eth1",
                 "--format", "json")
    assert json.loads(out)["hops"][0]["packet"]["in_iface"] == "eth1"


def test_matrix() -> None:
    code, out = run("--pod", str(MTLS), "--istio-version", "1.2", "--matrix", "--pod-ip", "10.244.0.5")
    assert code == 0
    row80 = [ln for ln in out.splitlines() if " inbound " in ln and " tcp " in ln and " 80 " in ln]
    assert row80 and "bypassed" in row80[0]
    code, out = run("--pod", str(MTLS), "--matrix", "--format", "json", "--pod-ip", "10.244.0.5")
    rows = json.loads(out)
    assert any(r["direction"] == "inbound" and r["port"] == 80 and r["verdict"] == "captured-inbound"
               and r["cell"] == "captured" and r["listener"]["port"] == 15006 for r in rows)


def test_pcap(tmp_path: Path) -> None:
    pytest.importorskip("scapy")
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.utils import wrpcap

    path = tmp_path / "c.pcap"
    wrpcap(str(path), [IP(src="10.244.0.5", dst="10.0.0.5") / TCP(sport=40000, dport=80, flags="S"),
                       IP(src="10.1.2.3", dst="10.244.0.5") / UDP(sport=1, dport=53)])
    code, out = run("--rules", str(RULES), "--pcap", str(path), "--pod-ip", "10.244.0.5")
    assert code == 0 and "captured-outbound" in out and "2 packets traced" in out


def test_pcap_json_rows_and_owner(tmp_path: Path) -> None:
    """--pcap --format json: one row per TCP/UDP packet; the pod's own packets are sent as --uid."""
    pytest.importorskip("scapy")
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.utils import wrpcap

    path = tmp_path / "c.pcap"
    wrpcap(str(path), [IP(src="10.244.0.5", dst="10.0.0.5") / TCP(sport=40000, dport=80, flags="S"),
                       IP(src="10.244.0.5", dst="10.0.0.5") / ICMP()])
    code, out = run("--rules", str(RULES), "--pcap", str(path), "--pod-ip", "10.244.0.5", "--format", "json")
    assert code == 0
    (row,) = json.loads(out)  # the ICMP packet is not traced
    assert row.pop("summary").startswith("Captured by the sidecar's outbound listener 15001")
    assert row == {"no": 1, "proto": "tcp", "src": "10.244.0.5:40000", "dst": "10.0.0.5:80",
                   "verdict": "captured-outbound", "reason": row["reason"],
                   "decided_by": {"table": "nat", "chain": "ISTIO_REDIRECT", "position": 1,
                                  "rule": "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"},
                   "listener": {"address": "127.0.0.1", "port": 15001, "owner": "sidecar"}}
    _, out = run("--rules", str(RULES), "--pcap", str(path), "--pod-ip", "10.244.0.5", "--uid", "1337",
                 "--format", "json")
    assert json.loads(out)[0]["verdict"] == "bypassed"  # the proxy's own uid RETURNs in ISTIO_OUTPUT


def test_pcap_that_is_not_a_capture_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("scapy")
    bad = tmp_path / "not.pcap"
    bad.write_text("hello\n")
    for path in (str(bad), str(tmp_path / "missing.pcap")):
        r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--rules", str(RULES), "--pcap", path],
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.startswith(f"Error: {path}: cannot read")
        assert len(r.stderr.strip().splitlines()) == 1


def test_pcap_without_scapy_says_how_to_install_it() -> None:
    code = ("import sys; sys.modules['scapy'] = None; from netsim.cli import main; "
            f"main(['trace', '--rules', {str(RULES)!r}, '--pcap', 'x.pcap'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == "Error: scapy is not installed; this command needs it: pip install 'netsim[pcap]'\n"


def test_rules_file_without_tables_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.rules"
    empty.write_text("# Generated by iptables-save\n")
    r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--rules", str(empty), "--dst", "10.0.0.5:80"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr == f"Error: {empty}: no tables found (expected iptables-save output)\n"


@pytest.mark.parametrize(("args", "message"), [
    (("--dst", "10.0.0.5:80"), "exactly one of --pod FILE or --rules FILE"),
    (("--rules", str(RULES)), "--dst IP:PORT is required"),
    (("--rules", str(RULES), "--dst", "10.0.0.5:99999"), "port '99999' must be 1-65535"),
    (("--rules", str(RULES), "--dst", "nohost:80"), "is not an IP address"),
    (("--rules", str(RULES), "--dst", "[fd00::1]:80"), "no IPv6 rules"),
    (("--rules", "/nonexistent", "--dst", "10.0.0.5:80"), "cannot read"),
    (("--rules", str(RULES), "--dst", "10.0.0.5:80", "--listening", "x"), "is not a port"),
    (("--rules", str(RULES), "--dst", "10.0.0.5:80", "--pod-ip", "bad"), "--pod-ip 'bad': not an IP address"),
    (("--rules", str(RULES), "--dst", "10.0.0.5:80", "--from", "fd00::1"), "same IP version"),
    (("--rules", str(RULES), "--dst", "[fd00::1]x"), "--dst '[fd00::1]x': expected [IPv6]:PORT"),
    (("--rules", str(RULES), "--src", "fd00::1", "--dst", "10.0.0.5:80"),
     "--src and --dst must be the same IP version"),
    (("--rules", str(RULES), "--pod", str(MTLS), "--dst", "10.0.0.5:80"), "exactly one of --pod FILE or --rules FILE"),
])
def test_errors_are_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "netsim", "trace", *args], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and r.stderr.startswith("Error: ") and len(r.stderr.strip().splitlines()) == 1


def test_click_usage_errors_exit_2() -> None:
    """Choices are click's own usage errors (netsim.cli prints them the click way, exit 2)."""
    r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--rules", str(RULES), "--dst", "10.0.0.5:80",
                        "--proto", "gre"], capture_output=True, text=True)
    assert r.returncode == 2 and "Invalid value for '--proto'" in r.stderr and "Traceback" not in r.stderr


def test_bad_rules_file_is_located(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rules"
    bad.write_text("*nat\n-A OUTPUT -j NOWHERE\nCOMMIT\n")
    r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--rules", str(bad), "--dst", "1.1.1.1:1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and str(bad) in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_help_and_no_heavy_imports() -> None:
    r = subprocess.run([sys.executable, "-c", "import sys; from netsim.cli import main; "
                        "import netsim.commands.trace, netsim.netfilter.engine; "
                        "print(sorted(m for m in ('scapy', 'pyroute2', 'dnslib') if m in sys.modules))"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "[]"
    assert run("--help")[0] == 0


def test_helpers() -> None:
    assert str(parse_endpoint("[fd00::1]:53")[0]) == "fd00::1" and parse_endpoint("10.0.0.5")[1] is None
    text = (REPO / "rules" / "mtls-503" / "current.iptables-save").read_text()
    assert [f.value for f, _ in split_families(text)] == [4] or len(split_families(text)) >= 1


def test_route_localnet_decides_a_loopback_source_sent_off_the_host(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.write_text("*nat\n-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 8081 -j DNAT --to-destination "
                     "10.244.0.1:8081\nCOMMIT\n")
    args = ("--rules", str(rules), "--src", "127.0.0.1", "--dst", "127.0.0.1:8081", "--format", "json")
    code, out = run(*args)
    assert code == 0 and "re-routing" in json.loads(out)["summary"]
    code, out = run(*args, "--route-localnet")
    assert code == 0 and "re-routing" not in json.loads(out)["summary"]


def test_route_localnet_flag_keeps_a_loopback_source_that_nat_sends_off_the_host(tmp_path: Path) -> None:
    """README: without --route-localnet the kernel drops it at re-routing; with it the packet leaves."""
    rules = tmp_path / "nat.txt"
    rules.write_text("*nat\n-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 8081 "
                     "-j DNAT --to-destination 10.244.0.1:8081\nCOMMIT\n")
    base = ("--rules", str(rules), "--pod-ip", "10.244.0.5", "--src", "127.0.0.1", "--dst", "127.0.0.1:8081",
            "--format", "json")
    code, out = run(*base)
    dropped = json.loads(out)
    assert code == 0 and dropped["verdict"] == "dropped" and "re-routing" in dropped["summary"]
    code, out = run(*base, "--route-localnet")
    sent = json.loads(out)
    assert code == 0 and sent["verdict"] == "bypassed" and "sent out eth0 to 10.244.0.1:8081" in sent["summary"]


# An nft dump names owner groups as the node that listed it knew them (``skgid != java``): nft resolved the name
# when it loaded the rules, and so does netsim, from --group-file (the node's /etc/group) or this machine.
OWNER_GROUPS = CONFORMANCE / "istio-iptables" / "outbound-owner-groups.nftables.golden"
RETURN_OTHER_GROUPS = "meta skgid != 3001 meta skgid != 202 counter packets 0 bytes 0 return"


@pytest.mark.parametrize(("gid", "returned"), [(3001, False), (202, False), (3000, True)])
def test_group_file_resolves_the_dumps_owner_group_names(tmp_path: Path, gid: int, returned: bool) -> None:
    group = tmp_path / "group"
    group.write_text("root:x:0:\njava:x:3001:app\nftp:x:3002:\n")
    code, out = run("--nft", str(OWNER_GROUPS), "--group-file", str(group), "--dst", "10.0.0.5:80",
                    "--uid", "1000", "--gid", str(gid), "--format", "json")
    assert code == 0, out
    decided = json.loads(out)["decided_by"]
    assert (decided is not None and decided["rule"] == RETURN_OTHER_GROUPS) == returned, decided


def test_an_unknown_group_name_is_one_error_naming_the_line(tmp_path: Path) -> None:
    group = tmp_path / "group"
    group.write_text("root:x:0:\nftp:x:3002:\n")
    r = netsim(["trace", "--nft", str(OWNER_GROUPS), "--group-file", str(group), "--dst", "10.0.0.5:80"])
    assert r.code == 2
    assert r.stderr.strip().splitlines() == [f"Error: {OWNER_GROUPS}: line 19: Group `java' does not exist (nft "
                                             "resolves names when it loads the rules)"]


def test_group_file_is_for_dumps_and_read_strictly(tmp_path: Path) -> None:
    group = tmp_path / "group"
    group.write_text("java:x:notanumber:\n")
    r = netsim(["trace", "--nft", str(OWNER_GROUPS), "--group-file", str(group), "--dst", "10.0.0.5:80"])
    assert r.code == 2 and f"{group}:1" in r.stderr and "expected name:password:GID:members" in r.stderr
    r = netsim(["trace", "--pod", str(MTLS), "--group-file", str(group), "--dst", "10.0.0.5:80"])
    assert r.code == 2 and "--group-file resolves the names in a dump" in r.stderr
