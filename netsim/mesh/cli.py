"""``netsim mesh hop|listeners|clusters`` and ``netsim diagnose``: parse options, call the core, print.

Owns: the click commands, their option types (``IP:PORT``), and the text/JSON renderers' wiring.
Never does: decide anything (``netsim.mesh.hop``, ``netsim.mesh.diagnose``) or read files other than
through ``netsim.mesh.files``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from netsim.commands.options import (
    check_output,
    config_option,
    keep_going_option,
    output_option,
    pod_name_option,
    write_picture,
)
from netsim.errors import NetsimError


class EndpointType(click.ParamType):  # type: ignore[type-arg]
    """``10.0.0.5:80`` or ``[fd00::5]:80``."""

    name = "IP:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(f"{text!r}: expected IP:PORT with a port 1-65535, e.g. 10.0.0.5:80", param, ctx)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            self.fail(f"{text!r}: {host!r} is not an IP address", param, ctx)
        return host, int(port)


ENDPOINT = EndpointType()
_F = TypeVar("_F", bound=Callable[..., Any])
_config_opt = config_option(required=True)
_mesh_opt = click.option("--mesh-config", type=click.Path(), default=None,
                         help="Mesh config (MeshConfig YAML, the istio ConfigMap, or an IstioOperator).")
_version_opt = click.option("--istio-version", default=None, metavar="V",
                            help="Istio release whose behaviour to simulate (default: current).")
_format_opt = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                           show_default=True)


def _load(configs: tuple[str, ...], mesh_config: str | None, istio_version: str | None,
          keep_going: bool) -> Any:
    from netsim.mesh.files import read_config, read_mesh_config
    from netsim.mesh.versions import mesh_profile

    profile = mesh_profile(istio_version)
    read = read_config(configs, keep_going=keep_going, skip_non_objects=True)
    mesh = read_mesh_config(mesh_config)
    return read, mesh, profile


def _input_notes(read: Any, index: Any) -> list[str]:
    """What the answer rests on that the user may not expect: a proxy IP with no pod (default
    proxyMetadata), the objects read but ignored, the documents that are no Kubernetes object (a Helm values
    file in a manifests directory), the documents skipped by --keep-going."""
    notes = []
    proxy = index.proxy
    if proxy.pod is None:
        notes.append(f"no Pod in --config has IP {', '.join(proxy.ips)}: the proxy's labels are --labels "
                     f"({'none' if not proxy.labels else ','.join(f'{k}={v}' for k, v in proxy.labels)}) and its "
                     f"proxyMetadata is the mesh defaults' only ({proxy.metadata_origin or 'none set'}: DNS capture "
                     f"{'on' if proxy.dns_capture else 'off'}, auto-allocation "
                     f"{'on' if proxy.dns_auto_allocate else 'off'}); add the pod's manifest to --config to use its "
                     "own")
    notes += [str(i) for i in read.ignored]
    notes += read.not_objects
    notes += [f"skipped (--keep-going): {e}" for e in read.skipped]
    return notes


@click.group("mesh")
def mesh_group() -> None:
    """What the sidecar does with a captured connection: Envoy listener, filter chain, route, cluster."""


_VERDICTS = ("captured", "passthrough", "blackhole", "direct-502", "reset-no-filter-chain", "tls-error",
             "protocol-error", "bypass")  # netsim.mesh.model.Verdict's values (not imported: start-up)


@mesh_group.command("hop")
@_config_opt
@keep_going_option
@_mesh_opt
@_version_opt
@click.option("--proxy-ip", "proxy_ips", multiple=True, required=True, help="The deciding sidecar's IP(s).")
@click.option("--namespace", default=None, help="The sidecar's namespace (default: its pod's, else default).")
@click.option("--labels", default=None, metavar="k=v,...", help="The sidecar's workload labels.")
@click.option("--direction", type=click.Choice(["outbound", "inbound"]), default="outbound", show_default=True)
@click.option("--dst", type=ENDPOINT, required=True, help="Original destination IP:PORT.")
@click.option("--send", type=click.Choice(["tcp", "http", "tls", "mtls"]), default="tcp", show_default=True,
              help="What the client sends first.")
@click.option("--host", default=None, help="HTTP Host header.")
@click.option("--path", "path_", default="/", show_default=True, help="HTTP request path.")
@click.option("--sni", default=None, help="TLS SNI (default: --host for --send tls).")
@click.option("--expect", type=click.Choice(_VERDICTS), default=None,
              help="Exit status 0 when the verdict is this one, 1 when it is not (for scripts and CI).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html", "svg"]), default="text",
              show_default=True, help="html: a self-contained page (listener → filter chain → route → cluster); "
                                      "svg: the same path alone.")
@output_option
def hop_cmd(configs: tuple[str, ...], keep_going: bool, mesh_config: str | None, istio_version: str | None,
            proxy_ips: tuple[str, ...], namespace: str | None, labels: str | None, direction: str,
            dst: tuple[str, int], send: str, host: str | None, path_: str, sni: str | None, expect: str | None,
            fmt: str, output: str | None) -> None:
    """Which listener, filter chain, route and cluster one connection reaches, and why.

    Exit status 0 on any decision (with --expect: 0 when it is the expected one, 1 when not), 2 on bad
    input (an invalid --config document too, unless --keep-going).
    """
    from dataclasses import replace

    from netsim.mesh.build import build_index
    from netsim.mesh.hop import hop
    from netsim.mesh.model import Connection, Direction, Send
    from netsim.mesh.proxy import make_proxy, parse_labels

    check_output(fmt, output)
    proxy_labels = parse_labels(labels)  # the options first: a bad one is reported before any file is read
    read, mesh, profile = _load(configs, mesh_config, istio_version, keep_going)
    objects = read.objects
    proxy = make_proxy(objects, mesh, ips=proxy_ips, namespace=namespace, labels=proxy_labels)
    index = build_index(objects, proxy, profile, mesh)
    conn = Connection(direction=Direction(direction), dst_ip=dst[0], dst_port=dst[1], send=Send(send),
                      host=host, path=path_, sni=sni)
    result = hop(index, conn)
    result = replace(result, notes=(*result.notes, *_input_notes(read, index), *map(str, index.errors)))
    if fmt in ("html", "svg"):
        from netsim.mesh.trace import hop_steps
        from netsim.picture.view import mesh_lane

        lane = mesh_lane(result, profile.label, hop_steps(result))
        title = f"netsim mesh hop: {', '.join(proxy_ips)} \u2192 {dst[0]}:{dst[1]} ({direction})"
        if fmt == "svg":
            from netsim.picture.svg import hop_svg

            write_picture(hop_svg(lane, title=title), output)
        else:
            from netsim.picture.html import hop_page

            write_picture(hop_page(lane, title=title), output)
    elif fmt == "json":
        from netsim.mesh.trace import hop_steps

        out = result.to_json()
        out["steps"] = [{"kind": s.kind, "name": s.name, "detail": s.detail} for s in hop_steps(result)]
        out["istio_version"] = profile.name
        out["config_errors"] = [str(e) for e in (*objects.errors, *index.errors)]
        out["ignored"] = [i.to_json() for i in read.ignored]
        out["conflicts"] = list(index.conflicts)
        click.echo(json.dumps(out, indent=2))
    else:
        from netsim.mesh.render import render_hop

        click.echo(render_hop(result, profile))
    if expect is not None and result.verdict.value != expect:
        raise click.exceptions.Exit(1)


_pod_opt = click.option("--pod", "pod_file", required=True, type=click.Path(exists=True, dir_okay=False),
                        help="The pod (or Deployment, ...) whose sidecar to show.")
_name_opt = pod_name_option


def _pod_options(command: _F, format_opt: Callable[[_F], _F] = _format_opt) -> _F:
    """The options of every command about one pod's sidecar, in this order: --pod, --name, --config,
    --keep-going, --mesh-config, --istio-version, --format."""
    for option in reversed((_pod_opt, _name_opt, _config_opt, keep_going_option, _mesh_opt, _version_opt,
                            format_opt)):
        command = option(command)
    return command


def _pod_proxy(configs: tuple[str, ...], pod_file: str, pod_name: str | None, mesh_config: str | None,
               istio_version: str | None, keep_going: bool) -> Any:
    """The sidecar index of the pod in ``pod_file``, the pod, and the notes on what was read."""
    from dataclasses import replace

    from netsim.mesh.build import build_index
    from netsim.mesh.files import read_config
    from netsim.mesh.proxy import pod_from_file, proxy_for_workload, with_pods
    from netsim.workload.model import Workload

    read, mesh, profile = _load(configs, mesh_config, istio_version, keep_going)
    objects = read.objects
    pod_read = read_config([pod_file], keep_going=keep_going)
    pod = pod_from_file(pod_read.objects, objects, pod_name)
    if pod is None:
        raise NetsimError(f"no Pod or workload{' named ' + pod_name if pod_name else ''} found", where=pod_file)
    # the pod file's own objects count too (a pod next to its Service is common)
    if pod_file not in configs:
        objects = replace(with_pods(objects, pod_read.objects), errors=objects.errors + pod_read.objects.errors)
    w = Workload.from_pod_info(pod, istio_version=istio_version)
    index = build_index(objects, proxy_for_workload(w, mesh), profile, mesh)
    notes = _input_notes(replace(read, objects=objects), index)
    notes += [f"{i}" for i in pod_read.ignored if pod_file not in configs and i.kind != pod.kind]
    notes += [str(e) for e in index.errors]
    return index, pod, notes


def _sidecar_notes(pod: Any) -> list[str]:
    """For ``mesh listeners|clusters``: a pod that runs no Envoy sidecar still gets the configuration one would
    hold (what injecting it would give), said first so that the table is not read as the pod's own."""
    if pod.ambient:
        return [f"{pod.kind} {pod.namespace}/{pod.name} runs no sidecar: it is enrolled in ambient, ztunnel takes "
                "its connections; below is what an injected sidecar would hold"]
    if not pod.sidecar:
        return [f"{pod.kind} {pod.namespace}/{pod.name} runs no sidecar ({pod.sidecar_why}): nothing captures its "
                "traffic; below is what an injected sidecar would hold"]
    return []


