"""istiod's service-model pieces the DNS table and the mesh hop share: resolution and exportTo."""

from __future__ import annotations

import json

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


# --------------------------------------------------------------------------------------------
# sidecar.istio.io/inject: one reading for the capture derivation and the registry

INJECT_VALUES = (None, "", "true", "TRUE", "True", "y", "Yes", "on", "ON", "false", "False", "n", "no", "off",
                 "0", "1", "enabled", "disabled", " true", "garbage")


def _inject_pod(label: str | None, annotation: str | None) -> str:
    meta = ["metadata:", "  name: p", "  namespace: ns1"]
    if label is not None:
        meta += ["  labels:", f"    sidecar.istio.io/inject: {json.dumps(label)}"]
    if annotation is not None:
        meta += ["  annotations:", f"    sidecar.istio.io/inject: {json.dumps(annotation)}"]
    return "\n".join(["apiVersion: v1", "kind: Pod", *meta, "spec:", "  containers:", "  - name: app",
                      "status:", "  podIP: 10.0.0.7", ""])


@pytest.mark.parametrize("label", INJECT_VALUES)
@pytest.mark.parametrize("annotation", INJECT_VALUES)
def test_capture_and_registry_agree_on_sidecar_inject(label: str | None, annotation: str | None) -> None:
    """The derivation (istio-init or not) and the registry (sidecar or not) read the same choice, the injector's:
    the label before the annotation, y/yes/true/on in any case inject, empty is no choice, anything else
    disables; with no choice the pod is taken as injected by both (no Namespace read)."""
    from netsim.k8s import parse_objects
    from netsim.registry import build_registry
    from netsim.spec.pod import derive, load_pod
    from netsim.spec.versions import profile_for

    text = _inject_pod(label, annotation)
    captured = derive(load_pod("pod.yaml", text=text), profile_for(None)).capture
    (info,) = build_registry(parse_objects(text, "pod.yaml").objects).pods
    assert captured == info.sidecar, (label, annotation, info.sidecar_why)
    chosen = label if label is not None else annotation
    if chosen is not None and chosen != "":
        assert info.sidecar == (chosen.lower() in {"y", "yes", "true", "on"})  # the injector's spellings
        assert ("label" if label is not None else "annotation") in info.sidecar_why
    else:
        assert info.sidecar  # no choice: the defaults (assumed injected without the Namespace)
