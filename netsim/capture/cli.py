"""``netsim compile``: istio-iptables options and/or a pod manifest → the rules Istio writes.

Owns: the click command: one option per istio-iptables option (long and short names, from
``netsim.spec.flags.OPTIONS``), netsim's pod-network options, click types that call the spec's
validators, and choosing the renderer for ``--format``. Never does: decide an option's value
(``netsim.spec.resolve``), build rules (``netsim.capture``), or import anything heavy: it needs only
netsim's pure core (PyYAML is loaded by ``netsim.k8s`` when a manifest is read; the ``--explain``
report and the dry-run and nft renderers when asked for), so ``netsim compile`` starts fast.

JSON schema (``--format json``, ``"schema": "netsim.compile/v1"``)::

    {"schema", "capture": bool, "reason": str,            # reason: why there are no rules
     "config": {CaptureConfig field: value},              # CIDR lists as {"wildcard", "v4", "v6"}
     "families": {"ipv4": FAMILY, "ipv6": FAMILY | null},
     "routes": [{"argv": [...], "ignore_exists": bool, "why": str}],
     "planned": [{"family": 4|6, "table", "chain", "op": "-A"|"-I", "position": int|null,
                  "args": str, "why": str}]}             # Istio's emission order
    FAMILY = {"tables": [{"name", "chains": [{"name", "policy": str|null,
                                              "rules": ["-A CHAIN ..." as iptables-save prints]}]}]}
"""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Any

import click

from netsim.capture.compiled import Compiled, compile_config
from netsim.capture.iptables import writes_ip6tables
from netsim.commands.options import ambient_config_option, mode_option
from netsim.errors import RulesetError, SpecError, one_line
from netsim.netfilter.matches import Names
from netsim.netfilter.model import Ruleset
from netsim.netfilter.render import render_rule, render_save
from netsim.reader import read_group_file
from netsim.spec.flags import (
    OPTIONS,
    Kind,
    OptionSpec,
    check_value,
    is_ip,
    parse_bool,
    parse_dns_servers,
)
from netsim.spec.pod import load_pod_with_objects
from netsim.spec.resolve import PodNetwork, Resolution, resolve
from netsim.spec.versions import parse_version, profile_for

FORMATS = ("iptables-save", "iptables-restore", "istio-dry-run", "golden", "nft", "json")


class IstioValue(click.ParamType[str]):
    """An istio-iptables option value, checked by ``netsim.spec.flags.check_value``; the value
    passed on is the string Istio would receive."""

    def __init__(self, spec: OptionSpec) -> None:
        self.spec = spec
        self.name = spec.kind.value

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if text.startswith("="):  # pflag reads -b=80 as -b 80; click hands over "=80"
            text = text[1:]
        try:
            return check_value(self.spec.key, text)
        except SpecError as e:
            self.fail(e.message, param, ctx)


class DnsServers(click.ParamType[str]):
    """A comma list of IPv4 or IPv6 resolver addresses."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.name = f"IPv{version} list"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            parse_dns_servers(str(value), self.version)
        except SpecError as e:
            self.fail(e.message, param, ctx)
        return str(value)


class GoBool(click.ParamType[str]):
    """true/false in any spelling Go's strconv.ParseBool takes; returns "true" or "false"."""

    name = "BOOL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).removeprefix("=")
        try:
            return "true" if parse_bool(text) else "false"
        except SpecError as e:
            self.fail(e.message, param, ctx)


class IstioVersion(click.ParamType[str]):
    name = "VERSION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            parse_version(str(value))
        except SpecError as e:
            self.fail(e.message, param, ctx)
        return str(value)


class IpList(click.ParamType[tuple[str, ...]]):
    name = "IP[,IP]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        items = tuple(i for i in str(value).split(",") if i)
        for item in items:
            if not is_ip(item):
                self.fail(f'"{item}": not an IP address', param, ctx)
        return items


