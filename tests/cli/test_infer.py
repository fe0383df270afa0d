"""``netsim infer``: every Istio golden (today's corpus and the history corpus, read in place) is inferred back
to options whose compile at the inferred first release equals the golden, and a release range holding the
golden's release; foreign rules are found with their positions; Linkerd, kube-proxy, ambient and CNI
neighbours are recognised; every pasted form is read; bad input is one ``Error:`` line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from compile_runner import compile_, invocation, run, save_tables
from conftest import CONFORMANCE, conformance_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compile_history import GOLDENS, GROUPS, HISTORY, golden_payloads, releases

from netsim.capture.compiled import compile_config
from netsim.capture.config import CaptureConfig, CidrList, InterceptionMode
from netsim.infer import Inference, infer_rules, infer_text
from netsim.netfilter import Family, Names, apply_payload, render_save
from netsim.netfilter.model import RestorePayload
from netsim.spec.flags import OPTIONS_BY_KEY
from netsim.spec.options import config_from_options
from netsim.spec.releases import BY_KEY

CURRENT = CONFORMANCE / "istio-iptables"
CURRENT_GOLDENS = sorted(p.name.removesuffix(".iptables.golden") for p in CURRENT.glob("*.iptables.golden")) \
    if CURRENT.is_dir() else []
NAMES = Names(groups=(("root", 0), *GROUPS))
CONTRACT_KEYS = ["generator", "releases", "options", "annotations", "foreign", "notes"]


def _version(release: str) -> tuple[int, ...]:
    return (1, 10_000) if release == "current" else tuple(int(x) for x in release.split("."))


def _contains(inference: Inference, release: str) -> bool:
    """``release`` (X.Y or X.Y.Z) lies in the inferred range; a ``to`` without a patch covers its whole minor."""
    assert inference.releases is not None
    first, last = (_version(r) for r in inference.releases)
    rel = _version(release)
    return first <= rel and (rel[:2] <= last if len(last) == 2 else rel <= last)


def _invocation_at(options: dict[str, Any], release: str) -> tuple[list[str], dict[str, str]]:
    """The options as ``netsim compile --istio-version RELEASE`` takes them: a flag where that release had
    one, else its environment variable (e.g. DNS capture by ISTIO_META_DNS_CAPTURE before 1.9)."""
    at = _version(release)
    flags = {k: v for k, v in options.items()  # invocation() passes derived and env-only inputs itself
             if k not in OPTIONS_BY_KEY or OPTIONS_BY_KEY[k].long is None or BY_KEY[k].flag_in(at)}
    args, env = invocation(flags)
    for key, value in options.items():
        if key not in flags:
            env[OPTIONS_BY_KEY[key].envs[-1]] = str(value).lower() if isinstance(value, bool) else str(value)
    return args, env


def _sidecar(inferences: tuple[Inference, ...]) -> Inference:
    found = [i for i in inferences if i.generator in ("istio-sidecar", "istio-cni")]
    assert len(found) == 1, [i.generator for i in inferences]
    return found[0]


def _compile_options(options: dict[str, Any], release: str, family: Family, tmp_path: Path) -> dict[str, str]:
    """``netsim compile --istio-version RELEASE`` with the inferred options, as the contract says."""
    args, env = _invocation_at(options, release)
    group_file = tmp_path / "group"
    group_file.write_text("".join(f"{group}:x:{gid}:\n" for group, gid in GROUPS))
    r = compile_(*args, f"--group-file={group_file}", "--istio-version", release,
                 "--family", str(family.value), env=env)
    assert r.code == 0, r.stderr
    return save_tables(r.stdout)


def _check(payloads: tuple[RestorePayload, RestorePayload | None], text: str, within: list[str],
           tmp_path: Path) -> None:
    inference = _sidecar(infer_text(text, NAMES))
    assert inference.exact and inference.foreign == (), (inference.notes, inference.foreign)
    for release in within:
        assert _contains(inference, release), (inference.releases, release)
    assert inference.releases is not None
    for payload in payloads:
        if payload is None:
            continue
        compiled = _compile_options(dict(inference.options), inference.releases[0], payload.family, tmp_path)
        assert compiled == save_tables(render_save(apply_payload(payload))), f"IPv{payload.family.value}"


@pytest.mark.parametrize("name", CURRENT_GOLDENS)
def test_infer_reproduces_todays_golden(name: str, tmp_path: Path) -> None:
    from netsim.netfilter import parse_dry_run

    text = (conformance_dir("istio-iptables") / f"{name}.iptables.golden").read_text()
    _check(parse_dry_run(text, NAMES), text, ["1.25.0", "current"], tmp_path)


@pytest.mark.parametrize("name", GOLDENS)
def test_infer_reproduces_the_history_golden(name: str, tmp_path: Path) -> None:
    conformance_dir("istio-iptables-history")
    text = (HISTORY / f"{name}.golden").read_text()
    _check(golden_payloads(name), text, releases(name), tmp_path)


def test_the_kernels_own_save_output_infers_like_the_golden() -> None:
    """The kernel/ read-backs (what a user pastes from a live pod) give the same options as the golden."""
    kernel = conformance_dir("istio-iptables") / "kernel"
    for name in ("tproxy", "ipv6-dns-outbound-owner-groups-exclude", "ipnets-with-kube-virt-interfaces"):
        v6 = kernel / f"{name}.v6.ip6tables-save"
        pasted = (kernel / f"{name}.v4.iptables-save").read_text() + (v6.read_text() if v6.exists() else "")
        from_kernel = _sidecar(infer_text(pasted))
        from_golden = _sidecar(infer_text((CURRENT / f"{name}.iptables.golden").read_text(), NAMES))
        assert from_kernel.options == from_golden.options, name
        assert from_kernel.releases == from_golden.releases == ("1.25", "current")


# --- foreign rules, other generators ---------------------------------------------------------------

def _dump(config: CaptureConfig) -> str:
    compiled = compile_config(config)
    text = render_save(compiled.ruleset_v4)
    if compiled.ruleset_v6 is not None:
        text += "# IPv6\n" + render_save(compiled.ruleset_v6)
    return text


DEFAULT_POD = CaptureConfig(inbound_ports=("*",), inbound_ports_exclude=("15090", "15021", "15020"),
                            outbound_cidrs=CidrList(wildcard=True))


def _insert(text: str, after: str, line: str) -> str:
    assert after in text, after
    return text.replace(after, f"{after}\n{line}", 1)


def test_foreign_rules_are_listed_with_table_chain_and_position() -> None:
    text = _dump(DEFAULT_POD)
    text = _insert(text, ":ISTIO_REDIRECT - [0:0]", "-A OUTPUT -d 169.254.169.254/32 -j RETURN")  # before Istio's jump
    text = _insert(text, "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN", "-A ISTIO_OUTPUT -p udp -j ACCEPT")
    text += "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp " \
            "--dport 22 -j DROP\nCOMMIT\n"
    [inference] = infer_text(text)
    assert inference.generator == "istio-sidecar" and inference.exact
    assert inference.releases == ("1.25", "current")
    assert [(f.table, f.chain, f.position, f.rule) for f in inference.foreign] == [
        ("nat", "OUTPUT", 1, "-A OUTPUT -d 169.254.169.254/32 -j RETURN"),
        ("nat", "ISTIO_OUTPUT", 9, "-A ISTIO_OUTPUT -p udp -j ACCEPT"),
        ("filter", "INPUT", 1, "-A INPUT -p tcp -m tcp --dport 22 -j DROP"),
    ]
    assert inference.options["istio-local-exclude-ports"] == "15090,15021,15020"
    assert dict(inference.annotations) == {}


def test_a_missing_rule_is_not_hidden() -> None:
    text = _dump(DEFAULT_POD).replace("-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN\n", "")
    [inference] = infer_text(text)
    # the closest reading drops 15021 from -d: still exact, and the annotation says so
    assert inference.options["istio-local-exclude-ports"] == "15090,15020"
    assert "-d 15090,15020 does not start with the injector's 15090,15021" in " ".join(inference.notes)
    text = _dump(DEFAULT_POD).replace("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n", "")
    [inference] = infer_text(text)
    assert not inference.exact and "1 rule(s) the closest one writes are missing" in " ".join(inference.notes)


def test_options_map_to_the_annotations_that_produce_them() -> None:
    config = DEFAULT_POD.__class__(
        mode=InterceptionMode.TPROXY, inbound_ports=("*",), inbound_ports_exclude=("15090", "15021", "8081", "15020"),
        outbound_cidrs=CidrList(v4=config_from_options({"istio-service-cidr": "10.0.0.0/8"}).outbound_cidrs.v4),
        outbound_ports_exclude=("5701",), redirect_dns=True, dns_servers_v4=("10.96.0.10",), drop_invalid=True)
    [inference] = infer_text(_dump(config))
    assert dict(inference.annotations) == {
        "sidecar.istio.io/interceptionMode": "TPROXY",
        "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8",
        "traffic.sidecar.istio.io/excludeInboundPorts": "8081",
        "traffic.sidecar.istio.io/excludeOutboundPorts": "5701",
        "proxy.istio.io/config": '{"proxyMetadata": {"INVALID_DROP": "true", "ISTIO_META_DNS_CAPTURE": "true"}}',
    }


def test_the_cni_plugins_defaults_name_istio_cni() -> None:
    cni = DEFAULT_POD.__class__(inbound_ports=("*",), inbound_ports_exclude=("15020", "15021", "15090"),
                                outbound_cidrs=CidrList(wildcard=True), outbound_ports_exclude=("15020",))
    [inference] = infer_text(_dump(cni))
    assert inference.generator == "istio-cni"
    assert dict(inference.annotations) == {}  # the CNI's own additions are not annotations
    [sidecar] = infer_text(_dump(DEFAULT_POD))
    assert sidecar.generator == "istio-sidecar"


LINKERD = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:PROXY_INIT_OUTPUT - [0:0]
:PROXY_INIT_REDIRECT - [0:0]
-A PREROUTING -m comment --comment "proxy-init/install-proxy-init-prerouting" -j PROXY_INIT_REDIRECT
-A OUTPUT -m comment --comment "proxy-init/install-proxy-init-output" -j PROXY_INIT_OUTPUT
-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -m comment --comment "proxy-init/ignore-proxy-user-id" -j RETURN
-A PROXY_INIT_OUTPUT -o lo -m comment --comment "proxy-init/ignore-loopback" -j RETURN
-A PROXY_INIT_OUTPUT -p tcp -m multiport --dports 443,6443 -j RETURN
-A PROXY_INIT_OUTPUT -p tcp -m comment --comment "proxy-init/redirect-all-outgoing" -j REDIRECT --to-ports 4140
-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191,4567,4568 -j RETURN
-A PROXY_INIT_REDIRECT -p tcp -m comment --comment "proxy-init/redirect-all-incoming" -j REDIRECT --to-ports 4143
COMMIT
"""

