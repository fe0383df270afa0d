"""Kubernetes manifests → the istio-iptables arguments and env the sidecar injector would give.

Owns: reading a Pod, or the pod template of a workload, from a (multi-document or ``List``) YAML
file into a typed :class:`PodSource`, and :func:`derive`, which turns it into option settings
exactly as the injection template does (spec/istio-iptables.md §13.1): annotations → args,
``proxy.istio.io/config`` proxyMetadata → env, containerPorts (before 1.3), the istio-proxy
``runAsUser``, TPROXY, the ``-d`` status-port logic; plus every capture-related key it saw, as
:class:`Finding` values for ``--explain``. Also pilot-agent's proxyMetadata (:func:`proxy_metadata`: the
mesh config's ``defaultConfig`` overlaid by the annotation, whatever the release), read through
``netsim.workload.Workload`` by every command.

Never does: merge with flags or the environment (``resolve``), build rules, parse YAML itself
(:mod:`netsim.k8s` does, lazily), or read anything but the one file it is given. Errors are
:class:`SpecError` naming file, document, field and value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netsim.errors import ConfigError, SpecError
from netsim.istio_service import INJECT, injection_choice
from netsim.k8s import POD_TEMPLATE_PATHS, YAMLSyntaxError, is_list_kind, load_yaml, load_yaml_all
from netsim.reader import read_text
from netsim.spec import flags as F
from netsim.spec.flags import Ignored, Setting, Source
from netsim.spec.versions import ANNOTATIONS_SINCE, CONTAINER_PORTS, METADATA_SINCE, VersionProfile

ANN_MODE = "sidecar.istio.io/interceptionMode"
ANN_INCLUDE_CIDR = "traffic.sidecar.istio.io/includeOutboundIPRanges"
ANN_EXCLUDE_CIDR = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
ANN_INCLUDE_IN = "traffic.sidecar.istio.io/includeInboundPorts"
ANN_EXCLUDE_IN = "traffic.sidecar.istio.io/excludeInboundPorts"
ANN_STATUS_PORT = "status.sidecar.istio.io/port"
ANN_INCLUDE_OUT_PORTS = "traffic.sidecar.istio.io/includeOutboundPorts"
ANN_EXCLUDE_OUT_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"
ANN_REROUTE = "istio.io/reroute-virtual-interfaces"
ANN_KUBEVIRT = "traffic.sidecar.istio.io/kubevirtInterfaces"
ANN_EXCLUDE_IFACES = "traffic.sidecar.istio.io/excludeInterfaces"
ANN_PROXY_CONFIG = "proxy.istio.io/config"

# annotation → the istio-iptables option it feeds (for reports)
CAPTURE_ANNOTATIONS: dict[str, str] = {
    ANN_MODE: "istio-inbound-interception-mode",
    ANN_INCLUDE_CIDR: "istio-service-cidr",
    ANN_EXCLUDE_CIDR: "istio-service-exclude-cidr",
    ANN_INCLUDE_IN: "istio-inbound-ports",
    ANN_EXCLUDE_IN: "istio-local-exclude-ports",
    ANN_STATUS_PORT: "istio-local-exclude-ports",
    ANN_INCLUDE_OUT_PORTS: "istio-outbound-ports",
    ANN_EXCLUDE_OUT_PORTS: "istio-local-outbound-ports-exclude",
    ANN_REROUTE: "kube-virt-interfaces",
    ANN_KUBEVIRT: "kube-virt-interfaces",
    ANN_EXCLUDE_IFACES: "istio-exclude-interfaces",
    ANN_PROXY_CONFIG: "env of istio-init (proxyMetadata), -m (interceptionMode)",
    INJECT: "whether istio-init exists at all",
}
CAPTURE_PREFIXES = ("traffic.sidecar.istio.io/",)

# The mesh-wide values.yaml defaults the template falls back to (spec §13.1).
MESH_DEFAULTS = {
    "envoy-port": "15001",  # meshConfig proxyListenPort
    "inbound-capture-port": "15006",  # meshConfig proxyInboundListenPort
    "istio-service-cidr": "*",  # values.global.proxy.includeIPRanges
    "istio-service-exclude-cidr": "",  # values.global.proxy.excludeIPRanges
    "excludeInboundPorts": "",  # values.global.proxy.excludeInboundPorts
}
PROXY_UID = "1337"  # the injector's proxy UID (outside OpenShift)
INTERCEPTION_MODES = ("REDIRECT", "TPROXY", "NONE")
KUBE_DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    name: str
    ports: tuple[int, ...]
    run_as_user: int | None = None
    argv: tuple[str, ...] = ()  # command + args
    env: tuple[tuple[str, str], ...] = ()  # literal env values (valueFrom entries are skipped)


@dataclass(frozen=True, slots=True, kw_only=True)
class PodSource:
    """The pod-bearing object picked from a manifest, already type-checked."""

    file: str
    where: str  # "pod.yaml: document 2 (Deployment web)" -- prefix for errors
    kind: str
    name: str
    annotations: tuple[tuple[str, str], ...]  # the pod (template)'s, what the injector sees
    labels: tuple[tuple[str, str], ...]
    owner_annotations: tuple[tuple[str, str], ...]  # the workload's own metadata (not used)
    containers: tuple[Container, ...]
    init_containers: tuple[Container, ...]
    pod_ips: tuple[str, ...]  # status.podIPs / status.podIP
    host_network: bool
    dns_policy: str
    dns_nameservers: tuple[str, ...]
    choice: str  # how this object was picked among the file's objects
    namespace: str = "default"  # the object's metadata.namespace (a template's pods run there too)

    @property
    def annotation_map(self) -> dict[str, str]:
        return dict(self.annotations)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One capture-related input seen in the manifest, and what became of it."""

    key: str  # annotation name, "proxyMetadata.X", "containerPorts", ...
    value: str
    location: str  # "pod template", "Deployment metadata", "pod spec"
    used: bool
    reason: str
    option: str = ""  # istio-iptables option it feeds


@dataclass(frozen=True, slots=True, kw_only=True)
class PodDerivation:
    """What the injector derives from one pod (before flags and the environment are applied)."""

    capture: bool
    no_capture_reason: str
    args: tuple[Setting, ...]  # the istio-init command line the template renders
    env: tuple[Setting, ...]  # proxyMetadata entries that istio-iptables reads as env vars
    ignored_env: tuple[Ignored, ...]
    findings: tuple[Finding, ...]
    warnings: tuple[str, ...]
    pod_ips: tuple[str, ...]
    dns_servers: tuple[str, ...]
    dns_origin: str  # where dns_servers came from, or why there are none


# --- reading ------------------------------------------------------------------------------------

def load_pod(path: str, *, name: str | None = None, text: str | None = None) -> PodSource:
    """Read ``path`` (or ``text``, reported as ``path``) and pick the pod-bearing object.

    With ``name``, the object whose ``metadata.name`` equals it; else the first one. Raises
    SpecError for unreadable files, YAML errors (with line), files without any Pod or workload,
    and malformed fields.
    """
    if text is None:
        text = read_text(path)
    return _pick(path, _objects(path, _yaml_documents(path, text)), name)


def load_pod_with_objects(path: str, *, name: str | None = None) -> tuple[PodSource, tuple[dict[str, Any], ...]]:
    """:func:`load_pod`, plus every object of the file (``List`` items expanded), read once: the Namespace
    objects beside a pod decide whether it is enrolled in ambient (``netsim.spec.ambient``)."""
    objects = _objects(path, _yaml_documents(path, read_text(path)))
    return _pick(path, objects, name), tuple(obj for _, obj in objects)


def pod_from_object(obj: Mapping[str, Any], *, source: str, name: str | None = None) -> PodSource:
    """The PodSource of one already-parsed object (as :mod:`netsim.k8s` reads it), named ``source``.

    Checks and errors are those of :func:`load_pod` on a file holding just ``obj`` (a ``List`` object
    is searched by ``name`` the same way). Raises SpecError.
    """
    return _pick(source, _objects(source, [dict(obj)]), name)


def _pick(path: str, objects: list[tuple[str, dict[str, Any]]], name: str | None) -> PodSource:
    candidates: list[tuple[str, dict[str, Any]]] = []
    seen: list[str] = []
    for label, obj in objects:
        kind = obj.get("kind")
        seen.append(f"{kind} {_name_of(obj)}".strip() if kind else "an object without kind")
        if isinstance(kind, str) and kind in POD_TEMPLATE_PATHS:
            candidates.append((label, obj))
    if not candidates:
        found = ", ".join(seen) if seen else "nothing"
        raise SpecError("no Pod or workload with a pod template (Deployment, StatefulSet, DaemonSet, "
                        f"ReplicaSet, Job, CronJob) found; the file has: {found}", where=path)
    names = [_name_of(obj) for _, obj in candidates]
    if name is not None:
        matches = [c for c in candidates if _name_of(c[1]) == name]
        if not matches:
            raise SpecError(f'no pod-bearing object named "{name}"; found: '
                            + ", ".join(f"{c[1]['kind']} {_name_of(c[1])}" for c in candidates), where=path)
        label, obj = matches[0]
        choice = f'picked {obj["kind"]} {name} by --name'
    else:
        label, obj = candidates[0]
        if len(candidates) == 1:
            choice = f"the only pod-bearing object in the file: {obj['kind']} {_name_of(obj)}"
        else:
            others = ", ".join(n for n in names[1:])
            choice = (f"first of {len(candidates)} pod-bearing objects: {obj['kind']} {_name_of(obj)} "
                      f"(pick another with --name: {others})")
    return _pod_source(path, label, obj, choice)


def _name_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    return str(meta.get("name", "")) if isinstance(meta, dict) else ""


def _yaml_documents(path: str, text: str) -> list[Any]:
    try:
        return load_yaml_all(text)
    except YAMLSyntaxError as e:
        line = f":{e.line}" if e.line is not None else ""
        raise SpecError(f"not valid YAML: {e.problem}", where=f"{path}{line}") from None


