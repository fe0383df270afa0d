"""``netsim dns query|table --pod FILE``: the answer of that pod's agent (issue 11 §5), agreeing with
``netsim diagnose`` on the same objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dns_helpers import run_main as run

OBJECTS = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: shop}
spec:
  hosts: [vm.internal.corp]
  ports: [{number: 8080, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 192.168.0.204}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.4.4
  selector: {app: cart}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop, labels: {app: cart, security.istio.io/tlsMode: istio}}
spec: {containers: [{name: cart, image: cart}]}
status: {podIP: 10.4.0.8}
"""


def pod(meta: str, *, inject: str = "") -> str:
    ann = f"    proxy.istio.io/config: |\n      proxyMetadata:\n{meta}" if meta else ""
    inj = f"    sidecar.istio.io/inject: \"{inject}\"\n" if inject else ""
    return ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n"
            f"{ann}{inj}    x: y\nspec: {{containers: [{{name: web, image: web}}]}}\nstatus: {{podIP: 10.4.0.7}}\n")


CAPTURE = "        ISTIO_META_DNS_CAPTURE: \"true\"\n"
AUTO = "        ISTIO_META_DNS_AUTO_ALLOCATE: \"true\"\n"


@pytest.fixture
def objs(tmp_path: Path) -> Path:
    p = tmp_path / "objects.yaml"
    p.write_text(OBJECTS)
    return p


def write_pod(tmp_path: Path, text: str) -> str:
    p = tmp_path / "pod.yaml"
    p.write_text(text)
    return str(p)


def query(name: str, *argv: str) -> dict[str, object]:
    r = run("dns", "query", name, *argv, "--format", "json")
    assert r.exit_code == 0, r.output
    out: dict[str, object] = json.loads(r.stdout)
    return out


def test_pod_without_auto_allocation_gets_no_vip_as_diagnose_predicts(tmp_path: Path, objs: Path) -> None:
    # on main: 240.240.0.1 whatever the pod, while diagnose (NS0007) predicts the name is not answered
    p = write_pod(tmp_path, pod(CAPTURE))
    out = query("vm.internal.corp", "--pod", p, "--config", str(objs), "--istio-version", "1.20")
    assert out["handled_by"] == "upstream" and out["answer"] == []
    assert "does not consume auto-allocated VIPs" in out["configured_as"]["reason"]  # type: ignore[index]
    r = run("diagnose", "--pod", p, "--config", str(objs), "--istio-version", "1.20", "--format", "json")
    assert [f["check"] for f in json.loads(r.stdout)["findings"]] == ["NS0007"]


def test_pod_with_auto_allocation_gets_the_vip(tmp_path: Path, objs: Path) -> None:
    p = write_pod(tmp_path, pod(CAPTURE + AUTO))
    out = query("vm.internal.corp", "--pod", p, "--config", str(objs), "--istio-version", "1.20")
    assert out["handled_by"] == "table" and out["answer"][0]["data"].startswith("240.240.")  # type: ignore[index]
    r = run("diagnose", "--pod", p, "--config", str(objs), "--istio-version", "1.20")
    assert r.exit_code == 0, r.output


def test_from_1_25_istiod_allocates_for_every_capturing_pod(tmp_path: Path, objs: Path) -> None:
    p = write_pod(tmp_path, pod(CAPTURE))
    out = query("vm.internal.corp", "--pod", p, "--config", str(objs), "--istio-version", "1.25")
    assert out["handled_by"] == "table"
    assert run("diagnose", "--pod", p, "--config", str(objs), "--istio-version", "1.25").exit_code == 0


