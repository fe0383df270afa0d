"""Click option types shared by the commands: each calls a core parser and fails naming the option.

Owns: :class:`EndpointType` (``IP[:PORT]``), :class:`PortListType`, :class:`MarkType`,
:class:`SecondsType` (finite, in range), and
``--config PATH…`` (:class:`PathsOption`: several paths after one flag, as the README writes it, or the
flag repeated) with ``--keep-going``, the same on every command that reads Kubernetes/Istio objects.
Never parses anything itself: ``netsim.workload.model.parse_endpoint`` and the integer rules do;
``netsim.k8s`` reads the files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from netsim.errors import SpecError

if TYPE_CHECKING:
    from netsim.netfilter.packet import Address


def _opt(param: click.Parameter | None) -> str:
    """Option errors are one line (SpecError → ``Error: …``, exit 2), naming the option."""
    return param.opts[0] if param is not None and param.opts else "value"


class EndpointType(click.ParamType):  # type: ignore[type-arg]
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT``."""

    name = "IP[:PORT]"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[Address, int | None]:
        from netsim.workload.model import parse_endpoint

        if isinstance(value, tuple):
            return value
        try:
            return parse_endpoint(str(value))
        except ValueError as e:
            raise SpecError(f"{_opt(param)} {value!r}: {e}") from None


class PortListType(click.ParamType):  # type: ignore[type-arg]
    name = "PORTS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        out = []
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            if not item.isdigit() or not 0 < int(item) <= 65535:
                raise SpecError(f"{_opt(param)} {value!r}: {item!r} is not a port (1-65535)")
            out.append(int(item))
        return tuple(out)


class MarkType(click.ParamType):  # type: ignore[type-arg]
    """A 32-bit mark: decimal or ``0x`` hex, as iptables prints it."""

    name = "MARK"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            mark = int(str(value), 0)
        except ValueError:
            raise SpecError(f"{_opt(param)} {value!r}: not a number (e.g. 0x539 or 1337)") from None
        if not 0 <= mark <= 0xFFFFFFFF:
            raise SpecError(f"{_opt(param)} {value!r}: a mark is 32 bits (0-0xffffffff)")
        return mark


_F = TypeVar("_F", bound=Callable[..., Any])


class SecondsType(click.FloatRange):
    """A number of seconds within ``min``..``max`` that is also finite (``nan`` passes FloatRange's comparisons)."""

    name = "number of seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return rv


def _looks_like_path(arg: str) -> bool:
    """Whether a word after ``--config PATH`` is one more path rather than the next positional argument.

    A path exists, names a directory (``/`` in it) or has a manifest suffix: ``dns query --config a.yaml
    b/ NAME`` takes ``b/`` and leaves ``NAME``; a misspelt ``objets.yaml`` is still taken, so that it is
    reported as missing instead of being read as something else.
    """
    from netsim.k8s import SUFFIXES  # here: the commands that read no manifest do not import netsim.k8s

    if arg.startswith("-") and arg != "-":
        return False
    return os.sep in arg or arg.endswith(SUFFIXES) or os.path.exists(arg)


class PathsOption(click.Option):
    """A ``multiple=True`` option that also takes the path-like words after its first value."""

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            parsed = parser._long_opt.get(name) or parser._short_opt.get(name)
            if parsed is None or getattr(parsed, "_greedy", False):
                continue
            process = parsed.process

            def greedy(value: Any, state: Any, _process: Any = process) -> None:
                _process(value, state)
                while state.rargs and _looks_like_path(state.rargs[0]):
                    _process(state.rargs.pop(0), state)

            parsed.process = greedy
            parsed._greedy = True


def config_option(*, required: bool = False, help: str | None = None) -> Callable[[_F], _F]:
    """``--config PATH…``: Kubernetes/Istio objects, files or directories; several after one flag, or
    the flag repeated. The value is a tuple of paths (parameter name ``configs``)."""
    return click.option("--config", "configs", cls=PathsOption, multiple=True, required=required,
                        type=click.Path(), metavar="PATH…",
                        help=help or "Kubernetes/Istio objects: files or directories (several after one flag, "
                                     "or the flag repeated).")


def output_option(command: _F) -> _F:
    """``--output FILE``: where ``--format html|svg`` writes the picture (default: standard output)."""
    return click.option("--output", "-o", "output", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                        help="With --format html or svg: write the page to FILE instead of standard output.")(command)


PICTURE_FORMATS = ("html", "svg")


def check_output(fmt: str, output: str | None) -> None:
    """``--output`` goes with a picture format only (one ``Error:`` line otherwise)."""
    if output is not None and fmt not in PICTURE_FORMATS:
        raise SpecError(f"--output writes a picture (--format html or svg), not --format {fmt}: redirect standard "
                        "output instead")


def write_picture(text: str, output: str | None) -> None:
    """The page or SVG to ``output`` (UTF-8), or to standard output."""
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as e:
        raise SpecError(f"--output {output!r}: {e.strerror or e}") from None


def mode_option(extra: str = "") -> Callable[[_F], _F]:
    """``--mode ambient|sidecar`` (compile, trace, drift): which capture a pod gets; None lets
    ``netsim.spec.ambient.decide_mode`` read its labels and its namespace's."""
    return click.option("--mode", type=click.Choice(["ambient", "sidecar"]), default=None,
                        help="ambient: istio-cni's in-pod rules for ztunnel (listeners 15001, 15006, 15008, DNS 15053, "
                             "mark 0x539); sidecar: istio-init's. Default: ambient when the pod or its namespace is "
                             "labelled istio.io/dataplane-mode=ambient and the pod is not opted out with "
                             "istio.io/dataplane-mode=none" + (f"; {extra}" if extra else "") + ".")


def ambient_config_option(extra: str = "") -> Callable[[_F], _F]:
    """``--ambient-config KEY=VALUE,…`` (compile, trace, drift): the node agent's settings by the names of
    spec/istio-ambient-capture.md §2.1, read by ``netsim.spec.ambient.parse_ambient_config``."""
    return click.option("--ambient-config", "ambient_settings", multiple=True, metavar="KEY=VALUE,...",
                        help="Ambient: the node agent's settings by their names (EnableIPv6, RedirectDNS, "
                             "HostProbeSNATAddress, HostProbeV6SNATAddress, NativeNftables; also KubeletUID, "
                             "TPROXYRedirection); default: a real agent's of the release"
                             + (f"; {extra}" if extra else "") + ".")


keep_going_option = click.option(
    "--keep-going", is_flag=True, default=False,
    help="Skip a --config document that is invalid (bad YAML, an object that does not convert) and name it in "
         "the answer, instead of stopping with an error.")

pod_name_option = click.option("--name", "pod_name", metavar="NAME", default=None,
                               help="With --pod: the object of the file to use (default: the first).")


__all__ = ["PICTURE_FORMATS", "EndpointType", "MarkType", "PathsOption", "PortListType", "SecondsType",
           "ambient_config_option", "check_output", "config_option", "keep_going_option", "mode_option",
           "output_option", "pod_name_option", "write_picture"]