KUBE_PROXY = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-AAAA - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-BBBB - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-SEP-AAAA -p tcp -m tcp -j DNAT --to-destination 10.244.0.5:80
-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-BBBB
-A KUBE-SVC-BBBB -j KUBE-SEP-AAAA
-A POSTROUTING -o cni0 -j MASQUERADE
COMMIT
"""


def test_linkerd_proxy_init_is_recognised() -> None:
    [inference] = infer_text(LINKERD)
    assert inference.generator == "linkerd" and inference.foreign == ()
    assert inference.options["incoming-proxy-port"] == "4143"
    assert inference.options["outgoing-proxy-port"] == "4140"
    assert inference.options["proxy-uid"] == "2102"
    assert inference.options["inbound-ports-to-ignore"] == "4190,4191,4567,4568"


def test_kube_proxy_is_recognised_and_its_neighbours_are_foreign() -> None:
    [inference] = infer_text(KUBE_PROXY)
    assert inference.generator == "kube-proxy"
    assert [(f.chain, f.position) for f in inference.foreign] == [("POSTROUTING", 2)]


def test_several_generators_give_one_object_each() -> None:
    sidecar = _dump(DEFAULT_POD).split("*nat", 1)
    nat_kube = KUBE_PROXY.split(":KUBE-MARK-MASQ - [0:0]\n", 1)[1].rsplit("COMMIT", 1)[0]
    text = sidecar[0] + "*nat" + sidecar[1].replace(":ISTIO_INBOUND - [0:0]",
                                                    ":KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n"
                                                    ":KUBE-SEP-AAAA - [0:0]\n:KUBE-SERVICES - [0:0]\n"
                                                    ":KUBE-SVC-BBBB - [0:0]\n:ISTIO_INBOUND - [0:0]", 1)
    text = text.replace("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n",
                        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n" + nat_kube, 1)
    inferences = infer_text(text)
    assert [i.generator for i in inferences] == ["istio-sidecar", "kube-proxy"]
    assert inferences[0].exact and inferences[0].releases == ("1.25", "current")
    assert [f.rule for f in inferences[0].foreign] == ["-A POSTROUTING -o cni0 -j MASQUERADE"]
    assert inferences[1].foreign == inferences[0].foreign  # each object stands alone


def test_an_empty_dump_and_an_unknown_one_say_so() -> None:
    [empty] = infer_rules({})
    assert empty.generator == "unknown" and "no rules at all" in empty.notes[0]
    [unknown] = infer_text("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.0.0.0/8 -j DROP\nCOMMIT\n")
    assert unknown.generator == "unknown" and len(unknown.foreign) == 1


def test_ambient_rules_are_recognised() -> None:
    """Every ambient golden and kernel read-back: istio-ambient, nothing foreign, DNS and ingress read off."""
    ambient = conformance_dir("istio-ambient")
    files = [*sorted((ambient / "iptables").glob("*.golden")), *sorted((ambient / "history").glob("*.golden")),
             *sorted((ambient / "kernel" / "iptables").glob("*.iptables-save"))]
    assert files
    for path in files:
        [inference] = infer_text(path.read_text())
        assert inference.generator == "istio-ambient" and inference.foreign == (), path.name
        if "hostprobe" not in path.name:
            assert inference.options["RedirectDNS"] is ("dns_pod_disabled" not in path.name and (
                "default" in path.name or "dns_pod_enabled" in path.name or "tproxy" in path.name)), path.name
            ingress = inference.annotations.get("ambient.istio.io/bypass-inbound-capture") == "true"
            assert ingress is ("ingress" in path.name), path.name


# --- what users paste ------------------------------------------------------------------------------

def _cli(tmp_path: Path, text: str, *more: str) -> Any:
    path = tmp_path / "pod.rules"
    path.write_text(text)
    return run(["infer", "--rules", str(path), *more])


def test_json_is_exactly_the_contract(tmp_path: Path) -> None:
    r = _cli(tmp_path, _dump(DEFAULT_POD), "--format", "json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert list(doc) == CONTRACT_KEYS
    assert doc["generator"] == "istio-sidecar" and doc["releases"] == {"from": "1.25", "to": "current"}
    assert doc["options"]["istio-inbound-ports"] == "*" and doc["foreign"] == []


KUBE_FILTER = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
"""


