"""A kube-proxy nftables-mode ruleset for ``n`` Services, as ``nft list ruleset`` prints what kube-proxy
writes (pkg/proxy/nftables/proxier.go, read for its shape): table ``ip kube-proxy`` with the sets
``cluster-ips``/``nodeport-ips``, the verdict maps ``service-ips`` (``ip daddr . meta l4proto . th dport``),
``service-nodeports``, ``no-endpoint-services``/``no-endpoint-nodeports``/``firewall-ips``; the base chains
``filter-*`` (priority -110 and 0) and ``nat-*`` (-100, 100); per Service port a ``service-HASH-ns/name/proto/port``
chain (masquerade mark for traffic from outside the pod CIDR, then ``numgen random mod N vmap`` to its
endpoints), per endpoint an ``endpoint-HASH-…`` chain (hairpin masquerade mark, ``dnat``), per NodePort
Service an ``external-HASH-…`` chain; every 50th Service has no endpoints (reject through
``no-endpoint-services``). Used by bench/nft_bench.py (10,000 Services) and the kernel differential (a few).
"""

from __future__ import annotations

import base64
import hashlib

POD_CIDR = "10.0.0.0/8"
SERVICE_CIDR = "172.30.0.0/16"
NODE_IP = "192.168.0.2"


def _hash(name: str) -> str:
    """kube-proxy's chain-name prefix: 8 base32 characters of a SHA-256 of the service port's name."""
    return base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8]


def cluster_ip(i: int) -> str:
    return f"172.30.{i // 250}.{i % 250 + 1}"


def endpoint_ip(i: int, j: int) -> str:
    return f"10.{180 + j}.{i // 250}.{i % 250 + 1}"


def endpoints(i: int) -> int:
    """How many endpoints Service ``i`` has (0 for every 50th: a Service without endpoints)."""
    return 0 if i % 50 == 49 else 1 + i % 3


def node_port(i: int) -> int | None:
    return 30000 + i // 10 if i % 10 == 0 and i // 10 < 2768 else None


def kube_proxy_nft(services: int) -> str:
    """The listing for ``services`` Services (one TCP port 80 each, targetPort 8080)."""
    svc_elems: list[str] = []
    noep_elems: list[str] = []
    np_elems: list[str] = []
    noep_np_elems: list[str] = []
    cluster: list[str] = []
    chains: list[str] = []
    for i in range(services):
        vip, svc = cluster_ip(i), f"ns{i}/svc{i}/tcp/p80"
        cluster.append(vip)
        n = endpoints(i)
        np = node_port(i)
        if n == 0:
            noep_elems.append(f"{vip} . tcp . 80 : goto reject-chain")
            if np is not None:
                noep_np_elems.append(f"tcp . {np} : goto reject-chain")
            continue
        svc_chain = f"service-{_hash(svc)}-{svc}"
        svc_elems.append(f"{vip} . tcp . 80 : goto {svc_chain}")
        eps = [(endpoint_ip(i, j), f"endpoint-{_hash(svc + str(j))}-{svc}__{endpoint_ip(i, j)}/8080")
               for j in range(n)]
        vmap = ", ".join(f"{j} : goto {name}" for j, (_, name) in enumerate(eps))
        chains.append(f"\tchain {svc_chain} {{\n"
                      f"\t\tip daddr {vip} ip saddr != {POD_CIDR} jump mark-for-masquerade\n"
                      f"\t\tnumgen random mod {n} vmap {{ {vmap} }}\n\t}}\n")
        for ep, name in eps:
            chains.append(f"\tchain {name} {{\n\t\tip saddr {ep} jump mark-for-masquerade\n"
                          f"\t\tmeta l4proto tcp dnat to {ep}:8080\n\t}}\n")
        if np is not None:
            ext = f"external-{_hash(svc)}-{svc}"
            np_elems.append(f"tcp . {np} : goto {ext}")
            chains.append(f"\tchain {ext} {{\n\t\tjump mark-for-masquerade\n\t\tgoto {svc_chain}\n\t}}\n")

    def elements(items: list[str]) -> str:
        return "\t\telements = { " + ",\n\t\t\t     ".join(items) + " }\n" if items else ""

    return (
        "table ip kube-proxy {\n"
        '\tcomment "rules for kube-proxy"\n'
        "\tset cluster-ips {\n\t\ttype ipv4_addr\n\t\tcomment \"Active ClusterIPs\"\n" + elements(cluster) + "\t}\n"
        "\tset nodeport-ips {\n\t\ttype ipv4_addr\n\t\tcomment \"IPs that accept NodePort traffic\"\n"
        f"\t\telements = {{ {NODE_IP} }}\n\t}}\n"
        "\tmap firewall-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n"
        '\t\tcomment "destinations that are subject to LoadBalancerSourceRanges"\n\t}\n'
        "\tmap no-endpoint-nodeports {\n\t\ttype inet_proto . inet_service : verdict\n"
        '\t\tcomment "vmap to drop or reject packets to service nodeports with no endpoints"\n'
        + elements(noep_np_elems) + "\t}\n"
        "\tmap no-endpoint-services {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n"
        '\t\tcomment "vmap to drop or reject packets to services with no endpoints"\n' + elements(noep_elems) + "\t}\n"
        "\tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n"
        '\t\tcomment "ClusterIP, ExternalIP and LoadBalancer IP traffic"\n' + elements(svc_elems) + "\t}\n"
        "\tmap service-nodeports {\n\t\ttype inet_proto . inet_service : verdict\n"
        '\t\tcomment "NodePort traffic"\n' + elements(np_elems) + "\t}\n"
        "\tchain cluster-ips-check {\n"
        '\t\tip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"\n'
        f'\t\tip daddr {SERVICE_CIDR} drop comment "Drop traffic to unallocated ClusterIPs"\n\t}}\n'
        "\tchain filter-prerouting-pre-dnat {\n\t\ttype filter hook prerouting priority dstnat - 10; policy accept;\n"
        "\t\tct state new jump firewall-check\n\t}\n"
        "\tchain filter-forward {\n\t\ttype filter hook forward priority filter; policy accept;\n"
        "\t\tct state new jump service-endpoints-check\n\t\tct state new jump cluster-ips-check\n\t}\n"
        "\tchain filter-input {\n\t\ttype filter hook input priority filter; policy accept;\n"
        "\t\tct state new jump nodeport-endpoints-check\n\t\tct state new jump service-endpoints-check\n\t}\n"
        "\tchain filter-output {\n\t\ttype filter hook output priority filter; policy accept;\n"
        "\t\tct state new jump service-endpoints-check\n\t\tct state new jump cluster-ips-check\n\t}\n"
        "\tchain filter-output-pre-dnat {\n\t\ttype filter hook output priority -110; policy accept;\n"
        "\t\tct state new jump firewall-check\n\t}\n"
        "\tchain firewall-check {\n\t\tip daddr . meta l4proto . th dport vmap @firewall-ips\n\t}\n"
        "\tchain mark-for-masquerade {\n\t\tmeta mark set meta mark | 0x00004000\n\t}\n"
        "\tchain masquerading {\n\t\tmeta mark & 0x00004000 == 0x00000000 return\n"
        "\t\tmeta mark set meta mark ^ 0x00004000\n\t\tmasquerade fully-random\n\t}\n"
        "\tchain nat-output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}\n"
        "\tchain nat-postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        "\t\tjump masquerading\n\t}\n"
        "\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        "\t\tjump services\n\t}\n"
        "\tchain nodeport-endpoints-check {\n"
        "\t\tip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports\n\t}\n"
        '\tchain reject-chain {\n\t\tcomment "helper for @no-endpoint-services / @no-endpoint-nodeports"\n'
        "\t\treject\n\t}\n"
        "\tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n"
        "\t\tip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports\n\t}\n"
        "\tchain service-endpoints-check {\n"
        "\t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t}\n"
        + "".join(chains) + "}\n"
    )


