"""Manifests and options → ambient mode's inputs: whether a pod is enrolled in ambient (its labels and its
namespace's), the node agent's settings (``--ambient-config KEY=VALUE,…`` by the names of
spec/istio-ambient-capture.md §2.1) and the pod's overrides (its annotations, §2.2).

Owns: :func:`decide_mode` (ambient, sidecar, or opted out, with the reason) and :func:`pod_mode` (the same
with the Namespace objects beside the pod and in ``--config``), :func:`parse_ambient_config`,
:func:`pod_overrides`, :func:`ambient_release` (``--istio-version`` → the release the ambient compiler takes),
:func:`ambient_config` (a real agent's defaults for the release, then the settings) and :func:`compile_pod`
(``netsim.capture.ambient``'s compile with its refusal as one SpecError naming the release).
Never does: read files itself (``spec.pod`` and ``netsim.k8s`` do), build rules (``netsim.capture.ambient``).
Errors are SpecError, one line naming the option or annotation and the value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netsim.errors import SpecError
from netsim.istio_service import DATAPLANE_MODE, dataplane_choice
from netsim.spec.flags import parse_bool

if TYPE_CHECKING:
    from netsim.capture.ambient import AmbientCompiled, AmbientConfig, PodOverrides, Release
    from netsim.spec.pod import PodSource

ANN_BYPASS_INBOUND = "ambient.istio.io/bypass-inbound-capture"
ANN_DNS_CAPTURE = "ambient.istio.io/dns-capture"
ANN_REROUTE = "istio.io/reroute-virtual-interfaces"
AMBIENT_ANNOTATIONS = (ANN_BYPASS_INBOUND, ANN_DNS_CAPTURE, ANN_REROUTE)

# --ambient-config key → (AmbientConfig field, kind). §2.1's names, then two netsim adds: the kubelet UID the nft
# backend's /proc scan finds, and 1.23.1–1.24's AMBIENT_TPROXY_REDIRECTION.
SETTINGS: dict[str, tuple[str, str]] = {
    "EnableIPv6": ("enable_ipv6", "bool"),
    "RedirectDNS": ("redirect_dns", "bool"),
    "HostProbeSNATAddress": ("host_probe_snat_address", "ipv4"),
    "HostProbeV6SNATAddress": ("host_probe_v6_snat_address", "ipv6"),
    "NativeNftables": ("native_nftables", "bool"),
    "KubeletUID": ("kubelet_uid", "uid"),
    "TPROXYRedirection": ("tproxy_redirection", "bool"),
}
OPTION = "option --ambient-config"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeDecision:
    """Which capture a pod gets: ``ambient`` (istio-cni's in-pod rules for ztunnel), ``sidecar`` (istio-init's
    rules), and why; ``opted_out``: the pod's own ``istio.io/dataplane-mode: none`` keeps it out of ambient."""

    mode: str
    reason: str
    opted_out: bool = False

    @property
    def ambient(self) -> bool:
        return self.mode == "ambient"


