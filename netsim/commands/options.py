"""Click option types shared by the commands: each calls a core parser and fails naming the option.

Owns: :class:`EndpointType` (``IP[:PORT]``), :class:`PortListType` and :class:`MarkType`. Never
parses anything itself: ``netsim.workload.model.parse_endpoint`` and the integer rules do.
"""

from __future__ import annotations

from typing import Any

import click

from netsim.errors import SpecError
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


__all__ = ["EndpointType", "MarkType", "PortListType"]
