"""Reading Kubernetes objects from YAML or JSON files: multi-document files, ``List`` kinds, directories.

Owns: turning paths into :class:`K8sObject` values that remember where they came from (file,
document index, item index), and the one-line location used in every error about an object.

Never does: interpret an object's ``spec`` (each consumer does that and reports field errors through
:meth:`K8sObject.where`), write files, or talk to a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netsim.errors import ConfigError, NetsimError

SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's safe loader when PyYAML was built with it (about 10x faster on large manifests)
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class K8sObject:
    """One object as read, with its origin. ``body`` is the parsed mapping, unchanged."""

    source: str
    document: int  # 1-based index of the YAML document in ``source``
    item: int | None  # 1-based index inside a ``List``, if it came from one
    api_version: str
    kind: str
    namespace: str
    name: str
    body: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    @property
    def labels(self) -> Mapping[str, str]:
        meta = self.body.get("metadata") or {}
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}

    def where(self) -> str:
        """``file: document 2: ServiceEntry ns/name`` (``item 3`` added inside a List)."""
        item = f" item {self.item}" if self.item is not None else ""
        return f"{self.source}: document {self.document}{item}: {self.kind} {self.namespace}/{self.name}"

    def error(self, field_path: str, message: str) -> ConfigError:
        """A ConfigError about ``field_path`` of this object, located."""
        return ConfigError(f"{field_path}: {message}", where=self.where())


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Objects read, in file then document order, and the errors of the documents that were skipped."""

    objects: tuple[K8sObject, ...]
    errors: tuple[NetsimError, ...]
    files: tuple[Path, ...]


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and the ``*.yaml|*.yml|*.json`` files under directories (sorted, recursive).

    Raises ConfigError for a path that does not exist.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise ConfigError("no such file or directory", where=str(p))
    return out


def _documents(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", where=str(path)) from None
    try:
        yield from enumerate(yaml.load_all(text, Loader=_LOADER), start=1)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{line}invalid YAML: {problem}", where=str(path)) from None


def _make(path: Path, doc_i: int, item: int | None, raw: Any, default_namespace: str) -> K8sObject:
    where = f"{path}: document {doc_i}" + (f" item {item}" if item is not None else "")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a Kubernetes object (a mapping), got {type(raw).__name__}", where=where)
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ConfigError("field kind: missing", where=where)
    api = raw.get("apiVersion", "")
    meta = raw.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise ConfigError("field metadata: must be a mapping", where=f"{where}: {kind}")
    name = meta.get("name", "")
    if not isinstance(name, str) or not name:
        raise ConfigError("field metadata.name: missing", where=f"{where}: {kind}")
    ns = meta.get("namespace") or default_namespace
    return K8sObject(source=str(path), document=doc_i, item=item, api_version=str(api), kind=kind,
                     namespace=str(ns), name=name, body=raw)


def read_objects(paths: Iterable[str | Path], *, default_namespace: str = "default") -> LoadResult:
    """Read every object of ``paths`` (files or directories).

    A document that is not a usable object is skipped and reported in ``errors``; a file that
    cannot be read or parsed as YAML raises ConfigError (``file: line N: invalid YAML: …``).
    Objects without ``metadata.namespace`` get ``default_namespace``.
    """
    files = expand_paths(paths)
    objects: list[K8sObject] = []
    errors: list[NetsimError] = []
    for path in files:
        for doc_i, raw in _documents(path):
            if raw is None:
                continue
            if isinstance(raw, Mapping) and isinstance(raw.get("kind"), str) and raw["kind"].endswith("List") \
                    and isinstance(raw.get("items"), list):
                for item_i, item in enumerate(raw["items"], start=1):
                    try:
                        objects.append(_make(path, doc_i, item_i, item, default_namespace))
                    except NetsimError as e:
                        errors.append(e)
                continue
            try:
                objects.append(_make(path, doc_i, None, raw, default_namespace))
            except NetsimError as e:
                errors.append(e)
    return LoadResult(objects=tuple(objects), errors=tuple(errors), files=tuple(files))


__all__ = ["SUFFIXES", "K8sObject", "LoadResult", "expand_paths", "read_objects"]
