"""``netsim check``: every workload found in files or directories, each with ``netsim diagnose``'s findings.

Owns: finding the workloads among the objects read (a controller without an owner among them, or a bare
Pod; a Pod, ReplicaSet or Job whose ``ownerReferences`` name a controller in the files is reported under
it: :func:`netsim.mesh.diagnose.top_level`), the mesh config read from the same files (the ``istio``
ConfigMap of the root namespace, or an IstioOperator), building each workload's sidecar view, running
:func:`netsim.mesh.diagnose.diagnose` on it, and placing every finding and its evidence at the line of
the manifest where its object's document (or its item of a ``List``) starts (:class:`CheckFinding`,
:class:`CheckReport`).

Many workloads see the same Envoy config: the outbound view depends on the proxy's namespace (only when
that namespace is special: :func:`_special_namespaces`), its addresses (only where a listener depends
on them), its DNS proxy flags, the Sidecar resource that selects it and the DestinationRules whose
workloadSelector picks it, not on its name or other labels. One :class:`~netsim.mesh.build.ProxyIndex`
is built per such view and shared (with each workload's own proxy put in); diagnose reads only its
outbound listeners and clusters (not its inbound listeners, nor the namespace-relative short names of
its route configurations, which TCP hops never read), and memoises what depends on the view alone. Identical pod
templates are resolved and compiled once (:func:`netsim.mesh.hop.template_key`).

Never does: print, or decide anything diagnose does not: ``diagnose`` and ``check`` agree by
construction, finding for finding.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netsim.errors import ConfigError
from netsim.k8s import K8sObject
from netsim.mesh.build import ProxyIndex, ViewCache, build_index, host_matches, sidecar_for
from netsim.mesh.diagnose import Finding, diagnose, mesh_facts
from netsim.mesh.model import MeshConfig, MeshObjects, PodInfo, selects
from netsim.mesh.objects import parse_mesh_config
from netsim.mesh.proxy import PLACEHOLDER_IP, make_proxy
from netsim.mesh.versions import MeshProfile, mesh_profile

SEVERITIES = ("info", "warning", "error")  # in increasing order: --fail-on's levels


@dataclass(frozen=True, slots=True, kw_only=True)
class Located:
    """A piece of evidence: what it is, and the file and line of the object it names (None: derived)."""

    what: str
    file: str | None = None
    line: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "file": self.file, "line": self.line}

    def __str__(self) -> str:
        return f"{self.what} ({self.file}:{self.line})" if self.file else self.what


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckFinding:
    """One ``diagnose`` finding of one workload, at the line where the workload's manifest starts."""

    check: str  # the stable code, NS0001...
    name: str
    severity: str
    workload: str  # Kind namespace/name
    file: str | None
    line: int | None
    message: str
    evidence: tuple[Located, ...]
    fix: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "severity": self.severity, "workload": self.workload, "file": self.file,
                "line": self.line, "message": self.message, "evidence": [e.to_json() for e in self.evidence],
                "fix": self.fix}


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckReport:
    workloads: int
    istio: str
    findings: tuple[CheckFinding, ...]
    views: int = 0  # distinct sidecar views built
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"workloads": self.workloads, "findings": [f.to_json() for f in self.findings]}

    def reaches(self, level: str) -> bool:
        """Whether a finding is at ``level`` or above (``--fail-on``)."""
        floor = SEVERITIES.index(level)
        return any(SEVERITIES.index(f.severity) >= floor for f in self.findings)


def _mesh_config(loaded: Iterable[K8sObject], root: str = "istio-system") -> MeshConfig:
    """The mesh config among the objects: the ``istio`` ConfigMap of the root namespace (``data.mesh``),
    else an IstioOperator's ``spec.meshConfig``; the defaults when there is none."""
    found: K8sObject | None = None
    for o in loaded:
        if o.kind == "ConfigMap" and o.namespace == root and o.name == "istio":
            found = o
            break
        if o.kind == "IstioOperator" and found is None:
            found = o
    if found is None:
        return MeshConfig()
    return parse_mesh_config(found.body, found.where())


