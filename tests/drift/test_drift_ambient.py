"""``netsim drift`` on ambient pods: every kernel read-back of ../shared/conformance/istio-ambient (read in place,
both backends) against a pod carrying its case's annotations and settings gives no drift; each ambient drift
class (absent, two-backends, the other backend alone, stale-release, agent-config, dns-capture-off against the
pod's annotation, annotation-not-applied, duplicated) is found on rules damaged that way; the enrolment comes
from the pod's or its namespace's label; the policy-route note; bad input is one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import conformance_dir

from netsim.capture.ambient import compile_ambient
from netsim.capture.ambient_render import render_iptables_save
from netsim.spec.ambient import ambient_config, pod_overrides
from tests.cli.compile_runner import netsim


def pod_yaml(tmp_path: Path, annotations: dict[str, str] | None = None, *, label: bool = True,
             namespace_label: bool = False) -> Path:
    meta: dict[str, Any] = {"name": "web", "namespace": "shop"}
    if label:
        meta["labels"] = {"istio.io/dataplane-mode": "ambient"}
    if annotations:
        meta["annotations"] = annotations
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                                   "spec": {"containers": [{"name": "app", "image": "app"}]},
                                   "status": {"podIP": "10.244.0.7"}}]
    if namespace_label:
        docs.append({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "shop", "labels": {"istio.io/dataplane-mode": "ambient"}}})
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def case_of(backend: str, case: str) -> tuple[dict[str, str], str]:
    """The pod annotations and ``--ambient-config`` text of a conformance case (its YAML, read in place)."""
    meta = yaml.safe_load((conformance_dir("istio-ambient") / backend / f"{case}.yaml").read_text())
    config, overrides = meta["config"], meta["pod_overrides"]
    annotations: dict[str, str] = {}
    if overrides["IngressMode"]:
        annotations["ambient.istio.io/bypass-inbound-capture"] = "true"
    if overrides["VirtualInterfaces"]:
        annotations["istio.io/reroute-virtual-interfaces"] = ",".join(overrides["VirtualInterfaces"])
    if overrides["DNSProxy"] != "unset":
        annotations["ambient.istio.io/dns-capture"] = "true" if overrides["DNSProxy"] == "enabled" else "false"
    settings = ",".join(f"{k}={str(config[k]).lower() if isinstance(config[k], bool) else config[k]}"
                        for k in ("EnableIPv6", "RedirectDNS", "HostProbeSNATAddress", "HostProbeV6SNATAddress"))
    return annotations, settings + f",NativeNftables={'true' if backend == 'nftables' else 'false'}"


def _readbacks() -> list[tuple[str, str, list[Path]]]:
    kernel = conformance_dir("istio-ambient") / "kernel"
    out: list[tuple[str, str, list[Path]]] = []
    for v4 in sorted((kernel / "iptables").glob("*.iptables-save")):
        case = v4.name.removesuffix(".iptables-save")
        v6 = v4.with_name(f"{case}.ip6tables-save")
        out.append(("iptables", case, [v4, v6] if v6.exists() else [v4]))
    out += [("nftables", p.name.removesuffix(".nft-list"), [p])
            for p in sorted((kernel / "nftables").glob("*.nft-list")) if not p.name.startswith("hostprobe")]
    return out


@pytest.mark.parametrize(("backend", "case", "files"), _readbacks(),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_kernel_readback_has_no_drift_against_its_case(backend: str, case: str, files: list[Path],
                                                             tmp_path: Path) -> None:
    annotations, settings = case_of(backend, case)
    dump = tmp_path / "dump"
    dump.write_text("".join(p.read_text() for p in files))
    code, out, err = netsim("drift", "--pod", str(pod_yaml(tmp_path, annotations)), "--rules", str(dump),
                         "--ambient-config", settings, "--format", "json")
    doc = json.loads(out)
    assert (code, doc["drift"], doc["mode"]) == (0, False, "ambient"), (doc["findings"], err)


def _default(tmp_path: Path) -> tuple[Path, Path, str]:
    kernel = conformance_dir("istio-ambient") / "kernel"
    dump = tmp_path / "default.rules"
    dump.write_text((kernel / "iptables" / "default_ipv6.iptables-save").read_text()
                    + (kernel / "iptables" / "default_ipv6.ip6tables-save").read_text())
    _, settings = case_of("iptables", "default_ipv6")
    return dump, kernel / "nftables" / "default_ipv6.nft-list", settings


def _json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = netsim(*args, "--format", "json")
    assert code in (0, 1), err
    return code, json.loads(out)


def test_the_namespace_label_enrols_the_pod_and_an_unlabelled_pod_stays_a_sidecar(tmp_path: Path) -> None:
    dump, _, settings = _default(tmp_path)
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path, label=False, namespace_label=True)), "--rules",
                      str(dump), "--ambient-config", settings)
    assert (code, doc["mode"], doc["drift"]) == (0, "ambient", False)
    assert any("namespace shop's label" in n for n in doc["notes"])
    assert any("§7" in n and "not compared" in n for n in doc["notes"])  # the policy routes are not in a dump
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path, label=False)), "--rules", str(dump))
    assert (code, doc["mode"]) == (1, "sidecar")  # not enrolled: compared with a sidecar's rules, which it lacks
    code, _, err = netsim("drift", "--pod", str(pod_yaml(tmp_path, label=False)), "--rules", str(dump),
                             "--ambient-config", settings)
    assert code == 2 and "--ambient-config" in err and "add --mode ambient" in err and len(err.splitlines()) == 1


def test_rules_gone_after_a_reboot_are_absent(tmp_path: Path) -> None:
    empty = tmp_path / "empty.rules"
    empty.write_text("# Generated by iptables-save v1.8.9 on Wed Dec  2 10:00:00 2026\n")
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path)), "--rules", str(empty))
    [finding] = doc["findings"]
    assert (code, finding["check"], finding["severity"]) == (1, "absent", "error")
    assert "enrolled" in finding["message"] and "reboot" in finding["message"]


def test_both_backends_in_one_pod(tmp_path: Path) -> None:
    dump, nft, settings = _default(tmp_path)
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path)), "--rules", str(dump), "--nft", str(nft),
                      "--ambient-config", settings)
    assert code == 1 and [f["check"] for f in doc["findings"]] == ["two-backends"]
    [two] = doc["findings"]
    assert "iptables" in two["message"] and "nftables" in two["message"]
    found = two["rules"]["found"]
    assert found and all(r.startswith("nft add rule inet istio-ambient-") for r in found)
    # the nft listing alone is read from --rules too, and with NativeNftables=false given it is the other backend's
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path)), "--rules", str(nft), "--ambient-config", settings)
    [finding] = doc["findings"]
    assert (code, finding["check"]) == (1, "absent") and "nft backend's instead" in finding["message"]
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path)), "--nft", str(nft), "--ambient-config",
                      settings.replace("NativeNftables=false", "NativeNftables=true"))
    assert (code, doc["drift"]) == (0, False)


def _compiled_dump(tmp_path: Path, release: tuple[int, ...] | None, annotations: dict[str, str],
                   settings: str = "") -> Path:
    config = ambient_config(release, [settings] if settings else [])
    text = render_iptables_save(compile_ambient(config, pod_overrides(annotations)))
    path = tmp_path / "compiled.rules"
    path.write_text(text)
    return path


def test_rules_of_an_older_agent_are_stale_release(tmp_path: Path) -> None:
    """1.24–1.28 dropped the connmark rule in ingress mode (fixed in 1.29): a pod enrolled by a 1.27 agent."""
    ingress = {"ambient.istio.io/bypass-inbound-capture": "true"}
    dump = _compiled_dump(tmp_path, (1, 27), ingress, "RedirectDNS=true")
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path, ingress)), "--rules", str(dump))
    [finding] = doc["findings"]
    assert (code, finding["check"]) == (1, "stale-release")
    assert "1.24–1.28" in finding["message"], finding["message"]
    assert all("CONNMARK --set-xmark 0x111/0xfff" in r for r in finding["rules"]["expected"])


def test_dns_capture_off_against_the_pods_annotation(tmp_path: Path) -> None:
    annotated = {"ambient.istio.io/dns-capture": "true"}
    dump = _compiled_dump(tmp_path, None, {}, "RedirectDNS=false")
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path, annotated)), "--rules", str(dump),
                      "--ambient-config", "RedirectDNS=false")
    [finding] = doc["findings"]
    assert (code, finding["check"]) == (1, "dns-capture-off")
    assert "ambient.istio.io/dns-capture" in finding["message"]
    assert any("15053" in r for r in finding["rules"]["expected"]) and not finding["rules"]["found"]
    # the agent's RedirectDNS (its default) asks for it: the message names the setting instead
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path)), "--rules", str(dump))
    assert [f["check"] for f in doc["findings"]] == ["dns-capture-off"]
    assert "RedirectDNS" in doc["findings"][0]["message"]


def test_an_annotation_the_agent_did_not_apply(tmp_path: Path) -> None:
    dump = _compiled_dump(tmp_path, None, {})
    ingress = {"ambient.istio.io/bypass-inbound-capture": "true"}
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path, ingress)), "--rules", str(dump))
    [finding] = doc["findings"]
    assert (code, finding["check"]) == (1, "annotation-not-applied")
    assert "bypass-inbound-capture" in finding["message"]


def test_an_agent_with_other_settings(tmp_path: Path) -> None:
    dump = _compiled_dump(tmp_path, None, {}, "RedirectDNS=false")
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path, {"ambient.istio.io/dns-capture": "false"})),
                      "--rules", str(dump), "--ambient-config", "EnableIPv6=false")
    assert (code, doc["drift"]) == (1, True)
    assert [f["check"] for f in doc["findings"]] == ["agent-config"]
    assert "EnableIPv6=true" in doc["findings"][0]["message"]


def test_rules_written_twice_are_duplicated(tmp_path: Path) -> None:
    dump = _compiled_dump(tmp_path, None, {})
    lines = dump.read_text().splitlines()
    twice = next(i for i, line in enumerate(lines) if "--to-ports 15001" in line)
    dump.write_text("\n".join([*lines[:twice + 1], lines[twice], *lines[twice + 1:]]) + "\n")
    code, doc = _json("drift", "--pod", str(pod_yaml(tmp_path)), "--rules", str(dump))
    [finding] = doc["findings"]
    assert (code, finding["check"]) == (1, "duplicated") and "agent" in finding["message"]
    assert finding["rules"]["found"] == [f"iptables -t nat {lines[twice]}"]


def test_a_fleet_directory_with_a_namespace_among_the_manifests(tmp_path: Path) -> None:
    pods = tmp_path / "pods.yaml"
    meta = {"namespace": "shop"}
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {
        "istio.io/dataplane-mode": "ambient"}}}]
    docs += [{"apiVersion": "v1", "kind": "Pod", "metadata": {**meta, "name": n},
              "spec": {"containers": [{"name": "app", "image": "app"}]}} for n in ("a", "b")]
    pods.write_text(yaml.safe_dump_all(docs))
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    good = _compiled_dump(tmp_path, None, {})
    (dumps / "a.txt").write_text(good.read_text())
    (dumps / "b.txt").write_text("")
    code, doc = _json("drift", "--pods", str(pods), "--rules", str(dumps))
    assert code == 1 and doc["summary"]["checks"] == {"absent": 1} and doc["summary"]["clean"] == 1
    assert {p["dump"]: p["mode"] for p in doc["pods"]} == {"a": "ambient", "b": "ambient"}


def test_bad_ambient_input_is_one_line(tmp_path: Path) -> None:
    dump = _compiled_dump(tmp_path, None, {})
    pod = str(pod_yaml(tmp_path))
    for args, named in ((["--ambient-config", "EnableIPv6=maybe"], "EnableIPv6"),
                        (["--ambient-config", "Nope=1"], "Nope"), (["--istio-version", "1.19"], "1.19"),
                        (["--nft", str(dump)], str(dump))):
        code, _, err = netsim("drift", "--pod", pod, "--rules", str(dump), *args)
        assert code == 2 and len(err.splitlines()) == 1 and named in err and "Traceback" not in err, (args, err)


def test_compile_trace_and_drift_share_the_ambient_options() -> None:
    """One home for --mode and --ambient-config: the three commands show the same option text."""
    helps = [netsim(cmd, "--help")[1] for cmd in ("compile", "trace", "drift")]
    for text in helps:
        assert "istio.io/dataplane-mode=ambient" in text and "HostProbeV6SNATAddress" in " ".join(text.split())
