"""Kernel-differential test for nftables: netsim's ``--format nft-trace`` equals the kernel's ``nft -a monitor
trace``, step for step, on every Istio nftables golden.

Istio's owner-group goldens name groups (``java``, ``ftp``) this machine may not have, and nft resolves a
name when it loads the rules, as netsim does. Such a golden is run by a child pytest in a private mount
namespace whose ``/etc/group`` (a bind mount of a copy) adds them; the host's file is untouched.

Seeded random probes (locally generated from varied uids/gids to loopback, the pod's own and remote
addresses; arriving from a peer over a veth; TCP and UDP; IPv4 and IPv6) are sent for real in namespaces this
test creates and deletes (tests/trace/kernel_diff.py's pair; tests/netfilter/nft_kernel_diff.py). Goldens
are read in place. Needs root, iproute2 and nft; skipped with the reason otherwise.
"""

from __future__ import annotations

import grp
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CONFORMANCE, require_root
from nft_kernel_diff import SYSTEM_NAMES, make_nft_probes, run_nft_ruleset

from netsim.netfilter.model import Family
from netsim.netfilter.nft import NftRuleset, parse_nft
from tests.trace.kernel_diff import SPORT_LO, Pair, namespaces

pytestmark = pytest.mark.root

GOLDENS = CONFORMANCE / "istio-iptables"
# Probes per golden and family: the whole test stays near a minute (CI's budget is 20 for everything).
PROBES = int(os.environ.get("NETSIM_NFT_DIFF_PROBES", "6"))
_SPORTS = itertools.count(SPORT_LO + 20000)


def _loads(path: Path) -> bool:
    """Whether ``nft -c -f`` accepts the golden here (the owner-group ones need their groups: :func:`_with_groups`)."""
    r = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    return r.returncode == 0


_GROUP_NAME = re.compile(r"\bskgid (?:!= )?([A-Za-z_][A-Za-z0-9_-]*)")
_INNER = "NETSIM_TEST_GROUPS_ADDED"  # set in the child run, where the golden's groups exist


def _missing_groups(path: Path) -> list[str]:
    """The group names the golden's ``skgid`` matches use that do not exist here."""
    missing = []
    for name in sorted(set(_GROUP_NAME.findall(path.read_text()))):
        try:
            grp.getgrnam(name)
        except KeyError:
            missing.append(name)
    return missing


def _with_groups(request: pytest.FixtureRequest, tmp_path: Path, path: Path) -> bool:
    """Run this test again in a child pytest whose mount namespace has the golden's missing groups (unused
    gids from 3001 on); True when it did (and passed). False when nothing is missing, so the golden does not
    load for another reason."""
    missing = _missing_groups(path)
    if not missing:
        return False
    assert not os.environ.get(_INNER), f"{path.name}: groups {missing} still missing in the mount namespace"
    require_root("unshare", "mount")
    used = {g.gr_gid for g in grp.getgrall()}
    free = (gid for gid in itertools.count(3001) if gid not in used)
    group = tmp_path / "group"
    group.write_text(Path("/etc/group").read_text() + "".join(f"{n}:x:{next(free)}:\n" for n in missing))
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        'mount --bind "$0" /etc/group && exec "$@"', str(group),
                        sys.executable, "-m", "pytest", "-q", "--no-header", "-p", "no:cacheprovider",
                        request.node.nodeid], cwd=request.config.rootpath, env={**os.environ, _INNER: "1"},
                       capture_output=True, text=True, timeout=900, check=False)
    print(r.stdout[-2000:])
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    assert re.search(r"\b1 passed\b", r.stdout), r.stdout[-2000:]
    return True


def _cases() -> list[tuple[str, Path]]:
    paths = sorted(GOLDENS.glob("*.nftables.golden"))
    return [(p.name.removesuffix(".nftables.golden"), p) for p in paths if p.read_text().strip()]


_CASES = _cases()


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    require_root("nft", "stdbuf")
    with namespaces() as p:
        yield p


@pytest.mark.parametrize(("name", "path"), _CASES, ids=[c[0] for c in _CASES])
def test_nft_monitor_trace_equals_netsim(pair: Pair, name: str, path: Path, request: pytest.FixtureRequest,
                                        tmp_path: Path) -> None:
    if not _loads(path):
        if _with_groups(request, tmp_path, path):
            return
        pytest.fail(f"{path.name}: nft -f does not load it, and no group it names is missing")
    text = path.read_text()
    rs = parse_nft(text, SYSTEM_NAMES)
    probes = [p for f in Family for p in make_nft_probes(rs, f, f"{name}.v{f.value}", PROBES, _SPORTS)]
    result, traced = run_nft_ruleset(pair, name, text, probes)
    print(f"{name}: {result.compared}/{result.probes} probes compared ({traced} traced by the kernel), "
          f"{len(result.mismatches)} mismatches")
    assert not result.mismatches, "\n\n".join(result.mismatches)
    assert result.compared == result.probes
    assert traced >= len(probes) // 2, "the kernel traced too few probes: the monitor missed them"


@pytest.mark.parametrize(("name", "path"), _CASES, ids=[c[0] for c in _CASES])
def test_listing_text_and_json_read_back_as_the_kernel_lists_them(pair: Pair, name: str, path: Path,
                                                                  request: pytest.FixtureRequest,
                                                                  tmp_path: Path) -> None:
    """Each rule of the golden as netsim prints it is the line ``nft -a list ruleset`` prints; the ``nft -j``
    listing reads back to the same rules, positions and handles."""
    import re

    from netsim.netfilter.nft import rule_text
    from netsim.netfilter.nft.json_input import parse_nft_json
    from tests.trace.kernel_diff import sh

    if not _loads(path):
        if _with_groups(request, tmp_path, path):
            return
        pytest.fail(f"{path.name}: nft -f does not load it, and no group it names is missing")
    sh("ip", "netns", "exec", pair.pod, "nft", "flush", "ruleset")
    sh("ip", "netns", "exec", pair.pod, "nft", "-f", str(path))
    listing = sh("ip", "netns", "exec", pair.pod, "nft", "-a", "list", "ruleset").stdout
    kernel = [re.sub(r" # handle \d+$", "", ln.strip()).replace(re.search(r"packets \d+ bytes \d+", ln).group(0)
                                                                 if "packets" in ln else "\0", "packets 0 bytes 0")
              for ln in listing.splitlines() if re.search(r"# handle \d+$", ln)
              and not re.match(r"\s*(table|chain|set|map) ", ln)]
    mine = [rule_text(r) for t in parse_nft(path.read_text(), SYSTEM_NAMES).tables for c in t.chains for r in c.rules]
    assert sorted(mine) == sorted(kernel)  # tables and chains are listed in the kernel's order
    text = parse_nft(listing, SYSTEM_NAMES)
    js = parse_nft_json(sh("ip", "netns", "exec", pair.pod, "nft", "-j", "-a", "list", "ruleset").stdout)
    def rows(rs: NftRuleset) -> list[tuple[object, ...]]:
        return [(t.name, c.name, c.priority, r.handle, rule_text(r)) for t in rs.tables for c in t.chains
                for r in c.rules]

    assert rows(js) == rows(text)