def _print_notes(notes: list[str]) -> None:
    for n in notes:
        click.echo(f"note: {n}", err=True)


@mesh_group.command("listeners")
@_pod_options
def listeners_cmd(pod_file: str, pod_name: str | None, configs: tuple[str, ...], keep_going: bool,
                  mesh_config: str | None,
                  istio_version: str | None, fmt: str) -> None:
    """``istioctl proxy-config listeners`` for a pod, from files (same columns)."""
    from netsim.mesh.render import listeners_json, listeners_table

    index, pod, notes = _pod_proxy(configs, pod_file, pod_name, mesh_config, istio_version, keep_going)
    _print_notes([*_sidecar_notes(pod), *notes])
    click.echo(json.dumps(listeners_json(index), indent=2) if fmt == "json" else listeners_table(index))


@mesh_group.command("clusters")
@_pod_options
def clusters_cmd(pod_file: str, pod_name: str | None, configs: tuple[str, ...], keep_going: bool,
                 mesh_config: str | None,
                 istio_version: str | None, fmt: str) -> None:
    """``istioctl proxy-config clusters`` for a pod, from files (same columns)."""
    from netsim.mesh.render import clusters_json, clusters_table

    index, pod, notes = _pod_proxy(configs, pod_file, pod_name, mesh_config, istio_version, keep_going)
    _print_notes([*_sidecar_notes(pod), *notes])
    click.echo(json.dumps(clusters_json(index), indent=2) if fmt == "json" else clusters_table(index))


