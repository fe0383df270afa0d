"""Drift of one dump or of a fleet's worth: reading dumps, matching them to pods, computing each distinct
question once.

Owns: :class:`DriftReport` (one pod's answer), :class:`DriftChecker` (dumps parsed once per
distinct ruleset, keyed by a hash of their bytes without comment lines and counters, :func:`ruleset_key`;
expectations built once per distinct pod spec; each (ruleset, spec) pair classified once),
:class:`PodCatalog` (which pod manifest a dump file belongs to) and :func:`dump_files` /
:func:`pod_name_of` (a directory of dumps, one file per pod, named after it).

A fleet has few distinct rulesets (one per template and release) among many pods: 10,000 dumps of 200
rulesets cost 200 parses and classifications plus 10,000 reads and hashes (bench/drift_bench.py).

Never does: print, or read anything but the files it is given.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netsim.drift.compare import Canon, DriftFinding, canon_of, canon_of_nft, classify
from netsim.drift.expect import Expectation
from netsim.errors import NetsimError, SpecError

if TYPE_CHECKING:
    from netsim.drift.ambient import AmbientExpectation
    from netsim.netfilter.packet import Address
    from netsim.spec.ambient import ModeDecision
    from netsim.spec.pod import PodSource

# what a dump file's name may end with after the pod's name (iptables-save > NAME.txt, NAME.rules.gz, …)
DUMP_SUFFIXES = (".txt", ".save", ".rules", ".iptables", ".iptables-save", ".dump", ".log", ".nft", ".nft-list")


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftReport:
    """One pod's answer: which pod (``namespace/name``), which dump, the release its rules were
    expected from, and the findings (none: no drift)."""

    pod: str
    rules: str
    release: str
    findings: tuple[DriftFinding, ...]
    mode: str = "sidecar"  # sidecar | ambient: whose rules the dump was compared with
    notes: tuple[str, ...] = ()  # why this mode, and what was not compared (ambient's policy routes)

    @property
    def drift(self) -> bool:
        return bool(self.findings)

    def as_json(self) -> dict[str, Any]:
        return {"pod": self.pod, "rules": self.rules, "release": self.release, "mode": self.mode,
                "drift": self.drift, "findings": [f.as_json() for f in self.findings], "notes": list(self.notes)}


def pod_name_of(filename: str) -> str:
    """The pod a dump file is named after: the file name without ``.gz`` and one of :data:`DUMP_SUFFIXES`
    (a pod name may hold dots, so only those are taken off)."""
    name = filename[:-3] if filename.endswith(".gz") else filename
    for suffix in DUMP_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def dump_files(directory: str) -> list[Path]:
    """The dump files of ``directory``: its regular files (not its subdirectories, not hidden ones), sorted.

    Raises InputError when it cannot be listed, SpecError when it holds no file.
    """
    from netsim.errors import InputError

    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as e:
        raise InputError(f"cannot read the directory: {e.strerror or e}", where=directory) from None
    files = [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_file()]
    if not files:
        raise SpecError("no dump files in the directory (one iptables-save output per pod, named after the pod)",
                        where=directory)
    return files


class PodCatalog:
    """The pod manifests given, and which one a dump named after a pod belongs to (:meth:`for_dump`)."""

    def __init__(self, pods: Sequence[PodSource]) -> None:
        self.pods = tuple(pods)
        self._by_name: dict[str, list[PodSource]] = {}
        for pod in self.pods:
            self._by_name.setdefault(pod.name, []).append(pod)
            self._by_name.setdefault(f"{pod.namespace}_{pod.name}", []).append(pod)

    def for_dump(self, name: str) -> PodSource:
        """The pod of the dump named ``name``, tried in this order:

        1. the Pod (or workload) named ``name``, or ``NAMESPACE_NAME`` (``_`` is in no Kubernetes name);
        2. the workload (Deployment, StatefulSet, …) whose pods' names start with its name and ``-``
           (``web-7c9f8d-x2kq`` is a pod of Deployment ``web``; the longest name wins);
        3. the only manifest given.

        Raises SpecError naming the dump when none or several fit.
        """
        exact = self._by_name.get(name, [])
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            spaces = ", ".join(sorted({p.namespace for p in exact}))
            raise SpecError(f"pods named {name!r} in namespaces {spaces}: name the dump NAMESPACE_NAME")
        owners = [p for p in self.pods if p.kind != "Pod" and (
            name.startswith(p.name + "-") or name.startswith(f"{p.namespace}_{p.name}-"))]
        if owners:
            longest = max(len(p.name) for p in owners)
            owners = [p for p in owners if len(p.name) == longest]
            if len(owners) == 1:
                return owners[0]
        if len(self.pods) == 1:
            return self.pods[0]
        raise SpecError(f"no pod manifest for the dump {name!r}: name the file after a pod (NAME or "
                        "NAMESPACE_NAME) or a pod of a given workload (DEPLOYMENT-…)")


def load_pods(paths: Iterable[str]) -> list[PodSource]:
    """Every pod-bearing object (Pod, Deployment, StatefulSet, …) of ``paths`` (files or directories).

    Raises ConfigError / SpecError naming the file and document, as ``netsim.k8s`` and ``netsim.spec.pod``
    do; a path without any pod-bearing object is an error.
    """
    return load_pods_and_namespaces(paths)[0]


def load_pods_and_namespaces(paths: Iterable[str]) -> tuple[list[PodSource], dict[str, dict[str, str]]]:
    """:func:`load_pods`, and the labels of the Namespace objects among them (whether a pod is enrolled in
    ambient depends on its namespace's ``istio.io/dataplane-mode``)."""
    from netsim.k8s import POD_TEMPLATE_PATHS, read_objects
    from netsim.spec.ambient import namespace_labels
    from netsim.spec.pod import pod_from_object

    out: list[PodSource] = []
    namespaces: dict[str, dict[str, str]] = {}
    for path in paths:
        loaded = read_objects([path])
        if loaded.errors:
            raise loaded.errors[0]
        namespaces.update(namespace_labels(dict(o.body) for o in loaded.objects))
        found = [o for o in loaded.objects if o.kind in POD_TEMPLATE_PATHS]
        if not found:
            raise SpecError("no Pod or workload with a pod template (Deployment, StatefulSet, DaemonSet, "
                            "ReplicaSet, Job, CronJob) found", where=path)
        out.extend(pod_from_object(o.body, source=o.source) for o in found)
    return out, namespaces


def _spec_key(pod: PodSource) -> PodSource:
    """What of ``pod`` its rules depend on: everything but its name and origin, and of its addresses only
    the families and whether each is usable (a fleet's pods differ in IPs, not in rules)."""

    def signature(ip: str) -> str:
        a = ipaddress.ip_address(ip)
        usable = not (a.is_loopback or a.is_link_local)
        return ("::2" if a.version == 6 else "10.0.0.2") if usable else ("::1" if a.version == 6 else "127.0.0.2")

    try:
        ips = tuple(signature(ip) for ip in pod.pod_ips)
    except ValueError:
        ips = pod.pod_ips
    return replace(pod, file="", where="", name="", choice="", pod_ips=ips)


class DriftChecker:
    """Checks dumps against pods, computing each distinct dump, pod spec and pair once (see the module
    docstring). ``istio_version``: the release the pods' rules should follow (None: current)."""

    def __init__(self, *, istio_version: str | None = None, pod_ips: tuple[Address, ...] = (), mode: str | None = None,
                 ambient_settings: tuple[str, ...] = (),
                 namespaces: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.istio_version = istio_version
        self.pod_ips = pod_ips
        self.mode = mode  # --mode: ambient or sidecar for every pod; None: each pod's labels decide
        self.ambient_settings = ambient_settings
        self.namespaces: Mapping[str, Mapping[str, str]] = namespaces or {}
        self._expected: dict[PodSource, Expectation | NetsimError] = {}
        self._ambient: dict[tuple[PodSource, str], AmbientExpectation | NetsimError] = {}
        self._found: dict[bytes, Canon] = {}
        self._pairs: dict[tuple[bytes, PodSource, str], tuple[DriftFinding, ...]] = {}
        self._specs: dict[int, tuple[PodSource, PodSource]] = {}  # id(pod) → (pod, its spec key): a catalog's
        # pods come back as the same objects dump after dump

    def _spec(self, pod: PodSource) -> PodSource:
        known = self._specs.get(id(pod))
        if known is None or known[0] is not pod:
            known = self._specs[id(pod)] = (pod, _spec_key(pod))
        return known[1]

    @property
    def distinct_dumps(self) -> int:
        return len(self._found)

    def expectation(self, pod: PodSource) -> Expectation:
        """The pod's expected rules (built once per distinct spec). Raises NetsimError for a bad pod."""
        return self._expectation(self._spec(pod), pod)

    def _expectation(self, key: PodSource, pod: PodSource) -> Expectation:
        exp = self._expected.get(key)
        if exp is None:
            try:
                exp = Expectation.of(pod, istio_version=self.istio_version, pod_ips=self.pod_ips)
            except NetsimError as e:
                exp = e
            self._expected[key] = exp
        if isinstance(exp, NetsimError):
            raise exp
        return exp

    def _canon(self, key: bytes, data: bytes, name: str) -> Canon:
        found = self._found.get(key)
        if found is None:  # an error is not kept: another file with these rules may have other comment lines
            found = self._found[key] = parse_found(data, name)
        return found

    def decision(self, pod: PodSource) -> ModeDecision:
        """Whether ``pod`` is compared with ambient's rules or a sidecar's (``netsim.spec.ambient.decide_mode``:
        its labels, its namespace's, ``--mode``)."""
        from netsim.spec.ambient import decide_mode

        return decide_mode(pod, self.namespaces, self.mode)

    def _ambient_expectation(self, key: PodSource, pod: PodSource, decision: ModeDecision,
                             backend: str) -> AmbientExpectation:
        exp = self._ambient.get((key, backend))
        if exp is None:
            from netsim.drift.ambient import AmbientExpectation

            try:
                exp = AmbientExpectation.of(pod, decision, istio_version=self.istio_version,
                                            settings=self.ambient_settings, backend=backend, pod_ips=self.pod_ips)
            except NetsimError as e:
                exp = e
            self._ambient[key, backend] = exp
        if isinstance(exp, NetsimError):
            raise exp
        return exp

    def check(self, pod: PodSource, data: bytes, name: str) -> DriftReport:
        """The drift of the dump ``data`` (the bytes of the file ``name``: iptables-save output or any form
        ``read_pasted`` reads, or an ``nft list ruleset`` listing) against ``pod``.

        Raises NetsimError naming the file and line for a dump that is not a ruleset, or the pod's file
        for a pod whose rules cannot be derived.
        """
        key = ruleset_key(data)
        return self._check(pod, key, lambda: self._canon(key, data, name), name)

    def _check(self, pod: PodSource, key: bytes, found: Callable[[], Canon], name: str) -> DriftReport:
        spec = self._spec(pod)
        decision = self.decision(pod)
        where = f"{pod.namespace}/{pod.name}"
        if not decision.ambient:
            exp = self._expectation(spec, pod)
            findings = self._pairs.get((key, spec, "sidecar"))
            if findings is None:
                canon = found()
                findings = self._pairs[key, spec, "sidecar"] = classify(canon, exp.canon, exp.candidates,
                                                                         dns_off=exp.dns_off())
            notes: tuple[str, ...] = (f"sidecar capture: {decision.reason}",) if decision.opted_out else ()
            return DriftReport(pod=where, rules=name, release=exp.release, findings=findings, notes=notes)
        from netsim.drift.ambient import ROUTES_NOTE, classify_ambient, found_backend, unpasted_ipv6

        canon = found()
        backend = found_backend(canon)
        aexp = self._ambient_expectation(spec, pod, decision, backend)
        findings = self._pairs.get((key, spec, "ambient-" + backend))
        if findings is None:
            findings = self._pairs[key, spec, "ambient-" + backend] = classify_ambient(canon, aexp)
        notes = (f"ambient mode: {decision.reason}", *aexp.notes, ROUTES_NOTE)
        if unpasted_ipv6(canon, aexp):
            notes += ("the dump holds no IPv6 rules (no ip6tables-save given) while the agent's EnableIPv6 is on: "
                      "only IPv4 was compared (give the pod's ip6tables-save too, or --ambient-config "
                      "EnableIPv6=false)",)
        return DriftReport(pod=where, rules=name, release=aexp.release, findings=findings, mode="ambient",
                           notes=notes)

    def check_file(self, pod: PodSource, path: str | Path) -> DriftReport:
        from netsim.reader import display_name, read_bytes

        return self.check(pod, read_bytes(path), display_name(path))

    def check_files(self, pod: PodSource, paths: Sequence[str | Path]) -> DriftReport:
        """The drift of several dumps of one pod's namespace taken together (its ``iptables-save`` and its
        ``nft list ruleset``: a namespace holds both backends' rules)."""
        from netsim.reader import display_name, read_bytes

        if len(paths) == 1:
            return self.check_file(pod, paths[0])
        parts = [(read_bytes(p), display_name(p)) for p in paths]
        keys = [ruleset_key(data) for data, _ in parts]
        key = hashlib.blake2b(b"".join(keys), digest_size=16).digest()

        def found() -> Canon:
            canon = Canon()
            for k, (data, name) in zip(keys, parts, strict=True):
                canon = canon | self._canon(k, data, name)
            return canon

        return self._check(pod, key, found, ", ".join(name for _, name in parts))


def _counters(text: bytes) -> bool:
    """Whether ``text`` is ``[packets:bytes]``'s inside, two decimal numbers."""
    packets, sep, count = text.partition(b":")
    return bool(sep) and packets.isdigit() and count.isdigit()


def ruleset_key(data: bytes) -> bytes:
    """A digest of a dump's bytes that is the same for two dumps of the same rules written at different
    times: without what is not a rule, i.e. comment lines (iptables-save's ``# Generated by … on <date>``),
    the built-in chains' counters (legacy iptables-save always prints them) and the rules' counters
    (``iptables-save -c``). Blank lines go too; a compressed or UTF-16 dump is taken as it is.

    A line by line scan: three regular expressions over the text cost eight times as much (bench/drift_bench.py).
    """
    if data.startswith((b"\x1f\x8b", b"\xff\xfe", b"\xfe\xff")):
        return hashlib.blake2b(data, digest_size=16).digest()
    kept = []
    for line in data.split(b"\n"):
        if not line or line[0] == 0x23:  # "#" first: a comment, as iptables-restore reads it
            continue
        if line[0] == 0x3A and line.endswith(b"]"):  # ":CHAIN POLICY [packets:bytes]"
            head, sep, tail = line.rpartition(b" [")
            if sep and _counters(tail[:-1]):
                line = head
        elif line[0] == 0x5B:  # "[packets:bytes] -A CHAIN …"
            head, sep, tail = line.partition(b"] ")
            if sep and _counters(head[1:]):
                line = tail
        kept.append(line)
    return hashlib.blake2b(b"\n".join(kept), digest_size=16).digest()


def parse_found(data: bytes, name: str) -> Canon:
    """The canonical form of the rules in ``data``, in any form a user pastes them
    (``netsim.netfilter.dump.read_pasted``: ``iptables-save``/``ip6tables-save`` output with or without
    counters, Istio's restore payload or command log, ``iptables -S`` listings, an istio-init log
    holding one; gzip or not), or an ``nft list ruleset`` listing (text or ``-j`` JSON, or an ``nft -f``
    transaction: ``netsim.netfilter.nft.parse_nft_any``). A text without anything but comments (an empty
    file, a save of a namespace without rules) is a pod with no rules at all. Raises NetsimError
    ``name: line N: …`` for text that holds no rules or a bad rule line."""
    from netsim.infer.core import is_nft_text
    from netsim.netfilter.dump import read_pasted
    from netsim.reader import decode

    text = decode(data, name)
    lines = _rule_lines(text)
    if not lines:
        return Canon()
    try:
        if is_nft_text(text):
            from netsim.netfilter.nft import parse_nft_any

            return canon_of_nft(parse_nft_any(text))
        return canon_of(read_pasted(text).rulesets.values())
    except NetsimError as e:
        raise e.at(name) from None


def _rule_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def is_nft(data: bytes, name: str) -> bool:
    """Whether ``data`` reads as nftables (a listing, a transaction, ``nft -j`` JSON) or holds no rules."""
    from netsim.infer.core import is_nft_text
    from netsim.reader import decode

    text = decode(data, name)
    return not _rule_lines(text) or is_nft_text(text)


__all__ = ["DUMP_SUFFIXES", "DriftChecker", "DriftReport", "PodCatalog", "dump_files", "is_nft", "load_pods",
           "load_pods_and_namespaces", "parse_found", "pod_name_of", "ruleset_key"]
