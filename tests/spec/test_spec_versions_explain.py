"""Istio-version profiles and the --explain report as a value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netsim.errors import SpecError
from netsim.spec import explain, load_pod, render_json, render_text, resolve
from netsim.spec.resolve import PodNetwork
from netsim.spec.versions import CURRENT, parse_version, profile_for


@pytest.mark.parametrize(("text", "version"), [("1.2", (1, 2)), ("1.24.3", (1, 24)), ("v1.9.0-beta.1", (1, 9)),
                                               ("current", CURRENT), ("latest", CURRENT)])
def test_parse_version(text: str, version: tuple[int, int]) -> None:
    assert parse_version(text) == version


@pytest.mark.parametrize("bad", ["2.0", "1", "one.two", ""])
def test_bad_version(bad: str) -> None:
    with pytest.raises(SpecError):
        parse_version(bad)


def test_profiles_pick_the_release_range() -> None:
    assert profile_for("1.2").inbound_ports_default == "containerPorts"
    assert profile_for("1.4").exclude_prefix == ""
    assert profile_for("1.5.1").exclude_prefix == "15090,"
    assert profile_for("1.30").exclude_prefix == "15090,15021,"
    assert profile_for(None).label == "Istio (current)"
    assert profile_for("1.2").label == "Istio 1.2"


def test_explain_is_a_pure_report_rendered_as_text_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    p = load_pod("rules/exclude-5701/pod.yaml")
    res = resolve(pod=p, net=PodNetwork(pod_ips=("10.244.0.5",)), flags={"istio-outbound-ports": "443"})
    report = explain(res)
    assert report == explain(res)
    by_key = {r.key: r for r in report.options}
    assert by_key["istio-outbound-ports"].source == "command line"
    assert by_key["istio-service-exclude-cidr"].origin == \
        "annotation traffic.sidecar.istio.io/excludeOutboundIPRanges"
    assert "iptables-probe-port" not in by_key  # no effect on rules and not set
    text = render_text(report)
    assert "[NOT USED] traffic.sidecar.istio.io/excludeInboundPorts = '5701' (Deployment metadata)" in text
    data = json.loads(render_json(report))
    assert data["subject"] == "rules/exclude-5701/pod.yaml: Deployment cache"
    assert {f["key"] for f in data["findings"]} == {
        "traffic.sidecar.istio.io/excludeInboundPorts", "traffic.sidecar.istio.io/excludeOutboundPorts",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges"}


def test_resolution_config_is_what_the_options_say() -> None:
    res = resolve(flags={"istio-inbound-ports": "*", "proxy-uid": "5"}, env={"ISTIO_SERVICE_CIDR": "10.0.0.0/8"})
    assert res.config is not None
    assert res.config.inbound_ports == ("*",) and res.config.proxy_gid == ("5",)
    assert [str(c) for c in res.config.outbound_cidrs.v4] == ["10.0.0.0/8"]