def _special_namespaces(objects: MeshObjects, root: str) -> frozenset[str]:
    """The namespaces whose proxies may see another outbound config than a proxy of any other namespace:
    the root namespace; those holding a Sidecar, or a DestinationRule whose hosts a DestinationRule of
    another namespace matches too (a namespace's own rule ranks first for its proxies); those an
    ``exportTo`` names, or holds an object limited by one; those holding a definition of a hostname defined
    in several namespaces (1.24+ prefers the proxy's own). Every other namespace sees the same services,
    routing and TLS settings, so its proxies share one view."""
    out = {root} | {sc.namespace for sc in objects.sidecars}
    # a DestinationRule ranks first for its own namespace's proxies: that changes their choice only where
    # a DestinationRule of another namespace matches the same hosts
    drs = objects.destination_rules
    for a in drs:
        if any(b.namespace != a.namespace and (host_matches(a.host, b.host) or host_matches(b.host, a.host))
               for b in drs):
            out.add(a.namespace)
    for obj_ns, export in [*((s.namespace, s.export_to) for s in objects.services),
                           *((v.namespace, v.export_to) for v in objects.virtual_services),
                           *((d.namespace, d.export_to) for d in objects.destination_rules)]:
        if export and tuple(export) != ("*",):
            out.add(obj_ns)
            out |= {e for e in export if e not in (".", "~", "*")}
    by_host: dict[str, set[str]] = {}
    for s in objects.services:
        by_host.setdefault(s.hostname, set()).add(s.namespace)
    for namespaces in by_host.values():
        if len(namespaces) > 1:
            out |= namespaces
    return frozenset(out)


def _view_key(objects: MeshObjects, mesh: MeshConfig, proxy: Any, special: frozenset[str],
              ip_sensitive: frozenset[str], profile: MeshProfile) -> tuple[Any, ...]:
    """What a proxy's outbound Envoy config depends on besides the objects (see the module docstring): its
    namespace when it is special, its addresses when a listener depends on them (the 1.3-1.5 pod-IP
    BlackHole chain, a headless service listing it), its DNS flags, its Sidecar and selected
    DestinationRules."""
    sc = sidecar_for(objects, proxy, mesh.root_namespace)
    labels = proxy.label_map
    drs = tuple(i for i, dr in enumerate(objects.destination_rules) if dr.selector and selects(dr.selector, labels))
    ips = proxy.ips if profile.pod_ip_blackhole or ip_sensitive & set(proxy.ips) else ()
    return (proxy.namespace if proxy.namespace in special else "*", ips, proxy.dns_capture, proxy.dns_auto_allocate,
            None if sc is None else (sc.namespace, sc.name), drs)


def check_objects(objects: MeshObjects, loaded: tuple[K8sObject, ...], *, mesh: MeshConfig | None = None,
                  profile: MeshProfile | None = None,
                  progress: Callable[[int, int], None] | None = None, fresh_views: bool = False) -> CheckReport:
    """Every workload of ``objects`` (read from ``loaded``) diagnosed; findings in file and line order.

    ``fresh_views``: build each workload's view from scratch, shared with no other workload and through no
    :class:`~netsim.mesh.build.ViewCache` (slow; what the shared views are tested against)."""
    profile = profile or mesh_profile(None)
    mesh = mesh if mesh is not None else _mesh_config(loaded)
    workloads = mesh_facts(objects).workloads
    views: dict[tuple[Any, ...], ProxyIndex] = {}
    findings: list[CheckFinding] = []
    special = _special_namespaces(objects, mesh.root_namespace)
    headless_ips = frozenset(e.address for s in objects.services if s.headless or s.resolution.name == "PASSTHROUGH"
                             for e in s.endpoints)
    cache = ViewCache(objects, profile, mesh)
    for i, pod in enumerate(workloads, 1):
        proxy = make_proxy(objects, mesh, ips=pod.ips or (PLACEHOLDER_IP,), namespace=pod.namespace,
                           labels=pod.labels, pod=pod)
        key = (i,) if fresh_views else _view_key(objects, mesh, proxy, special, headless_ips, profile)
        base = views.get(key)
        if base is None:
            base = views[key] = build_index(objects, proxy, profile, mesh, cache=None if fresh_views else cache)
        index = base if base.proxy == proxy else replace(base, proxy=proxy)
        findings += _located(diagnose(index, pod).findings, pod)
        if progress is not None:
            progress(i, len(workloads))
    findings.sort(key=lambda f: (f.file or "", f.line or 0, f.workload, f.check))
    return CheckReport(workloads=len(workloads), istio=profile.label, findings=tuple(findings), views=len(views))


