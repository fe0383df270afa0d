"""``netsim check``: every workload of a set of manifests (a whole cluster's dump) diagnosed at once.

See :mod:`netsim.check.core`.
"""

from __future__ import annotations

from netsim.check.core import SEVERITIES, CheckFinding, CheckReport, Located, check_objects, check_paths

__all__ = ["SEVERITIES", "CheckFinding", "CheckReport", "Located", "check_objects", "check_paths"]
