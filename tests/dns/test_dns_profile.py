"""Istio-version profiles: each behaviour change of spec section 12 switches at its release."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from netsim.cli import cli
from netsim.dns.allocate import Generation
from netsim.dns.profile import CHANGES, profile_for_version
from netsim.dns.table import load_config


@pytest.mark.parametrize("feature", sorted(CHANGES))
def test_each_switch_flips_at_its_release(feature: str) -> None:
    major, minor, _ = CHANGES[feature]
    assert getattr(profile_for_version(f"{major}.{minor}"), feature) is True
    assert getattr(profile_for_version(f"{major}.{minor - 1}"), feature) is False
    assert getattr(profile_for_version(None), feature) is True


def test_generation_and_vip_consumption_by_version() -> None:
    assert profile_for_version("1.10").generation is Generation.SEQ_V4
    assert profile_for_version("1.10").single_auto_vip and not profile_for_version("1.24").single_auto_vip
    assert profile_for_version("1.24").generation is Generation.HASH_1_22
    assert profile_for_version("1.24", Generation.V2).ip_autoallocate


def q(*args: str) -> str:
    r = CliRunner().invoke(cli, ["dns", "query", *args])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_search_cname_for_names_ending_in_the_first_search_domain_before_1_27(tmp_path: Path) -> None:
    nt = tmp_path / "nt.json"
    nt.write_text(json.dumps({"productpage.ns1.svc.cluster.local": {
        "ips": ["9.9.9.9"], "registry": "Kubernetes", "shortname": "productpage", "namespace": "ns1"}}))
    name = "productpage.ns1.svc.cluster.local.ns1.svc.cluster.local"
    assert "CNAME\tproductpage.ns1.svc.cluster.local." in q(name, "--name-table", str(nt), "-n", "ns1",
                                                             "--istio-version", "1.26")
    assert "forwards" in q(name, "--name-table", str(nt), "-n", "ns1", "--istio-version", "1.27")


def test_service_entry_host_with_trailing_dot_before_1_13(tmp_path: Path) -> None:
    nt = tmp_path / "nt.json"
    nt.write_text(json.dumps({"example.localhost.": {"ips": ["3.3.3.3"], "registry": "External"}}))
    assert "3.3.3.3" in q("example.localhost", "--name-table", str(nt), "--istio-version", "1.13")
    assert "forwards" in q("example.localhost", "--name-table", str(nt), "--istio-version", "1.12")


def write(tmp: Path, text: str) -> Path:
    p = tmp / "c.yaml"
    p.write_text(text)
    return p


def test_same_host_in_two_service_entries_merges_from_1_18(tmp_path: Path) -> None:
    p = write(tmp_path, "".join(
        f"---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{name: {n}, namespace: a}}\n"
        f"spec: {{hosts: [db.example.com], addresses: [{ip}], resolution: STATIC}}\n"
        for n, ip in (("a1", "192.0.2.1"), ("a2", "192.0.2.2"))))
    assert load_config([p], namespace="a", istio_version="1.17").table.entries["db.example.com"].ips == (
        "192.0.2.1",)
    assert load_config([p], namespace="a", istio_version="1.18").table.entries["db.example.com"].ips == (
        "192.0.2.1", "192.0.2.2")


HEADLESS = """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: a}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: a, labels: {app: db}}
spec: {hostname: db-0, subdomain: db}
status: {podIPs: [{ip: 10.0.0.1}, {ip: 10.0.1.1}], conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: a, labels: {app: db}}
spec: {hostname: db-1, subdomain: db}
status: {podIP: 10.0.0.2, conditions: [{type: Ready, status: "False"}]}
"""


@pytest.mark.parametrize(("version", "expected"), [
    ("1.23", ("10.0.0.1", "10.0.0.2")),  # unhealthy listed, first pod IP only
    ("1.24", ("10.0.0.1",)),
    ("1.29", ("10.0.0.1", "10.0.1.1")),  # every IP of a multi-IP pod
])
def test_headless_endpoints_by_version(tmp_path: Path, version: str, expected: tuple[str, ...]) -> None:
    p = write(tmp_path, HEADLESS)
    assert load_config([p], namespace="a", istio_version=version).table.entries["db.a.svc.cluster.local"].ips \
        == expected


def test_server_switches_by_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import netsim.dns.server as server_mod

    seen: list[object] = []
    monkeypatch.setattr(server_mod, "run", lambda cfg, loader, **kw: seen.append(cfg))
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 10.96.0.10\nnameserver fd00::10\n")
    nt = tmp_path / "nt.json"
    nt.write_text("{}")
    for version in ("1.22", "1.25"):
        r = CliRunner().invoke(cli, ["dns", "serve", "--name-table", str(nt), "--resolv-conf", str(rc),
                                     "--listen", "localhost:5353", "--istio-version", version])
        assert r.exit_code == 0, r.output
    old, new = seen
    assert old.listen == (("127.0.0.1", 5353),) and not old.shuffle_upstreams  # type: ignore[attr-defined]
    assert new.listen == (("127.0.0.1", 5353), ("::1", 5353)) and new.shuffle_upstreams  # type: ignore[attr-defined]