def _objects(path: str, docs: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """Each object of ``docs`` (``List`` items expanded) with its label, e.g. ``document 2: items[0]``."""
    out: list[tuple[str, dict[str, Any]]] = []
    many = len([d for d in docs if d is not None]) > 1
    for i, doc in enumerate(docs, 1):
        if doc is None:
            continue
        label = f"document {i}" if many else ""
        if not isinstance(doc, dict):
            raise SpecError(f"not a Kubernetes object (a YAML {_yaml_type(doc)}, expected a mapping "
                            "with apiVersion and kind)", where=_join(path, label))
        if is_list_kind(doc) and "items" in doc:
            items = doc["items"] or []
            if not isinstance(items, list):
                raise SpecError("items: expected a list", where=_join(path, label))
            for j, item in enumerate(items):
                if not isinstance(item, dict):
                    raise SpecError(f"not a Kubernetes object (a YAML {_yaml_type(item)})",
                                    where=_join(path, label, f"items[{j}]"))
                out.append((_join(label, f"items[{j}]"), item))
        else:
            out.append((label, doc))
    return out


def _join(*parts: str) -> str:
    return ": ".join(p for p in parts if p)


def _yaml_type(value: object) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__)


def _get(obj: Mapping[str, Any], path: tuple[str, ...], where: str) -> dict[str, Any]:
    cur: Any = obj
    walked: list[str] = []
    for key in path:
        walked.append(key)
        cur = cur.get(key) if isinstance(cur, dict) else None
        if not isinstance(cur, dict):
            raise SpecError(f"{'.'.join(walked)}: missing or not a mapping", where=where)
    return dict(cur)


