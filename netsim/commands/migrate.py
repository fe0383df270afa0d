"""``netsim migrate``: what changes in a pod's capture when it moves from its sidecar to ambient.

Owns: the click command (options, reading the pod, building both workloads through the front doors) and
the text rendering of a :class:`netsim.migrate.Migration` (the JSON is its ``to_json``). Never does: decide
a finding (``netsim.migrate``), compile or trace by itself.
"""

from __future__ import annotations

import json
from typing import Any

import click

from netsim.commands.options import pod_name_option
from netsim.errors import one_line


@click.command("migrate", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--pod", "pod_file", required=True, metavar="FILE",
              help="The sidecar pod (or Deployment, StatefulSet, …) as it runs now.")
@pod_name_option
@click.option("--config", "config_paths", multiple=True, metavar="PATH",
              help="More Kubernetes objects (files or directories): the pod's Namespace, to say whether it is "
                   "enrolled already.")
@click.option("--to", "target", type=click.Choice(["ambient"]), required=True, help="The data plane to move to.")
@click.option("--istio-version", "istio_version", metavar="VERSION",
              help="The release of both data planes (default: current).")
@click.option("--ambient-config", "ambient_settings", multiple=True, metavar="KEY=VALUE,...",
              help="The node agent's settings (EnableIPv6, RedirectDNS, HostProbeSNATAddress, "
                   "HostProbeV6SNATAddress, NativeNftables); default: a real agent's of the release.")
@click.option("--pod-ip", "pod_ips", multiple=True, metavar="IP",
              help="The pod's address (default: the manifest's status.podIPs, else 10.244.0.5).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def migrate_cmd(pod_file: str, pod_name: str | None, config_paths: tuple[str, ...], target: str,
                istio_version: str | None, ambient_settings: tuple[str, ...], pod_ips: tuple[str, ...],
                fmt: str) -> None:
    """Every capture difference a sidecar pod's owner will see after enrolling it in ambient.

    Each traffic.sidecar.istio.io/* annotation and proxy.istio.io/config capture setting that stops
    applying and what that changes for which ports and addresses, the interception mode, DNS capture,
    kubelet's probes, traffic that was excluded and will be captured (or the reverse): two capture
    matrices side by side (every row traced in both modes) and findings with stable codes, each naming
    the spec section behind it.

    \b
    Examples:
      netsim migrate --pod rules/ambient/shop.yaml --to ambient
      netsim migrate --pod pod.yaml --to ambient --istio-version 1.26 --format json
    """
    del target
    from netsim.migrate import build_migration

    m = build_migration(pod_file, name=pod_name, istio_version=istio_version, ambient_settings=ambient_settings,
                        pod_ips=pod_ips, config_paths=config_paths)
    if fmt == "json":
        click.echo(json.dumps(m.to_json(), indent=2))
        return
    click.echo(render_text(m), nl=False)


def render_text(m: Any) -> str:
    lines = [f"{m.pod}: sidecar → ambient", ""]
    warnings = [f for f in m.findings if f.severity == "warning"]
    lines.append(f"{len(m.findings)} findings ({len(warnings)} warnings):")
    for f in m.findings:
        lines += [f"  [{f.severity}] {f.check}: {f.message}", f"      before: {f.before}", f"      after:  {f.after}",
                  f"      see:    {f.ref}"]
    lines += ["", "capture matrix (each row traced in both modes):"]
    head = f"  {'direction':<9} {'proto':<5} {'peer':<26} {'port':>5}  {'row':<36} {'sidecar':<24} ambient"
    lines.append(head)
    for r in m.rows:
        p = r.probe
        peer = p.peer if not p.ambient_peer else f"{p.peer}|{p.ambient_peer}"
        lines.append(f"  {p.direction:<9} {p.proto:<5} {peer:<26} {p.port:>5}  {p.why[:36]:<36} "
                     f"{r.sidecar.text:<24} {r.ambient.text}")
    for note in m.notes:
        lines.append(one_line(f"note: {note}"))
    return "\n".join(lines) + "\n"


__all__ = ["migrate_cmd", "render_text"]
