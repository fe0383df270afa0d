"""Mesh benchmark: hop decisions per second on a generated mesh, and ``netsim diagnose`` cold start.

Targets (issue 8): >= 20,000 hop decisions/s in-process on 5,000 services with 20,000 endpoints
(listeners indexed by port and address, no scan over services per decision); ``netsim diagnose``
cold start on a 500-object config <= 0.5 s (median of 5). Prints figures; asserts nothing.
Run: .venv/bin/python bench/mesh_bench.py
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(services: int, endpoints: int, *, pods: bool = False) -> str:
    """A mesh: 80% ClusterIP (http + tcp port), 10% headless (tcp), 10% ServiceEntries; ``endpoints``
    addresses spread over the EndpointSlices of the Kubernetes services."""
    docs: list[str] = []
    k8s = [i for i in range(services) if i % 10 != 9]
    per = {i: endpoints // len(k8s) + (1 if n < endpoints % len(k8s) else 0) for n, i in enumerate(k8s)}
    first = {}
    total = 0
    for i in k8s:
        first[i] = total
        total += per[i]
    for i in range(services):
        ns = f"ns{i % 50}"
        kind = "se" if i % 10 == 9 else ("headless" if i % 10 == 8 else "cip")
        a, b = divmod(i, 250)
        if kind == "se":
            docs.append(f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: se{i}, namespace: "
                        f"{ns}}}\nspec:\n  hosts: [svc{i}.example.com]\n  addresses: [172.16.{a}.{b + 1}]\n"
                        f"  resolution: DNS\n  ports: [{{number: 443, name: tls, protocol: TLS}}, "
                        f"{{number: 80, name: http, protocol: HTTP}}]\n")
            continue
        cip = "None" if kind == "headless" else f"10.96.{a}.{b + 1}"
        ports = "[{name: tcp-db, port: 5432}]" if kind == "headless" else \
            "[{name: http, port: 80, targetPort: 8080}, {name: grpc-api, port: 9090}, {name: tcp, port: 7000}]"
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: {ns}}}\n"
                    f"spec:\n  clusterIP: {cip}\n  selector: {{app: svc{i}}}\n  ports: {ports}\n")
        eps = "".join(f"- addresses: [10.{100 + (first[i] + j) // 65025 % 100}."
                      f"{(first[i] + j) // 255 % 255}.{(first[i] + j) % 255 + 1}]\n" for j in range(per[i]))
        docs.append(f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc{i}-abc, namespace: "
                    f"{ns}, labels: {{kubernetes.io/service-name: svc{i}}}}}\naddressType: IPv4\nendpoints:\n{eps}")
        if pods:
            docs.append(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: svc{i}-0, namespace: {ns}, labels: {{app: "
                        f"svc{i}}}}}\nspec:\n  containers: [{{name: app, image: app, "
                        f"ports: [{{containerPort: 8080}}]}}]\nstatus: {{podIP: 10.200.{a}.{b + 1}}}\n")
    return "---\n".join(docs)


def hop_rate(services: int = 5000, endpoints: int = 20000, decisions: int = 100_000) -> None:
    from netsim.mesh import Connection, Direction, MeshConfig, Send, build_index, hop, make_proxy, mesh_profile
    from netsim.mesh.objects import convert, parse_text

    text = generate(services, endpoints)
    t0 = time.perf_counter()
    parsed = parse_text(text, "generated.yaml")
    objects = convert(parsed.objects)
    t1 = time.perf_counter()
    mesh = MeshConfig()
    proxy = make_proxy(objects, mesh, ips=("10.250.0.1",), namespace="ns0")
    index = build_index(objects, proxy, mesh_profile(None), mesh)
    t2 = time.perf_counter()
    n_eps = sum(len(s.endpoints) for s in objects.services)
    print(f"generated mesh: {len(objects.services):,} services, {n_eps:,} endpoints, "
          f"{len(index.exact) + len(index.wildcard):,} outbound listeners, {len(index.clusters):,} clusters")
    print(f"  parse + convert {t1 - t0:.2f} s; build_index {t2 - t1:.2f} s (once per proxy)")
    rng = random.Random(8)
    conns = []
    svcs = objects.services
    for _ in range(2000):
        s = rng.choice(svcs)
        r = rng.random()
        if s.kind == "ServiceEntry":
            conns.append(Connection(direction=Direction.OUTBOUND, dst_ip=s.address, dst_port=443, send=Send.TLS,
                                    host=s.hostname))
        elif s.headless and s.endpoints:
            conns.append(Connection(direction=Direction.OUTBOUND, dst_ip=rng.choice(s.endpoints).address,
                                    dst_port=5432))
        elif r < 0.4:
            conns.append(Connection(direction=Direction.OUTBOUND, dst_ip=s.address, dst_port=80, send=Send.HTTP,
                                    host=s.hostname))
        elif r < 0.7:
            conns.append(Connection(direction=Direction.OUTBOUND, dst_ip=s.address, dst_port=7000))
        elif r < 0.9:
            conns.append(Connection(direction=Direction.OUTBOUND, dst_ip=s.address, dst_port=9090, send=Send.HTTP,
                                    host=f"{s.name}.{s.namespace}:9090"))
        else:
            conns.append(Connection(direction=Direction.OUTBOUND, dst_ip=f"203.0.113.{rng.randrange(1, 255)}",
                                    dst_port=rng.choice((80, 443, 8443))))
    verdicts: dict[str, int] = {}
    for c in conns:
        v = hop(index, c).verdict.value
        verdicts[v] = verdicts.get(v, 0) + 1
    start = time.perf_counter()
    for i in range(decisions):
        hop(index, conns[i % len(conns)])
    rate = decisions / (time.perf_counter() - start)
    print(f"  verdict mix: {verdicts}")
    print(f"hop decisions: {rate:,.0f}/s in-process (target >= 20,000)")


def diagnose_cold_start(runs: int = 5) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "mesh.yaml"
        text = generate(180, 324, pods=True)  # 162 x (Service + EndpointSlice + Pod) + 18 SEs = 504 objects
        cfg.write_text(text)
        n_objects = text.count("\nkind: ") + text.startswith("kind: ")
        pod = Path(tmp) / "pod.yaml"
        pod.write_text(text.split("---\n")[2])
        code = ("import sys; from netsim.mesh.cli import diagnose_cmd; "
                "diagnose_cmd.main(sys.argv[1:], prog_name='netsim diagnose')")
        argv = [sys.executable, "-c", code, "--pod", str(pod), "--config", str(cfg)]
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            times.append(time.perf_counter() - start)
            if r.returncode not in (0, 1):
                raise SystemExit(f"diagnose failed: {r.stderr}")
        py = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            py.append(time.perf_counter() - start)
    print(f"netsim diagnose cold start on {n_objects} objects: median {statistics.median(times) * 1000:.0f} ms "
          f"(min {min(times) * 1000:.0f}; python -c pass {statistics.median(py) * 1000:.0f} ms; target <= 500 ms)")


def main() -> None:
    hop_rate()
    diagnose_cold_start()


if __name__ == "__main__":
    main()
