"""Every vector of ../shared/conformance/istio-dns/dns-vectors.yaml, through the pure core.

Query vectors are also run against the real server over UDP and TCP in test_dns_server.py; here the
core's decision is checked (table answer bytes, or a forward whose upstream reply is then passed
through :func:`finish_forward`, as the server does).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from conftest import conformance_dir
from dns_helpers import fake_upstream_reply, fixture_lookup, fixture_table, load_dns_vectors

from netsim.dns.allocate import Generation
from netsim.dns.resolve import (
    CounterRNG,
    Forward,
    Reply,
    Transport,
    finish_forward,
    lookup_keys,
    make_query,
    resolve,
    servfail,
)
from netsim.dns.table import (
    Endpoint,
    Health,
    IstiodFlags,
    Proxy,
    Resolution,
    Service,
    build_from_objects,
    build_name_table,
    service_addresses,
)
from netsim.k8s import K8sObject
from netsim.registry import KUBERNETES, SERVICE, SERVICE_ENTRY, ServicePort

DATA = load_dns_vectors()
FIXTURES: dict[str, Any] = DATA["fixtures"]


def _cases(kind: str) -> list[Any]:
    cases = [pytest.param(v, id=v["id"]) for v in DATA["vectors"] if v["kind"] == kind]
    return cases or [pytest.param(None, id=f"{kind}-conformance-missing")]


def test_every_vector_kind_is_run() -> None:
    data = yaml_data = DATA
    conformance_dir("istio-dns")
    assert len(data["vectors"]) == yaml_data["count"]
    known = {"query", "alt_hosts", "upstream_timeout", "name_table", "nds", "address_selection"}
    assert {v["kind"] for v in data["vectors"]} <= known
    for kind, n in data["counts_by_kind"].items():
        assert sum(1 for v in data["vectors"] if v["kind"] == kind) == n


# --------------------------------------------------------------------------------------------
# query

def expected_answer(exp: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    ans = exp["answer"]
    if isinstance(ans, dict):
        g = FIXTURES[ans["generator"]]
        base = int(ipaddress.ip_address(g["ipv4_from"]))
        return [(g["name"], g["type"], g["ttl"], str(ipaddress.ip_address(base + i))) for i in range(ans["first"])]
    return [(a["name"], a["type"], a["ttl"], str(a["data"])) for a in ans]


def answer_of(msg: dns.message.Message) -> list[tuple[str, str, int, str]]:
    out = []
    for rrset in msg.answer:
        for rd in rrset:
            data = rd.to_text()
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                data = str(ipaddress.ip_address(data))
            out.append((rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rrset.ttl, data))
    return out


def answer_in_wire_order(wire: bytes) -> list[tuple[str, str, int, str]]:
    """dnspython merges records into rrsets; keep the wire order by parsing record by record."""
    msg = dns.message.from_wire(wire, one_rr_per_rrset=True)
    return answer_of(msg)


def check_reply(wire: bytes, v: dict[str, Any], query_name: str) -> None:
    exp = v["expect"]
    msg = dns.message.from_wire(wire, one_rr_per_rrset=True)
    assert dns.rcode.to_text(msg.rcode()) == exp["rcode"]
    flags = exp.get("flags", {})
    for flag, bit in (("aa", dns.flags.AA), ("ra", dns.flags.RA), ("tc", dns.flags.TC)):
        if flag in flags:
            assert bool(msg.flags & bit) == flags[flag], flag
    assert msg.question[0].name.to_text() == query_name  # echoed in its original case
    got = answer_of(msg)
    want = expected_answer(exp)
    if "rng" in v or len(want) < 2:
        assert got == want
    else:
        assert got == want  # upstream replies are never shuffled
    assert msg.opt is None or exp["handled_by"] == "upstream"


def client_edns(v: dict[str, Any]) -> int | None:
    """The EDNS UDP size the vector's client puts in its query (None: no OPT record)."""
    client = str(v.get("client", ""))
    if "EDNS" not in client or "no EDNS" in client:
        return None
    m = re.search(r"UDP size (\d+)", client)
    return int(m[1]) if m else 65535


def query_wire(v: dict[str, Any]) -> bytes:
    q = v["query"]
    return make_query(q["name"], dns.rdatatype.from_text(q["type"]), qid=4242, edns_size=client_edns(v))


@pytest.mark.parametrize("v", _cases("query"))
def test_query_vector_core(v: dict[str, Any] | None) -> None:
    conformance_dir("istio-dns")
    assert v is not None
    lookup = fixture_lookup(FIXTURES[v["fixture"]])
    for transport in v["transports"]:
        t = Transport(transport)
        rng = CounterRNG()
        if "rng" in v:
            rng.set(v["rng"]["set_to"])
        decision = resolve(query_wire(v), lookup, transport=t, rng=rng)
        handled = v["expect"]["handled_by"]
        if handled == "table":
            assert isinstance(decision, Reply), decision
            check_reply(decision.wire, v, v["query"]["name"])
            continue
        assert isinstance(decision, Forward), decision
        upstream = fake_upstream_reply(decision.query)
        wire = finish_forward(decision, upstream)
        if handled == "upstream":
            assert wire is not None
        else:
            assert wire is None  # transport error → the agent answers SERVFAIL
            wire = servfail(decision)
        check_reply(wire, v, v["query"]["name"])


