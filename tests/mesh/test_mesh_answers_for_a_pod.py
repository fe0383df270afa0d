"""Issue 11 §5-7 for `mesh hop` and `diagnose`: what the answer rests on is said (a proxy IP with no pod,
clusters without endpoints, ignored kinds), `--expect`, the 15006 loop guard, and diagnose's coded findings
(plaintext to a STRICT peer, one host in two namespaces, clusters without endpoints), each derived from
`mesh hop`'s own decision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from netsim.cli import cli

# A Redis StatefulSet behind a headless Service, STRICT mTLS in its namespace; the cluster bus 16379 is a
# containerPort that no Service declares.
REDIS = """\
apiVersion: v1
kind: Service
metadata: {name: redis, namespace: data}
spec:
  clusterIP: None
  selector: {app: redis}
  ports: [{name: tcp-redis, port: 6379}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: data}
spec: {mtls: {mode: STRICT}}
---
apiVersion: v1
kind: Pod
metadata: {name: redis-0, namespace: data, labels: {app: redis, security.istio.io/tlsMode: istio}}
spec: {containers: [{name: redis, image: redis, ports: [{containerPort: 6379}, {containerPort: 16379}]}]}
status: {podIP: 10.8.0.10}
---
apiVersion: v1
kind: Pod
metadata: {name: redis-1, namespace: data, labels: {app: redis, security.istio.io/tlsMode: istio}}
spec: {containers: [{name: redis, image: redis, ports: [{containerPort: 6379}, {containerPort: 16379}]}]}
status: {podIP: 10.8.0.11}
"""

STS = """\
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: redis, namespace: data}
spec:
  serviceName: redis
  selector: {matchLabels: {app: redis}}
  template:
    metadata:
      labels: {app: redis}
    spec:
      containers:
      - name: redis
        image: redis
        ports: [{containerPort: 6379}, {containerPort: 16379}]
"""

EXTRAS = """\
apiVersion: v1
kind: Service
metadata: {name: api, namespace: data}
spec:
  clusterIP: 10.96.7.7
  selector: {app: api}
  ports: [{name: tcp-api, port: 7000}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua, namespace: data}
spec: {configPatches: []}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: data}
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name, text in (("objects.yaml", REDIS), ("sts.yaml", STS), ("extras.yaml", EXTRAS)):
        (tmp_path / name).write_text(text)
        out[name] = str(tmp_path / name)
    return out


def run(*argv: str) -> Result:
    r = CliRunner().invoke(cli, list(argv))
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


def hop_json(files: dict[str, str], *argv: str, configs: tuple[str, ...] = ("objects.yaml",)) -> dict[str, object]:
    r = run("mesh", "hop", "--config", *(files[c] for c in configs), *argv, "--format", "json")
    assert r.exit_code == 0, r.output
    out: dict[str, object] = json.loads(r.stdout)
    return out


def diagnose_json(files: dict[str, str], *argv: str, exit_code: int = 1) -> dict[str, object]:
    r = run("diagnose", "--pod", files["sts.yaml"], "--config", files["objects.yaml"], *argv, "--format", "json")
    assert r.exit_code == exit_code, r.output
    out: dict[str, object] = json.loads(r.stdout)
    return out


def findings(report: dict[str, object], name: str) -> list[dict[str, object]]:
    return [f for f in report["findings"] if f["name"] == name]  # type: ignore[attr-defined]


# -------------------------------------------------------------------------------------------------
# --config PATH… after one flag

