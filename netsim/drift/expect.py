"""What a pod's rules should be, and the other ways they could have been written.

Owns: :class:`Expectation`: the pod's rules compiled through the front door
(:meth:`netsim.workload.Workload.from_pod_source`) under the release asked for, in canonical form,
and, built on first need, the alternatives :func:`netsim.drift.compare.classify` tries: the pod
under every other modelled release layout (one per distinct ruleset, labelled with its releases),
without its ``traffic.sidecar.istio.io/*`` annotations (all, and each one), and with DNS capture
off when the spec asks for it. Never does: IO (the pod is already read), comparing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from netsim.capture.config import CURRENT_LAYOUT, layout_releases
from netsim.drift.compare import Candidate, Canon, Check, canon_of
from netsim.errors import NetsimError

if TYPE_CHECKING:
    from netsim.netfilter.packet import Address
    from netsim.spec.pod import PodSource
    from netsim.spec.versions import VersionProfile
    from netsim.workload.model import Workload


def _release_name(release: tuple[int, ...]) -> str:
    return ".".join(str(n) for n in (release[:2] if len(release) < 3 or not release[2] else release[:3]))


def release_label(release: tuple[int, ...] | None) -> str:
    """``1.20``, ``1.12.9``; the current layout's first release and after is ``1.25+``; None is the current one."""
    if release is None or release >= CURRENT_LAYOUT:
        return f"{_release_name(CURRENT_LAYOUT)}+"
    return _release_name(release)


def _span(first: tuple[int, ...], last: tuple[int, ...]) -> str:
    """The releases from ``first`` to the one before the modelled release after ``last``: ``1.1–1.2``,
    ``1.5.0–1.5.1``, ``1.5.2–1.5.x`` (to the minor's last patch), ``1.20–1.25+``."""
    releases = layout_releases()
    after = releases[releases.index(last) + 1] if last != releases[-1] else None
    if after is None:
        end = release_label(CURRENT_LAYOUT)
    elif after[:2] == last[:2]:  # a later patch of the same minor writes other rules
        end = f"{last[0]}.{last[1]}.{after[2] - 1}"
    else:
        end = f"{last[0]}.{last[1]}" + (".x" if first[:2] == last[:2] and first[2] else "")
    start = f"{first[0]}.{first[1]}" + (f".{first[2]}" if first[2] or end.count(".") == 2 else "")
    return start if start == end else f"{start}–{end}"