def _pod_options_with(format_opt: Callable[[_F], _F]) -> Callable[[_F], _F]:
    return lambda command: _pod_options(command, format_opt)


_diagnose_format = click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text",
                                show_default=True, help="html: a self-contained page, each finding's evidence "
                                                        "linked to the objects, listeners and clusters it names.")


@click.command("diagnose")
@output_option
@_pod_options_with(_diagnose_format)
def diagnose_cmd(pod_file: str, pod_name: str | None, configs: tuple[str, ...], keep_going: bool,
                 mesh_config: str | None, istio_version: str | None, fmt: str, output: str | None) -> None:
    """Check one workload for the known capture pitfalls; exit status 1 when something was found."""
    from netsim.mesh.diagnose import diagnose, render_json, render_text

    check_output(fmt, output)
    index, pod, notes = _pod_proxy(configs, pod_file, pod_name, mesh_config, istio_version, keep_going)
    report = diagnose(index, pod, notes=tuple(notes))
    if fmt == "html":
        from netsim.picture.html import diagnose_page

        write_picture(diagnose_page(report, index), output)
    else:
        click.echo(json.dumps(render_json(report), indent=2) if fmt == "json" else render_text(report))
    if report.findings:
        raise click.exceptions.Exit(1)


__all__ = ["ENDPOINT", "EndpointType", "diagnose_cmd", "mesh_group"]
