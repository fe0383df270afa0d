"""Click options shared by every command: ``--config PATH…`` (several paths after one flag) and ``--keep-going``.

Owns: :class:`PathsOption`, the option class behind ``--config a.yaml b/ c.yaml`` as the README writes
it (the flag may also be repeated), and the two option decorators every command with ``--config``
uses, so that each reads its paths the same way.

Never does: read the files (``netsim.k8s`` does) or import anything heavier than click.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from netsim.k8s import SUFFIXES

_F = TypeVar("_F", bound=Callable[..., Any])


def _looks_like_path(arg: str) -> bool:
    """Whether a word after ``--config PATH`` is one more path rather than the next positional argument.

    A path exists, names a directory (``/`` in it) or has a manifest suffix: ``dns query --config a.yaml
    b/ NAME`` takes ``b/`` and leaves ``NAME``; a misspelt ``objets.yaml`` is still taken, so that it is
    reported as missing instead of being read as something else.
    """
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


keep_going_option = click.option(
    "--keep-going", is_flag=True, default=False,
    help="Skip a --config document that is invalid (bad YAML, an object that does not convert) and name it in "
         "the answer, instead of stopping with an error.")


__all__ = ["PathsOption", "config_option", "keep_going_option"]
