"""Cross-command consistency (issue 11, "Done when"): ``trace --pod … --config``, ``mesh hop``,
``dns query --pod`` and ``diagnose`` asked about the same connection must agree.

Every connection comes from the data the project already trusts: each ``mesh hop`` step of the four
worked examples in ``rules/mesh/*/example.yaml`` (the proxy is the example's pod file whose IP is the
hop's ``--proxy-ip``) and each case of ``../shared/conformance/istio-mesh`` (read in place; its proxy has
no pod file, so one is written with the case's proxy IP, namespace and labels). For each, the four
commands are run as a user runs them (CliRunner, ``--format json``) and compared on:

- the listener, filter chain, cluster, upstream TLS and verdict: trace's ``mesh`` block = mesh hop;
- the verdict: trace's own verdict is ``captured-*`` exactly when the hop's is not ``bypass``, and then
  ``listener.owner`` is the sidecar; a bypass has no mesh block; ``--expect`` on trace and mesh hop turns
  that verdict into exit status 0 (and another into 1);
- the name's address: when the pod's agent answers the hop's ``--host``, a connection to the answered
  address reaches the same cluster as the hop's (in mesh hop and in trace), and when the hop's cluster
  is a Service's own (``outbound|P||host``) on an address-specific listener the agent's answer for
  ``host`` holds the hop's destination;
- diagnose: each finding of a pitfall a hop can show (NS0001 bypass, NS0003 a match-all 0.0.0.0_PORT,
  NS0004 tls-error) names a connection that ``mesh hop`` shows failing that way, and each hop of the
  pod that shows such a failure has the finding; NS0007 names a ServiceEntry host exactly when the pod's
  agent does not answer it (``dns query --pod``).

The README walkthrough of rules/mesh (``diagnose`` first, then ``trace``, ``mesh hop``, ``dns query``) is run
line by line with the exit status and answers its comments promise.

A disagreement is a bug: it is fixed, or the case is ``xfail(strict=True)`` with the disagreement.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from conftest import CONFORMANCE, REPO, conformance_dir

from netsim.cli import cli
from netsim.errors import NetsimError

EXAMPLES = REPO / "rules" / "mesh"
PEER = "10.250.0.9"  # an arriving connection's source for inbound traces (outside every example's ranges)
# the hop keys trace's mesh block must repeat
HOP_KEYS = ("direction", "listener", "filter_chain", "filter_chain_match", "route_config", "virtual_host",
            "cluster", "cluster_type", "upstream_tls", "verdict")
# diagnose codes whose failure a single hop shows, and how
HOP_CODES = {"NS0001": "inbound-port-not-captured", "NS0003": "wildcard-tcp-listener",
             "NS0004": "mtls-to-pod-without-sidecar"}


@dataclass(frozen=True)
class Scenario:
    """One connection as mesh hop is asked about it, and the files the other commands need."""

    id: str
    folder: Path
    configs: tuple[Path, ...]
    mesh_config: Path | None
    pod: Path | None  # the proxy's manifest; None: written in tmp_path (conformance cases)
    version: str | None
    proxy_ip: str
    namespace: str | None
    labels: str | None
    direction: str
    dst: tuple[str, int]
    send: str
    host: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def _opt(argv: list[str], name: str) -> str | None:
    return str(argv[argv.index(name) + 1]) if name in argv else None


def _scenario(sid: str, folder: Path, argv: list[str], configs: tuple[Path, ...], mesh_config: Path | None,
              pod: Path | None) -> Scenario:
    ip, _, port = str(_opt(argv, "--dst")).rpartition(":")
    return Scenario(id=sid, folder=folder, configs=configs, mesh_config=mesh_config, pod=pod,
                    version=_opt(argv, "--istio-version"), proxy_ip=str(_opt(argv, "--proxy-ip")),
                    namespace=_opt(argv, "--namespace"), labels=_opt(argv, "--labels"),
                    direction=_opt(argv, "--direction") or "outbound", dst=(ip.strip("[]"), int(port)),
                    send=_opt(argv, "--send") or "tcp", host=_opt(argv, "--host"))


def _pod_ip(path: Path) -> str | None:
    """The manifest's pod IP; for a Deployment, that of the Pod in objects.yaml its template's labels select."""
    doc = next(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))
    if doc["kind"] == "Pod":
        return str(doc["status"]["podIP"])
    labels = doc["spec"]["template"]["metadata"]["labels"]
    for obj in yaml.safe_load_all((path.parent / "objects.yaml").read_text()):
        meta = (obj or {}).get("metadata", {})
        if (obj or {}).get("kind") == "Pod" and labels.items() <= (meta.get("labels") or {}).items():
            return str(obj["status"]["podIP"])
    return None


def _example_scenarios() -> list[Scenario]:
    out = []
    for ex in sorted(EXAMPLES.glob("*/example.yaml")):
        folder = ex.parent
        pods = {_pod_ip(p): p for p in sorted(folder.glob("*.yaml")) if p.name not in ("objects.yaml", "example.yaml")}
        for i, step in enumerate(yaml.safe_load(ex.read_text())["steps"]):
            argv = [str(a) for a in step["argv"]]
            if argv[:2] != ["mesh", "hop"]:
                continue
            pod = pods.get(_opt(argv, "--proxy-ip"))
            assert pod is not None, f"{ex}: step {i}: no pod file in {folder} has IP {_opt(argv, '--proxy-ip')}"
            out.append(_scenario(f"{folder.name}/{i}", folder, argv, (folder / str(_opt(argv, "--config")),), None,
                                 pod))
    return out


def _conformance_scenarios() -> list[Scenario]:
    root = CONFORMANCE / "istio-mesh"
    if not root.is_dir():
        return []
    out = []
    for case in sorted(root.glob("*/case.yaml")):
        data = yaml.safe_load(case.read_text())
        if not data.get("runnable", True):
            continue
        mesh = case.parent / "mesh.yaml"
        out.append(_scenario(f"conformance/{data['id']}", case.parent, [str(a) for a in data["args"]],
                             (case.parent / "objects.yaml",), mesh if mesh.is_file() else None, None))
    return out


# Disagreements found by this suite and not fixed here: id → the precise disagreement (xfail, strict).
KNOWN: dict[str, str] = {}


def _params() -> list[Any]:
    scenarios = _example_scenarios() + _conformance_scenarios()
    params: list[Any] = [pytest.param(s, id=s.id, marks=[pytest.mark.xfail(strict=True, reason=KNOWN[s.id])]
                                      if s.id in KNOWN else []) for s in scenarios]
    if not (CONFORMANCE / "istio-mesh").is_dir():
        params.append(pytest.param(None, id="conformance-absent"))
    return params


def run(argv: list[str], *, codes: tuple[int, ...] = (0,)) -> Any:
    result = CliRunner().invoke(cli, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code in codes, f"netsim {' '.join(argv)} → exit {result.exit_code}\n{result.output}"
    return json.loads(result.stdout)


def _pod_file(s: Scenario, tmp: Path) -> Path:
    """The proxy's manifest: the example's own, or a Pod with the conformance case's IP, namespace and labels."""
    if s.pod is not None:
        return s.pod
    labels = dict(kv.split("=", 1) for kv in s.labels.split(",")) if s.labels else {}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "proxy", "namespace": s.namespace or "default", "labels": labels},
           "spec": {"containers": [{"name": "app", "image": "app"}]}, "status": {"podIP": s.proxy_ip}}
    path = tmp / "proxy-pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    return path


