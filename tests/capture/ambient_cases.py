"""Istio's ambient conformance cases, read in place from ../shared/conformance/istio-ambient: each YAML's
config and pod overrides as netsim's values, and the golden and kernel read-back files beside it."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from conftest import CONFORMANCE

from netsim.capture.ambient import AmbientConfig, PodOverrides

AMBIENT_DIR = CONFORMANCE / "istio-ambient"
KERNEL_DIR = AMBIENT_DIR / "kernel"


def case_paths() -> list[Path]:
    """Every case YAML: iptables/, nftables/ and history/ (empty when the folder is absent)."""
    return sorted(AMBIENT_DIR.glob("*/*.yaml")) if AMBIENT_DIR.is_dir() else []


def case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@cache
def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def is_node(path: Path) -> bool:
    return str(load(path)["kind"]).startswith("host")


def config(path: Path) -> AmbientConfig:
    """The case's AmbientConfig exactly as its YAML records it (the test values, not the product's)."""
    data = load(path)
    c = data["config"]
    release = data["source"].get("release")
    return AmbientConfig(
        enable_ipv6=c["EnableIPv6"], redirect_dns=c["RedirectDNS"],
        host_probe_snat_address=c["HostProbeSNATAddress"], host_probe_v6_snat_address=c["HostProbeV6SNATAddress"],
        native_nftables=data["backend"] == "nftables", tproxy_redirection=c.get("TPROXYRedirection", False),
        kubelet_uid=int(data.get("harness", {}).get("kubelet_uid", 0)),
        release=tuple(int(x) for x in release.split(".")) if release else None)


def overrides(path: Path) -> PodOverrides:
    o = load(path).get("pod_overrides") or {}
    dns = o.get("DNSProxy", "unset")
    return PodOverrides(ingress_mode=bool(o.get("IngressMode", False)),
                        virtual_interfaces=tuple(o.get("VirtualInterfaces") or ()),
                        dns_capture=None if dns == "unset" else dns == "enabled")


def golden(path: Path) -> str:
    return (path.parent / load(path)["golden"]).read_text()


def kernel_files(path: Path) -> list[Path]:
    """The kernel read-backs the case's YAML names (none for the iptables host cases and history)."""
    canon = load(path).get("kernel_canonical") or {}
    return [(path.parent / rel).resolve() for rel in canon.values()]