def _located(found: Iterable[Finding], pod: PodInfo) -> list[CheckFinding]:
    """``pod``'s findings at the line where its manifest starts, and each piece of evidence at its object's
    (both from the :class:`~netsim.k8s.Origin` the objects were read with). Every finding diagnose reports
    is kept: two alike but for their evidence are two findings."""
    origin = pod.origin
    file, line = (origin.source, origin.line) if origin is not None else (None, None)
    return [CheckFinding(check=f.check, name=f.name, severity=f.severity, workload=pod.ref, file=file, line=line,
                         message=f.message, evidence=tuple(Located(what=e.what, file=e.file, line=e.line)
                                                           for e in f.evidence), fix=f.fix)
            for f in found]


def check_paths(paths: Iterable[str | Path], *, istio_version: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> CheckReport:
    """Read ``paths`` (files or directories, ``-`` for standard input) and check every workload in them.

    Raises NetsimError (ConfigError, InputError, SpecError) naming the file, document, line and field of the
    first object that cannot be read, as ``netsim diagnose --config`` does without ``--keep-going``, or the
    file and line of YAML that does not parse. A document that is no Kubernetes object at all (a Helm values
    file, a kustomization: :func:`netsim.k8s.not_an_object`) is skipped, and named in the report's notes.
    """
    from netsim.mesh.files import read_config

    paths = list(paths)
    profile = mesh_profile(istio_version)
    with _no_cycle_collection():
        # a manifests directory often holds a kustomization.yaml or a Helm values.yaml: skipped with a note
        read = read_config(paths, keep_going=False, skip_non_objects=True)
        mesh = _mesh_config(read.loaded)
        if not mesh_facts(read.objects).workloads:
            raise ConfigError("no workload found (a Pod, or a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job "
                              "or CronJob with a pod template)", where=", ".join(str(p) for p in paths)[:200])
        report = check_objects(read.objects, read.loaded, mesh=mesh, profile=profile, progress=progress)
    return replace(report, notes=(*read.not_objects,
                                  *(str(i) for i in read.ignored if i.kind not in _QUIET_KINDS)))


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector off while a whole dump is read and checked, as it was before after. Reading
    and checking build millions of long-lived objects and few cycles, so each full collection walks the
    whole dump for little: about a third of the CPU time of a 10,000-workload check (``bench/check_bench.py``
    prints the peak memory, which stays far under its bound). Reference counting still frees the rest.
    Afterwards what was made meanwhile is moved to the oldest generation unscanned (freeze, then unfreeze,
    unless something else froze objects), so the next young collection does not walk it all either."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


# kinds a cluster dump is full of, whose being ignored says nothing about the answer
_QUIET_KINDS = frozenset({"ConfigMap", "Secret", "ServiceAccount", "Namespace", "Role", "RoleBinding", "ClusterRole",
                          "ClusterRoleBinding", "CustomResourceDefinition", "PodDisruptionBudget",
                          "HorizontalPodAutoscaler", "Ingress", "Event", "ControllerRevision", "Lease"})


__all__ = ["SEVERITIES", "CheckFinding", "CheckReport", "Located", "check_objects", "check_paths"]