def test_several_generators_are_a_json_list(tmp_path: Path) -> None:
    r = _cli(tmp_path, _dump(DEFAULT_POD) + KUBE_FILTER, "--format", "json")
    assert r.code == 0, r.stderr
    docs = json.loads(r.stdout)
    assert [d["generator"] for d in docs] == ["istio-sidecar", "kube-proxy"]
    assert all(list(d) == CONTRACT_KEYS for d in docs)
    assert docs[1]["releases"] is None


def test_every_pasted_form_gives_the_same_answer(tmp_path: Path) -> None:
    save = _dump(DEFAULT_POD)
    want = infer_text(save)[0].options
    counters = "\n".join(f"[3:180] {ln}" if ln.startswith("-A") else ln for ln in save.splitlines())
    nft = "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Tue Dec  1 10:00:00 2026\n" + save
    listing = "$ iptables -t nat -S\n" + "\n".join(
        f"-P {ln[1:].split()[0]} ACCEPT" if ln.startswith(":") and " ACCEPT " in ln
        else f"-N {ln[1:].split()[0]}" if ln.startswith(":") else ln
        for ln in save.split("*nat\n", 1)[1].split("COMMIT")[0].splitlines())
    log = "\n".join([
        '{"log":"Writing following contents to rules file:  /tmp/iptables-rules-1.txt\\n","stream":"stdout"}',
        *(json.dumps({"log": ln + "\n", "stream": "stdout", "time": "2026-12-01T10:00:00Z"})
          for ln in ["iptables-save", *save.splitlines()]),
    ])
    kubectl = "\n".join(f"2026-12-01T10:00:00.000000000Z {ln}" for ln in ["Running iptables-save", *save.splitlines()])
    for form in (counters, nft, listing, log, kubectl):
        r = _cli(tmp_path, form, "--format", "json")
        assert r.code == 0, (r.stderr, form[:300])
        assert json.loads(r.stdout)["options"] == want, form[:300]


