"""The captured workload, built once: what every command reads about "a pod in the mesh".

Owns: :class:`Workload`: the pod (or workload template) and its namespace, addresses, containers,
app uid and ports, annotations; its proxyMetadata (the mesh config's ``defaultConfig`` overlaid by the
pod's ``proxy.istio.io/config``: DNS capture, auto-allocation) and whether it runs a sidecar at all
(injection, as the registry decides it); the Istio release profile; the capture options
with their provenance (``netsim.spec.resolve``'s :class:`~netsim.spec.resolve.Resolution`); the
compiled rules (``netsim.capture``), or a user's ``iptables-save`` dump instead; the sidecar's
identity (:class:`~netsim.workload.identity.SidecarIdentity`); the network-namespace model the kernel
tracer needs (:meth:`Workload.netns`); the default packet of a question (:meth:`Workload.packet`);
and the front door :meth:`Workload.trace` (pod → options → rules → packet → hops).

Build it with :meth:`Workload.from_pod` (a manifest file), :meth:`Workload.from_pod_info` (a pod read
among Kubernetes objects, as ``dns --pod``, ``mesh`` and ``diagnose`` read it) or
:meth:`Workload.from_rules`. It is usable without click: ``trace``, ``compile --pod``'s sibling
commands and the lab are thin shells over it, and scenario tests call it directly.

Never does: print, or import ``netsim.mesh`` (the sidecar's Envoy hop is given to :meth:`trace` as a
value by the caller, see ``docs/design.md``). Reading files happens only in the two constructors.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from netsim.errors import NetsimError, SpecError
from netsim.netfilter.model import BUILTIN_CHAINS, Family, RestorePayload, Ruleset
from netsim.netfilter.packet import Address, FwmarkRoute, Interface, Listener, Netns, Origin, Packet, Proto, Socket
from netsim.workload.identity import SidecarIdentity

if TYPE_CHECKING:
    from netsim.capture.ambient import AmbientCompiled
    from netsim.capture.compiled import Compiled
    from netsim.netfilter.engine import CompiledRuleset
    from netsim.netfilter.matches import Names
    from netsim.netfilter.nft.model import NftRuleset
    from netsim.registry.model import PodInfo
    from netsim.spec.pod import PodSource
    from netsim.spec.resolve import Resolution
    from netsim.spec.versions import VersionProfile
    from netsim.workload.hops import EnvoyHop, Followed, Follower, MatrixRow

_T = TypeVar("_T")
DEFAULT_POD_IP = "10.244.0.5"  # the examples' pod IP (rules/README.md) when neither the pod nor --pod-ip has one
# Ports the capture matrix always probes besides the pod's own (Istio's fixed ports, DNS, web).
MATRIX_PORTS = (53, 80, 443, 8080, 15001, 15006, 15008, 15020, 15021, 15053, 15090)
# The addresses the capture matrix uses for "somewhere else" and "a peer pod".
MATRIX_REMOTE = {Family.IPV4: "10.96.0.10", Family.IPV6: "fd00:96::10"}
MATRIX_PEER = {Family.IPV4: "10.1.2.3", Family.IPV6: "fd00:1::3"}


def parse_endpoint(text: str) -> tuple[Address, int | None]:
    """``10.0.0.5:80`` → (address, 80); ``10.0.0.5`` → (address, None); ``[fd00::1]:53``; bare IPv6.

    Raises ValueError with a message that names the bad part.
    """
    port: int | None = None
    host = text
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected [IPv6]:PORT")
            port = _port(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = _port(p)
    try:
        return ipaddress.ip_address(host), port
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise ValueError(f"port {text!r} must be 1-65535")
    return int(text)


EndpointLike = tuple[Address, int | None] | str


def _endpoint(value: EndpointLike | None, what: str) -> tuple[Address, int | None] | None:
    if value is None or isinstance(value, tuple):
        return value
    try:
        return parse_endpoint(value)
    except ValueError as e:
        raise SpecError(f"{what} {value!r}: {e}") from None


def parse_addresses(items: Iterable[str], what: str = "--pod-ip") -> tuple[Address, ...]:
    """Comma lists or single addresses → addresses. Raises SpecError naming ``what``."""
    out: list[Address] = []
    for text in items:
        for item in text.split(","):
            try:
                out.append(ipaddress.ip_address(item.strip()))
            except ValueError:
                raise SpecError(f"{what} {item!r}: not an IP address") from None
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """One workload in the mesh, as its sidecar and the kernel see it (see the module docstring)."""

    source: str  # the pod manifest, or the dump files
    pod: PodSource | None  # None for --rules
    namespace: str
    addresses: tuple[Address, ...]
    app_uid: int
    app_gid: int
    app_ports: tuple[int, ...]
    profile: VersionProfile | None  # None: a dump without --istio-version
    resolution: Resolution | None  # the capture options and why each is what it is (None for --rules)
    compiled: Compiled | None  # None for --rules, or when the pod has no capture
    rulesets: Mapping[Family, Ruleset]
    # per family: the base chains that exist (iptables-nft creates only those a payload uses,
    # spec/netfilter.md §4), None when the dump says (every chain it lists exists)
    base_chains: Mapping[Family, frozenset[tuple[str, str]] | None]
    sidecar: SidecarIdentity
    notes: tuple[str, ...] = ()  # what was assumed or warned while building it
    # nftables rulesets of the same namespace (``--nft``, or the pod's rules with ``--backend nft``), traced
    # together with ``rulesets``: every base chain in the kernel's order (netsim.netfilter.engine.combine)
    nft: tuple[NftRuleset, ...] = ()
    # legacy x_tables of the same namespace (``--rules-legacy``: iptables-legacy-save dumps), loaded before
    # the iptables-nft and nftables rules
    legacy: tuple[Ruleset, ...] = ()
    # neither the manifest (status.podIPs) nor the caller gave an address: ``addresses`` is DEFAULT_POD_IP
    addresses_assumed: bool = False
    pod_info: PodInfo | None = None  # the registry's view of the pod, when it was read among Kubernetes objects
    capture_error: str = ""  # from_pod_info: why the capture options could not be derived ("" when they were)
    # the mesh config's defaultConfig.proxyMetadata and the file it came from (:meth:`with_mesh_defaults`)
    mesh_metadata: tuple[tuple[str, str], ...] = ()
    mesh_source: str = ""
    # addresses of devices besides lo and eth0 (``--iface-addr NAME=IP``, or a virtual interface's address from
    # the manifest's network-status annotation): an arriving packet's device needs one for REDIRECT
    iface_addrs: tuple[tuple[str, Address], ...] = ()
    # an ambient pod's compiled capture (:meth:`from_ambient_pod`): its rules, routes and agent config
    ambient: AmbientCompiled | None = None
    _cache: dict[Family, CompiledRuleset] = field(default_factory=dict, compare=False, repr=False)
    # :meth:`follow`'s per-family Follower, reused while it has this workload's compiled rules and proxy
    # (``replace`` shares the dict between workloads that may differ in either: it checks both)
    _followers: dict[Family, Follower] = field(default_factory=dict, compare=False, repr=False)

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def from_pod(cls, path: str, *, istio_version: str | None = None, pod_ips: Iterable[str] = (),
                 text: str | None = None, backend: str | None = None, cluster_dns: str | None = None,
                 names: Names | None = None, mode: str | None = None, ambient_settings: Iterable[str] = (),
                 config_paths: Iterable[str] = (), name: str | None = None) -> Workload:
        """The workload of the Pod (or the pod template of the Deployment, StatefulSet, …) in ``path`` (the
        object named ``name``, else the first).

        ``istio_version``: the release whose injector defaults apply (None: current); ``pod_ips``:
        addresses overriding the manifest's ``status.podIPs``; ``text``: the file's content, when
        already read; ``cluster_dns``: the cluster DNS address kubelet writes into resolv.conf (default
        10.96.0.10); ``names``: how owner-group names resolve when the rules load (default: no system
        lookup); ``backend``: ``nft`` for Istio's native nftables rules (:meth:`with_nft_backend`). Raises
        SpecError / ConfigError naming file, document and field.

        Ambient (``netsim.spec.ambient.decide_mode``): ``mode`` "ambient" or "sidecar" forces one; by default a
        pod labelled ``istio.io/dataplane-mode=ambient``, or in a namespace so labelled (a Namespace object in
        the same file or in ``config_paths``), gets istio-cni's in-pod rules and ztunnel
        (:meth:`from_ambient_pod`, with the agent's ``ambient_settings``: ``KEY=VALUE,…`` texts).
        """
        from netsim.spec.pod import load_pod, load_pod_with_objects

        profile = _profile(istio_version)
        settings = tuple(ambient_settings)
        objects: tuple[dict[str, Any], ...] = ()
        if (mode == "sidecar" and not settings) or text is not None:
            pod = load_pod(path, text=text, name=name)
        else:  # the Namespace objects beside the pod decide whether it is enrolled in ambient
            pod, objects = load_pod_with_objects(path, name=name)
        decision = None
        if mode != "sidecar":
            from netsim.spec.ambient import pod_mode

            decision = pod_mode(pod, objects, config_paths, mode)
            if decision.ambient:
                return cls.from_ambient_pod(pod, istio_version=istio_version, pod_ips=parse_addresses(pod_ips),
                                            backend=backend, settings=settings, reason=decision.reason,
                                            opted_out=decision.opted_out)
        if settings:
            why = decision.reason if decision is not None else "--mode sidecar"
            raise SpecError(f"option --ambient-config: the pod is traced in sidecar mode ({why}); add --mode ambient")
        w = cls.from_pod_source(pod, profile, profile_given=istio_version is not None,
                                pod_ips=parse_addresses(pod_ips), cluster_dns=cluster_dns, names=names)
        if decision is not None and decision.opted_out:
            w = replace(w, notes=(*w.notes, f"sidecar capture: {decision.reason}"), _cache=w._cache)
        return w.with_nft_backend() if backend == "nft" else w

    @classmethod
    def from_ambient_pod(cls, pod: PodSource, *, istio_version: str | None = None, pod_ips: tuple[Address, ...] = (),
                         backend: str | None = None, settings: Iterable[str] = (), reason: str = "--mode ambient",
                         opted_out: bool = False) -> Workload:
        """The workload of an ambient pod: istio-cni's in-pod rules for it (``netsim.capture.ambient``: the node
        agent of ``istio_version`` with its defaults changed by ``settings``, the pod's annotations as its
        overrides; ``backend`` "nft" for the native nftables backend), §7's policy routes (ztunnel's identity
        carries them, :meth:`SidecarIdentity.ztunnel`) and ztunnel as the proxy. ``opted_out``: the pod's own
        ``istio.io/dataplane-mode=none`` label: it gets no rules, and a note says so. ``reason`` (why ambient)
        is the first note. The result's :attr:`ambient` holds the compiled value (what the lab loads)."""
        import dataclasses as dc

        from netsim.spec.ambient import ambient_config, ambient_release, compile_pod, pod_overrides

        profile = _profile(istio_version)
        release = ambient_release(istio_version)
        notes = [f"ambient mode: {reason}"]
        empty = {Family.IPV4: Ruleset(Family.IPV4, ())}
        rulesets: dict[Family, Ruleset] = dict(empty)
        base: dict[Family, frozenset[tuple[str, str]] | None] = {Family.IPV4: frozenset()}
        nft: tuple[NftRuleset, ...] = ()
        compiled = None
        config = ambient_config(release, settings)  # NativeNftables among the settings chooses, unless backend does
        if backend is not None:
            config = dc.replace(config, native_nftables=backend == "nft")
        if opted_out:
            notes.append(f"no ambient rules: {reason}")
            sidecar = SidecarIdentity.ztunnel(dns=False)
        else:
            compiled = compile_pod(istio_version, config, pod_overrides(pod.annotation_map, where=pod.where))
            notes.extend(compiled.notes)
            if compiled.backend == "nft":
                from netsim.netfilter.nft import parse_nft

                nft = (parse_nft(compiled.nft_text()),)
                rulesets = {f: Ruleset(f, ()) for f in Family}
                base = dict.fromkeys(rulesets, frozenset())
            else:
                v4, v6 = loaded = compiled.payloads()
                rs4, rs6 = compiled.rulesets(loaded)
                rulesets, base = {Family.IPV4: rs4}, {Family.IPV4: _payload_chains(v4)}
                if rs6 is not None and v6 is not None:
                    rulesets[Family.IPV6], base[Family.IPV6] = rs6, _payload_chains(v6)
            sidecar = SidecarIdentity.ztunnel(dns=compiled.dns)
            if not config.enable_ipv6:  # §7: the IPv6 ip rule and route come with EnableIPv6 only
                sidecar = replace(sidecar, policy_route_v6=False)
                notes.append("the agent's EnableIPv6 is off: the pod has no IPv6 policy route (ip -6 rule)")
        app_uid, app_gid, ports = _app(pod, notes)
        assumed = not (pod_ips or pod.pod_ips)
        addresses = _default_addresses(pod_ips or tuple(ipaddress.ip_address(a) for a in pod.pod_ips), notes,
                                       pod.kind)
        return cls(source=pod.file, pod=pod, namespace=pod.namespace, addresses=addresses, app_uid=app_uid,
                   app_gid=app_gid, app_ports=ports, profile=profile, resolution=None, compiled=None,
                   rulesets=rulesets, base_chains=base, sidecar=sidecar, notes=tuple(notes), nft=nft,
                   addresses_assumed=assumed, ambient=compiled)

    def with_nft_backend(self) -> Workload:
        """The same pod captured by Istio's native nftables backend (``--native-nftables``, spec/istio-iptables.md
        §12): its ``inet`` tables hold the rules of both families, so IPv4 and IPv6 are both traced."""
        from netsim.capture.nft import nft_refusal, render_nft
        from netsim.netfilter.nft import parse_nft

        res = self.resolution
        if res is None or res.config is None or not res.capture:
            return self
        refused = nft_refusal(res.release, res.profile.label, "--backend nft")
        if refused:
            raise SpecError(f"{refused}; leave out --backend nft")
        nft = parse_nft(render_nft(replace(res.config, native_nftables=True)))
        empty = {f: Ruleset(f, ()) for f in Family}
        return replace(self, rulesets=empty, base_chains=dict.fromkeys(empty, frozenset()), nft=(nft,),
                       _cache={})

    @classmethod
    def from_pod_info(cls, pod: PodInfo, *, istio_version: str | None = None,
                      pod_ips: Iterable[str] = ()) -> Workload:
        """The workload of a pod read among Kubernetes objects (``netsim.registry``'s PodInfo, e.g. the
        ``--pod`` file or a server pod in ``--config``), kept as :attr:`pod_info`: its labels and its
        sidecar decision in its namespace's context come from there.

        Lenient where :meth:`from_pod` is strict: when the capture options cannot be derived (an
        annotation the injector refuses), the workload has no rules and :attr:`capture_error` says why,
        as the mesh reports it. ``istio_version`` must already be valid.
        """
        from netsim.spec.pod import pod_from_object
        from netsim.spec.versions import profile_for

        profile = profile_for(istio_version)
        ips = parse_addresses(pod_ips)
        try:
            src = pod_from_object(pod.body, source=pod.source or pod.where, name=pod.name)
            w = cls.from_pod_source(src, profile, profile_given=True, pod_ips=ips)
        except NetsimError as e:
            why = f"capture config not derived: {e}"
            notes = [why]
            given = ips or tuple(ipaddress.ip_address(a) for a in pod.ips)
            return cls(source=pod.source or pod.where, pod=None, namespace=pod.namespace,
                       addresses=_default_addresses(given, notes, pod.kind), app_uid=0, app_gid=0,
                       app_ports=tuple(p.port for p in pod.container_ports), profile=profile, resolution=None,
                       compiled=None, rulesets={Family.IPV4: Ruleset(Family.IPV4, ())},
                       base_chains={Family.IPV4: frozenset()}, sidecar=SidecarIdentity.for_capture(None, profile),
                       notes=tuple(notes), addresses_assumed=not given, pod_info=pod, capture_error=why)
        return replace(w, pod_info=pod, _cache=w._cache)

    @classmethod
    def from_pod_source(cls, pod: PodSource, profile: VersionProfile, *, profile_given: bool = True,
                        pod_ips: tuple[Address, ...] = (), cluster_dns: str | None = None,
                        names: Names | None = None) -> Workload:
        """:meth:`from_pod` for an already-read pod."""
        from netsim.capture.compiled import compile_config
        from netsim.capture.iptables import dns_capture_effective
        from netsim.spec.resolve import PodNetwork, resolve

        notes: list[str] = []
        net = PodNetwork(pod_ips=tuple(str(a) for a in pod_ips), cluster_dns=cluster_dns)
        res = resolve(pod=pod, net=net, profile=profile, profile_given=profile_given)
        notes.extend(res.warnings)
        rulesets: dict[Family, Ruleset] = {}
        base: dict[Family, frozenset[tuple[str, str]] | None] = {}
        compiled = None
        if not res.capture or res.config is None:
            notes.append(f"no capture rules: {res.no_capture_reason}")
            rulesets[Family.IPV4] = Ruleset(Family.IPV4, ())
            base[Family.IPV4] = frozenset()
            sidecar = SidecarIdentity.for_capture(None, profile)
        else:
            compiled = compile_config(res.config) if names is None else compile_config(res.config, names=names)
            rulesets[Family.IPV4] = compiled.ruleset_v4
            base[Family.IPV4] = _payload_chains(compiled.v4)
            if compiled.ruleset_v6 is not None and compiled.v6 is not None:
                rulesets[Family.IPV6] = compiled.ruleset_v6
                base[Family.IPV6] = _payload_chains(compiled.v6)
            sidecar = SidecarIdentity.for_capture(res.config, profile, dns=dns_capture_effective(res.config))
        addresses = pod_ips or tuple(ipaddress.ip_address(a) for a in pod.pod_ips)
        app_uid, _, app_ports = _app(pod, notes)
        assumed = not addresses
        addresses = _default_addresses(addresses, notes, pod.kind)
        return cls(source=pod.file, pod=pod, namespace=pod.namespace, addresses=addresses, app_uid=app_uid,
                   app_gid=app_uid, app_ports=app_ports, profile=profile,
                   resolution=res, compiled=compiled, rulesets=rulesets, base_chains=base, sidecar=sidecar,
                   notes=tuple(notes), addresses_assumed=assumed)

    @classmethod
    def from_rules(cls, paths: Iterable[str], *, pod_ips: Iterable[str] = (), istio_version: str | None = None,
                   texts: Mapping[str, str] | None = None, nft_paths: Iterable[str] = (),
                   legacy_paths: Iterable[str] = (), names: Names | None = None) -> Workload:
        """A workload whose rules are ``iptables-save`` (and ``ip6tables-save``) dumps, e.g. from a node.

        Without a manifest the app runs as uid 0 and the sidecar is Istio's default one; ``texts``
        maps a path to its content when already read; ``names`` resolves owner names (``skgid java``,
        ``--gid-owner java``) as the dump's machine did when it loaded them (default: root only).
        Raises NetsimError naming the file and line.
        """
        from netsim.netfilter.dump import parse_dump
        from netsim.netfilter.matches import DEFAULT_NAMES
        from netsim.reader import read_text

        owners = names or DEFAULT_NAMES

        profile = _profile(istio_version) if istio_version is not None else None
        def read(path: str, parse: Callable[[str], _T]) -> _T:
            try:
                return parse(texts[path] if texts is not None and path in texts else read_text(Path(path)))
            except NetsimError as e:
                raise (e if e.where == path else e.at(path)) from None

        rulesets: dict[Family, Ruleset] = {}
        paths = tuple(paths)
        for path in paths:
            rulesets.update(read(path, lambda text: parse_dump(text, names=owners)))
        notes: list[str] = []
        nft = []
        nft_paths = tuple(nft_paths)
        if nft_paths:
            from netsim.netfilter.nft import parse_nft_any, untraced

            for path in nft_paths:
                nft.append(read(path, lambda text: parse_nft_any(text, owners)))
                notes.extend(f"{path}: {u}" for u in untraced(nft[-1]))
            for fam in Family:  # nft's inet tables see both families; an empty iptables side where none was given
                rulesets.setdefault(fam, Ruleset(fam, ()))
        legacy: list[Ruleset] = []
        legacy_paths = tuple(legacy_paths)
        for path in legacy_paths:
            legacy.extend(read(path, lambda text: parse_dump(text, names=owners)).values())
        for rs in legacy:
            rulesets.setdefault(rs.family, Ruleset(rs.family, ()))
        given = parse_addresses(pod_ips)
        addresses = _default_addresses(given, notes, None)
        return cls(source=", ".join((*legacy_paths, *paths, *nft_paths)), pod=None, namespace="default",
                   addresses=addresses, app_uid=0, app_gid=0, app_ports=(), profile=profile, resolution=None,
                   compiled=None, rulesets=rulesets, base_chains=dict.fromkeys(rulesets),
                   sidecar=SidecarIdentity.for_rules((*legacy, *rulesets.values()), profile, nft), notes=tuple(notes),
                   addresses_assumed=not given, nft=tuple(nft), legacy=tuple(legacy))

    def as_ambient(self) -> Workload:
        """This dump read as an ambient pod's (``--rules|--nft FILE --mode ambient``): the proxy is ztunnel
        (:meth:`SidecarIdentity.ztunnel`, with its DNS proxy when a rule redirects to 15053: what
        :meth:`SidecarIdentity.for_rules` found in the dump), and the policy routes of
        spec/istio-ambient-capture.md §7, which a dump does not show, are assumed present (a note says so)."""
        return replace(self, sidecar=SidecarIdentity.ztunnel(dns=self.sidecar.dns),
                       notes=(*self.notes, AMBIENT_ROUTES_NOTE), _cache=self._cache)

    def with_iface_addrs(self, pairs: Iterable[tuple[str, Address]]) -> Workload:
        """This workload with more devices, each with one address (a virtual interface named by
        ``istio.io/reroute-virtual-interfaces`` or ``traffic.sidecar.istio.io/kubevirtInterfaces``)."""
        given = dict(self.iface_addrs)
        given.update(pairs)
        if not given:
            return self
        return replace(self, iface_addrs=tuple(given.items()), _cache=self._cache)

    def annotated_iface_addrs(self) -> tuple[tuple[str, Address], ...]:
        """Addresses of the pod's devices from its Multus ``k8s.v1.cni.cncf.io/network-status`` annotation
        (``[{"interface": NAME, "ips": [IP, …]}, …]``): the first address of each family per device. A value
        that is not that JSON gives nothing (``--iface-addr`` can still say it)."""
        import json

        text = self.annotations.get(NETWORK_STATUS, "")
        try:
            items = json.loads(text) if text else []
        except ValueError:
            return ()
        out: list[tuple[str, Address]] = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or not isinstance(item.get("interface"), str):
                continue
            for ip in item.get("ips") or []:
                try:
                    out.append((item["interface"], ipaddress.ip_address(str(ip))))
                except ValueError:
                    continue
                break
        return tuple(out)

    # ---- what the pod is ---------------------------------------------------------------------

    @property
    def annotations(self) -> dict[str, str]:
        pod = self.pod or self.pod_info
        return dict(pod.annotations) if pod is not None else {}

    @property
    def labels(self) -> dict[str, str]:
        pod = self.pod_info or self.pod
        return dict(pod.labels) if pod is not None else {}

    @property
    def ref(self) -> str:
        """``Kind namespace/name`` of the pod or workload ("" for a dump)."""
        pod = self.pod_info or self.pod
        return f"{pod.kind} {pod.namespace}/{pod.name}" if pod is not None else ""

    def with_mesh_defaults(self, metadata: Iterable[tuple[str, str]], source: str) -> Workload:
        """This workload under a mesh config whose ``defaultConfig.proxyMetadata`` is ``metadata``
        (read from ``source``): :attr:`proxy_metadata` overlays the pod's annotation on it."""
        return replace(self, mesh_metadata=tuple(metadata), mesh_source=source, _cache=self._cache)

    def _metadata(self) -> tuple[dict[str, str], str]:
        from netsim.spec.pod import proxy_metadata

        pod = self.pod_info or self.pod
        return proxy_metadata(self.annotations, where=pod.where if pod is not None else self.source, ref=self.ref,
                              defaults=self.mesh_metadata, defaults_source=self.mesh_source)

    @property
    def proxy_metadata(self) -> dict[str, str]:
        """pilot-agent's proxyMetadata (all of it, not only istio-iptables' keys): the mesh config's
        ``defaultConfig.proxyMetadata`` overlaid by the pod's ``proxy.istio.io/config`` annotation.
        Raises ConfigError for an annotation that is not YAML."""
        return self._metadata()[0]

    @property
    def metadata_origin(self) -> str:
        """Where :attr:`proxy_metadata` came from ("" when nothing set it)."""
        return self._metadata()[1]

    @property
    def dns_capture(self) -> bool:
        """proxyMetadata ``ISTIO_META_DNS_CAPTURE``: pilot-agent runs its DNS proxy."""
        from netsim.spec.pod import DNS_CAPTURE, truthy

        return truthy(self.proxy_metadata.get(DNS_CAPTURE))

    @property
    def dns_auto_allocate(self) -> bool:
        """proxyMetadata ``ISTIO_META_DNS_AUTO_ALLOCATE``: the agent answers ServiceEntries without
        addresses with auto-allocated VIPs."""
        from netsim.spec.pod import DNS_AUTO_ALLOCATE, truthy

        return truthy(self.proxy_metadata.get(DNS_AUTO_ALLOCATE))

    @property
    def injection(self) -> tuple[bool, str]:
        """Whether the pod runs a sidecar at all, and why (``netsim.registry.convert.sidecar_injected``:
        tlsMode label, istio-proxy container, sidecar.istio.io/inject, its namespace's labels when they
        were read). A dump (``--rules``) is taken as a sidecar's."""
        from netsim.registry.convert import sidecar_injected

        if self.pod_info is not None:
            return self.pod_info.sidecar, self.pod_info.sidecar_why
        if self.pod is None:
            return True, "the rules are given (--rules)"
        return sidecar_injected(self.namespace, self.labels, self.annotations,
                                [c.name for c in self.pod.containers], None)

    @property
    def has_sidecar(self) -> bool:
        return self.injection[0]

    def owner(self, uid: int | None = None, gid: int | None = None) -> tuple[int, int]:
        """The app socket's uid and gid: ``uid``/``gid``, else the app's (the gid follows a given uid)."""
        u = self.app_uid if uid is None else uid
        return u, (self.app_gid if uid is None else u) if gid is None else gid

    def own_address(self, family: Family) -> Address | None:
        return next((a for a in self.addresses if a.version == family.value), None)

    def for_destination(self, dst: Address, *, arriving: bool) -> tuple[Workload, bool]:
        """This workload for a question about a packet to ``dst``: (workload, whether it changed).

        Without a known address (a Deployment's template, a dump without --pod-ip), an arriving
        packet's destination is taken as the pod's address, with a note. With known addresses, an
        arriving packet to an address the pod does not own gets a note saying so.
        """
        if not arriving or dst.is_loopback or dst.is_multicast:
            return self, False
        if self.addresses_assumed:
            kept = [n for n in self.notes if n != _ASSUMED_NOTE and "has no status.podIP" not in n]
            what = f"the {self.pod.kind}'s pods have" if self.pod is not None and self.pod.kind != "Pod" else \
                "the pod has"
            note = f"{what} no known address (status.podIP, --pod-ip): taking the destination {dst} as the pod's"
            same = [a for a in self.addresses if a.version != dst.version]
            return replace(self, addresses=(dst, *same), addresses_assumed=False,
                           notes=(*kept, note), _cache=self._cache), True
        if dst not in self.addresses:
            owned = ", ".join(str(a) for a in self.addresses)
            return replace(self, notes=(*self.notes, f"{dst} is not an address of the pod ({owned}): the network "
                                                      "delivers a packet for it to this pod only if it is routed "
                                                      "there (give --pod-ip if the pod has it)")), True
        return self, False

    # ---- the kernel's view -------------------------------------------------------------------

    def rules(self, family: Family) -> CompiledRuleset:
        """The engine's compiled form of this family's ruleset (built once). Raises SpecError when absent."""
        from netsim.netfilter.engine import compile_ruleset

        crs = self._cache.get(family)
        if crs is None:
            rs = self.rulesets.get(family)
            if rs is None:
                raise SpecError(f"no IPv{family.value} rules to trace an IPv{family.value} packet through")
            base = self.base_chains.get(family)
            crs = compile_ruleset(rs, None if base is None else set(base))
            legacy = [compile_ruleset(r, backend="iptables-legacy") for r in self.legacy if r.family is family]
            if self.nft or legacy:
                from netsim.netfilter.engine import combine
                from netsim.netfilter.nft import compile_nft

                crs = combine([*legacy, crs, *(compile_nft(n, family) for n in self.nft)])
            self._cache[family] = crs
        return crs

    def netns(self, listening: tuple[int, ...] | None = None, *, route_localnet: bool = False) -> Netns:
        """The pod's network namespace: ``lo`` (with the passthrough address), ``eth0`` with the pod's
        addresses, the listening sockets and TPROXY's ``ip rule``.

        The sidecar's own listeners are always there. ``listening``: the app's ports with a socket
        (TCP and UDP); None means every other port is assumed to have one (:meth:`assumptions` says so).
        ``route_localnet``: the node sets ``net.ipv4.conf.*.route_localnet=1`` (a pod does not).
        """
        addrs = [f"{a}/{24 if a.version == 4 else 64}" for a in self.addresses]
        lo = Interface.of("lo", "127.0.0.1/8", "::1/128", "::6/128")
        eth = Interface.of("eth0", *addrs)
        sc = self.sidecar
        # ztunnel's listeners try IP_TRANSPARENT (ambient §8); TPROXY's inbound listener needs it
        ls = [Listener(port=p, transparent=sc.transparent or sc.ambient) for p in sc.listening_ports]
        dns_at: tuple[Address | None, ...] = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")) \
            if sc.dns_loopback else (None,)
        ls += [Listener(port=sc.dns_port, proto=pr, addr=a) for pr in (Proto.TCP, Proto.UDP) for a in dns_at] \
            if sc.dns else []
        taken = {(x.port, x.proto) for x in ls}
        ls += [Listener(port=p, proto=pr, transparent=True) for p in listening or () for pr in (Proto.TCP, Proto.UDP)
               if (p, pr) not in taken]
        routes: tuple[FwmarkRoute, ...] = ()
        if sc.tproxy_mark is not None:
            routes = (FwmarkRoute(mark=sc.tproxy_mark, table=sc.tproxy_table),)
        if sc.policy_route is not None:
            mark, mask, table = sc.policy_route
            fam = None if sc.policy_route_v6 else Family.IPV4
            routes = (*routes, FwmarkRoute(mark=mark, mask=mask, table=table, family=fam))
        extra = tuple(Interface.of(name, f"{a}/{32 if a.version == 4 else 128}") for name, a in self.iface_addrs
                      if name not in ("lo", "eth0"))  # the pod's own devices keep their addresses
        return Netns(interfaces=(lo, eth, *extra), default_iface="eth0", listeners=tuple(ls), fwmark_routes=routes,
                     other_ports_listen=listening is None, route_localnet=route_localnet)

    def assumptions(self, listening: tuple[int, ...] | None = None) -> tuple[str, ...]:
        """What :meth:`netns` assumes, as notes."""
        if listening is None:
            return ("the app is assumed to listen on every other port (use --listening to say which)",)
        return ()

    def packet(self, dst: EndpointLike, *, proto: str = "tcp", src: EndpointLike | None = None,
               from_: EndpointLike | None = None, uid: int | None = None, gid: int | None = None,
               in_iface: str = "eth0", mark: int | None = None, as_: str | None = None) -> tuple[Packet, str]:
        """The first packet of the connection a question describes, and who sends it.

        ``from_``: an arriving packet from this peer (on ``in_iface``); else a locally generated one
        from ``src`` (default: the pod's address of ``dst``'s family, or ``dst`` itself when it is a
        loopback address) by a socket of ``uid``/``gid`` (default: the app's) whose ``SO_MARK`` is ``mark``
        (the packet's mark as it enters OUTPUT and its first route lookup; default 0). ``as_="ztunnel"``:
        sent by ztunnel's socket (its uid, gid and mark 0x539, :meth:`SidecarIdentity.ztunnel`).
        """
        from netsim.workload.hops import APP_SPORT

        dst_ep = _endpoint(dst, "--dst")
        assert dst_ep is not None
        src_ep, from_ep = _endpoint(src, "--src"), _endpoint(from_, "--from")
        daddr, dport = dst_ep
        fam = Family.IPV4 if daddr.version == 4 else Family.IPV6
        pr = Proto.parse(proto)
        if pr is Proto.ICMP and fam is Family.IPV6:
            pr = Proto.ICMPV6
        sender = ""
        if as_ is not None:
            if as_ != "ztunnel":
                raise SpecError(f"--as {as_!r}: the sender netsim knows is ztunnel")
            given = [n for n, v in (("--uid", uid), ("--gid", gid), ("--mark", mark)) if v is not None]
            if given:
                raise SpecError(f"--as ztunnel gives the socket's uid, gid and mark: drop {', '.join(given)}")
            z = self.sidecar if self.sidecar.ambient else SidecarIdentity.ztunnel()
            uid, gid, mark, sender = z.uid, z.gid, z.mark, z.label
        if from_ep is not None:
            if mark is not None or as_ is not None:
                raise SpecError(f"{'--as' if as_ is not None else '--mark'} describes the socket of a locally "
                                "generated packet; an arriving one (--from) has no socket")
            saddr, sport = from_ep
            if saddr.version != daddr.version:
                raise SpecError("--from and --dst must be the same IP version")
            return (Packet(family=fam, proto=pr, src=saddr, dst=daddr, sport=sport or APP_SPORT, dport=dport or 0,
                           origin=Origin.ARRIVING, in_iface=in_iface, socket=None), f"client {saddr}")
        u, g = self.owner(uid, gid)
        if src_ep is not None:
            saddr, sport = src_ep[0], src_ep[1] or APP_SPORT
        else:
            sport = APP_SPORT
            if daddr.is_loopback:
                saddr = daddr
            else:
                own = self.own_address(fam)
                saddr = own if own is not None else (ipaddress.ip_address("127.0.0.1") if fam is Family.IPV4
                                                     else ipaddress.ip_address("::1"))
        if saddr.version != daddr.version:
            raise SpecError("--src and --dst must be the same IP version")
        m = mark or 0
        return (Packet(family=fam, proto=pr, src=saddr, dst=daddr, sport=sport, dport=dport or 0,
                       socket=Socket(uid=u, gid=g), mark=m),
                sender or f"app (uid {u}, gid {g}" + (f", mark {m:#x})" if m else ")"))

    # ---- the front door ----------------------------------------------------------------------

    def follow(self, packet: Packet, who: str, *, listening: tuple[int, ...] | None = None,
               netns: Netns | None = None, envoy: EnvoyHop | None = None) -> Followed:
        """Trace ``packet`` and the sidecar's connections after it (``netsim.workload.hops.follow``);
        ``envoy`` is the sidecar's own decision of where to connect (``netsim.mesh``, given by the caller)."""
        fam = packet.family
        rules = self.rules(fam)
        f = self._followers.get(fam)
        if f is None or f.rules is not rules or f.sidecar is not self.sidecar:
            from netsim.workload.hops import Follower

            f = self._followers[fam] = Follower(rules, self.sidecar)
        return f.follow(packet, netns or self.netns(listening), who, envoy=envoy)

    def trace(self, dst: EndpointLike, *, proto: str = "tcp", src: EndpointLike | None = None,
              from_: EndpointLike | None = None, uid: int | None = None, gid: int | None = None,
              in_iface: str = "eth0", listening: tuple[int, ...] | None = None,
              envoy: EnvoyHop | None = None, mark: int | None = None, as_: str | None = None) -> Followed:
        """Where does this connection's first packet go, and why: pod → rules → packet → hops.

        ``dst``, ``src`` and ``from_`` are ``IP:PORT`` strings or (address, port) tuples; see
        :meth:`packet` and :meth:`netns` for the rest. The result's ``decision`` is the verdict
        (:class:`~netsim.workload.verdict.Decision`), ``summary`` the sentence rendered from it. Raises
        SpecError for a question that describes no packet (mixed IP versions, no rules of that family).
        """
        dst_ep = _endpoint(dst, "--dst")
        assert dst_ep is not None
        w, _ = self.for_destination(dst_ep[0], arriving=from_ is not None)
        packet, who = w.packet(dst_ep, proto=proto, src=src, from_=from_, uid=uid, gid=gid, in_iface=in_iface,
                               mark=mark, as_=as_)
        return w.follow(packet, who, listening=listening, envoy=envoy)

    def matrix(self, *, listening: tuple[int, ...] | None = None,
               netns: Netns | None = None) -> list[tuple[Family, tuple[MatrixRow, ...]]]:
        """The capture matrix of each family the pod has an address and rules for: every direction,
        protocol and uid class over :data:`MATRIX_PORTS` and the pod's own ports."""
        from netsim.workload.hops import capture_matrix

        ports = sorted(set(MATRIX_PORTS) | set(self.app_ports))
        ns = netns or self.netns(listening)
        out = []
        for fam, rs in self.rulesets.items():
            own = self.own_address(fam)
            if own is None or not (rs.tables or self.nft):
                continue
            rows = capture_matrix(self.rules(fam), ns, self.sidecar, app_uid=self.app_uid, app_gid=self.app_gid,
                                  ports=ports, remote=ipaddress.ip_address(MATRIX_REMOTE[fam]), pod_ip=own,
                                  peer=ipaddress.ip_address(MATRIX_PEER[fam]))
            out.append((fam, rows))
        return out


