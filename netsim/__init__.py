"""netsim: what Istio's sidecar traffic capture does to a pod's packets and DNS queries, offline.

This module imports nothing heavy on purpose: ``netsim.cli`` must start in well under 0.25 s.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
