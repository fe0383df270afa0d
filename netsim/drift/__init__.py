"""netsim.drift: the rules a pod has against the rules its spec gives, classified (``netsim drift``).

Owns: the canonical form rules are compared in and the drift classes with their stable codes
(``compare.py``: :class:`Canon`, :class:`Check`, :class:`DriftFinding`, :func:`classify`), the
expected rules and their alternatives built through the workload front door (``expect.py``:
:class:`Expectation`), and many dumps at once with every distinct question computed once
(``fleet.py``: :class:`DriftChecker`, :class:`PodCatalog`). Layer 4.5 of docs/design.md: it imports
``workload``, ``spec``, ``capture`` and ``netfilter``, never ``mesh``, ``lab`` or a command module.

Example::

    from netsim.drift import DriftChecker
    from netsim.spec.pod import load_pod
    report = DriftChecker().check_file(load_pod("pod.yaml"), "iptables-save.txt")
    report.drift, [(f.check.value, f.message) for f in report.findings]

Importing the package is cheap: its names load on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsim.lazy import lazy_exports

if TYPE_CHECKING:
    from netsim.drift.compare import Candidate, Canon, Check, DriftFinding, Placement, Severity, canon_of, classify
    from netsim.drift.expect import Expectation, release_label
    from netsim.drift.fleet import (
        DriftChecker,
        DriftReport,
        PodCatalog,
        dump_files,
        load_pods,
        parse_found,
        pod_name_of,
    )

__getattr__ = lazy_exports(__name__, {
    "netsim.drift.compare": ("Candidate", "Canon", "Check", "DriftFinding", "Placement", "Severity", "canon_of",
                             "classify"),
    "netsim.drift.expect": ("Expectation", "release_label"),
    "netsim.drift.fleet": ("DriftChecker", "DriftReport", "PodCatalog", "dump_files", "load_pods", "parse_found",
                           "pod_name_of"),
})

__all__ = [
    "Candidate",
    "Canon",
    "Check",
    "DriftChecker",
    "DriftFinding",
    "DriftReport",
    "Expectation",
    "Placement",
    "PodCatalog",
    "Severity",
    "canon_of",
    "classify",
    "dump_files",
    "load_pods",
    "parse_found",
    "pod_name_of",
    "release_label",
]