def _istio_options(command: Any) -> Any:
    """Decorate ``command`` with one click option per istio-iptables option (spec §2)."""
    for spec in reversed([o for o in OPTIONS if o.long is not None]):
        decls = [f"-{spec.short}", f"--{spec.long}"] if spec.short else [f"--{spec.long}"]
        help_text = spec.help + (f" [env: {', '.join(spec.envs)}]" if spec.envs else "")
        if spec.kind is Kind.BOOL:
            # Like Go's pflag: --redirect-dns alone means true; --redirect-dns=false also works.
            option = click.option(*decls, _dest(spec), type=IstioValue(spec), is_flag=False, flag_value="true",
                                  default=None, help=help_text, metavar="[BOOL]", hidden=bool(spec.effect))
        else:
            option = click.option(*decls, _dest(spec), type=IstioValue(spec), default=None, help=help_text,
                                  metavar=_metavar(spec.kind), hidden=bool(spec.effect))
        command = option(command)
    return command


def _dest(spec: OptionSpec) -> str:
    return spec.key.replace("-", "_")


def _metavar(kind: Kind) -> str:
    return {
        Kind.PORT: "PORT", Kind.PORT_LIST: "PORTS", Kind.PORT_LIST_OR_ALL: "PORTS|*", Kind.ID_LIST: "IDS",
        Kind.MODE: "MODE", Kind.MARK: "MARK", Kind.ROUTE_TABLE: "TABLE", Kind.IFACE_LIST: "IFACES",
        Kind.CIDR_LIST: "CIDRS", Kind.CIDR_LIST_OR_ALL: "CIDRS|*", Kind.DURATION: "DURATION",
        Kind.BINARY: "legacy|nft",
    }.get(kind, "TEXT")


_EPILOG = (
    "Also accepted, with no effect on the rules: "
    + ", ".join(o.flag for o in OPTIONS if o.long and o.effect)
    + ". Environment-only inputs: "
    + ", ".join(o.key for o in OPTIONS if o.long is None)
    + ". Precedence, lowest first: istio-iptables default, your environment, the pod's proxyMetadata, "
    "the injector's arguments (annotations or the --istio-version defaults), your flags."
)


@click.command("compile", epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"],
                                                            "max_content_width": 110})
@click.option("--pod", "pod_file", metavar="FILE",
              help="Pod, or Deployment/StatefulSet/DaemonSet/ReplicaSet/Job/CronJob, YAML (multi-document "
                   "or List): derive the options as Istio's sidecar injector does.")
@click.option("--name", "pod_name", metavar="NAME", help="With --pod: the object to use (default: the first).")
@click.option("--istio-version", "istio_version", type=IstioVersion(), metavar="VERSION",
              help="Injector defaults of that release (e.g. 1.2: -b = containerPorts; default: current).")
@click.option("--explain", is_flag=True, help="Report where each option's value came from, and every "
                                               "capture-related annotation found; print no rules.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="iptables-save (default; alias iptables-restore): what iptables-save prints after "
                   "loading; istio-dry-run: Istio's golden format; nft: Istio's nftables transaction "
                   "(default with --native-nftables); json: config, rules and routes.")
@mode_option()
@ambient_config_option()
@click.option("--node", is_flag=True, help="Ambient: the node namespace's kubelet-probe rules instead of the pod's.")
@click.option("--config", "config_paths", multiple=True, metavar="PATH",
              help="Kubernetes objects (files or directories): the pod's Namespace and its labels.")
@click.option("--backend", type=click.Choice(["iptables", "nft"]), default=None,
              help="nft: Istio's native nftables backend (the same as --native-nftables).")
@click.option("--family", type=click.Choice(["4", "6", "all"]), default="all", show_default=True,
              help="iptables-save/json: which address family to print.")
@click.option("--ipv6", "ipv6", type=GoBool(), is_flag=False, flag_value="true", default=None, metavar="[BOOL]",
              help="Write ip6tables rules too (istio-iptables decides this from the pod's addresses).")
@click.option("--pod-ip", "pod_ips", type=IpList(), multiple=True,
              help="The pod's addresses in order (default: the manifest's status.podIPs); the first one's "
                   "family decides IPv6, as in istio-iptables.")
@click.option("--dns-servers-v4", type=DnsServers(4), default=None, metavar="LIST",
              help="IPv4 nameservers of the pod's resolv.conf (default: from dnsPolicy, cluster DNS 10.96.0.10).")
@click.option("--dns-servers-v6", type=DnsServers(6), default=None, metavar="LIST",
              help="IPv6 nameservers of the pod's resolv.conf.")
@click.option("--cluster-dns", metavar="IP", default=None,
              help="The cluster DNS Service address kubelet writes into resolv.conf (default 10.96.0.10).")
@click.option("--group-file", metavar="FILE", default=None,
              help="/etc/group-format file to resolve owner-group names with, as iptables does when it loads "
                   "the rules in istio-init (default: this machine's groups).")
@click.option("--log_output_level", "log_output_level", default=None, hidden=True,
              help="accepted for compatibility with istio-iptables; no effect")
@_istio_options
def compile_cmd(pod_file: str | None, pod_name: str | None, istio_version: str | None, explain: bool,
                fmt: str | None, mode: str | None, ambient_settings: tuple[str, ...], node: bool,
                config_paths: tuple[str, ...], backend: str | None, family: str, ipv6: str | None,
                pod_ips: tuple[tuple[str, ...], ...],
                dns_servers_v4: str | None, dns_servers_v6: str | None, cluster_dns: str | None,
                group_file: str | None, log_output_level: str | None, **istio: str | None) -> None:
    """Print the rules Istio writes into a pod: istio-iptables' for a sidecar, istio-cni's for ambient.

    Takes istio-iptables' own options (same long and short names, same environment variables; flags
    win over environment variables), and/or --pod FILE to derive them from a manifest exactly as the
    sidecar injector does. Options given here override what the pod derives.

    \b
    Examples:
      netsim compile --pod rules/mtls-503/pod.yaml --istio-version 1.2
      netsim compile -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -b '*' -d 15090,15021,15020
      netsim compile --pod pod.yaml --explain
    """
    flags = {key.replace("_", "-"): value for key, value in istio.items() if value is not None}
    if pod_name is not None and pod_file is None:
        raise SpecError("option --name: needs --pod FILE")
    pod, objects = load_pod_with_objects(pod_file, name=pod_name) if pod_file is not None else (None, ())
    if mode == "sidecar" and (ambient_settings or node):
        raise SpecError(f"option {'--node' if node else '--ambient-config'}: the pod is compiled in sidecar mode "
                        "(--mode sidecar); ambient's option")
    if mode != "sidecar" and (pod is not None or mode == "ambient" or node or ambient_settings):
        from netsim.spec.ambient import pod_mode

        decision = pod_mode(pod, objects, config_paths, mode)
        if node and not decision.ambient and not decision.opted_out:
            from netsim.spec.ambient import ModeDecision

            decision = ModeDecision(mode="ambient", reason="--node: the node namespace's kubelet-probe rules")
        if decision.ambient:
            sidecar_only = {"--ipv6": ipv6, "--pod-ip": pod_ips, "--dns-servers-v4": dns_servers_v4,
                            "--dns-servers-v6": dns_servers_v6, "--cluster-dns": cluster_dns,
                            "--group-file": group_file, "--explain": explain or None,
                            **{f"--{k}": v for k, v in flags.items()}}
            given = [name for name, value in sidecar_only.items() if value]
            if given:
                raise SpecError(f"option {given[0]}: istio-iptables' option, not ambient's ({decision.reason}); "
                                "ambient takes --ambient-config KEY=VALUE,...")
            click.echo(_ambient(decision, pod, istio_version, ambient_settings, node, fmt, backend, family), nl=False)
            return
        if ambient_settings or node:
            what = "--node" if node else "--ambient-config"
            raise SpecError(f"option {what}: the pod is compiled in sidecar mode ({decision.reason}); "
                            "add --mode ambient")
        if decision.opted_out:
            click.echo(one_line(f"netsim: note: sidecar capture: {decision.reason}"), err=True)
    if backend == "nft":
        flags["native-nftables"] = "true"
    profile = profile_for(istio_version)
    net = PodNetwork(ipv6=None if ipv6 is None else ipv6 == "true",
                     pod_ips=tuple(ip for group in pod_ips for ip in group),
                     dns_servers_v4=dns_servers_v4, dns_servers_v6=dns_servers_v6, cluster_dns=cluster_dns)
    res = resolve(flags=flags, env=os.environ, net=net, pod=pod, profile=profile,
                  profile_given=istio_version is not None)
    if explain:
        from netsim.spec.explain import explain as make_report
        from netsim.spec.explain import render_json, render_text

        report = make_report(res)
        click.echo(render_json(report) if fmt == "json" else render_text(report), nl=False)
        return
    for warning in res.warnings:
        click.echo(one_line(f"netsim: warning: {warning}"), err=True)
    if fmt is None:
        fmt = "nft" if res.config is not None and res.config.native_nftables else "iptables-save"
    click.echo(render(res, fmt, family, groups=read_group_file(group_file) if group_file else None), nl=False)


def render(res: Resolution, fmt: str, family: str = "all",
           groups: tuple[tuple[str, int], ...] | None = None) -> str:
    """The compiled output of ``res`` in ``fmt`` (see the module docstring); SpecError when the
    requested family has no rules. Without capture, text formats are empty (a note goes to stderr)."""
    if res.config is None:
        if fmt == "json":
            import json  # only for --format json

            return json.dumps({"schema": "netsim.compile/v1", "capture": False, "reason": res.no_capture_reason,
                               "config": None, "families": {"ipv4": None, "ipv6": None}, "routes": [],
                               "planned": []}, indent=2) + "\n"
        click.echo(f"netsim: no capture rules: {res.no_capture_reason}", err=True)
        return ""
    config = res.config
    _check_family(fmt, family)
    if fmt in ("istio-dry-run", "golden"):
        from netsim.capture.dryrun import dry_run

        return dry_run(config)
    if fmt == "nft":
        from netsim.capture.nft import nft_refusal, render_nft

        refused = nft_refusal(res.release, res.profile.label, "option --format nft")
        if refused:
            raise SpecError(f"{refused}; its rules are iptables rules: use --format iptables-save")
        return render_nft(config)
    if family == "6" and not writes_ip6tables(config):
        origin = res.winner("ENABLE_INBOUND_IPV6").origin
        why = "the 1.0 script never wrote IPv6 rules" if config.enable_ipv6 else f"IPv6 is off: {origin}"
        raise SpecError(f"option --family 6: this pod gets no ip6tables rules ({why})")
    names = Names.resolving(groups)
    try:
        compiled = compile_config(config, names=names)
    except RulesetError as e:
        if "GID" not in e.message and "UID" not in e.message:
            raise
        raise SpecError(f"{e}: loading these rules would fail on that name (names resolve against "
                        f"{'--group-file' if groups is not None else 'this machine'}; give --group-file FILE, "
                        "or use numeric GIDs)") from None
    if fmt == "json":
        return _json(compiled, family)
    if family == "4" or compiled.ruleset_v6 is None:
        return render_save(compiled.ruleset_v4)
    if family == "6":
        return render_save(compiled.ruleset_v6)
    return ("# IPv4: iptables-save\n" + render_save(compiled.ruleset_v4)
            + "# IPv6: ip6tables-save\n" + render_save(compiled.ruleset_v6))


def _check_family(fmt: str, family: str) -> None:
    """``--family 4|6`` picks one family's rules, which the whole-run formats cannot (sidecar and ambient)."""
    if family != "all" and fmt in ("istio-dry-run", "golden", "nft"):
        why = "it records the whole run" if fmt != "nft" else "one inet table holds both families"
        raise SpecError(f"option --family {family}: not available with --format {fmt} ({why})")