# A mixed namespace: iptables-nft tables restored first, then native nft chains. Istio's two backends at once
# (their nat chains tie at -100: the nft one, registered later, runs first, and its binding skips the iptables
# one), and a neutral nft table with chains between and after the iptables tables.
MIXED_NFT = """table ip between {
  chain out { type filter hook output priority -120; policy accept;
    tcp dport 80 meta mark set 0x7 counter
  }
  chain natout { type nat hook output priority -90; policy accept;
    tcp dport 8081 dnat to 10.0.0.7:80
    tcp dport 15001 counter
  }
  chain late { type filter hook output priority 10; policy accept;
    tcp dport 9999 counter drop
    meta mark 0x7 counter
  }
  chain pre { type filter hook prerouting priority -160; policy accept;
    tcp dport 8080 counter
  }
}
"""
# filter chains at nf_nat's own priorities, loaded after iptables-nft's nat table registered nf_nat's hooks:
# they run before the nat chains (of equal priorities the later registered first)
AT_NAT = """table ip atnat {
  chain out { type filter hook output priority -100; policy accept;
    tcp dport 80 counter
    meta l4proto udp counter
  }
  chain post { type filter hook postrouting priority 100; policy accept;
    oifname "lo" counter
  }
}
"""
_MIXED = [("ipnets+at-nat", "ipnets.v4.iptables-save", AT_NAT),
          ("ipnets+tproxy", "ipnets.v4.iptables-save", GOLDENS / "tproxy.nftables.golden"),
          ("tproxy+dns", "tproxy.v4.iptables-save", GOLDENS / "dns-uid-gid.nftables.golden"),
          ("dns+neutral", "dns-uid-gid.v4.iptables-save", None),
          ("ipnets+neutral", "ipnets.v4.iptables-save", None)]


@pytest.mark.parametrize(("name", "dump", "nft"), _MIXED, ids=[c[0] for c in _MIXED])
def test_mixed_namespace_nft_chains_equal_the_kernels(pair: Pair, name: str, dump: str, nft: Path | str | None
                                                      ) -> None:
    ipt = (GOLDENS / "kernel" / dump).read_text()
    text = nft if isinstance(nft, str) else nft.read_text() if nft is not None else MIXED_NFT
    rs = parse_nft(text)
    probes = make_nft_probes(rs, Family.IPV4, name, 2 * PROBES, _SPORTS)
    result, traced = run_nft_ruleset(pair, name, text, probes, iptables=ipt)
    print(f"{name}: {result.compared}/{result.probes} probes compared ({traced} traced by the kernel), "
          f"{len(result.mismatches)} mismatches")
    assert not result.mismatches, "\n\n".join(result.mismatches)
    assert traced >= len(probes) // 2


def test_kube_proxy_nftables_mode_equals_the_kernels(pair: Pair) -> None:
    """kube-proxy's nftables-mode ruleset for 20 Services (tests/netfilter/kube_proxy_nft.py): probes to the
    Services' cluster IPs and ports (from the pod and arriving), to ports they do not have, to Services
    without endpoints, besides the generic ones. A Service of several endpoints picks one with numgen: the
    kernel's trace must be one of netsim's branches."""
    import random

    from kube_proxy_nft import cluster_ip, kube_proxy_nft

    from netsim.lab.verify import Probe
    from tests.trace.kernel_diff import PEER4, POD4

    text = kube_proxy_nft(20)
    rs = parse_nft(text)
    rng = random.Random("kube-proxy")
    probes = make_nft_probes(rs, Family.IPV4, "kube-proxy", 2 * PROBES, _SPORTS)
    for k in range(4 * PROBES):
        i = rng.randrange(20)
        proto, dport = rng.choice([("tcp", 80), ("tcp", 80), ("tcp", 81), ("udp", 80)])
        inbound = k % 2 == 1
        probes.append(Probe(proto=proto, src=PEER4 if inbound else POD4, sport=next(_SPORTS), dst=cluster_ip(i),
                            dport=dport, uid=1000, gid=1000, inbound=inbound))
    result, traced = run_nft_ruleset(pair, "kube-proxy", text, probes)
    print(f"kube-proxy: {result.compared}/{result.probes} probes compared ({traced} traced by the kernel), "
          f"{len(result.mismatches)} mismatches")
    assert not result.mismatches, "\n\n".join(result.mismatches)
    assert result.compared == result.probes
    assert traced >= len(probes) // 2