def test_counter_shuffle_reproduces_istio_order() -> None:
    # independent of the vectors: two addresses swap on an even draw, not on an odd one
    from netsim.dns.resolve import shuffle
    items = [b"a", b"b"]
    shuffle(items, CounterRNG(1))  # draws 2 → swap
    assert items == [b"b", b"a"]
    shuffle(items, CounterRNG(0))  # draws 1 → keep
    assert items == [b"b", b"a"]


# --------------------------------------------------------------------------------------------
# alt_hosts

@pytest.mark.parametrize("v", _cases("alt_hosts"))
def test_alt_hosts_vector(v: dict[str, Any] | None) -> None:
    conformance_dir("istio-dns")
    assert v is not None
    fx = FIXTURES[v["fixture"]]
    keys = lookup_keys(fixture_table(fx), namespace=fx["proxy_namespace"], domain=fx["proxy_domain_arg"])
    assert {k for k in keys if k.startswith(v["prefix"])} == set(v["expect_keys"])


# --------------------------------------------------------------------------------------------
# name_table

def _endpoint(d: dict[str, Any], port: int | None = None) -> Endpoint:
    return Endpoint(ips=tuple(d["ips"]), hostname=d.get("hostname", ""), subdomain=d.get("subdomain", ""),
                    network=d.get("network", ""), cluster=d.get("cluster", ""),
                    health=Health(d.get("health", "Healthy")), port=port)


def _service(d: dict[str, Any], endpoints: list[Endpoint]) -> Service:
    return Service(hostname=d["hostname"], namespace=d["namespace"], name=d["name"],
                   kind=SERVICE if d["registry"] == KUBERNETES else SERVICE_ENTRY,
                   resolution=Resolution(d["resolution"]), address=d["default_address"],
                   ports=tuple(ServicePort(port=p.get("port", p.get("number"))) for p in d.get("ports", [])),
                   endpoints=tuple(endpoints),
                   cluster_vips={k: tuple(v) for k, v in (d.get("cluster_vips") or {}).items()},
                   auto_ipv4=d.get("auto_ipv4"), auto_ipv6=d.get("auto_ipv6"),
                   publish_not_ready=bool(d.get("publish_not_ready", d.get("publishNotReadyAddresses"))))


def _proxy(d: dict[str, Any]) -> Proxy:
    meta = d.get("metadata") or {}
    return Proxy(ips=tuple(d["ips"]), cluster=d.get("cluster", "") or "", network=d.get("network", "") or "",
                 namespace=d.get("dns_domain", "default.svc").split(".")[0],
                 dns_capture=bool(meta.get("DNS_CAPTURE", True)),
                 dns_auto_allocate=bool(meta.get("DNS_AUTO_ALLOCATE", True)), waypoint=d.get("type") == "waypoint")


@pytest.mark.parametrize("v", _cases("name_table"))
def test_name_table_vector(v: dict[str, Any] | None) -> None:
    conformance_dir("istio-dns")
    assert v is not None
    if "fixture" in v:
        fx = FIXTURES[v["fixture"]]
        push = fx["pushes"][v["push"]]
        pods = fx["pods"]
        eps = [_endpoint({**pods[e["pod"]], **e}) for e in push["endpoints"]]
        services = [_service(fx["services"][name], eps) for name in push["services"]]
        proxy = _proxy(fx["proxies"][v["proxy"]])
        flags = IstiodFlags(dual_stack=bool(fx["flags"]["ISTIO_DUAL_STACK"]),
                            multicluster_headless=v.get("multicluster_headless", True))
    else:
        inl = v["inline"]
        if "endpoints_by_port" in inl:
            eps = [_endpoint(e, int(port)) for port, lst in inl["endpoints_by_port"].items() for e in lst]
        else:
            eps = [_endpoint(e) for e in inl.get("endpoints", [])]
        services = [_service(s, eps) for s in inl.get("services", [inl["service"]] if "service" in inl else [])]
        proxy = _proxy(v["proxy"])
        mch = inl.get("multicluster_headless", v.get("multicluster_headless", True))
        flags = IstiodFlags(multicluster_headless=mch, dual_stack=bool(inl.get("flags", {}).get("ISTIO_DUAL_STACK")))
    table = build_name_table(services, proxy, flags)
    got = {h: {"ips": list(i.ips), "registry": i.registry, "shortname": i.shortname, "namespace": i.namespace}
           for h, i in table.entries.items()}
    if "expect_table" in v:
        want = {h: {"ips": [str(x) for x in e["ips"]], "registry": e["registry"],
                    "shortname": e.get("shortname", ""), "namespace": e.get("namespace", "")}
                for h, e in v["expect_table"].items()}
        assert got == want
    for h in v.get("expect_keys_present", []):
        assert h in got
    for h, e in v.get("expect_entry", {}).items():
        assert got[h]["ips"] == [str(x) for x in e["ips"]]
    for h, d in v.get("derived", {}).items():
        if isinstance(d, list):
            assert got[h]["ips"] == [str(x) for x in d]
        else:  # "a and b, order unspecified"
            want_set = {w for w in str(d).replace(",", " ").split() if w[0].isdigit()}
            assert set(got[h]["ips"]) == want_set


