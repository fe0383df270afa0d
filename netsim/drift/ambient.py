"""What an ambient pod's rules should be, the other ways they could have been written, and the backend check.

Owns: :class:`AmbientExpectation` (the pod's in-pod rules as istio-cni's node agent writes them, compiled
through the workload front door, :meth:`netsim.workload.Workload.from_ambient_pod`, in canonical form, and,
built on first need, the alternatives :func:`netsim.drift.compare.classify` tries: DNS capture off, the pod
without each of its ambient annotations, the agent with another EnableIPv6/RedirectDNS, and the agent of every
other release layout of spec/istio-ambient-capture.md §11), and :func:`classify_ambient`, which first looks
for the two backends at once (iptables rules and native nftables tables in one pod: the backend chosen twice)
and for the other backend alone, then classifies as for a sidecar.

Never does: IO, decide the mode (``netsim.spec.ambient.decide_mode``), compare rule lists (``compare.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netsim.drift.compare import (
    Candidate,
    Canon,
    Check,
    DriftFinding,
    Key,
    Severity,
    Voice,
    canon_of,
    canon_of_nft,
    classify,
    iptables_side,
    show,
)
from netsim.errors import NetsimError
from netsim.netfilter.model import Family

if TYPE_CHECKING:
    from collections.abc import Mapping

    from netsim.capture.ambient import AmbientCompiled, AmbientConfig, PodOverrides
    from netsim.netfilter.packet import Address
    from netsim.spec.ambient import ModeDecision
    from netsim.spec.pod import PodSource

ROUTES_NOTE = ("the pod's policy routes (spec/istio-ambient-capture.md §7: ip rule fwmark 0x111/0xfff lookup 100 "
               "pref 32764, table 100's local 0.0.0.0/0 (and ::/0) dev lo) are not in a netfilter dump and were not "
               "compared: check them in the pod with `ip rule` and `ip route show table 100`")
REENROLL = ("the agent writes a pod's rules when it enrolls it (and, with ambient.reconcileIptablesOnStartup, on "
            "by default from 1.29, when it restarts), not when the pod's annotations or the agent's settings change")

AMBIENT_VOICE = Voice(
    writer="istio-cni's ambient agent",
    absent=("no ambient capture at all although the pod is enrolled: none of the rules istio-cni's agent writes "
            "for it is in the pod's namespace (the agent has not enrolled it, failed, or the rules are gone: e.g. "
            "after a node reboot the pod's namespace holds none until the agent reconciles it), so its traffic "
            "bypasses ztunnel"),
    duplicated=("more often than istio-cni's agent writes them (written twice: a second restore without the "
                "state check's cleanup, or two agents)"),
    dns_off="DNS capture is off although the pod asks for it: queries go to the cluster's resolver, not to "
            "ztunnel's DNS proxy on 15053")


def _canon(compiled: AmbientCompiled) -> Canon:
    if compiled.config.native_nftables:
        from netsim.netfilter.nft import parse_nft

        return canon_of_nft(parse_nft(compiled.nft_text()))
    v4, v6 = compiled.rulesets()
    return canon_of([v4] + ([v6] if v6 is not None else []))


def _try(config: AmbientConfig, pod: PodOverrides) -> Canon | None:
    """The canonical rules of ``config`` and ``pod``; None when the agent would not write them (a release
    without that backend or option, or rules iptables refuses)."""
    from netsim.capture.ambient import compile_ambient

    try:
        return _canon(compile_ambient(config, pod))
    except (ValueError, NetsimError):
        return None


@dataclass(slots=True)
class AmbientExpectation:
    """An ambient pod's expected rules (``canon``; empty for an opted-out pod) and the alternatives, built once."""

    pod: PodSource
    decision: ModeDecision
    istio_version: str | None
    given: Mapping[str, object]  # the AmbientConfig fields --ambient-config set
    compiled: AmbientCompiled | None
    canon: Canon
    notes: tuple[str, ...]
    voice: Voice = AMBIENT_VOICE
    _candidates: tuple[Candidate, ...] | None = field(default=None, repr=False)
    _dns_off: tuple[Canon | None] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, pod: PodSource, decision: ModeDecision, *, istio_version: str | None = None,
           settings: tuple[str, ...] = (), backend: str | None = None,
           pod_ips: tuple[Address, ...] = ()) -> AmbientExpectation:
        """The expectation for ``pod`` enrolled in ambient (``decision``), under the agent of ``istio_version``
        (None: current) with ``settings`` (``--ambient-config`` texts). ``backend``: the backend to expect when
        the settings do not name one (NativeNftables). Raises SpecError for a bad setting, release or annotation."""
        from netsim.spec.ambient import settings_given
        from netsim.workload.model import Workload

        given = settings_given(settings)
        chosen = None if "native_nftables" in given else backend
        w = Workload.from_ambient_pod(pod, istio_version=istio_version, pod_ips=pod_ips, backend=chosen,
                                      settings=settings, reason=decision.reason, opted_out=decision.opted_out)
        compiled = w.ambient
        canon = _canon(compiled) if compiled is not None else Canon()
        notes = compiled.notes if compiled is not None else tuple(n for n in w.notes if n.startswith("no ambient"))
        voice = AMBIENT_VOICE
        if compiled is not None and compiled.dns:
            voice = dataclasses.replace(voice, dns_off=_dns_why(compiled))
        return cls(pod=pod, decision=decision, istio_version=istio_version, given=given, compiled=compiled,
                   canon=canon, notes=notes, voice=voice)

    @property
    def backend(self) -> str:
        return self.compiled.backend if self.compiled is not None else "iptables"

    @property
    def release(self) -> str:
        from netsim.capture.ambient import AMBIENT_LAYOUTS
        from netsim.infer.ambient import layout_text

        if self.istio_version is None:
            return f"current ({layout_text(AMBIENT_LAYOUTS[-1])}+), ambient"
        return f"{self.istio_version}, ambient"

    def dns_off(self) -> Canon | None:
        """The expected rules with DNS capture off (None when the pod's capture has no DNS rules)."""
        if self._dns_off is None:
            off = None
            c = self.compiled
            if c is not None and c.dns:
                off = _try(dataclasses.replace(c.config, redirect_dns=False),
                           dataclasses.replace(c.pod, dns_capture=None))
            self._dns_off = (off,)
        return self._dns_off[0]

    def candidates(self) -> tuple[Candidate, ...]:
        """The alternatives, in the order :func:`classify` tries them (built on the first call)."""
        if self._candidates is None:
            out: list[Candidate] = []
            seen = {self.canon}

            def add(check: Check, label: str, canon: Canon | None, message: str) -> None:
                if canon is not None and canon not in seen:
                    seen.add(canon)
                    out.append(Candidate(check, label, canon, message))

            off = self.dns_off()
            add(Check.DNS_CAPTURE_OFF, "DNS capture off", off,
                f"{self.voice.dns_off}: the rules are exactly those without it ({REENROLL})")
            if self.compiled is not None:
                self._annotations(add)
                self._settings(add)
                self._releases(add)
            self._candidates = tuple(out)
        return self._candidates

    def _annotations(self, add: _Add) -> None:
        from netsim.spec.ambient import AMBIENT_ANNOTATIONS, pod_overrides

        assert self.compiled is not None
        ann = self.pod.annotation_map
        keys = [k for k in AMBIENT_ANNOTATIONS if k in ann]
        groups = [tuple(keys)] + ([(k,) for k in keys] if len(keys) > 1 else [])
        for group in groups if keys else []:
            pod = pod_overrides({k: v for k, v in ann.items() if k not in group})
            named = ", ".join(f'{k}: "{ann[k]}"' for k in group)
            add(Check.ANNOTATION_NOT_APPLIED, "without " + ", ".join(group), _try(self.compiled.config, pod),
                f"the rules are those of the pod without its annotation{'s' if len(group) > 1 else ''} {named}: the "
                f"agent did not apply {'them' if len(group) > 1 else 'it'} ({REENROLL})")

    def _settings(self, add: _Add) -> None:
        assert self.compiled is not None
        c = self.compiled.config
        for name, fld in (("EnableIPv6", "enable_ipv6"), ("RedirectDNS", "redirect_dns")):
            value = not getattr(c, fld)
            changed: dict[str, Any] = {fld: value}
            add(Check.AGENT_CONFIG, f"{name}={str(value).lower()}",
                _try(dataclasses.replace(c, **changed), self.compiled.pod),
                f"the rules are those of a node agent with {name}={str(value).lower()}, not the settings given "
                f"(--ambient-config, else the release's defaults): the agent runs with other settings ({REENROLL})")

    def _releases(self, add: _Add) -> None:
        from netsim.capture.ambient import AMBIENT_LAYOUTS
        from netsim.infer.ambient import layout_span, release_of
        from netsim.spec.ambient import ambient_config

        assert self.compiled is not None
        mine = self.compiled
        changes: dict[str, Any] = {**self.given, "native_nftables": mine.config.native_nftables}
        found: dict[Canon, list[tuple[int, int, int]]] = {}
        for rel in AMBIENT_LAYOUTS:
            # that release's agent with its defaults and the settings given, and with the expected agent's settings
            configs = [dataclasses.replace(ambient_config(release_of(rel)), **changes),
                       dataclasses.replace(mine.config, release=release_of(rel), tproxy_redirection=False)]
            if (1, 23, 1) <= rel < (1, 25, 0):  # 1.23.1–1.24's opt-in TPROXY inbound
                configs += [dataclasses.replace(c, tproxy_redirection=True) for c in configs]
            for config in configs:
                canon = _try(config, mine.pod)
                if canon is not None and canon != self.canon and rel not in found.setdefault(canon, []):
                    found[canon].append(rel)
        for canon, rels in found.items():
            runs: list[list[tuple[int, int, int]]] = []
            for rel in rels:
                if runs and AMBIENT_LAYOUTS.index(runs[-1][-1]) == AMBIENT_LAYOUTS.index(rel) - 1:
                    runs[-1].append(rel)
                else:
                    runs.append([rel])
            span = ", ".join("–".join(dict.fromkeys(layout_span(r[0], r[-1]))) for r in runs)
            add(Check.STALE_RELEASE, f"Istio {span}", canon,
                f"the rules are those istio-cni's agent of Istio {span} writes for this pod, not {self.release}'s: a "
                f"pod keeps the rules of the agent that enrolled it ({REENROLL})")