def _string_map(value: Any, field: str, where: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise SpecError(f"{field}: expected a mapping of strings, got a YAML {_yaml_type(value)}", where=where)
    out = []
    for k, v in value.items():
        if not isinstance(v, str):
            shown = "true" if v is True else "false" if v is False else str(v)
            raise SpecError(f'{field}: {k}: {shown} is a YAML {_yaml_type(v)}; Kubernetes needs a string: '
                            f'quote it ("{shown}")', where=where)
        out.append((str(k), v))
    return tuple(out)


def _pod_source(path: str, label: str, obj: dict[str, Any], choice: str) -> PodSource:
    kind = str(obj["kind"])
    name = _name_of(obj)
    where = _join(path, label) if label else path
    ctx = _join(where, f"{kind} {name}".strip())
    template = _get(obj, POD_TEMPLATE_PATHS[kind], ctx) if POD_TEMPLATE_PATHS[kind] else obj
    tpath = ".".join(POD_TEMPLATE_PATHS[kind])
    meta = template.get("metadata") or {}
    if not isinstance(meta, dict):
        raise SpecError(f"{_join_field(tpath, 'metadata')}: expected a mapping", where=ctx)
    annotations = _string_map(meta.get("annotations"), _join_field(tpath, "metadata.annotations"), ctx)
    labels = _string_map(meta.get("labels"), _join_field(tpath, "metadata.labels"), ctx)
    owner: tuple[tuple[str, str], ...] = ()
    obj_meta = obj.get("metadata")
    namespace = obj_meta.get("namespace") if isinstance(obj_meta, dict) else None
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise SpecError(f"metadata.namespace: expected a name, got {_yaml_type(namespace)}", where=ctx)
    if kind != "Pod":
        owner_meta = obj.get("metadata") or {}
        if isinstance(owner_meta, dict):
            owner = _string_map(owner_meta.get("annotations"), "metadata.annotations", ctx)
        if kind == "CronJob":
            jt = obj.get("spec", {}).get("jobTemplate", {}) if isinstance(obj.get("spec"), dict) else {}
            jmeta = jt.get("metadata") if isinstance(jt, dict) else None
            if isinstance(jmeta, dict):
                owner += _string_map(jmeta.get("annotations"), "spec.jobTemplate.metadata.annotations", ctx)
    spec = template.get("spec")
    if not isinstance(spec, dict):
        raise SpecError(f"{_join_field(tpath, 'spec')}: missing or not a mapping", where=ctx)
    containers = _containers(spec.get("containers"), _join_field(tpath, "spec.containers"), ctx)
    inits = spec.get("initContainers")
    init_containers = _containers(inits, _join_field(tpath, "spec.initContainers"), ctx) if inits else ()
    status = obj.get("status") if kind == "Pod" else None
    pod_ips = _pod_ips(status, ctx)
    dns_config = spec.get("dnsConfig") or {}
    nameservers: tuple[str, ...] = ()
    if isinstance(dns_config, dict) and dns_config.get("nameservers") is not None:
        ns = dns_config["nameservers"]
        if not isinstance(ns, list) or not all(isinstance(x, str) for x in ns):
            raise SpecError(f"{_join_field(tpath, 'spec.dnsConfig.nameservers')}: expected a list of IP "
                            "addresses", where=ctx)
        for x in ns:
            if not F.is_ip(x):
                raise SpecError(f'{_join_field(tpath, "spec.dnsConfig.nameservers")}: "{x}": not an IP '
                                "address", where=ctx)
        nameservers = tuple(ns)
    dns_policy = spec.get("dnsPolicy", "ClusterFirst")
    if dns_policy not in KUBE_DNS_POLICIES:
        raise SpecError(f'{_join_field(tpath, "spec.dnsPolicy")}: "{dns_policy}": expected one of '
                        + ", ".join(KUBE_DNS_POLICIES), where=ctx)
    return PodSource(file=path, where=ctx, kind=kind, name=name, annotations=annotations, labels=labels,
                     owner_annotations=owner, containers=containers, init_containers=init_containers,
                     pod_ips=pod_ips,
                     host_network=spec.get("hostNetwork") is True, dns_policy=dns_policy,
                     dns_nameservers=nameservers, choice=choice, namespace=namespace or "default")


def _join_field(prefix: str, field: str) -> str:
    return f"{prefix}.{field}" if prefix else field


def _containers(value: Any, field: str, where: str) -> tuple[Container, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"{field}: a pod needs a non-empty list of containers", where=where)
    out = []
    for i, c in enumerate(value):
        if not isinstance(c, dict):
            raise SpecError(f"{field}[{i}]: expected a mapping", where=where)
        cname = str(c.get("name", f"#{i}"))
        ports = []
        for j, p in enumerate(_list(c.get("ports"), f"{field}[{i}].ports", where)):
            cp = p.get("containerPort") if isinstance(p, dict) else None
            if isinstance(cp, str) and cp.isdigit():
                cp = int(cp)
            if not isinstance(cp, int) or isinstance(cp, bool) or not 1 <= cp <= 65535:
                raise SpecError(f"{field}[{i}].ports[{j}].containerPort: {cp!r}: expected a port number "
                                "from 1 to 65535", where=where)
            ports.append(cp)
        run_as: int | None = None
        sc = c.get("securityContext")
        if isinstance(sc, dict) and sc.get("runAsUser") is not None:
            r = sc["runAsUser"]
            if not isinstance(r, int) or isinstance(r, bool) or r < 0:
                raise SpecError(f"{field}[{i}].securityContext.runAsUser: {r!r}: expected a UID", where=where)
            run_as = r
        argv: list[str] = []
        for part in ("command", "args"):
            items = c.get(part) or []
            if not isinstance(items, list):
                raise SpecError(f"{field}[{i}].{part}: expected a list of strings", where=where)
            argv += [str(x) for x in items]
        env = []
        for j, e in enumerate(_list(c.get("env"), f"{field}[{i}].env", where)):
            if not isinstance(e, dict) or not isinstance(e.get("name"), str):
                raise SpecError(f"{field}[{i}].env[{j}]: expected a mapping with a name", where=where)
            if "value" in e:
                env.append((e["name"], "" if e["value"] is None else str(e["value"])))
        out.append(Container(name=cname, ports=tuple(ports), run_as_user=run_as, argv=tuple(argv),
                             env=tuple(env)))
    return tuple(out)


def _list(value: Any, field: str, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(f"{field}: expected a list, got a YAML {_yaml_type(value)}", where=where)
    return value


def _pod_ips(status: Any, where: str) -> tuple[str, ...]:
    if not isinstance(status, dict):
        return ()
    ips: list[str] = []
    for i, entry in enumerate(_list(status.get("podIPs"), "status.podIPs", where)):
        ip = entry.get("ip") if isinstance(entry, dict) else None
        if not isinstance(ip, str) or not F.is_ip(ip):
            raise SpecError(f"status.podIPs[{i}].ip: {ip!r}: not an IP address", where=where)
        ips.append(ip)
    single = status.get("podIP")
    if not ips and single is not None:
        if not isinstance(single, str) or not F.is_ip(single):
            raise SpecError(f"status.podIP: {single!r}: not an IP address", where=where)
        ips.append(single)
    return tuple(ips)


# --- deriving -----------------------------------------------------------------------------------

def derive(pod: PodSource, profile: VersionProfile, *, cluster_dns: str = F.DEFAULT_CLUSTER_DNS,
           cluster_dns_origin: str = "") -> PodDerivation:
    """What the injector of ``profile`` passes to istio-iptables for ``pod`` (spec §13.1).

    Raises SpecError for an annotation value the injector would reject (it refuses such pods).
    """
    ann = pod.annotation_map
    location = "pod template" if pod.kind != "Pod" else "pod"
    findings: list[Finding] = []
    warnings: list[str] = []
    args: list[Setting] = []

    def bad(key: str, value: str, e: SpecError) -> SpecError:
        return SpecError(f'annotation {key}: {e.message}', where=pod.where) if f'"{value}"' in e.message \
            else SpecError(f'annotation {key}: "{value}": {e.message}', where=pod.where)

    def available(key: str) -> bool:
        since = ANNOTATIONS_SINCE.get(key)
        return since is None or profile.has(since.version)

    def too_new(key: str, value: str, option: str) -> None:
        since = ANNOTATIONS_SINCE[key]
        msg = f"{key} does not exist in {profile.label} (added in {since.text}); its injector ignores it"
        warnings.append(msg)
        findings.append(Finding(key=key, value=value, location=location, used=False, reason=msg, option=option))

    def arg(key: str, value: str, source: Source, origin: str) -> None:
        args.append(Setting(key=key, value=value, source=source, origin=origin))

    def from_annotation(key: str, option: str, default: str | None, default_origin: str,
                        check: Any = None) -> None:
        """``annotation X default``: the annotation if present (even empty), else the default."""
        if key in ann and available(key):
            value = ann[key]
            if check is not None:
                try:
                    check(value)
                except SpecError as e:
                    raise bad(key, value, e) from None
            arg(option, value, Source.ANNOTATION, f"annotation {key}")
            findings.append(Finding(key=key, value=value, location=location, used=True,
                                    reason=f"passed as {F.OPTIONS_BY_KEY[option].flag}", option=option))
            return
        if key in ann:
            too_new(key, ann[key], option)
        if default is not None:
            arg(option, default, Source.PROFILE, default_origin)

    # Owner annotations: the injector only reads the pod template's metadata.
    for key, value in pod.owner_annotations:
        if _capture_related(key):
            findings.append(Finding(
                key=key, value=value, location=f"{pod.kind} metadata", used=False, option=_option_of(key),
                reason=f"on the {pod.kind}'s own metadata, not its pod template (spec.template.metadata."
                       "annotations); the injector never sees it"))
            warnings.append(f"{key} is on the {pod.kind}'s metadata, not the pod template; Istio ignores it")

    # Injection at all.
    if pod.host_network:
        return _no_capture(pod, findings, warnings, "hostNetwork: true pods are never injected")
    chosen = injection_choice(dict(pod.labels), ann)
    if chosen is not None and not chosen[0]:
        inject = dict(pod.labels).get(INJECT, ann.get(INJECT, ""))
        findings.append(Finding(key=INJECT, value=inject, location=location, used=True,
                                reason="injection disabled: no istio-init, no capture rules"))
        return _no_capture(pod, findings, warnings, f'{chosen[1]} disables injection (no istio-init)')

    init = next((c for c in pod.init_containers if c.name == "istio-init" and c.argv), None)
    if init is not None:
        return _derive_injected(pod, init, findings, warnings, location, cluster_dns, cluster_dns_origin)
    if any(c.name == "istio-validation" for c in pod.init_containers):
        warnings.append("the pod has an istio-validation init container: with Istio CNI the CNI plugin writes "
                        "the rules and derives some options differently (spec §13.2: outbound 15020 excluded, "
                        "capture-all DNS); netsim derives them as the sidecar injector's istio-init would")

    # proxy.istio.io/config: interceptionMode default and proxyMetadata (→ istio-init env).
    proxy_config, env, ignored_env = _proxy_config(pod, ann, profile, location, findings, warnings)
    pc_mode = proxy_config.get("interceptionMode")

    # -m
    mode_default, mode_origin = ("REDIRECT", "mesh default interceptionMode")
    if pc_mode is not None and "proxy.istio.io/config" in ann:
        mode_default, mode_origin = pc_mode, "proxy.istio.io/config interceptionMode"
    if ANN_MODE in ann:
        mode = ann[ANN_MODE]
        if mode not in INTERCEPTION_MODES:
            raise SpecError(f'annotation {ANN_MODE}: "{mode}": the injector accepts only REDIRECT, TPROXY or NONE',
                            where=pod.where)
    else:
        mode = mode_default
    if mode == "NONE":
        if ANN_MODE in ann:
            findings.append(Finding(key=ANN_MODE, value=mode, location=location, used=True,
                                    reason="NONE: the injector adds no istio-init container", option="-m"))
        return _no_capture(pod, findings, warnings,
                           f"interceptionMode NONE ({'annotation ' + ANN_MODE if ANN_MODE in ann else mode_origin}):"
                           " the injector adds no istio-init, so Istio writes no capture rules for this pod")
    from_annotation(ANN_MODE, "istio-inbound-interception-mode", mode_default, mode_origin, F.parse_mode)
    tproxy = mode == "TPROXY"

    arg("envoy-port", MESH_DEFAULTS["envoy-port"], Source.PROFILE, "template -p = meshConfig proxyListenPort")
    if profile.has((1, 3)):  # the injector passes -z from 1.3 (spec/istio-iptables-history.md §2.4)
        arg("inbound-capture-port", MESH_DEFAULTS["inbound-capture-port"], Source.PROFILE,
            "template -z = meshConfig proxyInboundListenPort")

    # -u: 1337 (TPROXY always 1337); a user-supplied istio-proxy container's runAsUser wins if non-zero.
    uid, uid_origin = PROXY_UID, ("template: TPROXY mode always passes -u 1337 (Envoy runs as UID 0, GID 1337)"
                                  if tproxy else "template -u 1337")
    proxy = next((c for c in pod.containers if c.name == "istio-proxy"), None)
    if proxy is not None and proxy.run_as_user:
        uid = str(proxy.run_as_user)
        findings.append(Finding(key="containers[istio-proxy].securityContext.runAsUser", value=uid,
                                location="pod spec", used=True, option="proxy-uid",
                                reason="the webhook replaces -u with a user-supplied istio-proxy runAsUser"))
        arg("proxy-uid", uid, Source.POD, "containers[istio-proxy].securityContext.runAsUser")
    else:
        arg("proxy-uid", uid, Source.PROFILE, uid_origin)

    # -i, -x
    from_annotation(ANN_INCLUDE_CIDR, "istio-service-cidr", MESH_DEFAULTS["istio-service-cidr"],
                    "values.global.proxy.includeIPRanges",
                    lambda v: F.parse_cidr_list(v, allow_all=True, strict_items=True))
    from_annotation(ANN_EXCLUDE_CIDR, "istio-service-exclude-cidr", MESH_DEFAULTS["istio-service-exclude-cidr"],
                    "values.global.proxy.excludeIPRanges",
                    lambda v: F.parse_cidr_list(v, strict_items=True))

    # -b
    if profile.inbound_ports_default == CONTAINER_PORTS:
        ports = [str(p) for c in pod.containers for p in c.ports]
        b_default = ",".join(ports)
        b_origin = (f"{profile.label} template: containerPorts of all containers "
                    f"({b_default or 'none declared: no inbound capture'})")
        findings.append(Finding(key="containerPorts", value=b_default, location="pod spec",
                                used=ANN_INCLUDE_IN not in ann, option="istio-inbound-ports",
                                reason=(f"{profile.label} captures inbound traffic only on declared "
                                        f"containerPorts ({b_default or 'none'}); traffic to any other port "
                                        "bypasses Envoy (mTLS calls to it fail)"
                                        if ANN_INCLUDE_IN not in ann else f"{ANN_INCLUDE_IN} is set and wins")))
    else:
        b_default, b_origin = "*", f"{profile.label} template: includeInboundPorts *"
    from_annotation(ANN_INCLUDE_IN, "istio-inbound-ports", b_default, b_origin,
                    lambda v: F.parse_port_list(v, allow_all=True, strict_items=True))

    # -d = prefix + excludeInboundPort(statusPort, excludes)
    status_port = profile.status_port
    status_origin = f"default status port {status_port}" if status_port else ""
    if ANN_STATUS_PORT in ann:
        if available(ANN_STATUS_PORT):
            sp = ann[ANN_STATUS_PORT]
            try:
                F.parse_port(sp.strip())
            except SpecError as e:
                raise bad(ANN_STATUS_PORT, sp, e) from None
            status_port, status_origin = sp, f"annotation {ANN_STATUS_PORT}"
            findings.append(Finding(key=ANN_STATUS_PORT, value=sp, location=location, used=True,
                                    option="istio-local-exclude-ports",
                                    reason="status port 0: not excluded" if sp.strip() == "0"
                                    else "appended to -d (inbound excluded) unless already listed"))
        else:
            too_new(ANN_STATUS_PORT, ann[ANN_STATUS_PORT], "istio-local-exclude-ports")
    excludes, ex_origin = MESH_DEFAULTS["excludeInboundPorts"], ""
    if ANN_EXCLUDE_IN in ann:
        ex = ann[ANN_EXCLUDE_IN]
        try:
            F.parse_port_list(ex, strict_items=True)
        except SpecError as e:
            raise bad(ANN_EXCLUDE_IN, ex, e) from None
        excludes, ex_origin = ex, f"annotation {ANN_EXCLUDE_IN}"
        findings.append(Finding(key=ANN_EXCLUDE_IN, value=ex, location=location, used=True,
                                option="istio-local-exclude-ports", reason="passed in -d"))
    d_value = profile.exclude_prefix + exclude_inbound_port(status_port, excludes)
    parts = [f"{profile.label} template prefix {profile.exclude_prefix!r}" if profile.exclude_prefix else "",
             ex_origin, status_origin]
    arg("istio-local-exclude-ports", d_value,
        Source.ANNOTATION if ex_origin or ANN_STATUS_PORT in ann else Source.PROFILE,
        "-d = " + " + ".join(p for p in parts if p) if any(parts) else "-d: no excludes")

    # -q, -o: passed only when the annotation exists (the mesh defaults are empty).
    from_annotation(ANN_INCLUDE_OUT_PORTS, "istio-outbound-ports", None, "",
                    lambda v: F.parse_port_list(v, strict_items=True))
    from_annotation(ANN_EXCLUDE_OUT_PORTS, "istio-local-outbound-ports-exclude", None, "",
                    lambda v: F.parse_port_list(v, strict_items=True))

    # -k: reroute-virtual-interfaces, else the deprecated kubevirtInterfaces
    if ANN_REROUTE in ann and available(ANN_REROUTE):
        from_annotation(ANN_REROUTE, "kube-virt-interfaces", None, "", F.parse_iface_list)
        if ANN_KUBEVIRT in ann:
            findings.append(Finding(key=ANN_KUBEVIRT, value=ann[ANN_KUBEVIRT], location=location, used=False,
                                    option="kube-virt-interfaces",
                                    reason=f"deprecated, and {ANN_REROUTE} is set and wins"))
    else:
        if ANN_REROUTE in ann:
            too_new(ANN_REROUTE, ann[ANN_REROUTE], "kube-virt-interfaces")
        if ANN_KUBEVIRT in ann and available(ANN_KUBEVIRT):
            from_annotation(ANN_KUBEVIRT, "kube-virt-interfaces", None, "", F.parse_iface_list)
            if profile.has(ANNOTATIONS_SINCE[ANN_REROUTE].version):
                findings[-1] = Finding(key=ANN_KUBEVIRT, value=ann[ANN_KUBEVIRT], location=location, used=True,
                                       option="kube-virt-interfaces",
                                       reason=f"passed as -k (deprecated: use {ANN_REROUTE})")
                warnings.append(f"{ANN_KUBEVIRT} is deprecated; use {ANN_REROUTE}")
        elif ANN_KUBEVIRT in ann:
            too_new(ANN_KUBEVIRT, ann[ANN_KUBEVIRT], "kube-virt-interfaces")

    # -c
    from_annotation(ANN_EXCLUDE_IFACES, "istio-exclude-interfaces", None, "", F.parse_iface_list)

    # Capture-related annotations the injector does not know (typos).
    for key, value in pod.annotations:
        if key.startswith(CAPTURE_PREFIXES) and key not in CAPTURE_ANNOTATIONS:
            msg = f"{key} is not an annotation the injector reads (a typo?); ignored"
            warnings.append(msg)
            findings.append(Finding(key=key, value=value, location=location, used=False, reason=msg))

    servers, dns_origin = _dns_servers(pod, cluster_dns, cluster_dns_origin)
    return PodDerivation(capture=True, no_capture_reason="", args=tuple(args), env=tuple(env),
                         ignored_env=tuple(ignored_env), findings=tuple(findings), warnings=tuple(warnings),
                         pod_ips=pod.pod_ips, dns_servers=servers, dns_origin=dns_origin)


def _derive_injected(pod: PodSource, init: Container, findings: list[Finding], warnings: list[str],
                     location: str, cluster_dns: str, cluster_dns_origin: str) -> PodDerivation:
    """An already-injected pod: istio-init's own command line and env are the ground truth."""
    where = f"{pod.where}: initContainers[{init.name}]"
    try:
        pairs = F.parse_argv(init.argv)
    except SpecError as e:
        raise e.at(f"{where}.args") from None
    args = []
    for key, raw in pairs:
        try:
            value = F.check_value(key, raw)
        except SpecError as e:
            raise e.at(f"{where}.args: {F.OPTIONS_BY_KEY[key].flag}") from None
        args.append(Setting(key=key, value=value, source=Source.POD,
                            origin=f"initContainers[{init.name}].args {F.OPTIONS_BY_KEY[key].flag}"))
    try:
        env, ignored = F.env_settings(dict(init.env), source=Source.POD,
                                      origin_prefix=f"initContainers[{init.name}].env")
    except SpecError as e:
        raise e.at(where) from None
    findings.append(Finding(key=f"initContainers[{init.name}]", value=" ".join(init.argv), location="pod spec",
                            used=True, reason="the pod is already injected: these are its exact istio-iptables "
                                              "arguments and environment"))
    for key, value in pod.annotations:
        if _capture_related(key):
            findings.append(Finding(key=key, value=value, location=location, used=True, option=_option_of(key),
                                    reason="already applied by the injector: read from istio-init's arguments"))
    servers, dns_origin = _dns_servers(pod, cluster_dns, cluster_dns_origin)
    return PodDerivation(capture=True, no_capture_reason="", args=tuple(args), env=tuple(env),
                         ignored_env=tuple(ignored), findings=tuple(findings), warnings=tuple(warnings),
                         pod_ips=pod.pod_ips, dns_servers=servers, dns_origin=dns_origin)


def exclude_inbound_port(port: str, excludes: str) -> str:
    """The injector's ``excludeInboundPort``: append the status port unless empty, 0 or present."""
    port = port.strip()
    if port in ("", "0"):
        return excludes
    kept = []
    for item in excludes.split(","):
        if item == port:
            return excludes
        if item.strip():
            kept.append(item.strip())
    return ",".join([*kept, port])


def _capture_related(key: str) -> bool:
    return key in CAPTURE_ANNOTATIONS or key.startswith(CAPTURE_PREFIXES)


def _option_of(key: str) -> str:
    return CAPTURE_ANNOTATIONS.get(key, "")


def _no_capture(pod: PodSource, findings: list[Finding], warnings: list[str], reason: str) -> PodDerivation:
    return PodDerivation(capture=False, no_capture_reason=reason, args=(), env=(), ignored_env=(),
                         findings=tuple(findings), warnings=tuple(warnings), pod_ips=pod.pod_ips,
                         dns_servers=(), dns_origin="")


def _proxy_config(pod: PodSource, ann: Mapping[str, str], profile: VersionProfile, location: str,
                  findings: list[Finding], warnings: list[str]
                  ) -> tuple[dict[str, Any], list[Setting], list[Ignored]]:
    raw = ann.get(ANN_PROXY_CONFIG)
    if raw is None:
        return {}, [], []
    since = ANNOTATIONS_SINCE[ANN_PROXY_CONFIG]
    if not profile.has(since.version):
        msg = f"{ANN_PROXY_CONFIG} does not exist in {profile.label} (added in {since.text}); ignored"
        warnings.append(msg)
        findings.append(Finding(key=ANN_PROXY_CONFIG, value=raw, location=location, used=False, reason=msg))
        return {}, [], []
    where = f"{pod.where}: annotation {ANN_PROXY_CONFIG}"
    try:
        pc = load_yaml(raw)
    except YAMLSyntaxError as e:
        raise SpecError(f"not valid YAML/JSON: {e.problem}", where=where) from None
    if pc is None:
        pc = {}
    if not isinstance(pc, dict):
        raise SpecError(f"expected a ProxyConfig mapping, got a YAML {_yaml_type(pc)}", where=where)
    mode = pc.get("interceptionMode")
    if mode is not None:
        if mode not in INTERCEPTION_MODES:
            raise SpecError(f'interceptionMode: "{mode}": expected REDIRECT, TPROXY or NONE', where=where)
        used = ANN_MODE not in ann
        findings.append(Finding(key=f"{ANN_PROXY_CONFIG} interceptionMode", value=str(mode), location=location,
                                used=used, option="istio-inbound-interception-mode",
                                reason="default for -m" if used else f"{ANN_MODE} is set and wins"))
    meta = pc.get("proxyMetadata")
    if meta is None:
        return pc, [], []
    metadata = _string_map(meta, "proxyMetadata", where)
    usable: dict[str, str] = {}
    for key, value in metadata:
        if key not in F.ENV_TO_KEY:
            continue
        option = F.ENV_TO_KEY[key]
        since_m = METADATA_SINCE.get(key)
        if since_m is not None and not profile.has(since_m.version):
            msg = f"proxyMetadata {key} has no effect in {profile.label} (added in {since_m.text})"
            warnings.append(msg)
            findings.append(Finding(key=f"proxyMetadata.{key}", value=value, location=location, used=False,
                                    reason=msg, option=option))
            continue
        usable[key] = value
        reason = "istio-init env var " + key
        if key == "ISTIO_META_DNS_CAPTURE":
            reason += " (→ --redirect-dns; also turns on the agent's DNS proxy on 15053)"
        findings.append(Finding(key=f"proxyMetadata.{key}", value=value, location=location, used=True,
                                reason=reason, option=option))
    try:
        env, ignored = F.env_settings(usable, source=Source.PROXY_METADATA, origin_prefix="proxyMetadata")
    except SpecError as e:
        raise e.at(where) from None
    return pc, env, ignored


# pilot-agent's proxyMetadata keys that turn on its DNS proxy and the auto-allocation of ServiceEntry VIPs
DNS_CAPTURE = "ISTIO_META_DNS_CAPTURE"
DNS_AUTO_ALLOCATE = "ISTIO_META_DNS_AUTO_ALLOCATE"


def proxy_metadata(annotations: Mapping[str, str], *, where: str, ref: str,
                   defaults: Iterable[tuple[str, str]] = (), defaults_source: str = "") -> tuple[dict[str, str], str]:
    """pilot-agent's proxyMetadata (its env: DNS capture, auto-allocation, ...), whatever the release: the
    mesh config's ``defaultConfig.proxyMetadata`` (``defaults``, read from ``defaults_source``) overlaid
    by the ``proxy.istio.io/config`` annotation in ``annotations`` (the pod ``ref``, located at ``where``).

    Returns (metadata, where it came from: "" when nothing set it). Raises ConfigError for an annotation
    that is not YAML; a ProxyConfig without a proxyMetadata mapping adds nothing.
    """
    md = dict(defaults)
    origin = f"{defaults_source} defaultConfig.proxyMetadata" if md else ""
    raw = annotations.get(ANN_PROXY_CONFIG)
    if raw:
        try:
            pc = load_yaml(raw)
        except YAMLSyntaxError as e:
            raise ConfigError(f"annotation {ANN_PROXY_CONFIG}: invalid YAML: {e.problem}", where=where) from None
        meta = pc.get("proxyMetadata") if isinstance(pc, Mapping) else None
        if isinstance(meta, Mapping) and meta:
            md.update({str(k): str(v) for k, v in meta.items()})
            origin = f"{ref} annotation {ANN_PROXY_CONFIG}" + (f" over {origin}" if origin else "")
    return md, origin


def truthy(value: str | None) -> bool:
    """pilot-agent's reading of a boolean proxyMetadata value."""
    return value is not None and value.strip().lower() in ("true", "1", "yes", "on")


def _dns_servers(pod: PodSource, cluster_dns: str, cluster_dns_origin: str) -> tuple[tuple[str, ...], str]:
    """The nameservers kubelet writes into the pod's resolv.conf, as far as the manifest tells."""
    cluster = cluster_dns_origin or f"cluster DNS default {cluster_dns}"
    extra = f" + spec.dnsConfig.nameservers {','.join(pod.dns_nameservers)}" if pod.dns_nameservers else ""
    if pod.dns_policy == "None":
        return pod.dns_nameservers, "dnsPolicy None: spec.dnsConfig.nameservers"
    if pod.dns_policy == "Default":
        return pod.dns_nameservers, ("dnsPolicy Default: the node's resolv.conf, unknown offline"
                                     + (extra or "; give --dns-servers-v4/-v6"))
    return (cluster_dns, *pod.dns_nameservers), f"dnsPolicy {pod.dns_policy}: {cluster}{extra}"


__all__ = [
    "CAPTURE_ANNOTATIONS",
    "DNS_AUTO_ALLOCATE",
    "DNS_CAPTURE",
    "Container",
    "Finding",
    "PodDerivation",
    "PodSource",
    "derive",
    "exclude_inbound_port",
    "load_pod",
    "proxy_metadata",
    "truthy",
]
