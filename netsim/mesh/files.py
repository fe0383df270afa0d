"""Reading ``--config`` paths and ``--mesh-config`` files (the only IO of ``netsim.mesh``).

Owns: :func:`read_config` (files and directories → :class:`~netsim.mesh.model.MeshObjects`, every
bad document reported and skipped) and :func:`read_mesh_config`.

Never does: interpret objects (``netsim.mesh.objects`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

from netsim.errors import ConfigError, NetsimError
from netsim.k8s import K8sObject, expand_paths
from netsim.mesh.model import MeshConfig, MeshObjects
from netsim.mesh.objects import convert, parse_mesh_config, parse_text


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", where=str(path)) from None


def read_config(paths: Iterable[str | Path]) -> MeshObjects:
    """Every object under ``paths``. Raises ConfigError only for a path that does not exist or cannot be read."""
    objects: list[K8sObject] = []
    errors: list[NetsimError] = []
    for p in expand_paths(paths):
        parsed = parse_text(_read(p), str(p))
        objects.extend(parsed.objects)
        errors.extend(parsed.errors)
    return convert(objects, errors=errors)


def read_mesh_config(path: str | Path | None) -> MeshConfig:
    """The mesh config in ``path`` (None: the defaults). Raises ConfigError naming the file and field."""
    if path is None:
        return MeshConfig()
    p = Path(path)
    try:
        data = yaml.safe_load(_read(p))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{line}invalid YAML: {getattr(e, 'problem', e)}", where=str(p)) from None
    return parse_mesh_config(data, str(p))


__all__ = ["read_config", "read_mesh_config"]
