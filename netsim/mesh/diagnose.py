"""``netsim diagnose``: the known capture pitfalls of one workload (placeholder, filled in next)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netsim.mesh.build import ProxyIndex
from netsim.mesh.model import PodInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    pod: str
    findings: tuple[Any, ...] = ()


def diagnose(index: ProxyIndex, pod: PodInfo) -> Report:
    return Report(pod=pod.ref)


def render_text(report: Report) -> str:
    return f"{report.pod}: no known pitfall found"


def render_json(report: Report) -> dict[str, Any]:
    return {"pod": report.pod, "findings": []}