def _common(s: Scenario) -> list[str]:
    argv = ["--config", *map(str, s.configs)]
    if s.mesh_config is not None:
        argv += ["--mesh-config", str(s.mesh_config)]
    return argv + (["--istio-version", s.version] if s.version else [])


def _send(s: Scenario) -> list[str]:
    return ["--send", s.send] + (["--host", s.host] if s.host else [])


def mesh_hop(s: Scenario, dst: tuple[str, int] | None = None, direction: str | None = None) -> Any:
    ip, port = dst or s.dst
    argv = ["mesh", "hop", *_common(s), "--proxy-ip", s.proxy_ip, "--direction", direction or s.direction,
            "--dst", f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}", *_send(s), "--format", "json"]
    if s.namespace:
        argv += ["--namespace", s.namespace]
    if s.labels:
        argv += ["--labels", s.labels]
    return run(argv)


def trace(s: Scenario, pod: Path, dst: tuple[str, int] | None = None, expect: tuple[str, int] | None = None) -> Any:
    ip, port = dst or s.dst
    where = ["--from", PEER] if s.direction == "inbound" else []
    check = ["--expect", expect[0]] if expect else []
    return run(["trace", "--pod", str(pod), *_common(s), *where, "--dst", f"{ip}:{port}", *_send(s), *check,
                "--format", "json"], codes=(expect[1],) if expect else (0,))


def dns_query(s: Scenario, pod: Path, name: str) -> Any:
    argv = ["dns", "query", name, "--pod", str(pod), "--config", *map(str, s.configs), "--format", "json"]
    if s.mesh_config is not None:
        argv += ["--mesh-config", str(s.mesh_config)]
    return run(argv + (["--istio-version", s.version] if s.version else []))


def diagnose(s: Scenario, pod: Path) -> Any:
    argv = ["diagnose", "--pod", str(pod), *_common(s), "--format", "json"]
    return run(argv, codes=(0, 1))


def _answered(reply: Any) -> list[str]:
    """The addresses the pod's agent answers itself (none when it forwards the name upstream)."""
    if reply.get("handled_by") == "upstream":
        return []
    out = []
    for rr in reply.get("answer", []):
        text = rr.get("data", rr.get("address")) if isinstance(rr, dict) else str(rr).split()[-1]
        try:
            out.append(str(ipaddress.ip_address(str(text))))
        except ValueError:
            continue
    return out


def _hop_failure(h: Any) -> str | None:
    """The diagnose code whose failure this hop shows, if any."""
    if h["direction"] == "inbound" and h["verdict"] == "bypass":
        return "NS0001"
    if h["verdict"] == "tls-error":
        return "NS0004"
    if (h["direction"] == "outbound" and re.fullmatch(r"0\.0\.0\.0_\d+", h["listener"] or "")
            and h.get("filter_chain_match") == "ALL" and h["cluster"] not in (None, "PassthroughCluster")):
        return "NS0003"
    return None


