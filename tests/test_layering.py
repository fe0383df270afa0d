"""The import layering of docs/design.md: a package imports only packages of lower layers.

Every ``import`` in every module counts, inside functions and under ``TYPE_CHECKING`` included (a lazy
import is still a dependency). Command modules (``netsim.cli``, ``netsim.commands``, and the
``cli`` module of a package) form the top layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "netsim"

# top-level module or package of netsim → its layer (docs/design.md, "Layers")
LAYERS: dict[str, float] = {
    "errors": 1.0, "lazy": 1.0, "reader": 1.05, "istio_version": 1.1, "k8s": 1.1, "istio_service": 1.2,
    "netfilter": 2.0, "registry": 2.05, "dns": 2.1,  # the DNS name table is a view of the registry
    "capture": 3.0, "spec": 3.1, "infer": 3.2,  # infer compiles (capture) and names annotations (spec)
    "workload": 4.0, "drift": 4.5,  # drift compares a workload's compiled rules with a dump
    "migrate": 4.5,  # migrate compares a pod's sidecar and ambient workloads
    "mesh": 5.0, "lab": 5.0,
    "picture": 5.5,  # the pictures (--format html|svg) of what workload and mesh computed
    "check": 5.5,  # every workload of a mesh through mesh's diagnose
    "commands": 6.0,  # netsim.cli, netsim.__main__, netsim.commands.*, netsim.<package>.cli
}
COMMAND_LAYER = 6.0


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, imported module) of every import statement in ``path`` (whose module name is ``module``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[tuple[int, str]] = []
    module = module or _module_name(path)
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base))
            if base == "netsim":  # from netsim import k8s: the submodule is the dependency
                out += [(node.lineno, f"netsim.{a.name}") for a in node.names]
    return out


def _unit(module: str) -> str | None:
    """The layered unit of a netsim module: its top-level package, or ``cli`` for a command module."""
    parts = module.split(".")
    if parts[0] != "netsim" or len(parts) < 2:
        return None
    if (len(parts) >= 3 and parts[-1] == "cli") or parts[1] in ("cli", "__main__"):
        return "commands"
    return parts[1]


def _layer(unit: str) -> float:
    if unit not in LAYERS:
        pytest.fail(f"netsim.{unit} has no layer: add it to LAYERS here and to docs/design.md")
    return LAYERS[unit]


def _violations() -> list[str]:
    bad: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        me = _module_name(path)
        mine = _unit(me)
        if mine is None:
            continue
        for line, target in _imports(path):
            theirs = _unit(target)
            if theirs is None or theirs == mine:
                continue
            if _layer(theirs) >= _layer(mine):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {me} (layer {_layer(mine)}) imports "
                           f"{target} (layer {_layer(theirs)})")
    return bad


def test_no_module_imports_a_package_of_its_own_or_a_higher_layer() -> None:
    assert _violations() == []


def test_every_package_has_a_layer() -> None:
    units = {_unit(_module_name(p)) for p in ROOT.rglob("*.py")} - {None}
    assert sorted(u for u in units if u not in LAYERS) == []


def test_netfilter_imports_nothing_of_istio() -> None:
    """netfilter (layer 2) is generic: besides the rule above, not even dns or the registry. Its nftables
    package (``netfilter/nft``) is part of it and walked too."""
    walked = {p.relative_to(ROOT).as_posix() for p in (ROOT / "netfilter").rglob("*.py")}
    assert {"netfilter/nft/model.py", "netfilter/nft/parse.py", "netfilter/nft/evaluate.py"} <= walked
    for path in (ROOT / "netfilter").rglob("*.py"):
        for line, target in _imports(path):
            unit = _unit(target)
            assert unit in (None, "netfilter", "errors", "lazy"), f"{path.name}:{line} imports {target}"


# Istio's ports, uids and chain names: netsim.workload.identity and netsim.capture hold them
ISTIO_NUMBERS = {15001, 15006, 15008, 15020, 15021, 15053, 15090, 1337}
ISTIO_WORDS = ("ISTIO_", "15001", "15006", "15008", "15053", "1337", "127.0.0.6", "istio-proxy", "envoy")


def _code_constants(tree: ast.Module) -> list[tuple[int, object]]:
    """Every constant in the code, docstrings excluded."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and id(n) not in docstrings]


def test_netfilter_code_has_no_istio_port_uid_or_chain_name() -> None:
    found = []
    for path in sorted((ROOT / "netfilter").rglob("*.py")):
        for line, value in _code_constants(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(value, int) and not isinstance(value, bool) and value in ISTIO_NUMBERS:
                found.append(f"{path.name}:{line}: {value}")
            elif isinstance(value, str) and any(w.lower() in value.lower() for w in ISTIO_WORDS):
                found.append(f"{path.name}:{line}: {value!r}")
    assert found == []


def test_the_walker_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    code = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from netsim.mesh.build import X\n"
            "def f():\n    import netsim.lab.cli\n    from netsim import k8s\n")
    mod = tmp_path / "m.py"
    mod.write_text(code)
    assert [t for _, t in _imports(mod, "netsim.x.m")] == ["typing", "netsim.mesh.build", "netsim.lab.cli", "netsim",
                                             "netsim.k8s"]


def test_netfilter_text_names_no_istio_port_uid_or_chain() -> None:
    """The same in comments and docstrings: examples use neutral numbers and chain names."""
    import re

    pattern = re.compile(r"ISTIO_|\b150(0[0-9]|2[01]|53|90)\b|\b1337\b|\b0x539\b|127\.0\.0\.6")
    found = [f"{p.name}:{n}: {line.strip()}" for p in sorted((ROOT / "netfilter").rglob("*.py"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == []
