"""``netsim trace --nft``, ``--backend nft`` and ``--format nft-trace``; ``netsim compile --backend nft``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from conftest import CONFORMANCE, REPO

from netsim.capture.cli import compile_cmd
from netsim.commands.trace import trace_cmd
from tests.dns.dns_helpers import run_main

TPROXY_NFT = CONFORMANCE / "istio-iptables" / "tproxy.nftables.golden"
IPNETS_V4 = CONFORMANCE / "istio-iptables" / "kernel" / "ipnets.v4.iptables-save"
POD = REPO / "rules" / "mtls-503" / "pod.yaml"
NAT_NFT = REPO / "tests" / "netfilter" / "data" / "nat-output.nft"


def run(cmd: object, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cmd, list(args))  # type: ignore[arg-type]
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def test_trace_nft_file_in_nft_monitor_trace_lines() -> None:
    code, out = run(trace_cmd, "--nft", str(TPROXY_NFT), "--dst", "9.9.1.1:80", "--uid", "1000",
                    "--format", "nft-trace")
    assert code == 0
    lines = out.splitlines()
    assert "trace id ID inet istio-proxy-nat istio-redirect rule meta l4proto tcp counter packets 0 bytes 0 " \
           "redirect to :15001 # handle 1 (verdict accept)" in lines
    assert lines[:2] == ["# hop 1: app (uid 1000, gid 1000)", lines[1]]
    assert lines[1].startswith('trace id ID inet istio-proxy-raw output packet: oif "eth0" ip saddr ')
    assert "# hop 2: sidecar (uid 1337, gid 1337)" in lines


def test_trace_nft_text_names_backend_priority_and_captures() -> None:
    code, out = run(trace_cmd, "--nft", str(TPROXY_NFT), "--dst", "9.9.1.1:80", "--uid", "1000")
    assert code == 0
    assert "inet istio-proxy-nat output (nft, priority -100)" in out
    assert "Captured by the sidecar's outbound listener 15001" in out


def test_trace_json_steps_carry_backend_family_table_chain_priority() -> None:
    code, out = run(trace_cmd, "--nft", str(TPROXY_NFT), "--rules", str(IPNETS_V4), "--dst", "9.9.1.1:80",
                    "--uid", "1000", "--format", "json")
    assert code == 0
    steps = json.loads(out)["hops"][0]["steps"]
    bases = {(s["backend"], s["family"], s["table"], s["priority"]) for s in steps if "backend" in s}
    # the nft nat chain (loaded last) redirects first; iptables' nat OUTPUT is skipped, its POSTROUTING runs
    assert ("nft", "inet", "istio-proxy-nat", -100) in bases and ("iptables-nft", "ip", "nat", 100) in bases
    assert ("iptables-nft", "ip", "nat", -100) not in bases


def test_both_backends_one_namespace_first_nat_binding_wins() -> None:
    # iptables-nft's nat OUTPUT and the nft nat output chain both sit at -100: the one loaded last (--nft,
    # after --rules) runs first; its REDIRECT of 10.0.0.9 binds the connection, so iptables' nat is skipped
    code, out = run(trace_cmd, "--rules", str(IPNETS_V4), "--nft", str(NAT_NFT), "--dst", "10.0.0.9:80",
                    "--uid", "1000")
    assert code == 0
    nat_tables = [ln.strip() for ln in out.splitlines() if (" (iptables-nft, priority -100)" in ln
                  or " (nft, priority -100)" in ln) and not ln.startswith("Decided by")]
    assert nat_tables == ["inet mine output (nft, priority -100)   [OUT=eth0 SRC=10.244.0.5 DST=10.0.0.9 SPORT=43210 "
                          "DPORT=80]"]
    assert "· ip nat OUTPUT (iptables-nft nat, priority -100) not consulted: an earlier nat chain of this hook " \
           "bound the connection" in out


def test_trace_pod_with_the_nft_backend() -> None:
    code, out = run(trace_cmd, "--pod", str(POD), "--backend", "nft", "--dst", "10.0.0.9:80", "--uid", "1000",
                    "--format", "nft-trace")
    assert code == 0
    assert "istio-proxy-nat istio-redirect rule meta l4proto tcp counter packets 0 bytes 0 redirect to :15001" in out
    code, out = run(trace_cmd, "--pod", str(POD), "--backend", "iptables", "--dst", "10.0.0.9:80", "--uid", "1000",
                    "--format", "nft-trace")
    assert code == 0 and "istio-proxy-nat" not in out


def test_compile_backend_nft_is_native_nftables() -> None:
    a = run(compile_cmd, "--pod", str(POD), "--backend", "nft")
    b = run(compile_cmd, "--pod", str(POD), "--native-nftables")
    assert a == b and a[0] == 0 and a[1].startswith("add table inet istio-proxy-nat")


def test_bad_nft_file_is_one_error_line_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nft"
    bad.write_text("table inet t {\n chain c {\n  ip daddr 10.0.0.300 accept\n }\n}\n")
    r = run_main("trace", "--nft", str(bad), "--dst", "10.0.0.9:80")
    assert r.exit_code == 2
    assert r.stderr == f"Error: {bad}: line 3: `10.0.0.300' is not an IPv4 address, prefix or range\n"


def test_backend_without_pod_is_an_error() -> None:
    r = run_main("trace", "--nft", str(TPROXY_NFT), "--backend", "nft", "--dst", "10.0.0.9:80")
    assert r.exit_code == 2 and r.stderr.startswith("Error: --backend") and len(r.stderr.splitlines()) == 1


def test_trace_nft_json_listing(tmp_path: Path) -> None:
    from test_nft import JSON

    path = tmp_path / "ruleset.json"
    path.write_text(JSON)
    code, out = run(trace_cmd, "--nft", str(path), "--dst", "10.96.0.10:53", "--format", "nft-trace")
    assert code == 0
    assert "trace id ID ip kp out rule ip daddr . meta l4proto . th dport vmap @svc # handle 14 (verdict goto s1)" \
        in out.splitlines()


# What a user pastes: `nft list ruleset` of a pod holding Istio's nft backend and an iptables-nft leftover (older
# nft prints no mark of who wrote a table). The leftover's nat table has iptables-nft's layout.
PASTED = """table ip nat {
\tchain PREROUTING {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t}
\tchain OUTPUT {
\t\ttype nat hook output priority -100; policy accept;
\t\tcounter packets 0 bytes 0 jump ISTIO_OUTPUT
\t}
\tchain ISTIO_OUTPUT {
\t\tskuid 1337 counter packets 0 bytes 0 return
\t\tip daddr 10.0.0.0/8 counter packets 0 bytes 0 jump ISTIO_REDIRECT
\t}
\tchain ISTIO_REDIRECT {
\t\tmeta l4proto tcp counter packets 0 bytes 0 redirect to :15001
\t}
}
table inet istio-proxy-nat {
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tcounter packets 0 bytes 0 jump istio-output
\t}
\tchain istio-output {
\t\tmeta skuid 1337 counter packets 0 bytes 0 return
\t\tip daddr 9.9.0.0/16 counter packets 0 bytes 0 jump istio-redirect
\t}
\tchain istio-redirect {
\t\tmeta l4proto tcp counter packets 0 bytes 0 redirect to :15001
\t}
}
"""


def test_a_pasted_listing_names_the_iptables_nft_leftover_that_redirected(tmp_path: Path) -> None:
    f = tmp_path / "ruleset.nft"
    f.write_text(PASTED)
    # 10.1.2.3: Istio's nft chain (loaded later, so first at -100) lets it on; the leftover redirects it
    code, out = run(trace_cmd, "--nft", str(f), "--dst", "10.1.2.3:80", "--uid", "1000")
    assert code == 0
    assert "ip nat OUTPUT (iptables-nft, as nft lists it, priority -100)" in out
    assert "via iptables-nft ip nat ISTIO_REDIRECT rule 1 `meta l4proto tcp" in out
    assert ("Decided by: iptables-nft ip nat ISTIO_REDIRECT rule 1, in ip nat OUTPUT (iptables-nft, as nft lists it, "
            "priority -100); before it on OUTPUT: inet istio-proxy-nat output (nft, priority -100)") in out
    code, out = run(trace_cmd, "--nft", str(f), "--dst", "10.1.2.3:80", "--uid", "1000", "--format", "json")
    steps = json.loads(out)["hops"][0]["steps"]
    assert {s["backend"] for s in steps if s.get("table") == "nat"} == {"iptables-nft"}
    assert {s["backend"] for s in steps if s.get("table") == "istio-proxy-nat"} == {"nft"}
    assert json.loads(out)["decided_by"]["backend"] == "iptables-nft"
    # 9.9.1.1: Istio's nft chain redirects it first; the binding ends nat, the leftover is not consulted
    code, out = run(trace_cmd, "--nft", str(f), "--dst", "9.9.1.1:80", "--uid", "1000")
    assert "via nft inet istio-proxy-nat istio-redirect rule 1" in out
    # a table named like iptables' but with a base chain of its own (or at another priority) is nft's
    from netsim.netfilter.nft import parse_nft
    from netsim.netfilter.nft.evaluate import iptables_nft_layout

    nat, istio = parse_nft(PASTED).tables
    assert iptables_nft_layout(nat) and not iptables_nft_layout(istio)
    assert not iptables_nft_layout(parse_nft(PASTED.replace("chain OUTPUT {", "chain out {")).tables[0])
    assert not iptables_nft_layout(parse_nft(PASTED.replace("output priority -100", "output priority -90")).tables[0])


LEGACY = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -m owner --uid-owner 1337 -j RETURN
-A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 15001
COMMIT
"""


