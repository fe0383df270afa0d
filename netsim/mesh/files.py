"""Reading ``--config`` paths and ``--mesh-config`` files (the only IO of ``netsim.mesh``).

Owns: :func:`read_config` (files and directories → :class:`~netsim.mesh.model.MeshObjects`, every
bad document reported and skipped), :func:`read_mesh_config`, and :func:`load_index` (both, plus a
pod file, into the sidecar's index: the one call ``netsim trace --config`` needs).

Never does: interpret objects (``netsim.mesh.objects`` does).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from netsim.k8s import YAMLSyntaxError, load_yaml, read_objects, read_text
from netsim.mesh.build import ProxyIndex
from netsim.mesh.model import MeshConfig, MeshObjects
from netsim.mesh.objects import convert, parse_mesh_config


def read_config(paths: Iterable[str | Path]) -> MeshObjects:
    """Every object under ``paths``. Raises ConfigError only for a path that does not exist or cannot be read."""
    loaded = read_objects(paths, keep_going=True)
    return convert(loaded.objects, errors=loaded.errors)


def read_mesh_config(path: str | Path | None) -> MeshConfig:
    """The mesh config in ``path`` (None: the defaults). Raises ConfigError naming the file and field."""
    if path is None:
        return MeshConfig()
    p = Path(path)
    try:
        data = load_yaml(read_text(p))
    except YAMLSyntaxError as e:
        raise e.at(str(p)) from None
    return parse_mesh_config(data, str(p))


def load_index(configs: Iterable[str | Path], *, pod_file: str | None = None, pod_ips: tuple[str, ...] = (),
               namespace: str | None = None, labels: tuple[tuple[str, str], ...] | None = None,
               mesh_config: str | None = None, istio_version: str | None = None) -> ProxyIndex:
    """Read ``configs`` (+ the pod file) and build the index for the pod's sidecar, for ``netsim trace``.

    The proxy is the pod in ``pod_file`` (its first Pod or workload), with ``pod_ips`` overriding
    its status IPs; without a pod file, ``pod_ips`` and ``namespace`` describe it.
    Raises ConfigError / SpecError for unreadable files and bad values.
    """
    from dataclasses import replace

    from netsim.mesh.build import build_index
    from netsim.mesh.proxy import PLACEHOLDER_IP, make_proxy, pick_pod, with_pods
    from netsim.mesh.versions import mesh_profile

    profile = mesh_profile(istio_version)
    objects = read_config(list(configs))
    mesh = read_mesh_config(mesh_config)
    pod = None
    if pod_file is not None:
        extra = read_config([pod_file])
        pod = pick_pod(extra.pods)
        if pod is not None:
            if pod_ips:
                pod = replace(pod, ips=pod_ips)
            objects = with_pods(objects, extra)
    ips = pod_ips or (pod.ips if pod is not None and pod.ips else (PLACEHOLDER_IP,))
    proxy = make_proxy(objects, mesh, ips=ips, namespace=namespace or (pod.namespace if pod else None),
                       labels=labels if labels is not None else (pod.labels if pod else None), pod=pod)
    return build_index(objects, proxy, profile, mesh)


__all__ = ["load_index", "read_config", "read_mesh_config"]