def test_config_takes_several_paths_after_one_flag(files: dict[str, str]) -> None:
    # on main, the second path was an unexpected extra argument (exit 2)
    out = hop_json(files, "--proxy-ip", "10.8.0.10", "--dst", "10.96.7.7:7000", configs=("objects.yaml", "extras.yaml"))
    assert out["listener"] == "10.96.7.7_7000"
    r = run("diagnose", "--pod", files["sts.yaml"], "--config", files["objects.yaml"], files["extras.yaml"])
    assert r.exit_code == 1 and "NS0009" in r.stdout
    r = run("trace", "--pod", files["sts.yaml"], "--pod-ip", "10.8.0.10", "--config", files["objects.yaml"],
            files["extras.yaml"], "--dst", "10.96.7.7:7000", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mesh"]["listener"] == "10.96.7.7_7000"


def test_config_paths_stop_at_the_next_option_and_at_a_name(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
                                     "metadata: {name: a, namespace: default}\n"
                                     "spec: {hosts: [a.example.com], addresses: [192.0.2.1], resolution: STATIC}\n")
    sub = tmp_path / "more"
    sub.mkdir()
    (sub / "b.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
                                "metadata: {name: b, namespace: default}\n"
                                "spec: {hosts: [b.example.com], addresses: [192.0.2.2], resolution: STATIC}\n")
    r = run("dns", "table", "--config", str(tmp_path / "a.yaml"), f"{sub}/", "--format", "json")
    assert sorted(row["name"] for row in json.loads(r.stdout)) == ["a.example.com", "b.example.com"]
    # a positional NAME after the paths is not taken for a path
    r = run("dns", "query", "--config", str(tmp_path / "a.yaml"), f"{sub}/", "b.example.com", "--format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["answer"][0]["data"] == "192.0.2.2"


# -------------------------------------------------------------------------------------------------
# --expect

@pytest.mark.parametrize(("expect", "code"), [("passthrough", 0), ("captured", 1), ("blackhole", 1)])
def test_mesh_hop_expect_sets_the_exit_status(files: dict[str, str], expect: str, code: int) -> None:
    r = run("mesh", "hop", "--config", files["objects.yaml"], "--proxy-ip", "10.8.0.10", "--dst", "192.0.2.9:443",
            "--expect", expect)
    assert r.exit_code == code, r.output
    assert "verdict       passthrough" in r.stdout


def test_mesh_hop_expect_names_every_verdict_of_the_json() -> None:
    from netsim.mesh.cli import _VERDICTS
    from netsim.mesh.model import Verdict

    assert set(_VERDICTS) == {v.value for v in Verdict}


def test_mesh_hop_expect_rejects_an_unknown_verdict(files: dict[str, str]) -> None:
    r = run("mesh", "hop", "--config", files["objects.yaml"], "--proxy-ip", "10.8.0.10", "--dst", "1.2.3.4:80",
            "--expect", "fine")
    assert r.exit_code == 2 and "Invalid value for '--expect'" in r.output


# -------------------------------------------------------------------------------------------------
# the 15006 loop guard (virtualInbound-blackhole)

@pytest.mark.parametrize("dst", ["10.8.0.11:15006", "10.8.0.10:15006"])
def test_connection_to_a_sidecars_15006_is_caught_by_the_loop_guard(files: dict[str, str], dst: str) -> None:
    # on main: "passthrough" to the peer's (or its own) inbound listener port
    out = hop_json(files, "--proxy-ip", "10.8.0.10", "--dst", dst)
    assert out["verdict"] == "blackhole", out["reason"]
    assert "virtualInbound-blackhole" in str(out["reason"])


def test_loop_guard_needs_a_15006_listener(files: dict[str, str]) -> None:
    # 1.0-1.2 had no 15006 listener; a pod without a sidecar has none either
    assert hop_json(files, "--proxy-ip", "10.8.0.10", "--dst", "10.8.0.11:15006",
                    "--istio-version", "1.2")["verdict"] == "passthrough"
    out = hop_json(files, "--proxy-ip", "10.8.0.10", "--dst", "203.0.113.5:15006")
    assert out["verdict"] == "passthrough"
    assert any("loop guard" in n for n in out["notes"])  # type: ignore[attr-defined]


def test_inbound_15006_stays_blackholed(files: dict[str, str]) -> None:
    out = hop_json(files, "--proxy-ip", "10.8.0.10", "--direction", "inbound", "--dst", "10.8.0.10:15006")
    assert out["filter_chain"] == "virtualInbound-blackhole" and out["verdict"] == "blackhole"


# -------------------------------------------------------------------------------------------------
# notes: what the answer rests on

def test_proxy_ip_without_a_pod_is_said(files: dict[str, str]) -> None:
    # on main: default proxyMetadata, silently
    out = hop_json(files, "--proxy-ip", "10.8.0.99", "--dst", "10.96.7.7:7000", configs=("objects.yaml", "extras.yaml"))
    (note,) = [n for n in out["notes"] if "no Pod in --config has IP 10.8.0.99" in n]  # type: ignore[attr-defined]
    assert "DNS capture off" in note and "auto-allocation off" in note
    assert not any("no Pod" in n for n in hop_json(files, "--proxy-ip", "10.8.0.10", "--dst",
                                                   "1.2.3.4:80")["notes"])  # type: ignore[attr-defined]


def test_cluster_without_endpoints_is_said(files: dict[str, str]) -> None:
    out = hop_json(files, "--proxy-ip", "10.8.0.10", "--dst", "10.96.7.7:7000", configs=("objects.yaml", "extras.yaml"))
    assert out["verdict"] == "captured"
    assert any(n.startswith("cluster outbound|7000||api.data.svc.cluster.local has no endpoints")
               for n in out["notes"])  # type: ignore[attr-defined]


def test_ignored_kinds_are_named_with_file_and_document(files: dict[str, str]) -> None:
    out = hop_json(files, "--proxy-ip", "10.8.0.10", "--dst", "1.2.3.4:80", configs=("objects.yaml", "extras.yaml"))
    assert [(i["object"], i["where"]) for i in out["ignored"]] == [  # type: ignore[attr-defined]
        ("EnvoyFilter data/lua", f"{files['extras.yaml']}: document 2: EnvoyFilter data/lua"),
        ("Widget data/w", f"{files['extras.yaml']}: document 3: Widget data/w")]
    assert any("EnvoyFilter patches are not applied" in n for n in out["notes"])  # type: ignore[attr-defined]
    r = run("diagnose", "--pod", files["sts.yaml"], "--config", files["objects.yaml"], files["extras.yaml"],
            "--format", "json")
    assert any("EnvoyFilter data/lua: ignored" in n for n in json.loads(r.stdout)["notes"])


# -------------------------------------------------------------------------------------------------
# diagnose: plaintext to a STRICT peer, as mesh hop decides it

def test_diagnose_headless_statefulset_under_strict_on_1_8(files: dict[str, str]) -> None:
    # on main: "none of the 8 known capture pitfalls found" while mesh hop shows the connection reset
    hop = hop_json(files, "--proxy-ip", "10.8.0.10", "--dst", "10.8.0.11:6379", "--istio-version", "1.8")
    assert hop["verdict"] == "reset-no-filter-chain"
    report = diagnose_json(files, "--istio-version", "1.8")
    (f,) = [f for f in findings(report, "plaintext-to-strict-peer")
            if "outbound|6379||redis.data.svc.cluster.local" in str(f["message"])]
    assert f["check"] == "NS0009" and f["severity"] == "error"
    assert "10.8.0.11:6379 (Pod data/redis-1)" in str(f["message"])
    assert {"what": "PeerAuthentication data/default", "file": files["objects.yaml"], "document": 2} \
        in f["evidence"]  # type: ignore[operator]
    assert {"what": "Pod data/redis-1", "file": files["objects.yaml"], "document": 4} \
        in f["evidence"]  # type: ignore[operator]


def test_diagnose_and_mesh_hop_agree_on_6379_today(files: dict[str, str]) -> None:
    hop = hop_json(files, "--proxy-ip", "10.8.0.10", "--dst", "10.8.0.11:6379")
    assert hop["verdict"] == "captured" and hop["upstream_tls"] == "istio-mtls"
    report = diagnose_json(files)
    assert not [f for f in findings(report, "plaintext-to-strict-peer") if "outbound|6379||" in str(f["message"])]


def test_diagnose_port_outside_every_service_sent_plaintext_to_strict_peer(files: dict[str, str]) -> None:
    # the Redis cluster bus: passthrough plaintext to a STRICT replica is reset (mesh hop says so too)
    hop = hop_json(files, "--proxy-ip", "10.8.0.10", "--dst", "10.8.0.11:16379")
    assert hop["cluster"] == "PassthroughCluster" and hop["verdict"] == "reset-no-filter-chain"
    (f,) = [f for f in findings(diagnose_json(files), "plaintext-to-strict-peer")
            if "16379" in str(f["message"])]
    assert "PassthroughCluster" in str(f["message"]) and "declare port 16379" in str(f["fix"])
    assert any(e["what"] == "StatefulSet data/redis containerPort 16379 (in no Service)"
               for e in f["evidence"])  # type: ignore[attr-defined]


def test_diagnose_quiet_when_the_peer_is_permissive(files: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "permissive.yaml").write_text(REDIS.replace("mode: STRICT", "mode: PERMISSIVE"))
    r = run("diagnose", "--pod", files["sts.yaml"], "--config", str(tmp_path / "permissive.yaml"), "--istio-version",
            "1.8")
    assert r.exit_code == 0, r.output


SE_TWICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: team-a, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {hosts: [api.example.com], addresses: [192.0.2.10], ports: [{number: 443, name: tls, protocol: TLS}],
       resolution: STATIC, endpoints: [{address: 192.0.2.10}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: team-b, creationTimestamp: "2024-02-01T00:00:00Z"}
spec: {hosts: [api.example.com], addresses: [192.0.2.20], ports: [{number: 443, name: tls, protocol: TLS}],
       resolution: STATIC, endpoints: [{address: 192.0.2.20}]}
"""


def test_diagnose_serviceentry_host_visible_from_two_namespaces(tmp_path: Path) -> None:
    (tmp_path / "se.yaml").write_text(SE_TWICE)
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: team-c}\n"
                                       "spec: {containers: [{name: c, image: c}]}\nstatus: {podIP: 10.9.0.3}\n")
    r = run("diagnose", "--pod", str(tmp_path / "pod.yaml"), "--config", str(tmp_path / "se.yaml"), "--format",
            "json")
    assert r.exit_code == 1, r.output
    (f,) = findings(json.loads(r.stdout), "serviceentry-host-in-two-namespaces")
    assert f["check"] == "NS0010" and "api.example.com" in str(f["message"])
    assert [e["document"] for e in f["evidence"]] == [1, 2]  # type: ignore[attr-defined]
    # one of them kept to its namespace: no finding
    (tmp_path / "se.yaml").write_text(SE_TWICE.replace("resolution: STATIC, endpoints: [{address: 192.0.2.20}]",
                                                       "resolution: STATIC, endpoints: [{address: 192.0.2.20}],\n"
                                                       "       exportTo: ['.']"))
    r = run("diagnose", "--pod", str(tmp_path / "pod.yaml"), "--config", str(tmp_path / "se.yaml"))
    assert r.exit_code == 0, r.output


def test_diagnose_cluster_without_endpoints(files: dict[str, str]) -> None:
    r = run("diagnose", "--pod", files["sts.yaml"], "--config", files["objects.yaml"], files["extras.yaml"],
            "--format", "json")
    (f,) = findings(json.loads(r.stdout), "cluster-without-endpoints")
    assert f["check"] == "NS0011" and "outbound|7000||api.data.svc.cluster.local" in str(f["message"])
    assert f["evidence"][0] == {"what": "Service data/api", "file": files["extras.yaml"],  # type: ignore[index]
                                "document": 1}


def test_diagnose_codes_are_stable_and_documented() -> None:
    import netsim.mesh.diagnose as d
    from netsim.mesh.diagnose import CHECKS, CODES

    assert tuple(f"NS{i:04d}" for i in range(1, len(CODES) + 1)) == CHECKS
    for name, code in CODES.items():
        assert f"| {code} | {name} " in (d.__doc__ or ""), code


def test_diagnose_evidence_names_file_and_document_of_listeners_and_ports() -> None:
    folder = Path(__file__).resolve().parents[2] / "rules" / "mesh" / "hazelcast-externalname"
    r = run("diagnose", "--pod", str(folder / "pod.yaml"), "--config", str(folder / "objects.yaml"),
            "--istio-version", "1.5", "--format", "json")
    (f,) = findings(json.loads(r.stdout), "wildcard-tcp-listener")
    where = {e["what"].split(":")[0].split(" (")[0]: e["document"] for e in f["evidence"]}  # type: ignore[attr-defined]
    assert where == {"Service app/app-ext": 4, "listener 0.0.0.0_5701": 4, "the workload's own port 5701": 2}
    assert len(f["evidence"]) == len({json.dumps(e) for e in f["evidence"]})  # type: ignore[arg-type]


@pytest.mark.parametrize("command", ["listeners", "clusters"])
@pytest.mark.parametrize(("pod", "says"), [
    ("noinject", "runs no sidecar (label sidecar.istio.io/inject=false): nothing captures its traffic"),
    ("ambient", "runs no sidecar: it is enrolled in ambient, ztunnel takes its connections"),
    ("injected", None),
])
def test_a_pod_without_a_sidecar_is_said_before_the_table(tmp_path: Path, command: str, pod: str,
                                                          says: str | None) -> None:
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "rules" / "mtls-503" / "pod.yaml").read_text()
    if pod == "noinject":
        text = text.replace("      labels:\n        app: web\n",
                            "      labels:\n        app: web\n        sidecar.istio.io/inject: \"false\"\n", 1)
    elif pod == "ambient":
        text = text.replace("      labels:\n        app: web\n",
                            "      labels:\n        app: web\n        istio.io/dataplane-mode: ambient\n", 1)
    assert pod == "injected" or "      labels:\n        app: web\n        " in text
    (tmp_path / "pod.yaml").write_text(text)
    r = CliRunner().invoke(cli, ["mesh", command, "--pod", str(tmp_path / "pod.yaml"),
                                 "--config", str(tmp_path / "pod.yaml")])
    assert r.exit_code == 0, r.output
    notes = [ln for ln in r.stderr.splitlines() if "runs no sidecar" in ln]
    if says is None:
        assert notes == []
    else:
        assert notes == [f"note: Deployment shop/web {says}; below is what an injected sidecar would hold"]
