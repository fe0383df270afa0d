"""Istio's expected outputs of older releases (../shared/conformance/istio-iptables-history, read in place):
each golden, read in its own format by netsim's parser and rendered as kernel-canonical iptables-save,
must equal ``netsim compile --istio-version R`` under the golden's options, for the first and the last
minor release it applies to. Releases whose layout netsim does not model yet are an explicit, counted
strict xfail list (a golden that starts passing fails the run until the list is updated)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from compile_runner import compile_, invocation, run, save_tables
from conftest import CONFORMANCE, conformance_dir

from netsim.capture.config import LAYOUT_FLOOR
from netsim.netfilter import Family, Names, apply_payload, parse_command_log, parse_dry_run, render_save
from netsim.netfilter.model import RestorePayload

HISTORY = CONFORMANCE / "istio-iptables-history"
GOLDENS = sorted(str(p.relative_to(HISTORY).with_suffix("")) for p in HISTORY.glob("*/*.golden")) \
    if HISTORY.is_dir() else []

# The Go config field names of the history YAMLs → the conformance-YAML keys of ../istio-iptables/
# (istio-iptables long option, or the env/input name), one to one (history README).
GO_FIELDS = {
    "ProxyPort": "envoy-port", "InboundCapturePort": "inbound-capture-port",
    "InboundTunnelPort": "inbound-tunnel-port", "ProxyUID": "proxy-uid", "ProxyGID": "proxy-gid",
    "InboundInterceptionMode": "istio-inbound-interception-mode", "InboundTProxyMark": "istio-inbound-tproxy-mark",
    "InboundTProxyRouteTable": "istio-inbound-tproxy-route-table", "InboundPortsInclude": "istio-inbound-ports",
    "InboundPortsExclude": "istio-local-exclude-ports", "ExcludeInterfaces": "istio-exclude-interfaces",
    "OutboundIPRangesInclude": "istio-service-cidr", "OutboundIPRangesExclude": "istio-service-exclude-cidr",
    "OutboundPortsInclude": "istio-outbound-ports", "OutboundPortsExclude": "istio-local-outbound-ports-exclude",
    "KubevirtInterfaces": "kube-virt-interfaces", "RedirectDNS": "redirect-dns", "CaptureAllDNS": "capture-all-dns",
    "DropInvalid": "drop-invalid", "OwnerGroupsInclude": "ISTIO_OUTBOUND_OWNER_GROUPS",
    "OwnerGroupsExclude": "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
    "HostIPv4LoopbackCidr": "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "EnableIPv6": "ENABLE_INBOUND_IPV6",
    "EnableInboundIPv6": "ENABLE_INBOUND_IPV6", "DNSServersV4": "DNS_SERVERS_V4", "DNSServersV6": "DNS_SERVERS_V6",
}
NO_RULE_EFFECT = {"RestoreFormat", "DryRun"}
# 1.7/1.8 switched DNS capture on through package variables the tests set; the CLI's switch was
# ISTIO_META_DNS_CAPTURE (history §4.5, §4.6), which netsim reads as --redirect-dns.
DNS_SWITCHES = {"package var dnsCaptureByEnvoy", "package var dnsCaptureByAgent"}
# Owner groups named in the goldens resolve as in today's corpus (its README "How the kernel/ files were made").
GROUPS = (("root", 0), ("java", 5001), ("ftp", 5002))


@cache
def meta(name: str) -> dict[str, Any]:
    data = yaml.safe_load((conformance_dir("istio-iptables-history") / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def releases(name: str) -> list[str]:
    """The first and the last minor release the golden applies to (``applies_to_releases: "1.14.0-1.17.8 …"``)."""
    found = re.findall(r"\b(1\.\d+)\.\d+", meta(name)["applies_to_releases"])
    first, last = (found[0], found[1]) if len(found) >= 2 else (name.split("/")[0],) * 2
    return [first] if first == last else [first, last]


def modelled(release: str) -> bool:
    major, minor = (int(x) for x in release.split("."))
    return (major, minor) >= LAYOUT_FLOOR


def options(name: str) -> dict[str, Any] | None:
    """The golden's options as conformance-YAML keys over the Go zero values (today's ``empty`` case),
    or None when it sets something that is not a Go config field (a script command line, package vars)."""
    base = yaml.safe_load((CONFORMANCE / "istio-iptables" / "empty.yaml").read_text())["config"]
    config = {**base, "istio-inbound-tproxy-mark": "1337"}
    for key, value in (meta(name).get("options") or {}).items():
        field = key.removeprefix("default ")
        if field in NO_RULE_EFFECT or (field in DNS_SWITCHES and not value):
            continue
        if field in DNS_SWITCHES:
            config["redirect-dns"] = True
            continue
        if field not in GO_FIELDS:
            return None
        config[GO_FIELDS[field]] = value
    return config


def unmapped(name: str) -> list[str]:
    fields = [k.removeprefix("default ") for k in meta(name).get("options") or {}]
    return [f for f in fields if f not in GO_FIELDS and f not in NO_RULE_EFFECT and f not in DNS_SWITCHES]


def golden_payloads(name: str) -> tuple[RestorePayload, RestorePayload | None]:
    """The golden read in its own format: restore text (1.24 on) or a command log (every older format)."""
    text = (HISTORY / f"{name}.golden").read_text()
    names = Names(groups=GROUPS)
    return parse_dry_run(text, names) if "* nat" in text else parse_command_log(text, names)


# 1.6's goldens end with the experimental DNS_CAPTURE block (UDP 53 → 15013, history §4.4) that their YAML
# options do not record; netsim has no DNS_CAPTURE input (nothing ever set it for an injected pod).
DNS_CAPTURE_1_6 = {"1.6/ipv4-uid-gid", "1.6/rules-with-ip-range"}


def why_not(name: str, release: str) -> str | None:
    """Why this golden cannot be reproduced yet, or None."""
    if not modelled(release):
        return f"layout of release {release} not modelled yet"
    if options(name) is None:
        return f"an option of {name} has no netsim equivalent yet: {unmapped(name)}"
    if name in DNS_CAPTURE_1_6:
        return "1.6's experimental DNS_CAPTURE rules (not in the golden's recorded options) not modelled yet"
    return None


def cases() -> list[Any]:
    out = []
    for name in GOLDENS:
        for release in releases(name):
            reason = why_not(name, release)
            marks = [] if reason is None else [pytest.mark.xfail(strict=True, reason=reason)]
            out.append(pytest.param(name, release, id=f"{name}@{release}", marks=marks))
    return out


CASES = cases()
NOT_MODELLED = [c for c in CASES if c.marks]


def test_the_not_modelled_list_is_explicit_and_counted() -> None:
    """What is left is said, not hidden: every release before LAYOUT_FLOOR and the goldens listed by why_not."""
    if not GOLDENS:
        pytest.skip(f"conformance data not found at {HISTORY}")
    assert len(CASES) >= len(GOLDENS)
    assert {r for c in CASES for r in [c.values[1]] if not modelled(r)} <= {c.values[1] for c in NOT_MODELLED}
    # 1.2–1.5 (12: the script era and 1.5), the 1.10 conntrack-zone golden (its package variable), 1.6 (2).
    assert len(NOT_MODELLED) == 15, [c.id for c in NOT_MODELLED]


@pytest.mark.parametrize(("name", "release"), CASES)
def test_compile_reproduces_the_releases_golden(name: str, release: str, tmp_path: Path) -> None:
    config = options(name)
    assert config is not None, f"{name}: options netsim cannot spell as istio-iptables options yet"
    v4, v6 = golden_payloads(name)
    args, env = invocation(config)
    group_file = tmp_path / "group"
    group_file.write_text("".join(f"{group}:x:{gid}:\n" for group, gid in GROUPS))
    args.append(f"--group-file={group_file}")
    for family, payload in ((Family.IPV4, v4), (Family.IPV6, v6)):
        if payload is None:
            continue
        r = compile_(*args, "--istio-version", release, "--family", "4" if family is Family.IPV4 else "6", env=env)
        assert r.code == 0, r.stderr
        assert save_tables(r.stdout) == save_tables(render_save(apply_payload(payload))), \
            f"{name} at {release}, IPv{4 if family is Family.IPV4 else 6}"


def test_the_command_log_reader_reads_every_older_format() -> None:
    """Every pre-1.24 golden (script log, per-command list, per-command + save) gives IPv4 rules."""
    older = [n for n in GOLDENS if "* nat" not in (HISTORY / f"{n}.golden").read_text()]
    if not older:
        pytest.skip(f"conformance data not found at {HISTORY}")
    for name in older:
        v4, _ = golden_payloads(name)
        assert any(op.chain == "ISTIO_OUTPUT" for op in v4.ops), name


@pytest.mark.parametrize(("release", "chain"), [("1.22", "nat OUTPUT"), ("1.23", "nat ISTIO_OUTPUT"),
                                                ("1.24", "nat ISTIO_OUTPUT"), (None, "nat ISTIO_OUTPUT_DNS")])
def test_trace_walks_the_releases_own_rules(release: str | None, chain: str) -> None:
    """``trace --pod --istio-version V`` compiles V's layout: the app's UDP query to kube-dns is captured by
    the rule of that release's chain (nat OUTPUT until 1.22, ISTIO_OUTPUT in 1.23–1.24, ISTIO_OUTPUT_DNS after)."""
    version = ["--istio-version", release] if release else []
    r = run(["trace", "--pod", "rules/dns-capture/pod.yaml", *version, "--proto", "udp", "--dst", "10.96.0.10:53"])
    assert r.code == 0, r.stderr
    assert f"Captured by the DNS proxy on port 15053 via {chain} rule" in r.stdout, r.stdout


def test_ipv6_before_1_12_is_refused_not_guessed() -> None:
    r = compile_("--istio-version", "1.11", "--ipv6")
    assert r.code == 2 and r.error_lines == [
        "Error: --istio-version 1.11 with IPv6: the ip6tables rules of releases before 1.12 (nat only, "
        "spec/istio-iptables-history.md §3) are not modelled yet"], r.stderr
    assert compile_("--istio-version", "1.12", "--ipv6").code == 0
