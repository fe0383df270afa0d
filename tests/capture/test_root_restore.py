"""Root: Istio's payloads, loaded with the real iptables-restore into a fresh namespace, save back exactly
as netsim renders them (and, through test_kernel_save, as the corpus' kernel/ dumps show).

Owner-group cases name groups (java, ftp): those loads run in a private mount namespace (``unshare -m``)
where a copy of /etc/group with the fixture groups is bind-mounted; the host's /etc/group is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from capture_cases import (
    FIXTURE_GROUPS,
    assert_same_tables,
    assert_same_text,
    case_config,
    case_names,
    expected,
)

from netsim.capture.compiled import compile_config
from netsim.capture.dryrun import render_restore
from netsim.netfilter.matches import Names
from netsim.netfilter.model import Family
from netsim.netfilter.render import render_save

pytestmark = pytest.mark.root

NAMES = Names(groups=tuple(FIXTURE_GROUPS.items()))
IPTABLES_CASES = [n for n in case_names() if expected(n, "iptables")]
TIMEOUT = 60


@pytest.fixture(scope="module")
def group_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of /etc/group plus the fixture groups, for bind-mounting in a private mount namespace."""
    path = tmp_path_factory.mktemp("groups") / "group"
    base = Path("/etc/group").read_text() if Path("/etc/group").is_file() else ""
    extra = "".join(f"{name}:x:{gid}:\n" for name, gid in FIXTURE_GROUPS.items())
    path.write_text(base + ("" if base.endswith("\n") or not base else "\n") + extra)
    return path


def _run(ns: str, argv: list[str], stdin: str | None = None, group_file: Path | None = None) -> str:
    cmd = ["ip", "netns", "exec", ns, *argv]
    if group_file is not None:
        # Private mount namespace: the bind mount of the fixture group file is invisible outside it.
        script = 'mount --bind "$1" /etc/group && shift && exec "$@"'
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(group_file), *cmd]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}"
    return done.stdout


@pytest.mark.parametrize("name", IPTABLES_CASES)
def test_restored_payload_saves_back_as_rendered(name: str, netns: str, group_file: Path) -> None:
    config = case_config(name)
    compiled = compile_config(config, names=NAMES)
    names_groups = config.owner_groups_include != "*" or bool(config.owner_groups_exclude)
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


@pytest.mark.parametrize("name", [n for n in IPTABLES_CASES if case_config(n).enable_ipv6 or
                                  case_config(n).mode.value == "TPROXY"])
def test_route_commands_apply(name: str, netns: str) -> None:
    """The ::6 address and TPROXY policy routing are valid ``ip`` commands and land as intended."""
    config = case_config(name)
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