@dataclass(slots=True)
class Expectation:
    """The pod's expected rules (``canon``) under ``profile``, and the alternatives, built once."""

    pod: PodSource
    profile: VersionProfile
    profile_given: bool
    pod_ips: tuple[Address, ...]
    workload: Workload
    canon: Canon
    _candidates: tuple[Candidate, ...] | None = field(default=None, repr=False)
    _dns_off: tuple[Canon | None] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, pod: PodSource, *, istio_version: str | None = None,
           pod_ips: tuple[Address, ...] = ()) -> Expectation:
        """The expectation for ``pod`` under ``istio_version`` (None: the current release).

        Raises SpecError / ConfigError as :meth:`Workload.from_pod_source` does for a bad pod.
        """
        from netsim.workload.model import Workload, _profile

        profile = _profile(istio_version)
        w = Workload.from_pod_source(pod, profile, profile_given=istio_version is not None, pod_ips=pod_ips)
        return cls(pod=pod, profile=profile, profile_given=istio_version is not None, pod_ips=pod_ips, workload=w,
                   canon=canon_of(w.rulesets.values()))

    @property
    def release(self) -> str:
        """The release the expected rules follow, as the user reads it."""
        config = self.workload.compiled.config if self.workload.compiled is not None else None
        if not self.profile_given:
            return f"current ({release_label(None)})"
        return release_label(config.release if config is not None else self.profile.version)

    @property
    def dns_requested(self) -> bool:
        return self.workload.sidecar.dns

    def dns_off(self) -> Canon | None:
        """The expected rules with DNS capture off (None when the spec does not ask for DNS capture)."""
        if self._dns_off is None:
            from netsim.capture.compiled import compile_config

            off: Canon | None = None
            compiled = self.workload.compiled
            if compiled is not None and self.dns_requested:
                config = replace(compiled.config, redirect_dns=False, capture_all_dns=False)
                c = compile_config(config)
                off = canon_of([c.ruleset_v4] + ([c.ruleset_v6] if c.ruleset_v6 is not None else []))
            self._dns_off = (off,)
        return self._dns_off[0]

    def candidates(self) -> tuple[Candidate, ...]:
        """The alternatives, in the order :func:`classify` tries them (built on the first call)."""
        if self._candidates is None:
            out: list[Candidate] = []
            off = self.dns_off()
            if off is not None and off != self.canon:
                out.append(Candidate(Check.DNS_CAPTURE_OFF, "DNS capture off", off,
                                     "DNS capture is off although the pod asks for it (ISTIO_META_DNS_CAPTURE / "
                                     "--redirect-dns): the rules are exactly those without it, so queries go to "
                                     "the cluster's resolver, not to the sidecar's DNS agent"))
            out.extend(self._annotation_candidates())
            out.extend(self._release_candidates())
            self._candidates = tuple(out)
        return self._candidates

    def _compile(self, pod: PodSource, profile: VersionProfile, given: bool) -> Canon | None:
        from netsim.workload.model import Workload

        try:
            w = Workload.from_pod_source(pod, profile, profile_given=given, pod_ips=self.pod_ips)
        except NetsimError:  # e.g. IPv6 under a release whose ip6tables layout is not modelled
            return None
        return canon_of(w.rulesets.values())

    def _annotation_candidates(self) -> list[Candidate]:
        from netsim.spec.pod import CAPTURE_PREFIXES

        keys = [k for k, _ in self.pod.annotations if k.startswith(CAPTURE_PREFIXES)]
        if not keys:
            return []
        out: list[Candidate] = []
        seen = {self.canon}
        groups = [tuple(keys)] + ([(k,) for k in keys] if len(keys) > 1 else [])
        for group in groups:
            pod = replace(self.pod, annotations=tuple((k, v) for k, v in self.pod.annotations if k not in group))
            canon = self._compile(pod, self.profile, self.profile_given)
            if canon is None or canon in seen:
                continue
            seen.add(canon)
            values = dict(self.pod.annotations)
            named = ", ".join(f'{k}: "{values[k]}"' for k in group)
            out.append(Candidate(Check.ANNOTATION_NOT_APPLIED, "without " + ", ".join(group), canon,
                                 f"the rules are those of the pod without its annotation{'s' if len(group) > 1 else ''}"
                                 f" {named}: the injector did not see {'them' if len(group) > 1 else 'it'} (set on "
                                 "the Deployment instead of the pod template, or added after the pod started)"))
        return out

    def _release_candidates(self) -> list[Candidate]:
        from netsim.spec.versions import profile_for

        runs: dict[Canon, list[list[tuple[int, ...]]]] = {}  # canon → runs of consecutive releases
        previous: Canon | None = None
        for release in layout_releases():
            canon = self._compile(self.pod, profile_for(_release_name(release)), True)
            if canon is not None and canon != self.canon:
                if canon == previous:
                    runs[canon][-1].append(release)
                else:
                    runs.setdefault(canon, []).append([release])
            previous = canon
        out = []
        for canon, spans in runs.items():
            span = ", ".join(_span(r[0], r[-1]) for r in spans)
            out.append(Candidate(Check.STALE_RELEASE, f"Istio {span}", canon,
                                 f"the rules are those Istio {span} writes for this pod, not {self.release}'s: a "
                                 "pod keeps the rules of the release that injected it until it is restarted"))
        return out


__all__ = ["Expectation", "release_label"]