# --------------------------------------------------------------------------------------------
# nds (end to end through the YAML object builder)

def se_objects(entries: list[dict[str, Any]]) -> list[K8sObject]:
    out = []
    for i, se in enumerate(entries, start=1):
        spec = {k: v for k, v in se.items() if k not in ("namespace", "name")}
        if "resolution" in spec:
            spec["resolution"] = str(spec["resolution"]).split()[0]
        status = spec.pop("status", None)
        labels = spec.pop("labels", None)
        body = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                "metadata": {"namespace": se["namespace"], "name": se["name"], "labels": labels or {}}, "spec": spec}
        if status:
            body["status"] = status
        out.append(K8sObject(source="vector", document=i, item=None, api_version="networking.istio.io/v1",
                             kind="ServiceEntry", namespace=se["namespace"], name=se["name"], body=body))
    return out


def build_nds(entries: list[dict[str, Any]], gen: Generation, proxy_ips: str | list[str], metadata: dict[str, Any],
              autoallocate: bool, dual_stack: bool = False) -> dict[str, dict[str, Any]]:
    from netsim.dns.table import BuildOptions
    ips = (proxy_ips,) if isinstance(proxy_ips, str) else tuple(proxy_ips)
    proxy = Proxy(ips=ips, namespace="default", dns_capture=bool(metadata.get("DNS_CAPTURE")),
                  dns_auto_allocate=bool(metadata.get("DNS_AUTO_ALLOCATE")))
    res = build_from_objects(se_objects(entries), BuildOptions(
        namespace="default", generation=gen, proxy=proxy,
        flags=IstiodFlags(ip_autoallocate=autoallocate, dual_stack=dual_stack)))
    assert not res.errors
    return {h: {"ips": list(i.ips), "registry": i.registry} for h, i in res.table.entries.items()}


@pytest.mark.parametrize("v", _cases("nds"))
def test_nds_vector(v: dict[str, Any] | None) -> None:
    conformance_dir("istio-dns")
    assert v is not None
    flags = v.get("istiod_flags", {})
    auto_on = bool(flags.get("PILOT_ENABLE_IP_AUTOALLOCATE", True))
    legacy = flags.get("legacy_allocator")
    gen = Generation.parse(str(legacy).split()[0]) if legacy and not auto_on else Generation.V2
    proxy = v.get("proxy", {})
    got = build_nds(v["service_entries"], gen, proxy.get("ips") or proxy.get("ip") or ["10.0.0.1"],
                    proxy.get("metadata", {}), auto_on, bool(flags.get("ISTIO_DUAL_STACK")))
    assert got == {h: {"ips": [str(x) for x in e["ips"]], "registry": e["registry"]}
                   for h, e in v["expect_table"].items()}


# --------------------------------------------------------------------------------------------
# address_selection

_MODE_IPS = {"IPv4": ("10.1.1.1",), "IPv6": ("fd00::1",), "Dual": ("10.1.1.1", "fd00::1")}


@pytest.mark.parametrize("v", _cases("address_selection"))
def test_address_selection_vector(v: dict[str, Any] | None) -> None:
    conformance_dir("istio-dns")
    assert v is not None
    s = v["service"]
    svc = Service(hostname="svc.example", namespace="ns", name="svc", address=s["default_address"],
                  cluster_vips={k: tuple(x) for k, x in (s.get("cluster_vips") or {}).items()},
                  auto_ipv4=s.get("auto_ipv4"), auto_ipv6=s.get("auto_ipv6"))
    p = v["proxy"]
    proxy = Proxy(ips=_MODE_IPS[p["ip_mode"]], cluster=p.get("cluster_id") or "",
                  dns_capture=bool(p.get("dns_capture")), dns_auto_allocate=bool(p.get("dns_auto_allocate")),
                  waypoint=bool(p.get("waypoint")) or p.get("type") == "waypoint")
    f = v.get("istiod_flags", {})
    flags = IstiodFlags(dual_stack=bool(f.get("ISTIO_DUAL_STACK")), ambient=bool(f.get("PILOT_ENABLE_AMBIENT")),
                        ip_autoallocate=bool(f.get("PILOT_ENABLE_IP_AUTOALLOCATE", True)))
    got = service_addresses(svc, proxy, flags)
    assert (list(got) or None) == v["expect_addresses"]