@pytest.mark.parametrize("s", _params())
def test_commands_agree(s: Scenario | None, tmp_path: Path) -> None:
    if s is None:
        conformance_dir("istio-mesh")  # skips, naming the path
        return
    pod = _pod_file(s, tmp_path)
    hop = mesh_hop(s)
    if ipaddress.ip_address(s.proxy_ip).is_loopback:
        # Istio's simulation gives this proxy 127.0.0.1, which no pod has: trace refuses it in one Error line
        # (istio-iptables fails on such a pod), and diagnose must not answer "none found" without saying so
        result = CliRunner().invoke(cli, ["trace", "--pod", str(pod), *_common(s), "--dst", f"{s.dst[0]}:{s.dst[1]}"])
        assert isinstance(result.exception, NetsimError), result.output
        assert "loopback" in str(result.exception), result.exception
        notes = diagnose(s, pod)["notes"]
        assert any(str(result.exception) in n and "could not run" in n for n in notes), notes
        return
    t = trace(s, pod)

    # the verdict: captured by the sidecar exactly when the hop does not say the port bypasses it
    if hop["verdict"] == "bypass":
        assert t["verdict"] == "bypassed", (t["verdict"], t["summary"])
        assert t["listener"] is None and t.get("mesh") is None, t["summary"]
    else:
        assert t["verdict"] == f"captured-{s.direction}", (t["verdict"], t["summary"])
        assert t["listener"] is not None and t["listener"]["owner"] == "sidecar", t["listener"]
        assert t["decided_by"] is not None, t["reason"]
        # the listener, chain, cluster and the hop's verdict: trace's mesh block is mesh hop's answer
        diff = {k: (hop[k], t["mesh"].get(k)) for k in HOP_KEYS if hop[k] != t["mesh"].get(k)}
        assert not diff, f"mesh hop vs trace's mesh block: {diff}\nhop: {hop['reason']}\ntrace: {t['summary']}"
        assert t["mesh"]["reason"] in t["summary"], t["summary"]
    # --expect turns the same verdict into the exit status, on both commands
    held, other = ("bypassed", "captured") if hop["verdict"] == "bypass" else ("captured", "bypassed")
    trace(s, pod, expect=(held, 0))
    trace(s, pod, expect=(other, 1))
    ip, port = s.dst
    wrong = "blackhole" if hop["verdict"] != "blackhole" else "captured"
    for verdict, code in ((hop["verdict"], 0), (wrong, 1)):
        run(["mesh", "hop", *_common(s), "--proxy-ip", s.proxy_ip, "--direction", s.direction, "--dst",
             f"{ip}:{port}", *_send(s), *(["--namespace", s.namespace] if s.namespace else []),
             *(["--labels", s.labels] if s.labels else []), "--expect", verdict, "--format", "json"], codes=(code,))

    # the name's address: what the pod's agent answers for the host leads to the same cluster
    if s.host and s.direction == "outbound":
        answered = _answered(dns_query(s, pod, s.host))
        for ip in answered:
            if ip == s.dst[0]:
                continue
            other = mesh_hop(s, dst=(ip, s.dst[1]))
            assert other["cluster"] == hop["cluster"], (
                f"{s.host} answers {ip}, whose hop reaches {other['cluster']}, not {hop['cluster']} as via {s.dst}")
            t2 = trace(s, pod, dst=(ip, s.dst[1]))
            assert t2["mesh"]["cluster"] == other["cluster"], (t2["mesh"]["cluster"], other["cluster"])
    m = re.fullmatch(r"outbound\|(\d+)\|\|(.+)", hop["cluster"] or "")
    if m and s.direction == "outbound" and hop["listener"] == f"{s.dst[0]}_{s.dst[1]}":
        answered = _answered(dns_query(s, pod, m.group(2)))
        if answered:
            assert s.dst[0] in answered, f"{m.group(2)}: the agent answers {answered}, the hop's listener is {s.dst}"

    # diagnose: the hop's failure has its finding on the same pod and release
    report = diagnose(s, pod)
    found = {f["check"] for f in report["findings"]}
    failure = _hop_failure(hop)
    if failure is not None:
        assert failure in found, f"mesh hop shows {HOP_CODES[failure]} ({hop['reason']}); diagnose: {found or 'none'}"
    assert_findings_agree(report, s, pod)


def _namespace(pod: Path) -> str:
    doc = next(d for d in yaml.safe_load_all(pod.read_text()) if isinstance(d, dict))
    return str(doc["metadata"].get("namespace", "default"))


_ENDPOINT = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})\b")


def _pods_for_diagnose() -> list[Any]:
    """Every (pod, release) a worked example diagnoses, and each conformance case's proxy."""
    out = []
    for ex in sorted(EXAMPLES.glob("*/example.yaml")):
        for i, step in enumerate(yaml.safe_load(ex.read_text())["steps"]):
            argv = [str(a) for a in step["argv"]]
            if argv[0] == "diagnose":
                out.append(pytest.param(ex.parent, argv, id=f"{ex.parent.name}/{i}"))
    return out