if TYPE_CHECKING:
    from collections.abc import Callable

    _Add = Callable[[Check, str, Canon | None, str], None]


def _dns_why(compiled: AmbientCompiled) -> str:
    from netsim.capture.ambient import layout

    if compiled.pod.dns_capture is not None and layout(compiled.config) >= (1, 26):
        why = 'the pod\'s annotation ambient.istio.io/dns-capture: "true" asks for it'
    else:
        why = "the agent's RedirectDNS (on by default from 1.25) asks for it"
    return (f"DNS capture is off although {why}: queries go to the cluster's resolver, not to ztunnel's DNS proxy "
            "on 15053")


def found_backend(found: Canon) -> str:
    """The backend whose Istio rules a dump holds: ``nft`` when only native nftables tables of Istio's are
    there, else ``iptables`` (also for a dump with none)."""
    ipt, nft = found.part(iptables_side), found.part(lambda k: not iptables_side(k))
    return "nft" if nft.has_istio() and not ipt.has_istio() else "iptables"


def classify_ambient(found: Canon, exp: AmbientExpectation) -> tuple[DriftFinding, ...]:
    """:func:`classify` for an ambient pod, after the backend check: both backends' Istio rules in the pod
    is **two-backends** (then the expected backend's part is classified on its own); only the other backend's
    is **absent** of the expected one, naming the other."""
    ipt, nft = found.part(iptables_side), found.part(lambda k: not iptables_side(k))
    mine, other = (nft, ipt) if exp.backend == "nft" else (ipt, nft)
    expected, candidates, dns_off = exp.canon, exp.candidates, exp.dns_off()
    if unpasted_ipv6(found, exp):  # only iptables-save given: its IPv6 rules are not in the dump to compare
        def keep(k: Key) -> bool:
            return k[0] is not Family.IPV6

        def v4_candidates() -> tuple[Candidate, ...]:
            out: list[Candidate] = []
            seen = {expected}
            for c in exp.candidates():
                canon = c.canon.part(keep)
                if canon not in seen:
                    seen.add(canon)
                    out.append(dataclasses.replace(c, canon=canon))
            return tuple(out)

        expected, candidates = exp.canon.part(keep), v4_candidates
        dns_off = dns_off.part(keep) if dns_off is not None else None
    other_name = "iptables" if exp.backend == "nft" else "nft"
    shown = tuple(show(k, line) for k, line in other.lines() if _istio_rule(k, line))
    if not other.has_istio():
        return classify(found, expected, candidates, dns_off=dns_off, voice=exp.voice)
    setting = f"NativeNftables={'true' if exp.backend == 'nft' else 'false'}"
    if not mine.has_istio():
        if expected.empty:
            return ()
        return (DriftFinding(
            check=Check.ABSENT, severity=Severity.ERROR,
            message=f"no ambient rules of the {exp.backend} backend the agent's settings give ({setting}); the pod "
                    f"holds the {other_name} backend's instead: the agent runs with another backend than the one "
                    "given (NativeNftables, or its fallback to iptables when the node has the probe ipsets, §2.1)",
            expected=(), found=shown),)
    two = DriftFinding(
        check=Check.TWO_BACKENDS, severity=Severity.ERROR,
        message=f"both backends wrote this pod's capture: iptables rules (ISTIO_* chains) and native nftables "
                f"tables (istio-ambient-*) are both in its namespace, so every packet passes both (the backend was "
                f"chosen twice: e.g. an agent restarted with another NativeNftables, or its iptables fallback); "
                f"the {exp.backend} backend's ({setting}) is compared below, the {other_name} one's is listed here",
        expected=(), found=shown)
    return (two, *classify(mine, expected, candidates, dns_off=dns_off, voice=exp.voice))


def unpasted_ipv6(found: Canon, exp: AmbientExpectation) -> bool:
    """Whether the pod's IPv6 iptables rules are expected but the dump holds no IPv6 part at all (only its
    ``iptables-save`` was given), so IPv6 is not compared."""
    return exp.backend == "iptables" and Family.IPV6 not in found.families and any(
        k[0] is Family.IPV6 for k in exp.canon.chains)


def _istio_rule(key: tuple[object, str, str], line: str) -> bool:
    from netsim.drift.compare import ISTIO_PREFIX, NFT_ISTIO_PREFIX

    return key[2].startswith(ISTIO_PREFIX) or f"-j {ISTIO_PREFIX}" in line or (
        isinstance(key[0], str) and key[1].startswith(NFT_ISTIO_PREFIX))


__all__ = ["AMBIENT_VOICE", "ROUTES_NOTE", "AmbientExpectation", "classify_ambient", "found_backend", "unpasted_ipv6"]
