"""Bad input: each bad object is reported with file, document, kind ns/name and field; the rest loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from netsim.cli import cli, main
from netsim.mesh.diagnose import CHECKS
from netsim.mesh.files import read_config, read_mesh_config
from netsim.mesh.objects import convert, parse_text

BAD = """\
apiVersion: v1
kind: Service
metadata: {name: bad-port, namespace: default}
spec:
  clusterIP: 10.0.0.9
  ports:
  - {name: http, port: 70000}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: no-hosts, namespace: default}
spec:
  ports: [{number: 80, name: http, protocol: HTTP}]
---
apiVersion: example.com/v1
kind: Frobnicator
metadata: {name: frob, namespace: default}
---
apiVersion: v1
kind: Service
metadata: {name: broken
  namespace: [default
---
apiVersion: v1
kind: Service
metadata: {name: good, namespace: default}
spec:
  clusterIP: 10.0.0.10
  ports:
  - {name: tcp, port: 9000}
"""


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    p = tmp_path / "objs.yaml"
    p.write_text(BAD)
    return p


def test_mesh_bad_objects_are_located_and_the_rest_loads_with_keep_going(bad_file: Path) -> None:
    read = read_config([bad_file], keep_going=True)
    errors = sorted(str(e) for e in read.skipped)
    f = str(bad_file)
    assert errors == sorted([
        f"{f}: document 1: line 1: Service default/bad-port: spec.ports[0].port: must be a port number 1-65535, "
        "got 70000",
        f"{f}: document 2: line 9: ServiceEntry default/no-hosts: spec.hosts: a ServiceEntry needs at least one host",
        f"{f}: document 4: line 22: invalid YAML: did not find expected ',' or '}}'",
    ])
    # an unknown kind is not an error: it is named as ignored, with its file and document
    assert [str(i) for i in read.ignored] == [
        f"{f}: document 3: Frobnicator default/frob: ignored: Frobnicator (example.com/v1) is not a kind netsim reads"]
    assert [s.name for s in read.objects.services] == ["good"]


def test_mesh_bad_object_is_an_error_without_keep_going(bad_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # issue 11: invalid YAML in --config was a warning and exit 0 ("none found" resting on an unread file)
    with pytest.raises(SystemExit) as e:
        main(["mesh", "hop", "--config", str(bad_file), "--proxy-ip", "10.1.1.1", "--dst", "10.0.0.10:9000"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == (f"Error: {bad_file}: document 1: line 1: Service default/bad-port: spec.ports[0].port: must be a "
                   "port number 1-65535, got 70000\n")


def test_mesh_invalid_yaml_is_an_error_naming_file_document_and_line(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "objs.yaml"
    p.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: Service\nmetadata: {name: [x\n")
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: c}]}\n")
    for argv in (["mesh", "hop", "--config", str(p), "--proxy-ip", "10.1.1.1", "--dst", "1.2.3.4:80"],
                 ["diagnose", "--pod", str(pod), "--config", str(p)],
                 ["mesh", "listeners", "--pod", str(pod), "--config", str(p)]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"Error: {p}: document 2: line 7: invalid YAML") and err.count("\n") == 1, err


def test_mesh_hop_keep_going_decides_with_the_good_objects_and_names_the_skipped(bad_file: Path) -> None:
    r = CliRunner().invoke(cli, ["mesh", "hop", "--config", str(bad_file), "--keep-going", "--proxy-ip", "10.1.1.1",
                                 "--namespace", "default", "--dst", "10.0.0.10:9000", "--format", "json"])
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["listener"] == "10.0.0.10_9000" and out["verdict"] == "captured"
    assert len(out["config_errors"]) == 3
    assert [i["object"] for i in out["ignored"]] == ["Frobnicator default/frob"]
    assert sum(n.startswith("skipped (--keep-going): ") for n in out["notes"]) == 3
    assert any("spec.ports[0].port" in n for n in out["notes"])


def test_diagnose_keep_going_names_what_was_skipped(bad_file: Path, tmp_path: Path) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: c}]}\n"
                   "status: {podIP: 10.1.1.1}\n")
    r = CliRunner().invoke(cli, ["diagnose", "--pod", str(pod), "--config", str(bad_file), "--keep-going"])
    assert r.exit_code == 0, r.output
    assert f"none of the {len(CHECKS)} known capture pitfalls found" in r.stdout
    assert f"note: skipped (--keep-going): {bad_file}: document 4: line 22: invalid YAML" in r.stdout
    assert f"note: {bad_file}: document 3: Frobnicator default/frob: ignored" in r.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["--dst", "10.0.0.10:x"], "Invalid value for '--dst'"),
    (["--dst", "nope:80"], "'nope' is not an IP address"),
    (["--dst", "10.0.0.10:80", "--istio-version", "2.0"], "not an Istio version"),
    (["--dst", "10.0.0.10:80", "--labels", "app"], "expected k=v"),
    (["--dst", "10.0.0.10:80", "--send", "udp"], "Invalid value for '--send'"),
])
def test_mesh_hop_bad_arguments_exit_2(bad_file: Path, argv: list[str], message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["mesh", "hop", "--config", str(bad_file), "--proxy-ip", "10.1.1.1", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_mesh_missing_config_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["mesh", "hop", "--config", str(tmp_path / "none.yaml"), "--proxy-ip", "10.1.1.1", "--dst", "1.2.3.4:80"])
    assert e.value.code == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_mesh_bad_mesh_config_names_the_field(tmp_path: Path) -> None:
    p = tmp_path / "mesh.yaml"
    p.write_text("outboundTrafficPolicy: {mode: DENY}\n")
    with pytest.raises(Exception, match=r"mesh.yaml: field outboundTrafficPolicy.mode: must be ALLOW_ANY"):
        read_mesh_config(p)


def test_mesh_config_from_istio_configmap(tmp_path: Path) -> None:
    p = tmp_path / "cm.yaml"
    p.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
                 "data:\n  mesh: |\n    outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n    enableAutoMtls: false\n")
    m = read_mesh_config(p)
    assert m.outbound_policy == "REGISTRY_ONLY" and m.enable_auto_mtls is False


def test_mesh_parse_text_numbers_documents_like_yaml() -> None:
    text = "# preamble\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n" \
           "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: b}}\n"
    parsed = parse_text(text, "x.yaml")
    assert [(o.document, o.item, o.name) for o in parsed.objects] == [(1, None, "a"), (3, 1, "b")]
    assert not parsed.errors


@pytest.mark.parametrize("sub", [["mesh", "hop"], ["mesh", "listeners"], ["mesh", "clusters"], ["mesh"]])
def test_mesh_help(sub: list[str]) -> None:
    r = CliRunner().invoke(cli, [*sub, "--help"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_mesh_diagnose_help() -> None:
    from netsim.mesh.cli import diagnose_cmd

    r = CliRunner().invoke(diagnose_cmd, ["--help"])
    assert r.exit_code == 0 and "pitfalls" in r.output


TLS_SE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
"""


@pytest.mark.parametrize(("argv", "cluster"), [
    (["--sni", "api.example.com"], "outbound|443||api.example.com"),
    (["--host", "api.example.com"], "outbound|443||api.example.com"),  # --sni defaults to --host
    (["--host", "api.example.com", "--sni", "other.example.org"], "PassthroughCluster"),  # --sni wins
])
def test_mesh_hop_sni_option_picks_the_tls_chain(tmp_path: Path, argv: list[str], cluster: str) -> None:
    p = tmp_path / "se.yaml"
    p.write_text(TLS_SE)
    r = CliRunner().invoke(cli, ["mesh", "hop", "--config", str(p), "--proxy-ip", "10.1.1.1", "--dst",
                                 "93.184.216.34:443", "--send", "tls", *argv, "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["cluster"] == cluster


PODS = """\
apiVersion: v1
kind: Pod
metadata: {name: one, namespace: default, labels: {app: one}}
spec: {containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.1.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: two, namespace: default, labels: {app: two}}
spec: {containers: [{name: app, ports: [{containerPort: 9090}]}]}
status: {podIP: 10.1.1.2}
---
apiVersion: v1
kind: Service
metadata: {name: two, namespace: default}
spec:
  clusterIP: 10.0.0.2
  selector: {app: two}
  ports: [{name: tcp, port: 9090}]
"""


def test_mesh_listeners_name_picks_the_pod_from_the_file(tmp_path: Path) -> None:
    p = tmp_path / "pods.yaml"
    p.write_text(PODS)
    base = ["mesh", "clusters", "--pod", str(p), "--config", str(p), "--format", "json"]
    first = CliRunner().invoke(cli, base)
    two = CliRunner().invoke(cli, [*base, "--name", "two"])
    assert first.exit_code == 0 and two.exit_code == 0, (first.output, two.output)
    assert "inbound|9090||" not in first.stdout  # the first pod ("one") is not behind Service two
    assert "inbound|9090||" in two.stdout


def test_mesh_pod_name_not_in_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "pods.yaml"
    p.write_text(PODS)
    with pytest.raises(SystemExit) as e:
        main(["diagnose", "--pod", str(p), "--name", "three", "--config", str(p)])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == f"Error: {p}: no Pod or workload named three found"


def test_mesh_hop_labels_and_path_reach_the_decision(tmp_path: Path) -> None:
    p = tmp_path / "vs.yaml"
    p.write_text("""\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.0.0.3, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: web, port: {number: 81}}}]
  - route: [{destination: {host: web}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: only-kube, namespace: default}
spec:
  workloadSelector: {labels: {app: locked}}
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""")
    base = ["mesh", "hop", "--config", str(p), "--proxy-ip", "10.1.1.1", "--namespace", "default", "--format", "json"]
    http = [*base, "--dst", "10.0.0.3:80", "--send", "http", "--host", "web"]
    api = json.loads(CliRunner().invoke(cli, [*http, "--path", "/api/x"]).stdout)
    root = json.loads(CliRunner().invoke(cli, http).stdout)
    assert (api["cluster"], root["cluster"]) == ("outbound|81||web.default.svc.cluster.local",
                                                 "outbound|80||web.default.svc.cluster.local")
    free = json.loads(CliRunner().invoke(cli, [*base, "--dst", "1.2.3.4:5000"]).stdout)
    locked = json.loads(CliRunner().invoke(cli, [*base, "--dst", "1.2.3.4:5000", "--labels", "app=locked"]).stdout)
    assert (free["verdict"], locked["verdict"]) == ("passthrough", "blackhole")


@pytest.mark.parametrize(("status", "shown"), [("abc", "'abc'"), ("700", "700"), ("true", "True")])
def test_mesh_bad_direct_response_status_is_a_located_error(status: str, shown: str) -> None:
    text = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, namespace: default}\n"
            f"spec:\n  hosts: [a]\n  http:\n  - directResponse: {{status: {status}}}\n")
    parsed = parse_text(text, "vs.yaml")
    objects = convert(parsed.objects)
    assert [str(e) for e in objects.errors] == [
        "vs.yaml: document 1: VirtualService default/v: spec.http[0].directResponse.status: must be an HTTP status "
        f"200-599, got {shown}"]
    assert not objects.virtual_services
