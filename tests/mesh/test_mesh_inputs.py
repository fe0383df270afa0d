"""Bad input: each bad object is reported with file, document, kind ns/name and field; the rest loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from netsim.cli import cli, main
from netsim.mesh.files import read_config, read_mesh_config
from netsim.mesh.objects import parse_text

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


def test_mesh_bad_objects_are_located_and_the_rest_loads(bad_file: Path) -> None:
    objects = read_config([bad_file])
    errors = sorted(str(e) for e in objects.errors)
    f = str(bad_file)
    assert errors == sorted([
        f"{f}: document 1: Service default/bad-port: spec.ports[0].port: must be a port number 1-65535, got 70000",
        f"{f}: document 2: ServiceEntry default/no-hosts: spec.hosts: a ServiceEntry needs at least one host",
        f"{f}: document 3: Frobnicator default/frob: kind: 'Frobnicator' is not a kind netsim mesh reads "
        "(Service, EndpointSlice, Pod or a workload, ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, "
        "PeerAuthentication, Sidecar); skipped",
        f"{f}: document 4: line 21: invalid YAML: did not find expected ',' or '}}'",
    ])
    assert [s.name for s in objects.services] == ["good"]


def test_mesh_hop_still_decides_with_the_good_objects(bad_file: Path) -> None:
    r = CliRunner().invoke(cli, ["mesh", "hop", "--config", str(bad_file), "--proxy-ip", "10.1.1.1", "--namespace",
                                 "default", "--dst", "10.0.0.10:9000", "--format", "json"])
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["listener"] == "10.0.0.10_9000" and out["verdict"] == "captured"
    assert len(out["config_errors"]) == 4
    assert "warning: " in r.stderr and "spec.ports[0].port" in r.stderr


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
