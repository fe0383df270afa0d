"""``netsim compile --explain``: why each option has its value, as a typed report and as text/JSON.

Owns: :func:`explain` (a pure function of a :class:`~netsim.spec.resolve.Resolution`) and the two
renderings of its result. The report lists every capture-related annotation and proxy-config key
found, where it was (pod template, or wrongly the workload's own metadata), whether it was used
and why not, and each option's effective value with its source and what it overrode.

Never does: decide anything (``resolve`` and ``pod`` do), or IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netsim.spec import flags as F
from netsim.spec.flags import Ignored, Source
from netsim.spec.pod import Finding
from netsim.spec.releases import BY_KEY, OPTIONS_BY_RELEASE, SCRIPT_UNTIL
from netsim.spec.resolve import Resolution

# Inputs istio-iptables derives from the pod, and how the report names them.
_DERIVED_LABELS = {
    "ENABLE_INBOUND_IPV6": "IPv6 rules (pod addresses)",
    "DNS_SERVERS_V4": "IPv4 DNS servers (resolv.conf)",
    "DNS_SERVERS_V6": "IPv6 DNS servers (resolv.conf)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionRow:
    """One option's effective value: ``source`` is a :class:`Source` value, ``origin`` the exact
    flag/env var/annotation/field, ``overrides`` the non-default values it beat (lowest first)."""

    key: str
    name: str  # "-b/--istio-inbound-ports", an env var, or a derived input's label
    value: str
    source: str
    origin: str
    overrides: tuple[str, ...] = ()
    effect: str = ""  # why the option does not change the rules, if it does not


@dataclass(frozen=True, slots=True, kw_only=True)
class NameRow:
    """How one input was named in the chosen release: netsim's option key (istio-iptables' long name),
    the flag and environment variable that release read, the script's variable (1.0–1.4), the Go
    config fields / test package variables (1.5 on) that conformance YAMLs record."""

    key: str
    flag: str
    env: str
    script_var: str
    go_names: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    subject: str
    choice: str
    profile: str
    profile_summary: str
    capture: bool
    no_capture_reason: str
    findings: tuple[Finding, ...]
    options: tuple[OptionRow, ...]
    ignored: tuple[Ignored, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    names: tuple[NameRow, ...] = ()  # only when a release was given


def _names(release: tuple[int, ...]) -> tuple[NameRow, ...]:
    """The inputs ``release`` had, each with its names in that release (netsim.spec.releases)."""
    rows = []
    script = release < SCRIPT_UNTIL
    for r in OPTIONS_BY_RELEASE:
        if not (r.flag_in(release) or r.env_in(release)):
            continue
        spec = F.OPTIONS_BY_KEY.get(r.key)
        flag = ""
        if spec is not None and spec.long is not None and r.flag_in(release):
            flag = f"-{spec.short}" if script and spec.short else spec.flag
        env = ",".join(spec.envs) if spec is not None and r.env_in(release) and spec.envs else ""
        rows.append(NameRow(key=r.key, flag=flag, env=env, script_var=r.script_var if script else "",
                            go_names=() if script else r.go_names))
    return tuple(rows)


def explain(res: Resolution) -> Explanation:
    """The report for ``res``: every finding, and every option that affects the rules (plus any
    other option that was set explicitly)."""
    rows = []
    release = res.release or res.profile.release
    for eff in res.effective:
        s = eff.setting
        spec = F.OPTIONS_BY_KEY.get(s.key)
        if spec is not None and spec.effect and s.source is Source.DEFAULT:
            continue
        row = BY_KEY.get(s.key)
        if s.source is Source.DEFAULT and row is not None and not (row.flag_in(release) or row.env_in(release)):
            continue  # an input the release did not have, left at its default
        name = spec.flag if spec is not None else _DERIVED_LABELS.get(s.key, s.key)
        overrides = tuple(f"{o.origin} = {o.value!r}" for o in eff.shadowed if o.source is not Source.DEFAULT)
        rows.append(OptionRow(key=s.key, name=name, value=s.value, source=s.source.value, origin=s.origin,
                              overrides=overrides, effect=spec.effect if spec is not None else ""))
    pod = res.pod
    return Explanation(
        subject=pod.where if pod is not None else "command line and environment (no --pod)",
        choice=pod.choice if pod is not None else "",
        profile=res.profile.label,
        profile_summary=res.profile.summary,
        capture=res.capture,
        no_capture_reason=res.no_capture_reason,
        findings=res.findings,
        options=tuple(rows),
        ignored=res.ignored,
        warnings=res.warnings,
        notes=res.notes,
        names=_names(res.release) if res.release is not None else (),
    )


def render_text(ex: Explanation) -> str:
    """The report as text for a person."""
    out = [f"Explain: {ex.subject}"]
    if ex.choice:
        out.append(f"  object: {ex.choice}")
    out.append(f"  injector profile: {ex.profile}: {ex.profile_summary}")
    out.append("")
    out.append("Capture-related inputs found in the manifest:" if ex.findings
               else "Capture-related inputs found in the manifest: none")
    for f in ex.findings:
        mark = "used" if f.used else "NOT USED"
        out.append(f"  [{mark}] {f.key} = {f.value!r} ({f.location})")
        out.append(f"      {f.reason}")
    out.append("")
    if not ex.capture:
        out.append(f"No capture rules: {ex.no_capture_reason}")
    else:
        out.append("Effective options (value ← source):")
        width = max((len(r.name) for r in ex.options), default=0)
        for r in ex.options:
            same = r.origin == r.source or r.origin.startswith(r.source.split()[0])
            origin = r.origin if same else f"{r.source}: {r.origin}"
            out.append(f"  {r.name:<{width}}  {r.value!r}  ← {origin}")
            for o in r.overrides:
                out.append(f"  {'':<{width}}    overrides {o}")
            if r.effect:
                out.append(f"  {'':<{width}}    no effect on the rules: {r.effect}")
    if ex.names:
        out.append("")
        out.append(f"Option names in {ex.profile} (netsim option ← flag, env; script variable or Go config names):")
        width = max(len(n.key) for n in ex.names)
        for n in ex.names:
            parts = [p for p in (n.flag, f"env {n.env}" if n.env else "",
                                 f"script {n.script_var}" if n.script_var else "",
                                 f"Go {'/'.join(n.go_names)}" if n.go_names else "") if p]
            out.append(f"  {n.key:<{width}}  ← {'; '.join(parts)}")
    for title, items in (("Ignored inputs", [f"{i.origin} = {i.value!r}: {i.reason}" for i in ex.ignored]),
                         ("Warnings", list(ex.warnings)), ("Notes", list(ex.notes))):
        if items:
            out.append("")
            out.append(f"{title}:")
            out.extend(f"  - {item}" for item in items)
    return "\n".join(out) + "\n"


def to_json(ex: Explanation) -> dict[str, Any]:
    """The report as JSON-ready data (schema: the field names of :class:`Explanation`)."""
    return {
        "subject": ex.subject,
        "choice": ex.choice,
        "profile": ex.profile,
        "profile_summary": ex.profile_summary,
        "capture": ex.capture,
        "no_capture_reason": ex.no_capture_reason,
        "findings": [{"key": f.key, "value": f.value, "location": f.location, "used": f.used,
                      "reason": f.reason, "option": f.option} for f in ex.findings],
        "options": [{"key": r.key, "name": r.name, "value": r.value, "source": r.source, "origin": r.origin,
                     "overrides": list(r.overrides), "effect": r.effect} for r in ex.options],
        "ignored": [{"origin": i.origin, "value": i.value, "reason": i.reason} for i in ex.ignored],
        "warnings": list(ex.warnings),
        "notes": list(ex.notes),
        "names": [{"key": n.key, "flag": n.flag, "env": n.env, "script_var": n.script_var,
                   "go_names": list(n.go_names)} for n in ex.names],
    }


def render_json(ex: Explanation) -> str:
    import json

    return json.dumps(to_json(ex), indent=2) + "\n"


__all__ = ["Explanation", "NameRow", "OptionRow", "explain", "render_json", "render_text", "to_json"]