def _ambient_backend(fmt: str | None, backend: str | None, given: dict[str, object], default: bool) -> bool:
    """Whether the agent writes nftables rules: ``--backend``, else ``--ambient-config NativeNftables``, else the
    format (``nft``), else the release's default. A format the chosen backend does not write is an error."""
    if backend is not None:
        chosen: bool | None = backend == "nft"
        source = f"--backend {backend}"
    elif "native_nftables" in given:
        chosen = bool(given["native_nftables"])
        source = f"--ambient-config NativeNftables={'true' if chosen else 'false'}"
    else:
        chosen, source = None, ""
    if fmt == "nft" and chosen is False:
        raise SpecError(f"option --format nft: {source} chooses the agent's iptables backend, which writes no "
                        "nftables rules (use one of them)")
    if fmt in ("iptables-save", "iptables-restore") and chosen:
        raise SpecError(f"option --format {fmt}: {source} chooses the agent's native nftables backend, which "
                        "writes no iptables rules (use --format nft)")
    return chosen if chosen is not None else fmt == "nft" or default


def _ambient(decision: Any, pod: Any, istio_version: str | None, settings: tuple[str, ...], node: bool,
             fmt: str | None, backend: str | None, family: str) -> str:
    """The ambient compile: the agent's config for the release and ``settings``, the pod's overrides, rendered."""
    import dataclasses as dc

    from netsim.capture.ambient_render import render_iptables_save, render_json, render_nft_text
    from netsim.spec.ambient import ambient_config, ambient_release, compile_pod, pod_overrides, settings_given

    given = settings_given(settings)
    config = ambient_config(ambient_release(istio_version), given)
    if decision.opted_out:
        click.echo(one_line(f"netsim: no ambient rules: {decision.reason}"), err=True)
        return ""
    config = dc.replace(config, native_nftables=_ambient_backend(fmt, backend, given, config.native_nftables))
    if fmt is None:
        fmt = "nft" if config.native_nftables else "iptables-save"
    _check_family(fmt, family)
    overrides = None if pod is None else pod_overrides(pod.annotation_map, where=pod.where)
    compiled = compile_pod(istio_version, config, overrides, node=node)
    click.echo(one_line(f"netsim: note: ambient mode: {decision.reason}"), err=True)
    for note in compiled.notes:
        click.echo(one_line(f"netsim: note: {note}"), err=True)
    try:
        if fmt in ("istio-dry-run", "golden"):
            return compiled.golden()
        if fmt == "nft":
            return render_nft_text(compiled)
        if fmt == "json":
            return render_json(compiled, decision.reason, family)
        return render_iptables_save(compiled, family)
    except ValueError as e:
        raise SpecError(f"option --format {fmt}: {e}") from None
    except RulesetError as e:
        raise SpecError(f"these ambient rules would not load: {e}") from None


def _json(compiled: Compiled, family: str) -> str:
    import json  # only for --format json

    def value(v: Any) -> Any:
        if isinstance(v, enum.Enum):
            return v.value
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: value(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [value(x) for x in v]
        if isinstance(v, str | bool | int) or v is None:
            return v
        return str(v)

    def ruleset(rs: Ruleset | None) -> Any:
        if rs is None:
            return None
        return {"tables": [{"name": t.name, "chains": [
            {"name": c.name, "policy": c.policy, "rules": [render_rule(c.name, r) for r in c.rules]}
            for c in t.chains]} for t in rs.tables]}

    families = {"ipv4": ruleset(compiled.ruleset_v4) if family in ("4", "all") else None,
                "ipv6": ruleset(compiled.ruleset_v6) if family in ("6", "all") else None}
    planned = [{"family": r.family.value, "table": r.table, "chain": r.chain,
                "op": "-A" if r.position is None else "-I", "position": r.position, "args": " ".join(r.args),
                "why": r.why} for r in compiled.rules if family == "all" or str(r.family.value) == family]
    doc = {"schema": "netsim.compile/v1", "capture": True, "reason": "", "config": value(compiled.config),
           "families": families,
           "routes": [{"argv": list(c.argv), "ignore_exists": c.ignore_exists, "why": c.why}
                      for c in compiled.routes],
           "planned": planned}
    return json.dumps(doc, indent=2) + "\n"


__all__ = ["compile_cmd", "render"]
