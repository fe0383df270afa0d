"""Istio's expected outputs of older releases (../shared/conformance/istio-iptables-history, read in place):
each golden, read in its own format by netsim's parser and rendered as kernel-canonical iptables-save,
must equal ``netsim compile --istio-version R`` under the golden's options, for the first and the last
minor release it applies to. Releases whose layout netsim does not model yet are an explicit, counted
strict xfail list (a golden that starts passing fails the run until the list is updated)."""

from __future__ import annotations

import re
import shlex
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from compile_runner import compile_, invocation, run, save_tables
from conftest import CONFORMANCE, conformance_dir, group_file_with, run_in_netns

from netsim.capture.dryrun import render_restore
from netsim.netfilter import Family, Names, apply_payload, parse_command_log, parse_dry_run, render_save
from netsim.netfilter.model import RestorePayload
from netsim.spec.flags import OPTIONS_BY_KEY
from netsim.spec.releases import GO_NAME_TO_KEY

HISTORY = CONFORMANCE / "istio-iptables-history"
GOLDENS = sorted(str(p.relative_to(HISTORY).with_suffix("")) for p in HISTORY.glob("*/*.golden")) \
    if HISTORY.is_dir() else []

NO_RULE_EFFECT = {"RestoreFormat", "DryRun"}
# Owner groups named in the goldens resolve as in today's corpus (its README "How the kernel/ files were made").
GROUPS = (("root", 0), ("java", 5001), ("ftp", 5002))
# Inputs a golden's rules show were on but its YAML does not record: 1.6's goldens end with the experimental
# DNS_CAPTURE block (UDP 53 → 15013 with the proxy-GID RETURNs, history §4.4), an environment variable
# the Go test harness had set; no other input produces those rules.
UNRECORDED = {"1.6/ipv4-uid-gid": {"DNS_CAPTURE": "1"}, "1.6/rules-with-ip-range": {"DNS_CAPTURE": "1"}}


