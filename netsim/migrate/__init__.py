"""netsim.migrate: a sidecar pod enrolled in ambient, and every capture difference that follows
(``netsim migrate --to ambient``).

Owns: building both workloads of one pod (the sidecar's through ``Workload.from_pod_source``, ztunnel's from
``netsim.capture.ambient``'s compile of the same pod), the probes, the two matrices and the findings
(``compare``). Never does: print, or trace and compile by itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netsim.migrate.compare import Migration


def build_migration(path: str, *, name: str | None = None, istio_version: str | None = None,
                    ambient_settings: Iterable[str] = (), pod_ips: Iterable[str] = (),
                    config_paths: Iterable[str] = ()) -> Migration:
    """The pod of ``path`` as a sidecar pod now and as an ambient pod after enrolment, compared. The Namespace
    objects in ``path`` and ``config_paths`` say whether it is enrolled already (a note)."""
    import dataclasses

    from netsim.istio_version import parse_istio_version
    from netsim.migrate.compare import migrate
    from netsim.spec.ambient import pod_mode
    from netsim.spec.pod import load_pod_with_objects
    from netsim.spec.versions import profile_for
    from netsim.workload.model import Workload, parse_addresses

    if istio_version is not None:
        parse_istio_version(istio_version, option="--istio-version")
    pod, objects = load_pod_with_objects(path, name=name)
    now = pod_mode(pod, objects, config_paths)
    ips = parse_addresses(pod_ips)
    sidecar = Workload.from_pod_source(pod, profile_for(istio_version), profile_given=istio_version is not None,
                                       pod_ips=ips)
    settings = tuple(ambient_settings)
    ambient = Workload.from_ambient_pod(pod, istio_version=istio_version, pod_ips=ips, settings=settings,
                                        reason="netsim migrate --to ambient")
    assert ambient.ambient is not None
    m = migrate(sidecar, ambient, ambient.ambient)
    if now.ambient or now.opted_out:
        state = "already enrolled in ambient" if now.ambient else "opted out of ambient"
        m = dataclasses.replace(m, notes=(f"the pod is {state}: {now.reason}", *m.notes))
    return m


__all__ = ["build_migration"]