@pytest.mark.parametrize(("folder", "argv"), _pods_for_diagnose())
def test_each_finding_is_a_hop_that_fails(folder: Path, argv: list[str]) -> None:
    """The converse, for every diagnose step of the worked examples."""
    pod = folder / str(_opt(argv, "--pod"))
    report = run([*(str(folder / a) if (folder / a).is_file() else a for a in argv)], codes=(0, 1))
    base = Scenario(id="", folder=folder, configs=(folder / str(_opt(argv, "--config")),), mesh_config=None, pod=pod,
                    version=_opt(argv, "--istio-version"), proxy_ip=str(_pod_ip(pod)), namespace=_namespace(pod),
                    labels=None, direction="outbound", dst=("0.0.0.0", 0), send="tcp", host=None)
    assert_findings_agree(report, base, pod)


def assert_findings_agree(report: Any, base: Scenario, pod: Path) -> None:
    """A finding of NS0001/NS0003/NS0004 names a connection that mesh hop, asked as the same proxy, shows
    failing that way; NS0007 names a ServiceEntry host exactly when the pod's agent does not answer it."""
    ip = base.proxy_ip
    base = replace(base, direction="outbound", send="tcp", host=None)
    unresolvable = {re.search(r"\(host (\S+)\)", f["message"]).group(1)  # type: ignore[union-attr]
                    for f in report["findings"] if f["check"] == "NS0007"}
    for host in sorted(unresolvable | _se_hosts_without_addresses(base.configs)):
        answered = _answered(dns_query(base, pod, host))
        assert bool(answered) != (host in unresolvable), (
            f"{host}: the pod's agent answers {answered or 'nothing'}, diagnose "
            f"{'finds' if host in unresolvable else 'does not find'} NS0007")
    for f in report["findings"]:
        if f["check"] not in HOP_CODES:
            continue
        text = " ".join([f["message"], *(e["what"] for e in f["evidence"])])
        if f["check"] == "NS0001":
            ports = sorted({int(p) for p in re.findall(r"\bport (\d+)\b", text)})
            assert ports, f"NS0001 names no port: {text}"
            hops = [mesh_hop(base, dst=(ip, p), direction="inbound") for p in ports]
            assert any(h["verdict"] == "bypass" for h in hops), f"{f['message']}: {[h['verdict'] for h in hops]}"
        elif f["check"] == "NS0003":
            port = int(re.search(r"0\.0\.0\.0_(\d+)", text).group(1))  # type: ignore[union-attr]
            cluster = re.search(r"outbound\|\S+", text).group(0)  # type: ignore[union-attr]
            h = mesh_hop(base, dst=(ANY_IP, port))  # "any IP on port P without its own ip_P listener"
            assert (h["listener"], h["cluster"]) == (f"0.0.0.0_{port}", cluster), (f["message"], h["reason"])
        else:
            # the cluster's own address (a Service's ClusterIP) and the endpoints the finding names
            m = re.search(r"outbound\|(\d+)\|\|(\S+)", text)
            assert m is not None, f"NS0004 names no cluster: {text}"
            port, host = int(m.group(1)), m.group(2)
            svc = _service(base.configs, host)
            targets = [(ip, int(p)) for ip, p in _ENDPOINT.findall(text)]
            if svc is not None and svc["spec"].get("clusterIP") not in (None, "None"):
                targets.append((svc["spec"]["clusterIP"], port))
            http = svc is not None and any(str(sp.get("name", "")).startswith("http") or sp.get("appProtocol") == "http"
                                           for sp in svc["spec"].get("ports", []) if sp.get("port") == port)
            ask = replace(base, send="http", host=host) if http else base
            hops = [mesh_hop(ask, dst=t) for t in sorted(set(targets))]
            assert any(h["verdict"] == "tls-error" and h["cluster"] == m.group(0) for h in hops), (
                f["message"], [h["reason"] for h in hops])


