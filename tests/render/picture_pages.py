"""The pictures under test: each HTML (and SVG) output of ``trace``, ``trace --config``, ``--follow-up``,
``--matrix``, ``diagnose`` and ``mesh hop``, made by running netsim in-process exactly as the console
script does, with the JSON of the same question beside it (what the pictures must agree with)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cli.compile_runner import run

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REFS = HERE / "refs"
HAZELCAST = "rules/mesh/hazelcast-externalname"


@dataclass(frozen=True)
class Picture:
    name: str
    args: tuple[str, ...]  # the question, without --format
    kind: str  # trace | follow-up | matrix | diagnose | hop
    code: int = 0  # the command's exit status (diagnose: 1 with findings)

    def render(self, fmt: str) -> str:
        r = run([*self.args, "--format", fmt])
        assert r.code == self.code, (self.name, fmt, r.code, r.stderr)
        return r.stdout

    def json(self) -> Any:
        return json.loads(self.render("json"))


PICTURES = (
    # a peer calls the app on :80: captured inbound, then the sidecar's connection to the app (two hops)
    Picture("inbound", ("trace", "--pod", "rules/mtls-503/pod.yaml", "--from", "10.1.2.3", "--dst", "10.244.0.5:80"),
            "trace"),
    # the same under Istio 1.2: bypassed (the classic mTLS 503)
    Picture("bypassed", ("trace", "--pod", "rules/mtls-503/pod.yaml", "--istio-version", "1.2", "--from", "10.1.2.3",
                         "--dst", "10.244.0.5:80"), "trace"),
    # --config: the Envoy hop between the app's and the sidecar's kernel hops
    Picture("config", ("trace", "--pod", f"{HAZELCAST}/pod.yaml", "--config", f"{HAZELCAST}/objects.yaml",
                       "--istio-version", "1.5", "--dst", "10.12.2.8:5701"), "trace"),
    # markup in rule comments, and a loop (no owner exclusion)
    Picture("hostile", ("trace", "--rules", "tests/render/inputs/hostile.iptables-save", "--pod-ip", "10.244.0.5",
                        "--dst", "10.0.0.9:80"), "trace"),
    Picture("follow-up", ("trace", "--pod", "rules/mtls-503/pod.yaml", "--proto", "udp", "--dst", "10.96.0.10:53",
                          "--follow-up"), "follow-up"),
    Picture("matrix", ("trace", "--pod", "rules/mtls-503/pod.yaml", "--istio-version", "1.2", "--matrix"), "matrix"),
    Picture("diagnose", ("diagnose", "--pod", f"{HAZELCAST}/pod.yaml", "--config", f"{HAZELCAST}/objects.yaml",
                         "--istio-version", "1.5"), "diagnose", code=1),
    Picture("hop", ("mesh", "hop", "--config", f"{HAZELCAST}/objects.yaml", "--istio-version", "1.5", "--proxy-ip",
                    "10.12.0.11", "--namespace", "manager", "--dst", "10.12.2.8:5701"), "hop"),
)
SVGS = tuple(p for p in PICTURES if p.kind in ("trace", "hop"))
BY_NAME = {p.name: p for p in PICTURES}


def json_traces(p: Picture, js: Any) -> list[tuple[str | None, dict[str, Any]]]:
    """(part, trace JSON) of a picture: one trace, or --follow-up's first and second."""
    if p.kind == "follow-up":
        return [(part, js[part]) for part in ("first", "second") if js[part] is not None]
    return [(None, js)]


def deciding_steps(t: dict[str, Any]) -> list[tuple[str, int]]:
    """The (hop, step) of every JSON step equal to ``decided_by`` (table, chain, position, rule text)."""
    d = t["decided_by"]
    if d is None:
        return []
    return [(str(i), k) for i, h in enumerate(t["hops"]) for k, s in enumerate(h["steps"])
            if s["kind"] == "rule" and (s["table"], s["chain"], s["position"], s["rule"]) ==
            (d["table"], d["chain"], d["position"], d["rule"])]