def test_istio_init_logs_of_both_eras_are_read(tmp_path: Path) -> None:
    """A 1.x istio-init log: its environment dump, the restore payload it wrote, then iptables-save."""
    restore = (CURRENT / "empty.iptables.golden").read_text() if CURRENT.is_dir() else None
    if restore is None:
        pytest.skip(f"conformance data not found at {CURRENT}")
    log = ("Environment:\n------------\nENVOY_PORT=\n\nVariables:\n----------\nPROXY_PORT=15001\n\n"
           "Writing following contents to rules file:  /tmp/iptables-rules-1618325274949408325.txt147630346\n"
           + restore.replace("iptables-save\nip6tables-save\n", "") + "\niptables-restore --noflush /tmp/x\n")
    r = _cli(tmp_path, log, "--format", "json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["releases"]["to"] == "current"
    script = "\n".join(["+ iptables -t nat -N ISTIO_REDIRECT",
                        "+ iptables -t nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-port 15001"])
    r = _cli(tmp_path, script)
    assert r.code == 0 and "istio-sidecar" in r.stdout, r.stderr


@pytest.mark.parametrize(("text", "error"), [
    ("hello\nworld\n", "no rules found"),
    ("*nat\n-A OUTPUT -p tcp --dport 99999 -j RETURN\nCOMMIT\n", "line 2: "),
    ("-A OUTPUT -j RETURN\n", "line 1: an iptables -S listing without its command line"),
])
def test_bad_input_is_one_error_line_naming_file_and_line(tmp_path: Path, text: str, error: str) -> None:
    r = _cli(tmp_path, text)
    assert r.code == 2 and len(r.error_lines) == 1, r.stderr
    assert r.error_lines[0].startswith("Error: ") and "pod.rules" in r.error_lines[0] and error in r.error_lines[0]


def test_two_files_of_one_family_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.rules", tmp_path / "b.rules"
    a.write_text(_dump(DEFAULT_POD))
    b.write_text(_dump(DEFAULT_POD))
    r = run(["infer", "--rules", str(a), str(b)])
    assert r.code == 2 and "hold IPv4 rules" in r.stderr


FRAGMENTS = ["*nat", "* nat", "*mangle", "COMMIT", ":ISTIO_OUTPUT - [0:0]", "-N ISTIO_OUTPUT", "-P OUTPUT ACCEPT",
             "-A ISTIO_OUTPUT -j RETURN", "-A OUTPUT -p tcp -j ISTIO_OUTPUT", "-A ISTIO_REDIRECT -j REDIRECT",
             "-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN", "-I PREROUTING 1 -i eth1 -j RETURN",
             "iptables -t nat -A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN", "ip6tables -t nat -N ISTIO_OUTPUT",
             "$ iptables -t mangle -S", '{"log":"*nat\\n"}', "2026-12-01T10:00:00Z info x", "# IPv6", "", "-A",
             "-P", "[1:2] -A OUTPUT -j ISTIO_OUTPUT", "-A ISTIO_TPROXY -p tcp -j TPROXY --on-port 15006 "
             "--tproxy-mark 0x539/0xffffffff", "-A ISTIO_DIVERT -j MARK --set-mark 0x539", "iptables-save"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=14))
def test_any_paste_is_read_or_refused_with_a_netsim_error(lines: list[str]) -> None:
    """h11's invariant for the reader and the inference: an answer or a NetsimError, never anything else."""
    from netsim.errors import NetsimError
    from netsim.netfilter.dump import read_pasted

    try:
        rulesets = read_pasted("\n".join(lines)).rulesets
    except NetsimError:
        return
    for inference in infer_rules(rulesets):
        json.dumps(inference.as_dict())
