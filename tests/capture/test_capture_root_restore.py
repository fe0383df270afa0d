"""Root: Istio's payloads, loaded with the real iptables-restore into a fresh namespace, save back exactly
as netsim renders them (and, through test_capture_kernel_save, as the corpus' kernel/ dumps show).

Owner-group cases name groups (java, ftp): those loads run in a private mount namespace (``unshare -m``)
where a copy of /etc/group with the fixture groups is bind-mounted; the host's /etc/group is never touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from capture_cases import (
    FIXTURE_GROUPS,
    KERNEL_DIR,
    assert_same_tables,
    assert_same_text,
    case_config,
    case_names,
    expected,
)
from conftest import group_file_with, run_in_netns

from netsim.capture.compiled import compile_config
from netsim.capture.config import CaptureConfig
from netsim.capture.dryrun import render_restore
from netsim.capture.nft import render_nft
from netsim.netfilter.matches import Names
from netsim.netfilter.model import Family
from netsim.netfilter.render import render_save
from netsim.spec.options import config_from_options

pytestmark = pytest.mark.root

NAMES = Names(groups=tuple(FIXTURE_GROUPS.items()))
IPTABLES_CASES = [n for n in case_names() if expected(n, "iptables")]
NFT_CASES = [n for n in case_names() if expected(n, "nftables")]
# Configurations no golden covers (spec §16), loaded for real too.
SYNTHETIC: dict[str, dict[str, object]] = {
    "capture-all-dns-ipv6": {"redirect-dns": True, "capture-all-dns": True, "ENABLE_INBOUND_IPV6": True,
                             "istio-service-cidr": "*", "istio-inbound-ports": "*",
                             "istio-local-exclude-ports": "15090,15021,15020"},
    "empty-owner-group-include": {"ISTIO_OUTBOUND_OWNER_GROUPS": "", "istio-service-cidr": "*"},
    "virt-interfaces-wildcard": {"kube-virt-interfaces": "eth1,eth2", "istio-service-cidr": "*",
                                 "istio-exclude-interfaces": "X", "istio-inbound-ports": "*"},
    "tproxy-empty-inbound": {"istio-inbound-interception-mode": "TPROXY", "istio-inbound-ports": ""},
    "tproxy-ipv6-dns": {"istio-inbound-interception-mode": "TPROXY", "istio-inbound-ports": "80,443",
                        "redirect-dns": True, "DNS_SERVERS_V6": ["fd00::a"], "DNS_SERVERS_V4": ["10.96.0.10"],
                        "ENABLE_INBOUND_IPV6": True, "drop-invalid": True, "istio-service-cidr": "10.0.0.0/8,fd00::/8",
                        "istio-service-exclude-cidr": "10.1.2.3/16", "istio-outbound-ports": "8080",
                        "istio-local-outbound-ports-exclude": "25", "proxy-uid": "0", "proxy-gid": "1337,1338"},
}


@pytest.fixture(scope="module")
def group_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of /etc/group plus the fixture groups, for bind-mounting in a private mount namespace."""
    return group_file_with(tmp_path_factory.mktemp("groups") / "group", FIXTURE_GROUPS)


def _run(ns: str, argv: list[str], stdin: str | None = None, group_file: Path | None = None) -> str:
    return run_in_netns(ns, argv, stdin, group_file).stdout


def _config(name: str) -> CaptureConfig:
    return config_from_options(SYNTHETIC[name]) if name in SYNTHETIC else case_config(name)


def _names_groups(config: CaptureConfig) -> bool:
    return config.owner_groups_include not in ("*", "") or bool(config.owner_groups_exclude)


@pytest.mark.parametrize("name", IPTABLES_CASES + sorted(SYNTHETIC))
def test_restored_payload_saves_back_as_rendered(name: str, netns: str, group_file: Path) -> None:
    config = _config(name)
    compiled = compile_config(config, names=NAMES)
    names_groups = _names_groups(config)
    if names_groups and shutil.which("unshare") is None:
        pytest.skip("unshare missing: cannot provide the fixture groups without touching /etc/group")
    for family, payload, ruleset in (
        (Family.IPV4, compiled.v4, compiled.ruleset_v4),
        (Family.IPV6, compiled.v6, compiled.ruleset_v6),
    ):
        if payload is None or ruleset is None:
            continue
        _run(netns, [family.restore_command, "--noflush"], render_restore(payload),
             group_file if names_groups else None)
        saved = _run(netns, [family.save_command])
        assert_same_tables(render_save(ruleset), saved, f"{name} {family.name}")


@pytest.mark.parametrize("name", [n for n in IPTABLES_CASES + sorted(SYNTHETIC) if _config(n).enable_ipv6 or
                                  _config(n).mode.value == "TPROXY"])
def test_route_commands_apply(name: str, netns: str) -> None:
    """The ::6 address and TPROXY policy routing are valid ``ip`` commands and land as intended."""
    config = _config(name)
    compiled = compile_config(config, names=NAMES)
    for cmd in compiled.routes:
        _run(netns, list(cmd.argv))
    if config.enable_ipv6:
        assert "::6/128" in _run(netns, ["ip", "-6", "addr", "show", "dev", "lo"])
    if any("rule" in cmd.argv for cmd in compiled.routes):
        rules = _run(netns, ["ip", "-4", "rule", "show"])
        assert f"fwmark {hex(int(config.tproxy_mark))} lookup {config.tproxy_route_table}" in rules
        routes = _run(netns, ["ip", "-4", "route", "show", "table", config.tproxy_route_table])
        assert_same_text("local default dev lo scope host", routes, f"{name} table {config.tproxy_route_table}")


def _strip_comments(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


@pytest.mark.parametrize("name", NFT_CASES + sorted(SYNTHETIC))
def test_nft_transaction_loads_and_lists_as_the_kernel_dump(name: str, netns: str, group_file: Path) -> None:
    """``nft -f`` accepts the transaction; for corpus cases ``nft list ruleset`` equals kernel/<case>.nft-list."""
    if shutil.which("nft") is None:
        pytest.skip("nft missing")
    config = _config(name)
    _run(netns, ["nft", "-f", "-"], render_nft(config), group_file if _names_groups(config) else None)
    listed = _run(netns, ["nft", "list", "ruleset"])
    dump = KERNEL_DIR / f"{name}.nft-list"
    if dump.is_file():
        assert_same_text(_strip_comments(dump.read_text()), listed, f"{name} nft list ruleset")