def test_pod_without_dns_capture_has_no_agent_answer(tmp_path: Path, objs: Path) -> None:
    p = write_pod(tmp_path, pod(""))
    out = query("cart", "--pod", p, "--config", str(objs))
    assert out["handled_by"] == "upstream" and out["answer"] == []
    assert "does not set ISTIO_META_DNS_CAPTURE" in str(out["why"])
    r = run("dns", "table", "--pod", p, "--config", str(objs), "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []


def test_mesh_config_default_proxy_metadata_turns_capture_on(tmp_path: Path, objs: Path) -> None:
    p = write_pod(tmp_path, pod(""))
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("defaultConfig:\n  proxyMetadata:\n    ISTIO_META_DNS_CAPTURE: \"true\"\n")
    out = query("cart", "--pod", p, "--mesh-config", str(mesh), "--config", str(objs))
    assert out["handled_by"] == "table" and out["answer"][0]["data"] == "10.96.4.4"  # type: ignore[index]


def test_pod_namespace_decides_short_names(tmp_path: Path, objs: Path) -> None:
    p = write_pod(tmp_path, pod(CAPTURE))
    # "cart" is shop's Service: the pod is in shop although --namespace defaults to "default"
    assert query("cart", "--pod", p, "--config", str(objs))["answer"][0]["data"] == "10.96.4.4"  # type: ignore[index]
    assert query("cart", "--config", str(objs))["handled_by"] == "upstream"
    r = run("dns", "query", "cart", "--pod", p, "--config", str(objs), "--namespace", "other")
    assert r.exit_code == 2 and "the --pod is in namespace shop" in r.output


def test_pod_without_sidecar_has_no_agent(tmp_path: Path, objs: Path) -> None:
    p = write_pod(tmp_path, pod(CAPTURE, inject="false"))
    out = query("cart", "--pod", p, "--config", str(objs))
    assert out["handled_by"] == "upstream" and "has no sidecar" in str(out["why"])


@pytest.mark.parametrize("version", ["1.6", "1.7"])
def test_release_before_the_dns_proxy_says_so(objs: Path, version: str) -> None:
    # on main: 1.7 answered from a name table no 1.7 agent had
    out = query("cart", "-n", "shop", "--config", str(objs), "--istio-version", version)
    assert out["handled_by"] == "upstream" and out["answer"] == []
    assert f"Istio {version} had no DNS proxy" in str(out["why"])
    r = run("dns", "table", "--config", str(objs), "--istio-version", version)
    assert r.exit_code == 0 and "no DNS proxy" in r.stdout and "10.96.4.4" not in r.stdout
    assert query("cart", "-n", "shop", "--config", str(objs), "--istio-version", "1.8")["handled_by"] == "table"


def test_mesh_config_without_pod_is_an_error(objs: Path, tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("{}\n")
    r = run("dns", "query", "cart", "--config", str(objs), "--mesh-config", str(mesh))
    assert r.exit_code == 2 and "give the pod with --pod FILE" in r.output


@pytest.mark.parametrize("meta", [CAPTURE + AUTO, CAPTURE])
def test_dns_answer_and_mesh_hop_agree_on_the_vip(tmp_path: Path, objs: Path, meta: str) -> None:
    """The address the pod's agent answers is the one its sidecar has a listener for (auto-allocation on),
    and without auto-allocation neither has one: the connection to the name's port goes where the catch-all
    sends it."""
    p = write_pod(tmp_path, pod(meta))
    out = query("vm.internal.corp", "--pod", p, "--config", str(objs), "--istio-version", "1.20")
    r = run("mesh", "hop", "--config", str(objs), p, "--istio-version", "1.20", "--proxy-ip", "10.4.0.7",
            "--dst", f"{out['answer'][0]['data'] if out['answer'] else '240.240.0.1'}:8080",  # type: ignore[index]
            "--format", "json")
    hop = json.loads(r.stdout)
    if out["answer"]:
        assert hop["listener"] == f"{out['answer'][0]['data']}_8080"  # type: ignore[index]
        assert hop["cluster"] == "outbound|8080||vm.internal.corp"
    else:
        assert hop["listener"] != "240.240.0.1_8080"
