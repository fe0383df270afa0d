"""PEP 562 lazy exports: a package names its expensive members here and imports them on first use.

Owns :func:`lazy_exports`. Import cost is what ``netsim --help`` and ``netsim compile`` pay (the cold
start the README promises), so a package's ``__init__`` re-exports its heavy modules' names through
this instead of importing them. Never imports anything of netsim.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, table: Mapping[str, Iterable[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``table`` maps a module to the names it defines.

    The first access imports the module and caches the value in the package's namespace, so later
    accesses are plain attribute lookups. An unknown name raises ``AttributeError`` as Python's own does.
    """
    where = {name: module for module, names in table.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        vars(importlib.import_module(package))[name] = value
        return value

    return __getattr__


__all__ = ["lazy_exports"]
