"""istiod's service-model pieces the DNS table and the mesh hop share: resolution and exportTo."""

from __future__ import annotations

import pytest

import netsim.dns.table as dns_table
import netsim.mesh.build as mesh_build
import netsim.mesh.model as mesh_model
from netsim.errors import ConfigError
from netsim.istio_service import (
    EXPORT_TO_ANNOTATION,
    Resolution,
    annotation_export_to,
    exported,
    se_resolution,
)
from netsim.k8s import K8sObject


def se(spec: dict[str, object]) -> K8sObject:
    return K8sObject(source="f.yaml", document=1, item=None, api_version="networking.istio.io/v1",
                     kind="ServiceEntry", namespace="ns", name="se", body={"spec": spec})


def test_dns_table_and_mesh_use_one_resolution_and_one_export_rule() -> None:
    assert dns_table.Resolution is mesh_model.Resolution is Resolution
    assert mesh_build.exported is exported
    assert mesh_model.EXPORT_TO_ANNOTATION == EXPORT_TO_ANNOTATION
    assert dns_table.Service is mesh_model.MeshService  # one registry type, two views


@pytest.mark.parametrize(("text", "resolution"), [
    (None, Resolution.PASSTHROUGH), ("NONE", Resolution.PASSTHROUGH), ("static", Resolution.CLIENT_SIDE_LB),
    ("DNS", Resolution.DNS_LB), ("DNS_ROUND_ROBIN", Resolution.DNS_ROUND_ROBIN_LB),
    ("DYNAMIC_DNS", Resolution.DYNAMIC_DNS),
])
def test_service_entry_resolution_reads_any_case_and_round_trips(text: str | None, resolution: Resolution) -> None:
    got = se_resolution(se({} if text is None else {"resolution": text}), {} if text is None else {"resolution": text})
    assert got is resolution
    assert got.se_name == (text or "NONE").upper()


def test_unknown_resolution_quotes_the_value_as_written_at_its_field() -> None:
    with pytest.raises(ConfigError) as e:
        se_resolution(se({"resolution": "sometimes"}), {"resolution": "sometimes"})
    assert str(e.value) == ("f.yaml: document 1: ServiceEntry ns/se: spec.resolution: 'sometimes' is not one of "
                            "NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS")


def test_alias_has_no_service_entry_spelling() -> None:
    with pytest.raises(KeyError):
        _ = Resolution.ALIAS.se_name


def test_export_to_annotation_is_a_comma_list() -> None:
    assert annotation_export_to({EXPORT_TO_ANNOTATION: " ., other ,,"}) == (".", "other")
    assert annotation_export_to({}) == ()


@pytest.mark.parametrize(("export_to", "owner", "client", "visible"), [
    ((), "a", "b", True), (("*",), "a", "b", True), ((".",), "a", "a", True), ((".",), "a", "b", False),
    (("b",), "a", "b", True), (("c",), "a", "b", False), (("~",), "a", "a", False),
])
def test_exported(export_to: tuple[str, ...], owner: str, client: str, visible: bool) -> None:
    assert exported(export_to, owner, client) is visible
