"""``netsim infer`` on ambient dumps: every kernel read-back of ../shared/conformance/istio-ambient (read in
place), alone and with its ip6tables-save, and the two historical TPROXY goldens, is inferred to agent settings
(``--ambient-config`` names) and pod annotations whose ``netsim compile --mode ambient`` at the first and at
the last inferred release equals the dump, with the golden's own releases inside the range."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from compile_runner import run
from conftest import conformance_dir

from netsim.capture.ambient import AMBIENT_LAYOUTS
from netsim.infer import infer_text
from netsim.infer.ambient import layout_text
from netsim.infer.view import View
from netsim.netfilter.dump import read_pasted


def _cases() -> list[tuple[str, list[Path]]]:
    kernel = conformance_dir("istio-ambient") / "kernel" / "iptables"
    out: list[tuple[str, list[Path]]] = []
    for v4 in sorted(kernel.glob("*.iptables-save")):
        case = v4.name.removesuffix(".iptables-save")
        out.append((case, [v4]))
        v6 = kernel / f"{case}.ip6tables-save"
        if v6.exists():
            out.append((case, [v6]))
            out.append((case, [v4, v6]))
    return out


def _version(text: str) -> tuple[int, ...]:
    return (1, 10_000) if text == "current" else tuple(int(x) for x in text.split("."))


def _inside(span: dict[str, str], release: str) -> bool:
    first, last, rel = _version(span["from"]), _version(span["to"]), _version(release)
    return first <= rel and (rel[:2] <= last if len(last) == 2 else rel <= last)


def _compiled(tmp_path: Path, doc: dict[str, object], version: str | None) -> View:
    annotations = doc["annotations"]
    assert isinstance(annotations, dict)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default",
                                                            "annotations": annotations},
           "spec": {"containers": [{"name": "app", "image": "app"}]}}
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    options = doc["options"]
    assert isinstance(options, dict)
    settings = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())
    args = ["compile", "--pod", str(path), "--mode", "ambient", "--ambient-config", settings,
            "--format", "iptables-save"]
    if version is not None:
        args += ["--istio-version", version]
    r = run(args)
    assert r.code == 0, r.stderr
    return View.of(read_pasted(r.stdout).rulesets)


def _same(compiled: View, dump: View) -> bool:
    families = set(dump.families())
    want = {k: v for k, v in compiled.chains.items() if k[0] in families and v}
    have = {k: v for k, v in dump.chains.items() if v}
    return want == have


@pytest.mark.parametrize(("case", "files"), _cases(), ids=lambda x: x if isinstance(x, str) else
                         "+".join(p.name.split(".")[-1] for p in x))
def test_kernel_readback_is_inferred_and_recompiled(case: str, files: list[Path], tmp_path: Path) -> None:
    args = ["infer", "--format", "json", "--rules", *map(str, files)]
    r = run(args)
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["generator"] == "istio-ambient" and doc["foreign"] == [], doc
    assert "verified by compiling" in doc["notes"][0]
    dump = View.of(read_pasted("".join(p.read_text() for p in files)).rulesets)
    span = doc["releases"]
    assert span is not None
    assert _same(_compiled(tmp_path, doc, span["from"]), dump)
    assert _same(_compiled(tmp_path, doc, None if span["to"] == "current" else span["to"]), dump)
    meta = yaml.safe_load((conformance_dir("istio-ambient") / "iptables" / f"{case}.yaml").read_text())
    identical = meta["source"]["releases_with_identical_golden"].split(", ")
    for group in identical:
        first, last = group.split("..")
        assert _inside(span, first) and _inside(span, last), (span, group)
    assert span["to"] == "current"  # the conformance commit is today's master
    # what the golden's YAML says the agent ran with, where the rules show it
    config, overrides = meta["config"], meta["pod_overrides"]
    assert doc["annotations"].get("ambient.istio.io/bypass-inbound-capture") == (
        "true" if overrides["IngressMode"] else None)
    assert doc["annotations"].get("istio.io/reroute-virtual-interfaces", "") == ",".join(
        overrides["VirtualInterfaces"] or [])
    dns = overrides["DNSProxy"] == "enabled" or (overrides["DNSProxy"] == "unset" and config["RedirectDNS"])
    assert doc["options"]["RedirectDNS"] is dns
    if any(p.name.endswith(".ip6tables-save") for p in files):
        assert doc["options"]["EnableIPv6"] is True
        assert doc["options"]["HostProbeV6SNATAddress"] == config["HostProbeV6SNATAddress"]


def test_historical_tproxy_goldens_are_inferred_at_their_release(tmp_path: Path) -> None:
    history = conformance_dir("istio-ambient") / "history"
    goldens = sorted(history.glob("*.golden"))
    assert goldens
    for golden in goldens:
        [inference] = infer_text(golden.read_text())
        assert inference.generator == "istio-ambient" and inference.exact, golden.name
        assert inference.options.get("TPROXYRedirection") is True
        span = inference.releases
        assert span is not None and _inside({"from": span[0], "to": span[1]}, "1.24.0"), span
        doc = {"options": dict(inference.options), "annotations": dict(inference.annotations)}
        assert _same(_compiled(tmp_path, doc, span[0]), View.of(read_pasted(golden.read_text()).rulesets))


def test_a_damaged_dump_is_closest_not_exact() -> None:
    """A rule taken out of a read-back: no release compiles to it, so the answer says closest and not exact."""
    text = (conformance_dir("istio-ambient") / "kernel" / "iptables" / "default.iptables-save").read_text()
    damaged = "\n".join(line for line in text.splitlines() if "--to-ports 15001" not in line) + "\n"
    [inference] = infer_text(damaged)
    assert inference.generator == "istio-ambient" and not inference.exact
    assert any("not exactly" in n for n in inference.notes)
    [whole] = infer_text(text)
    assert whole.exact and whole.foreign == ()
    # a rule added to the agent's chain: the agent's rules are all there (exact), the added one is foreign
    added = text.replace("-A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT",
                         "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ACCEPT\n-A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff "
                         "-j ACCEPT")
    [extra] = infer_text(added)
    assert extra.exact and extra.releases == whole.releases
    assert [(f.chain, f.position, f.rule) for f in extra.foreign] == [
        ("ISTIO_OUTPUT", 4, "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ACCEPT")]


def test_ranges_name_the_layouts() -> None:
    """Each layout's range ends where the next layout begins (spec/istio-ambient-capture.md §11)."""
    from netsim.infer.ambient import layout_span

    spans = [layout_span(r, r) for r in AMBIENT_LAYOUTS]
    assert spans[0] == ("1.21", "1.22") and spans[-1] == ("1.29", "current")
    for (first, to), nxt in zip(spans, AMBIENT_LAYOUTS[1:], strict=False):
        span = {"from": first, "to": to}
        assert _inside(span, first) and not _inside(span, layout_text(nxt)), (span, nxt)


