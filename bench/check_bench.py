"""`netsim check` over a generated cluster dump: 10,000 workloads with their Services, as a `kubectl get -A
-o yaml` List and as `-o json`. Prints workloads/s end to end (one process per run, pinned to one core when
taskset exists), peak memory, and how many distinct sidecar views and pod templates were computed.
Asserts nothing (speed goals are printed, not tested).

    .venv/bin/python bench/check_bench.py [--workloads 10000] [--namespaces 100] [--templates 40]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def dump(workloads: int, namespaces: int, templates: int, special: int = 10) -> dict[str, Any]:
    """A List of ``workloads`` Deployments (``templates`` distinct pod specs, as charts stamp them) and one
    ClusterIP Service each, spread over ``namespaces`` namespaces, plus the mesh's STRICT policy; one
    workload in 100 without a sidecar (so every STRICT workload has a finding), a mesh-wide DestinationRule
    and one in each of ``special`` namespaces overriding it there (their proxies get a sidecar view of
    their own)."""
    items: list[dict[str, Any]] = [
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "default", "namespace": "istio-system"},
         "spec": {"host": "*.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}]
    for n in range(special):
        items.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                      "metadata": {"name": "local", "namespace": f"team-{n:03d}"},
                      "spec": {"host": f"*.team-{n:03d}.svc.cluster.local",
                               "trafficPolicy": {"tls": {"mode": "DISABLE"}}}})
    for i in range(workloads):
        ns = f"team-{i % namespaces:03d}"
        name = f"svc-{i:05d}"
        t = i % templates
        ports = [{"containerPort": 8080, "name": "http"}, {"containerPort": 9000 + t % 7, "name": "grpc"}]
        ann = {"traffic.sidecar.istio.io/excludeOutboundPorts": str(5000 + t)} if t % 3 == 0 else {}
        items.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
                         "creationTimestamp": "2026-01-01T00:00:00Z", "uid": f"00000000-0000-0000-0000-{i:012d}"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}}, "template": {
                "metadata": {"labels": {"app": name, "version": "v1",
                                        **({"sidecar.istio.io/inject": "false"} if i % 100 == 99 else {})},
                             "annotations": ann},
                "spec": {"containers": [{"name": "app", "image": f"registry.local/app-{t}:1.{t}", "ports": ports,
                                         "resources": {}, "env": [{"name": "MODE", "value": "prod"}]}],
                         "serviceAccountName": "default"}}}})
        items.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"type": "ClusterIP", "clusterIP": f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}",
                     "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                               {"name": "grpc", "port": 9000 + t % 7, "protocol": "TCP"}]}})
    items.append({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                  "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}})
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def run(path: Path) -> tuple[float, float, float, int, dict[str, Any]]:
    """(wall seconds, CPU seconds, peak MiB, exit status, report) of ``check_paths(PATH)`` in a fresh process
    (CPU time, user + system, is what the machine's load does not inflate)."""
    taskset = shutil.which("taskset")
    cmd = [*([taskset, "-c", "0"] if taskset else []), sys.executable, "-c",
           "import json, resource, sys, time; t = time.perf_counter(); "
           "from netsim.check import check_paths; r = check_paths([sys.argv[1]]); "
           "d = time.perf_counter() - t; "
           "print(json.dumps({'seconds': d, 'workloads': r.workloads, 'findings': len(r.findings), "
           "'views': r.views}))", str(path)]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, cpu0 = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         check=False)
    wall = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = max(usage.ru_maxrss, before) / 1024
    cpu = usage.ru_utime + usage.ru_stime - cpu0
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return wall, cpu, peak, out.returncode, {}
    return wall, cpu, peak, 0, json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", type=int, default=10_000)
    ap.add_argument("--namespaces", type=int, default=100)
    ap.add_argument("--templates", type=int, default=40)
    ap.add_argument("--special", type=int, default=10, help="namespaces with a DestinationRule of their own")
    args = ap.parse_args()
    data = dump(args.workloads, args.namespaces, args.templates, args.special)
    with tempfile.TemporaryDirectory() as tmp:
        files = {"yaml": Path(tmp) / "cluster.yaml", "json": Path(tmp) / "cluster.json"}
        try:
            dumper: Any = yaml.CSafeDumper
        except AttributeError:
            dumper = yaml.SafeDumper
        files["yaml"].write_text(yaml.dump(data, Dumper=dumper, sort_keys=False))
        files["json"].write_text(json.dumps(data, indent=4))
        print(f"netsim check: {args.workloads} workloads + {args.workloads} Services in {args.namespaces} namespaces, "
              f"{args.templates} distinct pod templates, {args.special} namespaces overriding the mesh's "
              f"DestinationRule; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for fmt, path in files.items():
            wall, cpu, peak, status, rep = run(path)
            if status:
                print(f"  {fmt}: failed (exit {status})")
                continue
            print(f"  {fmt:4}: {path.stat().st_size / 1e6:5.1f} MB, {wall:5.2f} s end to end "
                  f"({rep['seconds']:.2f} s in check_paths), {rep['workloads'] / wall:7.0f} workloads/s; "
                  f"CPU {cpu:5.2f} s, {rep['workloads'] / cpu:7.0f} workloads/s per CPU second; "
                  f"peak {peak:5.0f} MiB, {rep['views']} sidecar views, {rep['findings']} findings")
    print("  target: >= 2000 workloads/s end to end on one core, <= 1024 MiB")


if __name__ == "__main__":
    main()