def _se_hosts_without_addresses(configs: tuple[Path, ...]) -> set[str]:
    """Hosts of ServiceEntries without addresses whose name kube-dns cannot know (not a public TLD: diagnose's
    NS0007 leaves those to real DNS)."""
    out = set()
    for obj in (o for path in configs for o in yaml.safe_load_all(path.read_text()) if isinstance(o, dict)):
        spec = obj.get("spec") or {}
        if obj.get("kind") == "ServiceEntry" and not spec.get("addresses"):
            out |= {h for h in spec.get("hosts", []) if not h.startswith("*")
                    and not re.search(r"\.(com|org|net|io|dev|cloud|app|co|edu|gov|info|biz|[a-z]{2})$", h)}
    return out


ANY_IP = "192.0.2.77"  # TEST-NET-1: an address no example's objects know


def _service(configs: tuple[Path, ...], host: str) -> Any:
    for obj in (o for path in configs for o in yaml.safe_load_all(path.read_text())):
        meta = (obj or {}).get("metadata", {})
        if (obj or {}).get("kind") == "Service" and host.startswith(f"{meta.get('name')}.{meta.get('namespace')}.svc"):
            return obj
    return None


def _readme_lines() -> list[tuple[str, str, str]]:
    """(folder, command, comment) for each `netsim` line of rules/mesh/README.md's walkthrough, in order."""
    text = (EXAMPLES / "README.md").read_text()
    block = text[text.index("```sh\n") + 6:]
    block = block[:block.index("```")]
    folder, out = REPO, []
    for line in block.splitlines():
        command, _, comment = line.partition("#")
        command = command.strip()
        if command.startswith("cd "):
            folder = (folder / command[3:]).resolve()
        elif command:
            assert command.startswith("netsim "), line
            out.append((str(folder.relative_to(REPO)), command, comment.strip()))
    return out


def test_readme_walkthrough_covers_the_four_examples_in_the_new_user_order() -> None:
    lines = _readme_lines()
    folders = {f for f, _, _ in lines}
    assert folders == {f"rules/mesh/{p.parent.name}" for p in EXAMPLES.glob("*/example.yaml")}
    for folder in folders:
        commands = [c.split()[1] for f, c, _ in lines if f == folder]
        assert commands[0] == "diagnose", (folder, commands)
        assert {"trace", "mesh", "dns"} <= set(commands), (folder, commands)


@pytest.mark.parametrize(("folder", "command", "comment"), _readme_lines(),
                         ids=[f"{f.rsplit('/', 1)[-1]}:{i}" for i, (f, _, _) in enumerate(_readme_lines())])
def test_readme_walkthrough_line(folder: str, command: str, comment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each line runs as written from its folder, with the exit status and findings its comment promises."""
    monkeypatch.chdir(REPO / folder)
    result = CliRunner().invoke(cli, command.split()[1:])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == (1 if "exit status 1" in comment else 0), result.output
    for code in re.findall(r"NS\d{4}", comment):
        assert code in result.stdout, (code, result.stdout)
    if comment.startswith("today: nothing found") or "nothing found" in comment:
        assert "none of the" in result.stdout, result.stdout
    if "no DNS proxy" in comment or "kube-dns" in comment:
        assert "not answered by an agent" in result.stdout, result.stdout
    for ip in re.findall(r"\b\d+\.\d+\.\d+\.\d+\b", comment):
        assert f"IN\tA\t{ip}" in result.stdout, result.stdout


def test_bypass_sentence_names_the_empty_nat_chain_not_an_absent_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Walked through: 1.2's server pod has a nat table (outbound capture) but no PREROUTING rule (-b empty); the
    sentence said "nat table absent"."""
    monkeypatch.chdir(EXAMPLES / "mtls-503-containerport")
    out = run(["trace", "--pod", "pod.yaml", "--config", "objects.yaml", "--istio-version", "1.2", "--from",
               "10.244.1.20", "--dst", "10.244.1.10:80", "--format", "json"])
    assert out["verdict"] == "bypassed" and out["decided_by"] is None
    assert out["summary"].endswith("because no nat rule saw it (nat PREROUTING has no rules)."), out["summary"]
