"""The one Istio-version parser, and the three version tables that read through it."""

from __future__ import annotations

import pytest

from netsim.dns.allocate import Generation, generation_for_version
from netsim.dns.profile import Profile, profile_for_version
from netsim.errors import SpecError
from netsim.istio_version import CURRENT, IstioVersion, parse_istio_version
from netsim.mesh.versions import mesh_profile
from netsim.spec.versions import parse_version as spec_parse_version


@pytest.mark.parametrize(("text", "version"), [
    ("1.5", (1, 5, 0)), ("1.6.6", (1, 6, 6)), ("v1.24.0-beta.1", (1, 24, 0)), (" 1.9+build ", (1, 9, 0)),
    ("current", CURRENT), ("Latest", CURRENT), ("master", CURRENT), (None, CURRENT),
])
def test_parse_istio_version_gives_a_comparable_value(text: str | None, version: tuple[int, int, int]) -> None:
    v = parse_istio_version(text)
    assert v == version and isinstance(v, IstioVersion)


def test_current_sorts_after_every_numbered_release() -> None:
    assert parse_istio_version("1.99.99") < CURRENT


@pytest.mark.parametrize("bad", ["2.0", "1", "one.two", "", "1.x"])
def test_bad_version_names_the_value_and_the_option_when_given(bad: str) -> None:
    with pytest.raises(SpecError) as plain:
        parse_istio_version(bad)
    assert str(plain.value) == f'"{bad}": not an Istio version such as 1.2, 1.24.3 or current'
    with pytest.raises(SpecError) as located:
        parse_istio_version(bad, option="--istio-version")
    assert str(located.value) == f"--istio-version {bad!r}: not an Istio version such as 1.2, 1.24.3 or current"


def test_the_three_tables_agree_on_what_current_means() -> None:
    assert spec_parse_version("current") == CURRENT[:2]
    assert mesh_profile("current").version == CURRENT == mesh_profile("").version
    assert profile_for_version("current") == profile_for_version(None) == Profile()
    assert generation_for_version("current") is Generation.V2
