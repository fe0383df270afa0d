"""Istio release names as comparable values: the one parser every ``--istio-version`` goes through.

Owns: :class:`IstioVersion`, :data:`CURRENT` and :func:`parse_istio_version` ("1.5", "1.6.6",
"v1.24.0-beta.1", "current"/None), with the one error a person sees for anything else.

Never does: decide what a release *does*. Each package keeps its own profile table over these
values (``netsim.spec.versions`` for the injector, ``netsim.dns.profile`` and ``netsim.dns.allocate``
for the agent and the allocator, ``netsim.mesh.versions`` for the hop).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from netsim.errors import SpecError


class IstioVersion(NamedTuple):
    """A release as (major, minor, patch); a tuple, so it compares with ``(1, 6, 6)`` directly."""

    major: int
    minor: int
    patch: int = 0


# Istio master (the current injector and agent); it sorts after every numbered release.
CURRENT = IstioVersion(1, 10_000, 0)
CURRENT_NAMES = frozenset({"current", "latest", "master"})
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?$")


def parse_istio_version(text: str | None, *, option: str = "") -> IstioVersion:
    """Parse an Istio release name.

    ``None`` and ``current``/``latest``/``master`` are :data:`CURRENT`; ``1.5`` is (1, 5, 0), ``1.6.6``
    is (1, 6, 6), and a leading ``v`` and a ``-beta.1``/``+build`` suffix are ignored. Only 1.x exists.

    Raises SpecError naming the bad value, prefixed by ``option`` when given (``--istio-version '2.0':
    ...``); without it the message suits a click type, which adds the option itself (``"2.0": ...``).
    """
    if text is None or text.strip().lower() in CURRENT_NAMES:
        return CURRENT
    m = _VERSION_RE.match(text.strip())
    if not m or int(m[1]) != 1:
        where = f"{option} {text!r}" if option else f'"{text}"'
        raise SpecError(f"{where}: not an Istio version such as 1.2, 1.24.3 or current")
    return IstioVersion(int(m[1]), int(m[2]), int(m[3] or 0))


__all__ = ["CURRENT", "CURRENT_NAMES", "IstioVersion", "parse_istio_version"]
