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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netsim.drift.compare import Canon, DriftFinding, canon_of, classify
from netsim.drift.expect import Expectation
from netsim.errors import NetsimError, SpecError

if TYPE_CHECKING:
    from netsim.netfilter.packet import Address
    from netsim.spec.pod import PodSource

# what a dump file's name may end with after the pod's name (iptables-save > NAME.txt, NAME.rules.gz, …)
DUMP_SUFFIXES = (".txt", ".save", ".rules", ".iptables", ".iptables-save", ".dump", ".log")


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftReport:
    """One pod's answer: which pod (``namespace/name``), which dump, the release its rules were
    expected from, and the findings (none: no drift)."""

    pod: str
    rules: str
    release: str
    findings: tuple[DriftFinding, ...]

    @property
    def drift(self) -> bool:
        return bool(self.findings)

    def as_json(self) -> dict[str, Any]:
        return {"pod": self.pod, "rules": self.rules, "release": self.release, "drift": self.drift,
                "findings": [f.as_json() for f in self.findings]}


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
    from netsim.k8s import POD_TEMPLATE_PATHS, read_objects
    from netsim.spec.pod import pod_from_object

    out: list[PodSource] = []
    for path in paths:
        loaded = read_objects([path])
        if loaded.errors:
            raise loaded.errors[0]
        found = [o for o in loaded.objects if o.kind in POD_TEMPLATE_PATHS]
        if not found:
            raise SpecError("no Pod or workload with a pod template (Deployment, StatefulSet, DaemonSet, "
                            "ReplicaSet, Job, CronJob) found", where=path)
        out.extend(pod_from_object(o.body, source=o.source) for o in found)
    return out


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

    def __init__(self, *, istio_version: str | None = None, pod_ips: tuple[Address, ...] = ()) -> None:
        self.istio_version = istio_version
        self.pod_ips = pod_ips
        self._expected: dict[PodSource, Expectation | NetsimError] = {}
        self._found: dict[bytes, Canon] = {}
        self._pairs: dict[tuple[bytes, PodSource], tuple[DriftFinding, ...]] = {}
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

    def check(self, pod: PodSource, data: bytes, name: str) -> DriftReport:
        """The drift of the dump ``data`` (the bytes of the file ``name``) against ``pod``.

        Raises NetsimError naming the file and line for a dump that is not a ruleset, or the pod's file
        for a pod whose rules cannot be derived.
        """
        key = ruleset_key(data)
        spec = self._spec(pod)
        exp = self._expectation(spec, pod)
        findings = self._pairs.get((key, spec))
        if findings is None:
            found = self._canon(key, data, name)
            findings = self._pairs[key, spec] = classify(found, exp.canon, exp.candidates, dns_off=exp.dns_off())
        return DriftReport(pod=f"{pod.namespace}/{pod.name}", rules=name, release=exp.release, findings=findings)

    def check_file(self, pod: PodSource, path: str | Path) -> DriftReport:
        from netsim.reader import display_name, read_bytes

        return self.check(pod, read_bytes(path), display_name(path))


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
    holding one; gzip or not). A text without anything but comments (an empty file, a save of a
    namespace without rules) is a pod with no rules at all. Raises NetsimError ``name: line N: …`` for
    text that holds no rules or a bad rule line."""
    from netsim.netfilter.dump import read_pasted
    from netsim.reader import decode

    text = decode(data, name)
    if not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines()):
        return Canon()
    try:
        return canon_of(read_pasted(text).rulesets.values())
    except NetsimError as e:
        raise e.at(name) from None


__all__ = ["DUMP_SUFFIXES", "DriftChecker", "DriftReport", "PodCatalog", "dump_files", "load_pods",
           "parse_found", "pod_name_of", "ruleset_key"]