def test_legacy_x_tables_with_nft_chains_equal_the_kernels() -> None:
    """Istio's iptables rules restored with iptables-legacy (x_tables at fixed priorities), then kube-proxy's
    nftables-mode ruleset: the kernel's nft trace shows only the nft side (netsim's nft-trace leaves the legacy
    chains out as well), and which legacy nat rules each probe matched is read from their counters. The nat
    chains tie at -100: kube-proxy's, registered later, run first, and a Service's DNAT ends nat for the
    connection before Istio's legacy REDIRECT is consulted; other destinations are redirected by it."""
    import random
    import shutil

    from kube_proxy_nft import cluster_ip, kube_proxy_nft

    from netsim.lab.verify import Probe
    from tests.trace.kernel_diff import PEER4, POD4

    require_root("nft", "stdbuf")
    if shutil.which("iptables-legacy-restore") is None:
        pytest.skip("iptables-legacy-restore is not installed")
    legacy = (GOLDENS / "kernel" / "ipnets.v4.iptables-save").read_text()
    text = kube_proxy_nft(6)
    rng = random.Random("legacy")
    probes = make_nft_probes(parse_nft(text), Family.IPV4, "legacy", PROBES, _SPORTS)
    for k in range(2 * PROBES):
        inbound = k % 3 == 2
        probes.append(Probe(proto="tcp", src=PEER4 if inbound else POD4, sport=next(_SPORTS),
                            dst=cluster_ip(rng.randrange(6)), dport=80, uid=rng.choice([0, 1000, 1337]), gid=1000,
                            inbound=inbound))
    with namespaces() as own:  # legacy tables stay registered until their namespace is deleted
        result, traced = run_nft_ruleset(own, "legacy+kube-proxy", text, probes, legacy=legacy)
    print(f"legacy+kube-proxy: {result.compared}/{result.probes} probes compared ({traced} traced by the kernel), "
          f"{len(result.mismatches)} mismatches")
    assert not result.mismatches, "\n\n".join(result.mismatches)
    assert result.compared == result.probes


DUMPS = [*sorted((GOLDENS / "kernel").glob("*.v4.iptables-save")),
         *sorted((GOLDENS / "kernel").glob("*.v6.ip6tables-save"))]


def test_iptables_nft_rules_print_as_nft_lists_them(pair: Pair) -> None:
    """Every rule of every Istio dump in the corpus, restored with iptables-nft: netsim's nft wording of it
    (what ``--format nft-trace`` prints for an iptables-nft rule) is the kernel's listing, chain by chain."""
    from netsim.netfilter import parse_ruleset
    from netsim.netfilter.nft.xlate import iptables_nft_text
    from tests.trace.kernel_diff import sh

    compared = 0
    for dump in DUMPS:
        v6 = dump.name.endswith(".ip6tables-save")
        sh("ip", "netns", "exec", pair.pod, "nft", "flush", "ruleset")
        sh("ip", "netns", "exec", pair.pod, "ip6tables-restore" if v6 else "iptables-restore", stdin=dump.read_text())
        listing = {}
        chain: list[str] = []
        for ln in sh("ip", "netns", "exec", pair.pod, "nft", "list", "ruleset").stdout.splitlines():
            words = ln.split()
            if ln.startswith("table "):
                table = words[2]
            elif ln.startswith("\tchain "):
                chain = listing[(table, words[1])] = []
            elif ln.startswith("\t\t") and words[0] not in ("type", "policy"):
                chain.append(ln.strip())
        rs = parse_ruleset(dump.read_text(), Family.IPV6 if v6 else Family.IPV4)
        for t in rs.tables:
            for c in t.chains:
                assert [iptables_nft_text(r) for r in c.rules] == listing.get((t.name, c.name), []), \
                    f"{dump.name} {t.name} {c.name}"
                compared += len(c.rules)
    assert compared > 100
