"""netsim.infer: a pod's live rules → the generator, release range and options that wrote them.

Owns: reading istio-iptables' options off a dump and verifying them by compiling every modelled release
(``sidecar``), istio-cni's ambient in-pod rules the same way, both backends (``ambient``), recognising
other generators' rules (``generators``: the ambient node's probe rule, Linkerd, kube-proxy, CNI
plugins), the options as istio-iptables names and pod annotations (``options``), and
the foreign rules. Never does: IO or rendering (``netsim.commands.infer``).
"""

from __future__ import annotations

from netsim.infer.core import Foreign, Inference, infer_nft, infer_rules, infer_text
from netsim.infer.options import annotations_of, options_of

__all__ = ["Foreign", "Inference", "annotations_of", "infer_nft", "infer_rules", "infer_text", "options_of"]