def _profile(istio_version: str | None) -> VersionProfile:
    """The release's profile; a bad name is one error naming ``--istio-version``, as every command says it."""
    from netsim.istio_version import parse_istio_version
    from netsim.spec.versions import profile_for

    if istio_version is not None:
        parse_istio_version(istio_version, option="--istio-version")
    return profile_for(istio_version)


_ASSUMED_NOTE = "pod IP not given (--pod-ip): assuming " + DEFAULT_POD_IP
AMBIENT_ROUTES_NOTE = ("ambient: the dump shows no policy routing; assuming istio-cni's routes are present "
                       "(ip rule fwmark 0x111/0xfff lookup 100, table 100: local default dev lo; "
                       "spec/istio-ambient-capture.md §7)")
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"


def _app(pod: PodSource, notes: list[str]) -> tuple[int, int, tuple[int, ...]]:
    """The app's uid, gid and ports: its containers' but the sidecar's; uid 0 (noted) when none is set."""
    apps = [c for c in pod.containers if c.name != "istio-proxy"]
    uids = [c.run_as_user for c in apps if c.run_as_user is not None]
    if not uids:
        notes.append("the app's uid is not set in securityContext: assuming the image runs as root (uid 0)")
    uid = uids[0] if uids else 0
    return uid, uid, tuple(p for c in apps for p in c.ports)


def _default_addresses(addresses: tuple[Address, ...], notes: list[str], kind: str | None) -> tuple[Address, ...]:
    if addresses:
        return addresses
    if kind is not None and kind != "Pod":
        notes.append(f"a {kind} has no status.podIP: assuming {DEFAULT_POD_IP} (give --pod-ip)")
    else:
        notes.append(_ASSUMED_NOTE)
    return (ipaddress.ip_address(DEFAULT_POD_IP),)


def _payload_chains(payload: RestorePayload) -> frozenset[tuple[str, str]]:
    return frozenset((op.table, op.chain) for op in payload.ops if op.chain in BUILTIN_CHAINS.get(op.table, ()))


__all__ = ["DEFAULT_POD_IP", "MATRIX_PORTS", "Workload", "parse_addresses", "parse_endpoint"]