@cache
def meta(name: str) -> dict[str, Any]:
    data = yaml.safe_load((conformance_dir("istio-iptables-history") / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def releases(name: str) -> list[str]:
    """The first and the last release the golden applies to (``applies_to_releases: "1.14.0-1.17.8 …"``),
    patch included: several layouts changed at a patch release (history §4)."""
    found = re.findall(r"\b1\.\d+\.\d+", meta(name)["applies_to_releases"])
    first, last = (found[0], found[1]) if len(found) >= 2 else (name.split("/")[0],) * 2
    return [first] if first == last else [first, last]


def options(name: str) -> tuple[list[str], dict[str, str]]:
    """The golden's options as ``netsim compile`` arguments and environment: a recorded command line (the
    script era and 1.5) is passed as it is; Go config fields and package variables are mapped by
    ``netsim.spec.releases`` (one name, one option); what is not recorded keeps istio-iptables' default."""
    data = meta(name)
    recorded = data.get("options") or {}
    if "command_line" in recorded:
        line = recorded["command_line"]
        args = [] if line.startswith("(") else shlex.split(line)
        env_text = " ".join(str(v) for v in (data.get("environment") or {}).values())
        if "-u" not in args and "id prints 0" in env_text:
            args += ["-u", "0,0"]  # the stubbed `id -u istio-proxy` printed 0, then the script appended ",0"
        ipv6 = re.search(r"hostname stub: ['\"]?([0-9a-f:]+:[0-9a-f:]*) via STUB_IP", yaml.safe_dump(data))
        args += [f"--pod-ip={ipv6[1]}"] if ipv6 else ["--ipv6=false"]
        return args, dict(UNRECORDED.get(name, {}))
    config: dict[str, Any] = {"ENABLE_INBOUND_IPV6": False, "DNS_SERVERS_V4": [], "DNS_SERVERS_V6": [],
                              **UNRECORDED.get(name, {})}
    env: dict[str, str] = {}
    for key, value in recorded.items():
        field = key.removeprefix("default ").removeprefix("package var ")
        if field in NO_RULE_EFFECT:
            continue
        assert field in GO_NAME_TO_KEY, f"{name}: {field} has no netsim option"
        if key.startswith("package var ") and value in ("", False):
            continue
        option = GO_NAME_TO_KEY[field]
        if key.startswith("package var "):  # the test set the variable its environment variable feeds
            env[OPTIONS_BY_KEY[option].envs[-1]] = "true"
        else:
            config[option] = value
    args, more = invocation(config)
    return args, {**more, **env}


def golden_payloads(name: str) -> tuple[RestorePayload, RestorePayload | None]:
    """The golden read in its own format: restore text (1.24 on) or a command log (every older format)."""
    text = (HISTORY / f"{name}.golden").read_text()
    names = Names(groups=GROUPS)
    return parse_dry_run(text, names) if "* nat" in text else parse_command_log(text, names)


def cases() -> list[Any]:
    return [pytest.param(name, release, id=f"{name}@{release}") for name in GOLDENS for release in releases(name)]


CASES = cases()


def test_every_golden_is_a_case_and_none_is_left_out() -> None:
    """Every golden is checked at the first and the last release it applies to, 1.2 through 1.25."""
    if not GOLDENS:
        pytest.skip(f"conformance data not found at {HISTORY}")
    assert {c.values[0] for c in CASES} == set(GOLDENS)
    assert {c.values[1].rsplit(".", 1)[0] for c in CASES} >= {f"1.{m}" for m in range(2, 26)} - {"1.15", "1.16",
                                                                                                "1.17", "1.19",
                                                                                                "1.22"}


@pytest.mark.parametrize(("name", "release"), CASES)
def test_compile_reproduces_the_releases_golden(name: str, release: str, tmp_path: Path) -> None:
    args, env = options(name)
    v4, v6 = golden_payloads(name)
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


def test_ipv6_before_1_12_is_the_nat_only_list() -> None:
    """1.5–1.11 wrote a separate IPv6 list: nat only whatever -m says, the ``-b *`` redirect (history §3)."""
    r = compile_("--istio-version", "1.11", "--ipv6", "-m", "TPROXY", "-b", "*", "-i", "*", "--family", "6")
    assert r.code == 0, r.stderr
    tables = save_tables(r.stdout)
    assert set(tables) == {"nat"}, tables
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT" in tables["nat"]
    assert "-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN" in tables["nat"]
    r12 = compile_("--istio-version", "1.12", "--ipv6", "-m", "TPROXY", "-b", "*", "-i", "*", "--family", "6")
    assert "mangle" in save_tables(r12.stdout)  # 1.12: IPv6 gets TPROXY (history §4.12)


def trace_json(*args: str) -> dict[str, Any]:
    import json

    r = run(["trace", "--pod", "rules/mtls-503/pod.yaml", *args, "--format", "json"])
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("release", ["1.0", "1.2"])
def test_before_1_3_one_listener_tells_inbound_from_outbound_by_destination(release: str) -> None:
    """Before 1.3 inbound went to 15001 as well and Envoy handed each connection to the listener of its
    original destination (history §2.1): an inbound connection is captured inbound (not a loop back
    into 15001), an outbound one outbound, through that release's own rules."""
    inbound = trace_json("--istio-version", release, "--from", "10.1.2.3", "--dst", "10.244.0.5:8080")
    assert (inbound["verdict"], inbound["listener"]["port"]) == ("captured-inbound", 15001), inbound["summary"]
    assert "reaching the app" in inbound["summary"]
    outbound = trace_json("--istio-version", release, "--dst", "10.96.0.1:80")
    assert (outbound["verdict"], outbound["listener"]["port"]) == ("captured-outbound", 15001), outbound["summary"]
    current = trace_json("--from", "10.1.2.3", "--dst", "10.244.0.5:8080")
    assert (current["verdict"], current["listener"]["port"]) == ("captured-inbound", 15006)


def test_mtls_503_under_1_2_bypasses_the_sidecar_on_the_undeclared_port() -> None:
    """The seeds' story, as a user types it: under 1.2 the injector passed ``-b 8080`` (the declared
    containerPort), so a connection to :80 is not captured (the mTLS client's bytes reach nginx: 503);
    1.2's own rules are walked (no 15008 RETURN, no 127.0.0.6 rule), and today's -b * captures it."""
    old = trace_json("--istio-version", "1.2", "--from", "10.1.2.3", "--dst", "10.244.0.5:80")
    assert old["verdict"] == "bypassed", old["summary"]
    assert "--dport 8080 -j ISTIO_IN_REDIRECT` failed on -m tcp --dport 8080 (destination port is 80)" in old["summary"]
    walked = [step["rule"] for hop in old["hops"] for step in hop["steps"] if step.get("rule")]
    assert walked and not any("15008" in text or "127.0.0.6" in text for text in walked), walked
    assert trace_json("--from", "10.1.2.3", "--dst", "10.244.0.5:80")["verdict"] == "captured-inbound"


_LOG_BINARIES = ("iptables", "ip6tables", "ip")
_IGNORED_FAILURES = ("-D", "-F", "-X")  # the script's cleanup of old chains, run with errors ignored


@pytest.mark.root
@pytest.mark.parametrize(("name", "release"), CASES)
def test_golden_applied_to_a_kernel_saves_as_netsim_renders(name: str, release: str, netns: str,
                                                            tmp_path: Path) -> None:
    """Each golden applied to a fresh namespace as its release applied it (the command log run command by
    command, in order; the restore text loaded with ``iptables-restore --noflush``): the kernel's
    ``iptables-save`` equals netsim's rendering of that release's rules under the golden's options."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare missing: cannot provide the golden's groups without touching /etc/group")
    groups = group_file_with(tmp_path / "group", {g: gid for g, gid in GROUPS if g != "root"})
    text = (HISTORY / f"{name}.golden").read_text()
    v4, v6 = golden_payloads(name)
    if "* nat" in text:
        lines = [line.strip() for line in text.splitlines()]
        for payload in (v4, v6):
            if payload is None:
                continue
            restore = render_restore(payload)
            rule_lines = [line for line in restore.splitlines() if line.startswith(("-A", "-I"))]
            assert all(line in lines for line in rule_lines), f"{name}: netsim re-read the golden differently"
            run_in_netns(netns, [payload.family.restore_command, "--noflush"], restore, groups)
    else:
        for line in text.splitlines():
            argv = shlex.split(line)
            if not argv or argv[0] not in _LOG_BINARIES or len(argv) == 1:
                continue
            ignored = argv[0] != "ip" and any(flag in argv for flag in _IGNORED_FAILURES)
            run_in_netns(netns, argv, group_file=groups, check=not ignored)
    args, env = options(name)
    group_arg = tmp_path / "group-arg"
    group_arg.write_text("".join(f"{group}:x:{gid}:\n" for group, gid in GROUPS))
    for family, payload in ((Family.IPV4, v4), (Family.IPV6, v6)):
        if payload is None:
            continue
        saved = run_in_netns(netns, [family.save_command]).stdout
        r = compile_(*args, f"--group-file={group_arg}", "--istio-version", release,
                     "--family", "4" if family is Family.IPV4 else "6", env=env)
        assert r.code == 0, r.stderr
        assert save_tables(r.stdout) == save_tables(saved), f"{name} at {release}, {family.save_command}"


def test_explain_prints_the_releases_option_names_one_to_one() -> None:
    """``compile --istio-version V --explain`` lists the names release V had: the script's variables (what
    a 1.2 golden's "Variables:" dump prints) and, from 1.5, the Go config names the YAMLs record; each
    name maps to exactly one netsim option."""
    import json

    if not GOLDENS:
        pytest.skip(f"conformance data not found at {HISTORY}")
    for name in GOLDENS:
        release = releases(name)[0]
        r = compile_("--istio-version", release, "--explain", "--format", "json")
        assert r.code == 0, r.stderr
        rows = json.loads(r.stdout)["names"]
        by_go = {go: row["key"] for row in rows for go in row["go_names"]}
        by_var = {row["script_var"]: row["key"] for row in rows if row["script_var"]}
        recorded = meta(name).get("options") or {}
        for key in recorded:
            field = key.removeprefix("default ").removeprefix("package var ")
            if field in NO_RULE_EFFECT or field == "command_line":
                continue
            assert by_go.get(field) == GO_NAME_TO_KEY[field], (name, release, field)
        text = (HISTORY / f"{name}.golden").read_text()
        if tuple(int(x) for x in release.split(".")) < (1, 5):  # the script's "Variables:" dump
            dumped = re.findall(r"^([A-Z_]+)=", text.split("Variables:")[1], re.M)
            known = [v for v in dumped if v in by_var]
            assert {"PROXY_PORT", "PROXY_UID", "INBOUND_PORTS_INCLUDE"} <= set(known), (name, dumped)
    text = compile_("--istio-version", "1.2", "--explain").stdout
    assert "envoy-port                             ← -p; script PROXY_PORT" in text, text


def test_a_pasted_1_2_dump_names_its_own_listeners(tmp_path: Path) -> None:
    """``trace --rules`` on 1.2's rules: the listener ports come from the dump (ISTIO_IN_REDIRECT → 15001),
    so the inbound capture is classified inbound; with ``--istio-version 1.2`` Envoy reaches the app from
    127.0.0.1 (no passthrough address before 1.10), without it today's Envoy (127.0.0.6) loops through
    1.2's un-owned lo rule, as it would in such a pod."""
    import json

    r = compile_("--pod", "rules/mtls-503/pod.yaml", "--istio-version", "1.2", "--pod-ip", "10.244.0.5",
                 "--family", "4")
    dump = tmp_path / "rules.save"
    dump.write_text(r.stdout)

    def verdict(*args: str) -> str:
        t = run(["trace", "--rules", str(dump), *args, "--format", "json"])
        assert t.code == 0, t.stderr
        return str(json.loads(t.stdout)["verdict"])

    inbound = ("--from", "10.1.2.3", "--dst", "10.244.0.5:8080")
    assert verdict("--istio-version", "1.2", *inbound) == "captured-inbound"
    assert verdict(*inbound) == "looped"
    assert verdict("--dst", "10.96.0.1:80") == "captured-outbound"


def test_1_0_writes_no_ipv6_rules_even_for_an_ipv6_pod() -> None:
    """History §2.1: the 1.0 script never decided IPv6 itself; with ENABLE_INBOUND_IPV6 set it ran no ip6tables."""
    r = compile_("--istio-version", "1.0", "--ipv6", "-i", "*", "--family", "6")
    assert r.code == 2 and r.error_lines == [
        "Error: option --family 6: this pod gets no ip6tables rules (the 1.0 script never wrote IPv6 rules)"]
    assert "-A INPUT -j REJECT" in compile_("--istio-version", "1.0", "-i", "*", "--family", "6").stdout


def test_nft_format_is_refused_for_a_release_without_the_nftables_backend() -> None:
    r = compile_("--istio-version", "1.2", "-i", "*", "--format", "nft")
    assert r.code == 2 and r.error_lines[0].startswith("Error: option --format nft: Istio 1.2 wrote no nftables rules")
    assert compile_("--istio-version", "1.27", "-i", "*", "--format", "nft").code == 0
