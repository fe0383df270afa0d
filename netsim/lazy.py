"""PEP 562 lazy exports: a package names its expensive members here and imports them on first use.

Owns :func:`lazy_exports` and :func:`keep_over_submodules` (for an exported function named like its
module). Import cost is what ``netsim --help`` and ``netsim compile`` pay (the cold start the README
promises), so a package's ``__init__`` re-exports its heavy modules' names through this instead of
importing them. Never imports anything of netsim.
"""

from __future__ import annotations

import importlib
import sys
import types
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


def keep_over_submodules(package: str, names: Iterable[str]) -> None:
    """Keep each of ``names`` (say ``netsim.spec.explain``, the function) what ``package`` exports, after
    the submodule of the same name loads too.

    Python binds a submodule on its package when it first loads it, which would replace a lazily
    exported function of the same name (``from netsim.spec import explain`` would give the module).
    The package's class drops exactly that binding; the name keeps resolving through
    :func:`lazy_exports`' ``__getattr__``. ``from package.name import x`` is unaffected (it reads
    ``sys.modules``); ``import package.name as m`` would get the function, so write the former.
    """
    kept = frozenset(names)

    class _Package(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if name in kept and isinstance(value, types.ModuleType):
                return
            super().__setattr__(name, value)

    sys.modules[package].__class__ = _Package


__all__ = ["keep_over_submodules", "lazy_exports"]
