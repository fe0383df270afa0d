"""netsim.infer: a pod's live rules → the generator, release range and options that wrote them.

Owns: reading istio-iptables' options off a dump and verifying them by compiling every modelled release
(``sidecar``), recognising other generators' rules (``generators``: istio-cni ambient, Linkerd,
kube-proxy, CNI plugins), the options as istio-iptables names and pod annotations (``options``), and
the foreign rules. Never does: IO or rendering (``netsim.commands.infer``).
"""

from __future__ import annotations

from netsim.infer.core import Foreign, Inference, infer_rules, infer_text
from netsim.infer.options import annotations_of, options_of

__all__ = ["Foreign", "Inference", "annotations_of", "infer_rules", "infer_text", "options_of"]