def _nft_cases() -> list[Path]:
    kernel = conformance_dir("istio-ambient") / "kernel" / "nftables"
    return sorted(p for p in kernel.glob("*.nft-list") if not p.name.startswith("hostprobe"))


@pytest.mark.parametrize("listing", _nft_cases(), ids=lambda p: p.name)
def test_nft_readback_is_inferred_and_recompiled(listing: Path, tmp_path: Path) -> None:
    """An ``nft list ruleset`` of ambient's tables: the inferred settings (NativeNftables=true) compile, at the
    first and the last release of the range, to exactly its tables; the golden's releases are inside it."""
    from netsim.infer.ambient import nft_chains
    from netsim.netfilter.nft import parse_nft_any

    r = run(["infer", "--format", "json", "--rules", str(listing)])
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["generator"] == "istio-ambient" and doc["options"]["NativeNftables"] is True, doc
    span = doc["releases"]
    want = nft_chains(parse_nft_any(listing.read_text()))
    for version in (span["from"], None if span["to"] == "current" else span["to"]):
        pod = tmp_path / "pod.yaml"
        pod.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "p", "annotations": doc["annotations"]}, "spec": {"containers": [{"name": "a", "image": "a"}]}}))
        settings = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in doc["options"].items())
        args = ["compile", "--pod", str(pod), "--mode", "ambient", "--ambient-config", settings, "--format", "nft"]
        out = run([*args, *(["--istio-version", version] if version else [])])
        assert out.code == 0, out.stderr
        assert nft_chains(parse_nft_any(out.stdout)) == want, version
    case = listing.name.removesuffix(".nft-list")
    meta = yaml.safe_load((conformance_dir("istio-ambient") / "nftables" / f"{case}.yaml").read_text())
    for group in meta["source"]["releases_with_identical_golden"].split(", "):
        first, last = group.split("..")
        assert _inside(span, first) and _inside(span, last), (span, group)


def test_the_node_probe_table_is_named_not_fitted() -> None:
    node = conformance_dir("istio-ambient") / "kernel" / "nftables" / "hostprobe.nft-list"
    r = run(["infer", "--format", "json", "--rules", str(node)])
    doc = json.loads(r.stdout)
    assert r.code == 0 and doc["generator"] == "istio-ambient" and doc["releases"] is None
    assert doc["options"] == {"HostProbeSNATAddress": "169.254.7.127"} and "node" in doc["notes"][0]