def namespace_labels(objects: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Namespace name → its labels, from parsed Kubernetes objects (``List`` items already unwrapped)."""
    out: dict[str, dict[str, str]] = {}
    for obj in objects:
        if obj.get("kind") != "Namespace":
            continue
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
            continue
        labels = meta.get("labels")
        out[meta["name"]] = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}
    return out


def decide_mode(pod: PodSource | None, namespaces: Mapping[str, Mapping[str, str]], forced: str | None = None
                ) -> ModeDecision:
    """Ambient when the pod or its namespace is labelled ``istio.io/dataplane-mode: ambient`` and the pod is
    neither opted out (its own label ``none``) nor running a sidecar (the agent skips such pods); else
    sidecar. ``forced`` (``--mode``) wins, except that an opted-out pod never gets ambient rules."""
    if pod is None:
        mode = forced or "sidecar"
        return ModeDecision(mode=mode, reason=f"--mode {mode}" if forced else "no pod given")
    runs_sidecar = any(c.name == "istio-proxy" for c in (*pod.containers, *pod.init_containers)) or \
        "sidecar.istio.io/status" in pod.annotation_map
    mode, why, opted_out = dataplane_choice(pod.namespace, dict(pod.labels), namespaces.get(pod.namespace),
                                            runs_sidecar)
    if opted_out:
        return ModeDecision(mode="sidecar" if forced != "ambient" else "ambient", reason=why, opted_out=True)
    if forced is not None:
        return ModeDecision(mode=forced, reason=f"--mode {forced}")
    return ModeDecision(mode=mode, reason=why)


def pod_mode(pod: PodSource | None, objects: Iterable[Mapping[str, Any]] = (), config_paths: Iterable[str] = (),
             forced: str | None = None) -> ModeDecision:
    """:func:`decide_mode` for ``pod`` with the Namespace objects read beside it (``objects``, the pod file's
    other documents) and in ``config_paths`` (``--config`` files or directories, read by ``netsim.k8s``)."""
    found = list(objects)
    paths = tuple(config_paths)
    if paths:
        from netsim.k8s import read_objects

        found += [dict(o.body) for o in read_objects(paths).objects]
    return decide_mode(pod, namespace_labels(found), forced)


def _value(key: str, kind: str, text: str) -> object:
    if kind == "bool":
        try:
            return parse_bool(text)
        except SpecError:
            raise SpecError(f'{OPTION} {key}="{text}": not a boolean; use true or false') from None
    if kind == "uid":
        if not text.isdigit() or int(text) > 0xFFFFFFFE:
            raise SpecError(f'{OPTION} {key}="{text}": not a UID (0-4294967294)')
        return int(text)
    try:
        addr = ipaddress.IPv4Address(text) if kind == "ipv4" else ipaddress.IPv6Address(text)
    except ValueError:
        raise SpecError(f'{OPTION} {key}="{text}": not an IPv{kind[-1]} address') from None
    return str(addr)  # Go's canonical text (lower case, :: compression), as the agent prints it


def parse_ambient_config(text: str) -> dict[str, object]:
    """``KEY=VALUE,…`` (§2.1 names) → AmbientConfig field changes; SpecError for an unknown key or bad value."""
    changes: dict[str, object] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise SpecError(f'{OPTION} "{item}": expected KEY=VALUE (keys: {", ".join(SETTINGS)})')
        if key not in SETTINGS:
            raise SpecError(f'{OPTION} "{key}": unknown setting (known: {", ".join(SETTINGS)})')
        field_name, kind = SETTINGS[key]
        changes[field_name] = _value(key, kind, value.strip())
    return changes


def settings_given(settings: Iterable[str]) -> dict[str, object]:
    """The AmbientConfig fields the ``--ambient-config`` texts set (a later text wins)."""
    changes: dict[str, object] = {}
    for text in settings:
        changes.update(parse_ambient_config(text))
    return changes


def ambient_config(release: tuple[int, ...] | None, settings: Iterable[str] | Mapping[str, object] = ()
                   ) -> AmbientConfig:
    """A real agent's config for ``release`` (None: current), changed by each ``--ambient-config`` text (or by
    the field changes :func:`settings_given` read from them)."""
    from netsim.capture.ambient import agent_defaults

    changes: Mapping[str, Any] = settings if isinstance(settings, Mapping) else settings_given(settings)
    return dataclasses.replace(agent_defaults(release), **changes)


def ambient_release(istio_version: str | None) -> Release | None:
    """``--istio-version`` → the release :class:`~netsim.capture.ambient.AmbientConfig` takes (None: the current
    layout, also for the current release's own number). SpecError naming ``--istio-version`` for a bad name."""
    from netsim.istio_version import CURRENT, parse_istio_version

    if not istio_version:
        return None
    version = parse_istio_version(istio_version, option="--istio-version")
    return None if version == CURRENT else tuple(version)


def compile_pod(istio_version: str | None, config: AmbientConfig, pod: PodOverrides | None = None, *,
                node: bool = False) -> AmbientCompiled:
    """``netsim.capture.ambient.compile_ambient``; a release or setting it refuses (no ambient capture before
    1.21, no nftables backend before 1.28, TPROXY redirection outside 1.23.1–1.24) is one SpecError naming
    ``istio_version``."""
    from netsim.capture.ambient import PodOverrides, compile_ambient

    try:
        return compile_ambient(config, pod if pod is not None else PodOverrides(), node=node)
    except ValueError as e:
        raise SpecError(f"ambient mode of {istio_version or 'the current release'}: {e}") from None


def _bool_annotation(ann: Mapping[str, str], key: str, where: str) -> bool | None:
    value = ann.get(key)
    if value is None:
        return None
    try:
        return parse_bool(value.strip())
    except SpecError:
        raise SpecError(f'annotation {key}: "{value}": not a boolean; use true or false', where=where) from None


def split_interfaces(value: str) -> tuple[str, ...]:
    """``istio.io/reroute-virtual-interfaces``: split on ``,``, each item trimmed, empty items dropped (§2.2)."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def pod_overrides(annotations: Mapping[str, str], *, where: str = "") -> PodOverrides:
    """The pod's ambient overrides from its annotations (§2.2); SpecError for a non-boolean boolean."""
    from netsim.capture.ambient import PodOverrides

    return PodOverrides(ingress_mode=bool(_bool_annotation(annotations, ANN_BYPASS_INBOUND, where)),
                        dns_capture=_bool_annotation(annotations, ANN_DNS_CAPTURE, where),
                        virtual_interfaces=split_interfaces(annotations.get(ANN_REROUTE, "")))


__all__ = [
    "AMBIENT_ANNOTATIONS",
    "ANN_BYPASS_INBOUND",
    "ANN_DNS_CAPTURE",
    "ANN_REROUTE",
    "DATAPLANE_MODE",
    "SETTINGS",
    "ModeDecision",
    "ambient_config",
    "ambient_release",
    "compile_pod",
    "decide_mode",
    "namespace_labels",
    "parse_ambient_config",
    "pod_mode",
    "pod_overrides",
    "settings_given",
    "split_interfaces",
]
