"""Root: the ambient rules netsim compiles, loaded for real into a fresh network namespace (unique name,
deleted afterwards), read back by the kernel's own tools: ``iptables-save`` / ``ip6tables-save`` /
``nft list ruleset`` equal netsim's rendering (and the corpus's kernel/ read-backs), and the policy routes
of §7 apply. Every golden's config, and every release layout of §11 with and without overrides."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest
from ambient_cases import case_id, case_paths, config, is_node, kernel_files, load, overrides
from conftest import run_in_netns

from netsim.capture.ambient import (
    AMBIENT_LAYOUTS,
    PROBE_SETS,
    AmbientCompiled,
    PodOverrides,
    agent_defaults,
    compile_ambient,
)
from netsim.capture.dryrun import render_restore
from netsim.netfilter.model import Family
from netsim.netfilter.render import render_save

pytestmark = pytest.mark.root

CASES = case_paths()
IPTABLES = [p for p in CASES if load(p)["backend"] == "iptables"]
NFT = [p for p in CASES if load(p)["backend"] == "nftables"]
LAYOUT_CASES = [(rel, pod) for rel in (*AMBIENT_LAYOUTS, None)
                for pod in (PodOverrides(), PodOverrides(ingress_mode=True, virtual_interfaces=("eth7",),
                                                         dns_capture=True))]


def _saved(ns: str, family: Family) -> str:
    out = run_in_netns(ns, [family.save_command]).stdout
    return "".join(line + "\n" for line in out.splitlines() if not line.startswith("#"))


def _probe_ipsets(ns: str, compiled: AmbientCompiled) -> None:
    """The node agent's hash:ip sets (§6), which ``-m set`` needs to load: made with pyroute2 inside ``ns``."""
    pytest.importorskip("pyroute2", reason="pyroute2 (netsim[lab]) creates the ipsets the node rules name")
    families = (Family.IPV4, Family.IPV6) if compiled.config.enable_ipv6 else (Family.IPV4,)
    names = [PROBE_SETS[f] for f in families] if compiled.rules[-1].args[-6] != "istio-inpod-probes" \
        else ["istio-inpod-probes"]
    code = ("import socket, sys\nfrom pyroute2 import IPSet\ns = IPSet()\n"
            "for name, fam in zip(sys.argv[1::2], sys.argv[2::2]):\n"
            "    s.create(name, stype='hash:ip', family=socket.AF_INET6 if fam == '6' else socket.AF_INET)\n")
    args = [a for n in names for a in (n, "6" if n.endswith("-v6") else "4")]
    done = run_in_netns(ns, [sys.executable, "-c", code, *args], check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot create ipsets in the namespace (ip_set module?): {done.stderr.strip()[-200:]}")


def _load_iptables(ns: str, compiled: AmbientCompiled) -> None:
    if compiled.node:
        _probe_ipsets(ns, compiled)
    v4, v6 = compiled.payloads()
    for family, payload in ((Family.IPV4, v4), (Family.IPV6, v6)):
        if payload is not None:
            run_in_netns(ns, [family.restore_command, "--noflush"], render_restore(payload))


def _assert_saved_as_rendered(ns: str, compiled: AmbientCompiled, label: str) -> dict[Family, str]:
    rulesets = dict(zip((Family.IPV4, Family.IPV6), compiled.rulesets(), strict=True))
    saved = {}
    for family, ruleset in rulesets.items():
        if ruleset is None:
            continue
        saved[family] = _saved(ns, family)
        assert saved[family] == render_save(ruleset), f"{label} {family.save_command}"
    return saved


@pytest.mark.parametrize("path", IPTABLES, ids=[case_id(p) for p in IPTABLES])
def test_iptables_golden_loads_and_saves_as_rendered(path: Path, netns: str) -> None:
    compiled = compile_ambient(config(path), overrides(path), node=is_node(path))
    _load_iptables(netns, compiled)
    saved = _assert_saved_as_rendered(netns, compiled, case_id(path))
    for dump in kernel_files(path):  # and as the corpus's read-back (iptables 1.8.9-nft there)
        family = Family.IPV6 if dump.suffix == ".ip6tables-save" else Family.IPV4
        assert saved[family] == dump.read_text(), dump.name


@pytest.mark.parametrize("path", NFT, ids=[case_id(p) for p in NFT])
def test_nft_golden_loads_and_lists_as_rendered(path: Path, netns: str) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft missing")
    compiled = compile_ambient(config(path), overrides(path), node=is_node(path))
    run_in_netns(netns, ["nft", "-f", "-"], compiled.nft_text())
    listed = run_in_netns(netns, ["nft", "list", "ruleset"]).stdout
    assert listed == compiled.nft_listing()
    for dump in kernel_files(path):
        assert listed == dump.read_text(), dump.name


LAYOUT_IDS = [f"{'.'.join(map(str, r)) if r else 'current'}-{'overrides' if p.ingress_mode else 'plain'}"
              for r, p in LAYOUT_CASES]


@pytest.mark.parametrize(("release", "pod"), LAYOUT_CASES, ids=LAYOUT_IDS)
def test_every_release_layout_loads_as_rendered(release: tuple[int, ...] | None, pod: PodOverrides,
                                                netns: str) -> None:
    """A real agent's defaults of each release of §11 (in-pod and node rules, and from 1.28 the nft backend)."""
    cfg = agent_defaults(release)
    _load_iptables(netns, compile_ambient(cfg, pod))
    _assert_saved_as_rendered(netns, compile_ambient(cfg, pod), f"{release} in-pod")
    if cfg.release is None or cfg.release >= (1, 28):
        nft = compile_ambient(dataclasses.replace(cfg, native_nftables=True), pod)
        run_in_netns(netns, ["nft", "flush", "ruleset"])
        run_in_netns(netns, ["nft", "-f", "-"], nft.nft_text())
        assert run_in_netns(netns, ["nft", "list", "ruleset"]).stdout == nft.nft_listing()


def test_policy_routes_apply(netns: str) -> None:
    """§7: table 100 delivers locally; mark 0x111/0xfff selects it at priority 32764, both families."""
    for cmd in compile_ambient(agent_defaults()).routes:
        run_in_netns(netns, list(cmd.argv))
    assert "32764:\tfrom all fwmark 0x111/0xfff lookup 100" in run_in_netns(netns, ["ip", "-4", "rule"]).stdout
    assert "32764:\tfrom all fwmark 0x111/0xfff lookup 100" in run_in_netns(netns, ["ip", "-6", "rule"]).stdout
    assert run_in_netns(netns, ["ip", "-4", "route", "show", "table", "100"]).stdout.strip() == \
        "local default dev lo scope host"
    assert "local default dev lo" in run_in_netns(netns, ["ip", "-6", "route", "show", "table", "100"]).stdout