def kube_proxy_nft_transaction(services: int) -> str:
    """The same ruleset as the ``nft -f`` transaction kube-proxy pipes to nft (pkg/proxy/nftables writes ``add``
    commands, one object, rule or element a line): the table, every chain (base chains with their spec), the
    sets and maps, one ``add element`` per element, then every rule; made from :func:`kube_proxy_nft`'s
    listing, so both read as the same ruleset."""
    lines = kube_proxy_nft(services).split("\n")
    fam_table = ""
    chains: list[str] = []
    sets: list[str] = []
    elements: list[str] = []
    rules: list[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i].strip()
        i += 1
        if ln.startswith("table "):
            fam_table = ln[len("table "):-2]
        elif ln.startswith(("set ", "map ")):
            kind, name = ln.split(" ")[:2]
            spec: list[str] = []
            while (body := lines[i].strip()) != "}":
                i += 1
                if body.startswith("elements = {"):
                    items = [body[len("elements = {"):]]
                    while not items[-1].rstrip().endswith("}"):
                        items.append(lines[i].strip())
                        i += 1
                    items[-1] = items[-1].rstrip()[:-1]
                    elements += [f"add element {fam_table} {name} {{ {e.strip()} }}"
                                 for e in " ".join(items).split(",")]
                else:
                    spec.append(body)
            i += 1
            sets.append(f"add {kind} {fam_table} {name} {{ {' ; '.join(spec)} ; }}")
        elif ln.startswith("chain "):
            name = ln.split(" ")[1]
            base = ""
            while (body := lines[i].strip()) != "}":
                i += 1
                if body.startswith("type "):
                    base = f" {{ {body.replace(';', ' ;')} }}"
                elif not body.startswith("comment "):
                    rules.append(f"add rule {fam_table} {name} {body}")
            i += 1
            chains.append(f"add chain {fam_table} {name}{base}")
    return "\n".join([f"add table {fam_table}", *chains, *sets, *elements, *rules]) + "\n"


__all__ = ["NODE_IP", "POD_CIDR", "SERVICE_CIDR", "cluster_ip", "endpoint_ip", "endpoints", "kube_proxy_nft",
           "kube_proxy_nft_transaction", "node_port"]