def test_rules_legacy_x_tables_with_nft_chains_in_one_namespace(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy.save"
    legacy.write_text(LEGACY)
    # alone: legacy x_tables at their fixed priorities, named in JSON, absent from nft's trace
    code, out = run(trace_cmd, "--rules-legacy", str(legacy), "--dst", "10.1.1.1:80", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    steps = doc["hops"][0]["steps"]
    assert {(s["backend"], s.get("priority")) for s in steps if s.get("table") == "nat" and s["hook"] == "OUTPUT"
            and s["kind"] == "rule"} == {("iptables-legacy", -100)}
    assert doc["verdict"] == "captured-outbound"
    code, out = run(trace_cmd, "--rules-legacy", str(legacy), "--dst", "10.1.1.1:80", "--format", "nft-trace")
    assert code == 0 and "trace id" not in out
    # with an nft nat chain loaded after it at the same priority: the nft chain runs first; its DNAT of port 80
    # to 10.0.0.7 binds the connection and the legacy REDIRECT is not consulted; port 81 is not DNATed
    nft = tmp_path / "nat.nft"
    nft.write_text("table ip k {\n chain o {\n  type nat hook output priority -100; policy accept;\n"
                   "  ip daddr 10.1.1.1 tcp dport 80 dnat to 10.0.0.7\n }\n}\n")
    code, out = run(trace_cmd, "--rules-legacy", str(legacy), "--nft", str(nft), "--dst", "10.1.1.1:80")
    assert code == 0
    assert "ip nat OUTPUT (iptables-legacy nat, priority -100) not consulted" in out
    assert "sent out eth0 to 10.0.0.7:80" in out
    code, out = run(trace_cmd, "--rules-legacy", str(legacy), "--nft", str(nft), "--dst", "10.1.2.2:80")
    assert "ip nat OUTPUT (iptables-legacy, priority -100)" in out and "Captured by the sidecar" in out
    # a bad dump: one line naming the file, exit 2
    bad = tmp_path / "bad.save"
    bad.write_text("*nat\n-A NOPE -j RETURN\nCOMMIT\n")
    r = run_main("trace", "--rules-legacy", str(bad), "--dst", "10.1.1.1:80")
    assert r.exit_code == 2 and r.stderr.startswith(f"Error: {bad}: line 2: ") and len(r.stderr.splitlines()) == 1
