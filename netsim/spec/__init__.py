"""netsim.spec: Kubernetes manifests and istio-iptables flags → CaptureConfig, with Istio-version defaults.

Owns: the option table and its validation (``flags``), Istio-version profiles (``versions``), reading
pods and deriving the injector's arguments and the agent's proxyMetadata (``pod``), combining all
sources (``resolve``), the ``--explain`` report (``explain``) and Istio's option-string parser
(``options``).
Never does: IO beyond reading the one manifest it is given, or building rules (``netsim.capture``).
Importing the package is cheap: its names load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsim.lazy import keep_over_submodules, lazy_exports

if TYPE_CHECKING:
    from netsim.spec.explain import Explanation, explain, render_json, render_text
    from netsim.spec.flags import OPTIONS, OptionSpec, Setting, Source
    from netsim.spec.pod import Finding, PodSource, derive, load_pod, pod_from_object
    from netsim.spec.resolve import PodNetwork, Resolution, resolve
    from netsim.spec.versions import VersionProfile, parse_version, profile_for

# loaded on first use (PEP 562): importing one submodule, say spec.pod for a trace, does not load
# --explain's report or the resolver
__getattr__ = lazy_exports(__name__, {
    "netsim.spec.explain": ("Explanation", "explain", "render_json", "render_text"),
    "netsim.spec.flags": ("OPTIONS", "OptionSpec", "Setting", "Source"),
    "netsim.spec.pod": ("Finding", "PodSource", "derive", "load_pod", "pod_from_object"),
    "netsim.spec.resolve": ("PodNetwork", "Resolution", "resolve"),
    "netsim.spec.versions": ("VersionProfile", "parse_version", "profile_for"),
})
keep_over_submodules(__name__, ("explain", "resolve"))  # the functions, not their modules

__all__ = [
    "OPTIONS",
    "Explanation",
    "Finding",
    "OptionSpec",
    "PodNetwork",
    "PodSource",
    "Resolution",
    "Setting",
    "Source",
    "VersionProfile",
    "derive",
    "explain",
    "load_pod",
    "parse_version",
    "pod_from_object",
    "profile_for",
    "render_json",
    "render_text",
    "resolve",
]
