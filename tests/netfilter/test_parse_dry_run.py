"""Istio's dry-run format reads back: every iptables golden parses into its payloads, which render
back to the golden byte for byte and, applied, give exactly the kernel's iptables-save."""

from __future__ import annotations

import pytest
import yaml
from conftest import CONFORMANCE, conformance_dir
from test_parse_render import CORPUS_NAMES, _diff, _without_comments

from netsim.capture.dryrun import render_dry_run
from netsim.errors import RulesetError
from netsim.netfilter import Family, apply_payload, parse_dry_run, render_save

_CASES = CONFORMANCE / "istio-iptables"


def _goldens() -> list[str]:
    found = sorted(p.name.removesuffix(".iptables.golden") for p in _CASES.glob("*.iptables.golden"))
    return found or ["<absent>"]


@pytest.mark.parametrize("name", _goldens())
def test_golden_parses_and_renders_back(name: str) -> None:
    folder = conformance_dir("istio-iptables")
    golden = (folder / f"{name}.iptables.golden").read_text()
    config = yaml.safe_load((folder / f"{name}.yaml").read_text())["config"]
    v4, v6 = parse_dry_run(golden, CORPUS_NAMES)
    assert (v6 is not None) == bool(config["ENABLE_INBOUND_IPV6"])
    assert render_dry_run(v4, v6).strip() == golden.strip()
    for payload, kernel in ((v4, f"{name}.v4.iptables-save"), (v6, f"{name}.v6.ip6tables-save")):
        if payload is None:
            continue
        expected = _without_comments((folder / "kernel" / kernel).read_text())
        got = render_save(apply_payload(payload))
        for table in ("*mangle", "*nat", "*raw"):  # table blocks compare one by one (backend order differs)
            want = expected.split(table + "\n")[1].split("COMMIT")[0] if table in expected else None
            have = got.split(table + "\n")[1].split("COMMIT")[0] if table in got else None
            assert have == want, _diff(want or "", have or "")


def test_payload_family_and_probes() -> None:
    text = "iptables-save\nip6tables-save\n* nat\n-N ISTIO_X\n-A ISTIO_X -d ::1/128 -j RETURN\nCOMMIT\n"
    with pytest.raises(RulesetError, match=r"line 5: invalid mask `128. specified .an IPv6 address in an IPv4 ruleset"):
        parse_dry_run(text)
    v4, v6 = parse_dry_run("iptables-save\nip6tables-save\n* nat\n-A OUTPUT -j RETURN\nCOMMIT\n"
                           "* nat\n-A OUTPUT -d ::1/128 -j RETURN\nCOMMIT\niptables-save\nip6tables-save\n")
    assert v4.family is Family.IPV4 and len(v4.ops) == 1
    assert v6 is not None and v6.family is Family.IPV6 and v6.ops[0].args == ("-d", "::1/128", "-j", "RETURN")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* nat\n-A\nCOMMIT\n", "line 2: "),
        ("* nat\n-I OUTPUT x -j RETURN\nCOMMIT\n", "line 2: "),
        ("-A OUTPUT -j RETURN\n", "line 1: "),
        ("* nat\n-A OUTPUT -j RETURN\n", "no COMMIT"),
        ("iptables-restore --noflush\n", "line 1: "),
    ],
)
def test_bad_dry_run_text_names_the_line(text: str, message: str) -> None:
    with pytest.raises(RulesetError) as info:
        parse_dry_run(text)
    assert message in str(info.value)
