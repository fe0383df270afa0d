"""netsim.spec: Kubernetes manifests and istio-iptables flags → CaptureConfig, with Istio-version defaults.

Owns: the option table and its validation (``flags``), Istio-version profiles (``versions``), reading
pods and deriving the injector's arguments and the agent's proxyMetadata (``pod``), combining all
sources (``resolve``), the ``--explain`` report (``explain``) and Istio's option-string parser
(``options``).
Never does: IO beyond reading the one manifest it is given, or building rules (``netsim.capture``).
"""

from netsim.spec.explain import Explanation, explain, render_json, render_text
from netsim.spec.flags import OPTIONS, OptionSpec, Setting, Source
from netsim.spec.pod import Finding, PodSource, derive, load_pod, pod_from_object
from netsim.spec.resolve import PodNetwork, Resolution, resolve
from netsim.spec.versions import VersionProfile, parse_version, profile_for

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
