"""Reading ``--config`` paths and ``--mesh-config`` files (the only IO of ``netsim.mesh``).

Owns: :func:`read_config` (files and directories → :class:`ConfigRead`: the typed objects, the
documents skipped as invalid, and the objects read but ignored, each located by file and document;
without ``keep_going`` the first invalid document is an error), :func:`read_mesh_config`, and
:func:`load_index` (both, plus a pod file, into the sidecar's index: the one call ``netsim trace
--config`` needs).

Never does: interpret objects (``netsim.mesh.objects`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from netsim.errors import NetsimError
from netsim.k8s import K8sObject, YAMLSyntaxError, in_document_order, load_yaml, read_objects, read_text
from netsim.mesh.build import ProxyIndex
from netsim.mesh.model import MeshConfig, MeshObjects
from netsim.mesh.objects import IGNORED_KINDS, MESH_KINDS, convert, parse_mesh_config

# read for their labels only (namespace injection labels), so not "ignored"
_CONTEXT_KINDS = frozenset({"Namespace"})
# what a reader of the answer must know about an ignored kind (the others: no effect on a hop)
_IGNORED_WHY = {
    "EnvoyFilter": "EnvoyFilter patches are not applied: the listeners, routes and clusters shown are istiod's "
                   "before any patch",
    "AuthorizationPolicy": "authorization is not modelled: a connection shown as reaching a cluster may still be "
                           "denied (403 / RBAC: access denied)",
    "Gateway": "gateways are not modelled (only sidecars)",
    "WasmPlugin": "Wasm plugins are not applied",
    "Telemetry": "telemetry config has no effect on routing",
    "RequestAuthentication": "JWT authentication is not modelled",
    "NetworkPolicy": "Kubernetes NetworkPolicy is not modelled: the CNI may still drop the connection",
    "ProxyConfig": "ProxyConfig resources are not read (only the proxy.istio.io/config annotation and mesh "
                   "defaultConfig)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Ignored:
    """An object read from ``--config`` that the mesh model does not use, and why that matters."""

    kind: str
    ref: str  # "EnvoyFilter default/patch"
    where: str  # "file: document 3: EnvoyFilter default/patch"
    why: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "object": self.ref, "where": self.where, "why": self.why}

    def __str__(self) -> str:
        return f"{self.where}: ignored: {self.why}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigRead:
    """What ``--config`` gave: the typed objects (``objects.errors`` are the skipped documents, empty unless
    ``keep_going``) and the objects read but not used."""

    objects: MeshObjects
    ignored: tuple[Ignored, ...] = ()
    loaded: tuple[K8sObject, ...] = ()  # every object read, as read (with the line each starts at)
    not_objects: tuple[str, ...] = ()  # documents skipped as no Kubernetes object at all (``skip_non_objects``)

    @property
    def skipped(self) -> tuple[NetsimError, ...]:
        return self.objects.errors


def _ignored(obj: K8sObject) -> Ignored:
    if obj.kind in _IGNORED_WHY:
        why = _IGNORED_WHY[obj.kind]
    elif obj.kind in IGNORED_KINDS:
        why = f"{obj.kind} has no effect on the capture or the hop netsim models"
    else:
        why = f"{obj.kind} ({obj.api_version}) is not a kind netsim reads"
    return Ignored(kind=obj.kind, ref=f"{obj.kind} {obj.namespace}/{obj.name}", where=obj.where(), why=why)


def read_config(paths: Iterable[str | Path], *, keep_going: bool = True, skip_non_objects: bool = False) -> ConfigRead:
    """Every object under ``paths``, typed; the objects of kinds the model does not use as :class:`Ignored`.

    Raises ConfigError for a path that does not exist or cannot be read, and, without ``keep_going``,
    for the first invalid document (bad YAML, an object that does not convert), located by file,
    document and line. With ``keep_going`` the invalid documents are skipped and listed in
    ``objects.errors``. With ``skip_non_objects``, documents that are no Kubernetes object at all (a Helm
    values file, a kustomization: :func:`netsim.k8s.not_an_object`) are skipped and listed in ``not_objects``.
    """
    loaded = read_objects(paths, keep_going=True, skip_non_objects=skip_non_objects)
    used = [o for o in loaded.objects if o.kind in MESH_KINDS or o.kind in _CONTEXT_KINDS]
    ignored = tuple(_ignored(o) for o in loaded.objects if o.kind not in MESH_KINDS and o.kind not in _CONTEXT_KINDS)
    objects = convert(used, errors=loaded.errors)
    errors = in_document_order(objects.errors, (o.source for o in loaded.objects))
    if errors and not keep_going:
        raise errors[0]
    return ConfigRead(objects=replace(objects, errors=errors), ignored=ignored, loaded=loaded.objects,
                      not_objects=loaded.skipped)


def read_mesh_config(path: str | Path | None) -> MeshConfig:
    """The mesh config in ``path`` (None: the defaults). Raises ConfigError naming the file and field."""
    if path is None:
        return MeshConfig()
    p = Path(path)
    try:
        data = load_yaml(read_text(p))
    except YAMLSyntaxError as e:
        raise e.at(str(p)) from None
    return parse_mesh_config(data, str(p))


def load_index(configs: Iterable[str | Path], *, pod_file: str | None = None, pod_ips: tuple[str, ...] = (),
               namespace: str | None = None, labels: tuple[tuple[str, str], ...] | None = None,
               mesh_config: str | None = None, istio_version: str | None = None,
               keep_going: bool = True, pod_name: str | None = None) -> ProxyIndex:
    """Read ``configs`` (+ the pod file) and build the index for the pod's sidecar, for ``netsim trace``.

    The proxy is the pod in ``pod_file`` (its first Pod or workload, or the one named ``pod_name``), with
    ``pod_ips`` overriding its status IPs; without a pod file, ``pod_ips`` and ``namespace`` describe it.
    Raises ConfigError / SpecError for unreadable files and bad values (and, without ``keep_going``,
    for an invalid document, as :func:`read_config`).
    """
    from netsim.mesh.build import build_index
    from netsim.mesh.proxy import PLACEHOLDER_IP, make_proxy, pod_from_file, proxy_for_workload, with_pods
    from netsim.mesh.versions import mesh_profile
    from netsim.workload.model import Workload

    profile = mesh_profile(istio_version)
    read = read_config(list(configs), keep_going=keep_going, skip_non_objects=True)
    objects = replace(read.objects, not_objects=read.not_objects)
    mesh = read_mesh_config(mesh_config)
    pod = None
    if pod_file is not None:
        extra = read_config([pod_file], keep_going=keep_going).objects
        pod = pod_from_file(extra, objects, pod_name)
        if pod is not None:
            if pod_ips:
                pod = replace(pod, ips=pod_ips)
            objects = with_pods(objects, extra)
    if pod is not None:
        w = Workload.from_pod_info(pod, istio_version=istio_version, pod_ips=pod_ips)
        proxy = proxy_for_workload(w, mesh, namespace=namespace, labels=labels)
    else:
        proxy = make_proxy(objects, mesh, ips=pod_ips or (PLACEHOLDER_IP,), namespace=namespace, labels=labels)
    return build_index(objects, proxy, profile, mesh)


__all__ = ["ConfigRead", "Ignored", "load_index", "read_config", "read_mesh_config"]
