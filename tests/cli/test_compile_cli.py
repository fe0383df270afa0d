"""``netsim compile``: every istio-iptables option (long and short), netsim's own options, the
promised error lines (exit 2, one ``Error:`` line, no traceback), env precedence and --explain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from compile_runner import compile_, run

from netsim.spec.flags import OPTIONS, Kind, OptionSpec

REPO = Path(__file__).resolve().parents[2]

VALID = {
    Kind.PORT: "15123", Kind.PORT_LIST: "81,82", Kind.PORT_LIST_OR_ALL: "*", Kind.ID_LIST: "1000,1001",
    Kind.MODE: "TPROXY", Kind.MARK: "1400", Kind.ROUTE_TABLE: "140", Kind.IFACE_LIST: "eth1",
    Kind.CIDR_LIST: "10.9.0.0/16", Kind.CIDR_LIST_OR_ALL: "10.0.0.0/8", Kind.BOOL: "true",
    Kind.DURATION: "3s", Kind.TEXT: "/var/run/netns/x", Kind.BINARY: "nft",
}
FLAG_OPTIONS = [o for o in OPTIONS if o.long is not None]
SHORT_OPTIONS = [o for o in OPTIONS if o.short is not None]


def explain_json(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    r = compile_("--explain", "--format", "json", *args, env=env)
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data, dict)
    return data


def option_row(data: dict[str, object], key: str) -> dict[str, object]:
    rows = data["options"]
    assert isinstance(rows, list)
    for row in rows:
        if row["key"] == key:
            assert isinstance(row, dict)
            return row
    raise AssertionError(f"{key} not in report")


def finding(data: dict[str, object], key: str, location: str | None = None) -> dict[str, object]:
    items = data["findings"]
    assert isinstance(items, list)
    for f in items:
        if f["key"] == key and (location is None or f["location"] == location):
            assert isinstance(f, dict)
            return f
    raise AssertionError(f"no finding {key} in {items}")


# --- help -------------------------------------------------------------------------------------

def test_compile_help_lists_every_visible_istio_option_long_and_short() -> None:
    r = compile_("--help")
    assert r.code == 0 and r.stderr == ""
    for spec in FLAG_OPTIONS:
        if not spec.effect:
            assert f"--{spec.long}" in r.stdout
            if spec.short:
                assert f"-{spec.short}, --{spec.long}" in r.stdout
    for own in ("--pod", "--istio-version", "--explain", "--format", "--family", "--ipv6", "--dns-servers-v4",
                "--dns-servers-v6", "--pod-ip", "--name"):
        assert own in r.stdout


def test_group_help_lists_compile() -> None:
    r = run(["--help"])
    assert r.code == 0 and "compile" in r.stdout


# --- every option is accepted and wins as a flag ------------------------------------------------

@pytest.mark.parametrize("spec", FLAG_OPTIONS, ids=lambda s: s.key)
def test_every_long_option_is_accepted_and_reported_as_from_the_command_line(spec: OptionSpec) -> None:
    value = VALID[spec.kind]
    data = explain_json(f"--{spec.long}={value}")
    row = option_row(data, spec.key)
    assert row["value"] == value and row["source"] == "command line"


@pytest.mark.parametrize("spec", SHORT_OPTIONS, ids=lambda s: s.short or "")
def test_every_short_option_means_the_long_one(spec: OptionSpec) -> None:
    value = VALID[spec.kind]
    args = [f"-{spec.short}"] if spec.kind is Kind.BOOL else [f"-{spec.short}", value]
    row = option_row(explain_json(*args), spec.key)
    assert row["value"] == value and row["origin"] == f"--{spec.long}"


def test_boolean_options_take_go_style_values() -> None:
    assert option_row(explain_json("--redirect-dns"), "redirect-dns")["value"] == "true"
    assert option_row(explain_json("--redirect-dns=false"), "redirect-dns")["value"] == "false"
    assert option_row(explain_json("--drop-invalid", "1"), "drop-invalid")["value"] == "true"


def test_log_output_level_from_copied_istio_init_args_is_accepted() -> None:
    r = compile_("-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*",
                 "-d", "15090,15021,15020", "--log_output_level=default:info")
    assert r.code == 0 and "-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN" in r.stdout


# --- promised error lines -----------------------------------------------------------------------

BAD_VALUES = [
    (["-b", "70000"], "Invalid value for '-b' / '--istio-inbound-ports': \"70000\": port out of range; "
                      "a port is a whole number from 0 to 65535"),
    (["--istio-inbound-ports", "80-"], "Invalid value for '-b' / '--istio-inbound-ports': \"80-\": Istio takes "
                                       "single ports, not ranges; list them: 80,81,82"),
    (["-b", "abc"], "Invalid value for '-b' / '--istio-inbound-ports': \"abc\": not a port; a port is a whole "
                    "number from 0 to 65535"),
    (["-d", "15020,x"], "Invalid value for '-d' / '--istio-local-exclude-ports': \"x\": not a port; a port is a "
                        "whole number from 0 to 65535"),
    (["-q", "*"], "Invalid value for '-q' / '--istio-outbound-ports': \"*\": * is not allowed here; list ports"),
    (["-p", "99999"], "Invalid value for '-p' / '--envoy-port': \"99999\": port out of range; a port is a whole "
                      "number from 0 to 65535"),
    (["-i", "10.0.0.1"], "Invalid value for '-i' / '--istio-service-cidr': \"10.0.0.1\": not a CIDR; add a "
                         "prefix length, e.g. 10.0.0.1/32"),
    (["-i", "10.0.0.0/33"], "Invalid value for '-i' / '--istio-service-cidr': \"10.0.0.0/33\": not a CIDR such "
                            "as 10.0.0.0/8 or fd00::/8"),
    (["-x", "*"], "Invalid value for '-x' / '--istio-service-exclude-cidr': \"*\": not allowed in an exclude "
                  "list (istio-iptables fails on it)"),
    (["-m", "tproxy"], "Invalid value for '-m' / '--istio-inbound-interception-mode': \"tproxy\": unknown "
                       "interception mode; use REDIRECT or TPROXY (istio-iptables would silently use REDIRECT)"),
    (["-m", "NONE"], "Invalid value for '-m' / '--istio-inbound-interception-mode': \"NONE\": unknown "
                     "interception mode; use REDIRECT or TPROXY (NONE is the pod annotation for no capture at "
                     "all) (istio-iptables would silently use REDIRECT)"),
    (["-u", "istio-proxy"], "Invalid value for '-u' / '--proxy-uid': \"istio-proxy\": not a numeric UID/GID "
                            "(0 to 4294967294)"),
    (["-g", "1337,x"], "Invalid value for '-g' / '--proxy-gid': \"x\": not a numeric UID/GID (0 to 4294967294)"),
    (["-t", "0x539"], "Invalid value for '-t' / '--istio-inbound-tproxy-mark': \"0x539\": a mark must be a "
                      "decimal number from 0 to 4294967295"),
    (["-r", "0"], "Invalid value for '-r' / '--istio-inbound-tproxy-route-table': \"0\": a route table must be "
                  "a decimal number from 1 to 4294967295"),
    (["-c", "a-very-long-interface-name"], "Invalid value for '-c' / '--istio-exclude-interfaces': "
                                           "\"a-very-long-interface-name\": not an interface name (at most 15 "
                                           "characters, no spaces, '/' or ':')"),
    (["--redirect-dns=maybe"], "Invalid value for '--redirect-dns': \"maybe\": not a boolean; use true or false"),
    (["--force-iptables-binary", "iptables"], "Invalid value for '--force-iptables-binary': \"iptables\": must "
                                              "be legacy or nft"),
    (["--dns-servers-v4", "::1"], "Invalid value for '--dns-servers-v4': \"::1\": not an IPv4 address"),
    (["--dns-servers-v6", "10.0.0.1"], "Invalid value for '--dns-servers-v6': \"10.0.0.1\": not an IPv6 address"),
    (["--pod-ip", "10.0.0.300"], "Invalid value for '--pod-ip': \"10.0.0.300\": not an IP address"),
    (["--istio-version", "2.0"], "Invalid value for '--istio-version': \"2.0\": not an Istio version such as "
                                 "1.2, 1.24.3 or current"),
    (["--ipv6=perhaps"], "Invalid value for '--ipv6': \"perhaps\": not a boolean; use true or false"),
    (["--cluster-dns", "kube-dns", "--redirect-dns"], "option --cluster-dns: \"kube-dns\": not an IP address"),
    (["--name", "web"], "option --name: needs --pod FILE"),
    (["--family", "4", "--format", "nft"], "option --family 4: not available with --format nft (one inet table "
                                           "holds both families)"),
    (["--family", "6"], "option --family 6: this pod gets no ip6tables rules (IPv6 is off: no pod address "
                        "known: IPv4 assumed)"),
]


@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_input_exits_2_with_one_error_line(args: list[str], message: str) -> None:
    r = compile_(*args)
    assert (r.code, r.stdout, r.stderr) == (2, "", f"Error: {message}\n")


def test_unknown_option_is_a_usage_error_with_status_2() -> None:
    r = compile_("--no-such-option")
    assert r.code == 2
    assert r.stderr == "Error: No such option '--no-such-option'. (see 'netsim compile --help')\n"


POD_ERRORS = [
    ("kind: Pod\nmetadata: {name: p\nspec: {}\n", "{f}:3: not valid YAML: did not find expected ',' or '}}'"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\nkind: ConfigMap\nmetadata: {name: cm}\n",
     "{f}: no Pod or workload with a pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) "
     "found; the file has: Service web, ConfigMap cm"),
    ("- a\n- b\n", "{f}: not a Kubernetes object (a YAML list, expected a mapping with apiVersion and kind)"),
    ("kind: Pod\nmetadata:\n  name: p\n  annotations:\n    traffic.sidecar.istio.io/includeInboundPorts: 80-\n"
     "spec:\n  containers: [{name: app}]\n",
     "{f}: Pod p: annotation traffic.sidecar.istio.io/includeInboundPorts: \"80-\": Istio takes single ports, "
     "not ranges; list them: 80,81,82"),
    ("kind: Pod\nmetadata:\n  name: p\n  annotations:\n    traffic.sidecar.istio.io/excludeOutboundPorts: 5701\n"
     "spec:\n  containers: [{name: app}]\n",
     "{f}: Pod p: metadata.annotations: traffic.sidecar.istio.io/excludeOutboundPorts: 5701 is a YAML number; "
     "Kubernetes needs a string: quote it (\"5701\")"),
    ("kind: Pod\nmetadata:\n  name: p\n  annotations:\n    sidecar.istio.io/interceptionMode: tproxy\n"
     "spec:\n  containers: [{name: app}]\n",
     "{f}: Pod p: annotation sidecar.istio.io/interceptionMode: \"tproxy\": the injector accepts only REDIRECT, "
     "TPROXY or NONE"),
    ("kind: Pod\nmetadata:\n  name: p\n  annotations:\n    traffic.sidecar.istio.io/excludeOutboundIPRanges: "
     "\"10.0.0.0/8,\"\nspec:\n  containers: [{name: app}]\n",
     "{f}: Pod p: annotation traffic.sidecar.istio.io/excludeOutboundIPRanges: \"10.0.0.0/8,\": empty item in "
     "CIDR list (the injector rejects it)"),
    ("kind: Pod\nmetadata:\n  name: p\n  annotations:\n    proxy.istio.io/config: \"proxyMetadata: [x\"\n"
     "spec:\n  containers: [{name: app}]\n",
     "{f}: Pod p: annotation proxy.istio.io/config: not valid YAML/JSON: did not find expected ',' or ']'"),
    ("kind: Pod\nmetadata:\n  name: p\n  annotations:\n    proxy.istio.io/config: |\n      proxyMetadata:\n"
     "        ISTIO_META_DNS_CAPTURE: true\nspec:\n  containers: [{name: app}]\n",
     "{f}: Pod p: annotation proxy.istio.io/config: proxyMetadata: ISTIO_META_DNS_CAPTURE: true is a YAML "
     "boolean; Kubernetes needs a string: quote it (\"true\")"),
    ("kind: Deployment\nmetadata: {name: d}\nspec: {}\n", "{f}: Deployment d: spec.template: missing or not a mapping"),
    ("kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: app\n    ports: [{containerPort: 70000}]\n",
     "{f}: Pod p: spec.containers[0].ports[0].containerPort: 70000: expected a port number from 1 to 65535"),
]


@pytest.mark.parametrize(("text", "message"), POD_ERRORS, ids=range(len(POD_ERRORS)))
def test_bad_manifest_exits_2_with_file_field_and_value(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text(text)
    r = compile_("--pod", str(f))
    assert (r.code, r.stdout, r.stderr) == (2, "", f"Error: {message.format(f=f)}\n")


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    r = compile_("--pod", str(tmp_path / "nope.yaml"))
    assert (r.code, r.stderr) == (2, f"Error: {tmp_path / 'nope.yaml'}: cannot read: No such file or directory\n")
    r = compile_("--pod", "rules/exclude-5701/pod.yaml", "--name", "other")
    assert (r.code, r.stderr) == (2, 'Error: rules/exclude-5701/pod.yaml: no pod-bearing object named "other"; '
                                     "found: Deployment cache\n")


# --- environment variables ----------------------------------------------------------------------

def test_env_var_sets_an_option_and_the_flag_wins() -> None:
    assert option_row(explain_json(env={"PROXY_UID": "5"}), "proxy-uid")["value"] == "5"
    row = option_row(explain_json("-u", "6", env={"PROXY_UID": "5"}), "proxy-uid")
    assert row["value"] == "6" and row["overrides"] == ["environment variable PROXY_UID = '5'"]


def test_secondary_env_var_beats_the_primary_and_the_flag_beats_both() -> None:
    env = {"REDIRECT_DNS": "false", "ISTIO_META_DNS_CAPTURE": "true"}
    row = option_row(explain_json(env=env), "redirect-dns")
    assert (row["value"], row["origin"]) == ("true", "environment variable ISTIO_META_DNS_CAPTURE")
    assert option_row(explain_json("--redirect-dns=false", env=env), "redirect-dns")["value"] == "false"
    env = {"DROP_INVALID": "true", "INVALID_DROP": "0"}
    assert option_row(explain_json(env=env), "drop-invalid")["value"] == "false"


def test_unparsable_boolean_env_is_silently_ignored_like_istio() -> None:
    data = explain_json(env={"REDIRECT_DNS": "yes"})
    assert option_row(data, "redirect-dns")["value"] == "false"
    assert data["ignored"] == [{"origin": "environment variable REDIRECT_DNS", "value": "yes",
                                "reason": '"yes": not a boolean; use true or false; ignored, as istio-iptables '
                                          "ignores it"}]
    r = compile_("-b", "*", env={"REDIRECT_DNS": "yes"})
    assert r.code == 0 and r.stderr == ""


def test_bad_env_value_names_the_variable() -> None:
    r = compile_(env={"ISTIO_INBOUND_PORTS": "70000"})
    assert (r.code, r.stderr) == (2, 'Error: environment variable ISTIO_INBOUND_PORTS: "70000": port out of '
                                     "range; a port is a whole number from 0 to 65535\n")


def test_env_only_inputs_owner_groups_and_loopback_cidr() -> None:
    data = explain_json(env={"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "888",
                             "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.1/8"})
    assert option_row(data, "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE")["value"] == "888"
    r = compile_("-i", "*", env={"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "888"})
    assert "-A ISTIO_OUTBOUND -m owner --gid-owner 888 -j RETURN" not in r.stdout
    assert "-A ISTIO_OUTPUT -m owner --gid-owner 888 -j RETURN" in r.stdout
    r = compile_(env={"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "10.0.0.1/8"})
    assert r.code == 2 and "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR" in r.stderr


def test_pod_proxy_metadata_beats_your_env_and_injector_args_beat_both(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text("kind: Pod\nmetadata:\n  name: p\n  annotations:\n    proxy.istio.io/config: |\n"
                 "      proxyMetadata:\n        ISTIO_META_DNS_CAPTURE: \"false\"\n"
                 "        ISTIO_INBOUND_PORTS: \"81\"\n"
                 "spec:\n  containers: [{name: app}]\n")
    data = explain_json("--pod", str(f), env={"ISTIO_META_DNS_CAPTURE": "true"})
    assert option_row(data, "redirect-dns")["value"] == "false"
    row = option_row(data, "istio-inbound-ports")
    assert row["value"] == "*" and row["overrides"] == ["proxyMetadata ISTIO_INBOUND_PORTS = '81'"]
    assert finding(data, "proxyMetadata.ISTIO_INBOUND_PORTS")["used"] is False


# --- pods, flags over pods, versions ------------------------------------------------------------

def test_flags_override_what_the_pod_derives_and_explain_says_so() -> None:
    data = explain_json("--pod", "rules/exclude-5701/pod.yaml", "-o", "5702")
    assert option_row(data, "istio-local-outbound-ports-exclude")["value"] == "5702"
    f = finding(data, "traffic.sidecar.istio.io/excludeOutboundPorts")
    assert f["used"] is False and f["reason"] == "overridden by --istio-local-outbound-ports-exclude '5702'"


def test_annotation_on_the_deployment_metadata_is_reported_not_used() -> None:
    data = explain_json("--pod", "rules/exclude-5701/pod.yaml")
    f = finding(data, "traffic.sidecar.istio.io/excludeInboundPorts", "Deployment metadata")
    assert f["used"] is False and "pod template" in str(f["reason"])
    assert option_row(data, "istio-local-exclude-ports")["value"] == "15090,15021,15020"
    r = compile_("--pod", "rules/exclude-5701/pod.yaml")
    assert "netsim: warning: traffic.sidecar.istio.io/excludeInboundPorts is on the Deployment's metadata" in r.stderr


def test_exclude_inbound_ports_is_reported_unused_unless_include_is_star(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text("kind: Pod\nmetadata:\n  name: p\n  annotations:\n"
                 "    traffic.sidecar.istio.io/includeInboundPorts: \"8080\"\n"
                 "    traffic.sidecar.istio.io/excludeInboundPorts: \"9000\"\n"
                 "spec:\n  containers: [{name: app}]\n")
    g = finding(explain_json("--pod", str(f)), "traffic.sidecar.istio.io/excludeInboundPorts")
    assert g["used"] is False
    assert g["reason"] == "passed in -d, but -d is ignored unless includeInboundPorts is * (it is '8080')"


@pytest.mark.parametrize(("version", "b", "d"), [
    ("1.0", "8080", ""), ("1.1", "8080", "15020"), ("1.2.6", "8080", "15020"), ("1.3", "*", "15020"),
    ("1.5", "*", "15090,15020"), ("1.6", "*", "15090,15021,15020"), ("current", "*", "15090,15021,15020"),
])
def test_version_profiles_change_the_injector_defaults(version: str, b: str, d: str) -> None:
    data = explain_json("--pod", "rules/mtls-503/pod.yaml", "--istio-version", version)
    assert option_row(data, "istio-inbound-ports")["value"] == b
    assert option_row(data, "istio-local-exclude-ports")["value"] == d


def test_istio_1_2_does_not_capture_port_80_and_current_does() -> None:
    old = compile_("--pod", "rules/mtls-503/pod.yaml", "--istio-version", "1.2", "--pod-ip", "10.244.0.5")
    new = compile_("--pod", "rules/mtls-503/pod.yaml", "--pod-ip", "10.244.0.5")
    assert "--dport 8080 -j ISTIO_IN_REDIRECT" in old.stdout
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT" not in old.stdout
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT" in new.stdout


def test_annotation_missing_from_the_release_is_warned_and_not_used(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text("kind: Pod\nmetadata:\n  name: p\n  annotations:\n"
                 "    traffic.sidecar.istio.io/excludeInterfaces: eth1\nspec:\n  containers: [{name: app}]\n")
    r = compile_("--pod", str(f), "--istio-version", "1.2")
    assert r.code == 0 and "-i eth1 -j RETURN" not in r.stdout
    assert ("netsim: warning: traffic.sidecar.istio.io/excludeInterfaces does not exist in Istio 1.2 (added in "
            "1.12); its injector ignores it") in r.stderr
    assert "-A PREROUTING -i eth1 -j RETURN" in compile_("--pod", str(f)).stdout


def test_flag_missing_from_the_release_is_refused_as_it_was() -> None:
    """The 1.2 script's getopts and 1.8's pflag refused an option they did not have (history §7)."""
    r = compile_("--istio-version", "1.2", "--redirect-dns", "-b", "*")
    assert r.code == 2 and r.error_lines == [
        "Error: option --redirect-dns: Istio 1.2 has no such option (added in 1.9); its istio-iptables.sh "
        "script refuses it"], r.stderr
    assert compile_("--istio-version", "1.2", "-z", "15006").code == 2  # -z: 1.3
    assert compile_("--istio-version", "1.3", "-z", "15006").code == 0
    assert compile_("--istio-version", "1.12.8", "--drop-invalid").code == 2  # 1.12.9 (history §4.13)
    assert "INVALID -j DROP" in compile_("--istio-version", "1.12.9", "--drop-invalid").stdout


def test_environment_variable_missing_from_the_release_is_ignored_as_it_was() -> None:
    r = compile_("--istio-version", "1.8", "-i", "*", "--explain", env={"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "5001"})
    assert "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE = '5001': Istio 1.8 does not read it (read from 1.14)" in r.stdout
    r = compile_("--istio-version", "1.6", "-i", "*", env={"DNS_CAPTURE": "1"})
    assert "-A OUTPUT -p udp -m udp --dport 53 -j REDIRECT --to-ports 15013" in r.stdout
    assert "15013" not in compile_("-i", "*", env={"DNS_CAPTURE": "1"}).stdout  # 1.6 only (history §4.4)


def test_interception_mode_none_writes_no_rules_and_says_why(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text("kind: Pod\nmetadata:\n  name: p\n  annotations:\n    sidecar.istio.io/interceptionMode: NONE\n"
                 "spec:\n  containers: [{name: app}]\n")
    r = compile_("--pod", str(f))
    assert (r.code, r.stdout) == (0, "")
    assert r.stderr == ("netsim: no capture rules: interceptionMode NONE (annotation sidecar.istio.io/"
                        "interceptionMode): the injector adds no istio-init, so Istio writes no capture rules "
                        "for this pod\n")
    data = json.loads(compile_("--pod", str(f), "--format", "json").stdout)
    assert data["capture"] is False and data["families"] == {"ipv4": None, "ipv6": None}


def test_tproxy_pod_gets_uid_1337_and_the_envoy_gid_note() -> None:
    data = explain_json("--pod", "rules/tproxy/pod.yaml")
    row = option_row(data, "proxy-uid")
    assert row["value"] == "1337" and "TPROXY" in str(row["origin"])
    assert any("UID 0 / GID 1337" in n for n in data["notes"])  # type: ignore[union-attr]


def test_istio_proxy_run_as_user_replaces_the_uid(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text("kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: app\n  - name: istio-proxy\n"
                 "    securityContext: {runAsUser: 2000}\n")
    data = explain_json("--pod", str(f))
    assert option_row(data, "proxy-uid")["value"] == "2000"
    assert option_row(data, "proxy-gid")["value"] == "2000"


def test_multi_document_and_list_files_pick_the_first_pod_bearing_object_or_by_name(tmp_path: Path) -> None:
    f = tmp_path / "all.yaml"
    f.write_text("kind: Service\nmetadata: {name: s}\n---\nkind: List\nitems:\n"
                 "- kind: CronJob\n  metadata: {name: nightly}\n  spec:\n    jobTemplate:\n      spec:\n"
                 "        template:\n          metadata:\n            annotations:\n"
                 "              traffic.sidecar.istio.io/includeInboundPorts: \"\"\n"
                 "          spec:\n            containers: [{name: job}]\n"
                 "- kind: StatefulSet\n  metadata: {name: db}\n  spec:\n    template:\n"
                 "      spec:\n        containers: [{name: db}]\n")
    data = explain_json("--pod", str(f))
    assert data["subject"] == f"{f}: document 2: items[0]: CronJob nightly"
    assert "first of 2 pod-bearing objects" in str(data["choice"]) and "--name: db" in str(data["choice"])
    assert option_row(data, "istio-inbound-ports")["value"] == ""
    assert option_row(explain_json("--pod", str(f), "--name", "db"), "istio-inbound-ports")["value"] == "*"


# --- network inputs and formats -----------------------------------------------------------------

def test_ipv6_pod_prints_both_families_labelled() -> None:
    r = compile_("--pod", "rules/ipv6/pod.yaml")
    assert r.stdout.startswith("# IPv4: iptables-save\n*nat\n")
    assert "\n# IPv6: ip6tables-save\n*nat\n" in r.stdout and "-s ::6/128 -o lo -j RETURN" in r.stdout
    only6 = compile_("--pod", "rules/ipv6/pod.yaml", "--family", "6").stdout
    assert only6.startswith("*nat\n") and "127.0.0.6" not in only6


def test_first_pod_address_decides_ipv6_unless_dual_stack() -> None:
    assert option_row(explain_json("--pod-ip", "10.0.0.5,fd00::5"), "ENABLE_INBOUND_IPV6")["value"] == "false"
    assert option_row(explain_json("--pod-ip", "fd00::5", "--pod-ip", "10.0.0.5"),
                      "ENABLE_INBOUND_IPV6")["value"] == "true"
    assert option_row(explain_json("--pod-ip", "10.0.0.5,fd00::5", "--dual-stack"),
                      "ENABLE_INBOUND_IPV6")["value"] == "true"
    assert option_row(explain_json("--pod-ip", "fe80::1,10.0.0.5"), "ENABLE_INBOUND_IPV6")["value"] == "false"
    assert option_row(explain_json("--ipv6", "--pod-ip", "10.0.0.5"), "ENABLE_INBOUND_IPV6")["value"] == "true"


def test_dns_servers_come_from_flags_or_cluster_dns_only_when_istio_reads_resolv_conf() -> None:
    row = option_row(explain_json("--redirect-dns"), "DNS_SERVERS_V4")
    assert row["value"] == "10.96.0.10"
    assert option_row(explain_json("--redirect-dns", "--cluster-dns", "10.0.0.10"), "DNS_SERVERS_V4")["value"] \
        == "10.0.0.10"
    assert option_row(explain_json("--redirect-dns", "--dns-servers-v4", "1.1.1.1"), "DNS_SERVERS_V4")["value"] \
        == "1.1.1.1"
    assert option_row(explain_json("--redirect-dns", "--capture-all-dns"), "DNS_SERVERS_V4")["value"] == ""
    assert option_row(explain_json(), "DNS_SERVERS_V4")["value"] == ""


def test_dns_policy_none_uses_dns_config_nameservers(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text("kind: Pod\nmetadata:\n  name: p\n  annotations:\n    proxy.istio.io/config: |\n"
                 "      proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\"}\nspec:\n  dnsPolicy: None\n"
                 "  dnsConfig: {nameservers: [1.1.1.1, \"2606:4700:4700::1111\"]}\n  containers: [{name: app}]\n")
    data = explain_json("--pod", str(f))
    assert option_row(data, "DNS_SERVERS_V4")["value"] == "1.1.1.1"
    assert option_row(data, "DNS_SERVERS_V6")["value"] == "2606:4700:4700::1111"


def test_native_nftables_makes_nft_the_default_format() -> None:
    r = compile_("-b", "*", "--native-nftables")
    assert r.stdout.startswith("add table inet istio-proxy-nat\n")


def test_json_format_has_config_rules_per_family_table_chain_and_routes() -> None:
    data = json.loads(compile_("--pod", "rules/tproxy/pod.yaml", "--format", "json").stdout)
    assert data["schema"] == "netsim.compile/v1" and data["capture"] is True
    assert data["config"]["mode"] == "TPROXY" and data["config"]["inbound_ports"] == ["*"]
    mangle = next(t for t in data["families"]["ipv4"]["tables"] if t["name"] == "mangle")
    chain = next(c for c in mangle["chains"] if c["name"] == "ISTIO_INBOUND")
    assert chain["rules"][0] == "-A ISTIO_INBOUND -p tcp -m mark --mark 0x539 -j RETURN"
    assert data["families"]["ipv6"] is None
    assert ["ip", "-4", "rule", "add", "fwmark", "1337", "lookup", "133"] in [r["argv"] for r in data["routes"]]
    assert data["planned"][0]["why"]


def test_iptables_restore_format_is_an_alias_of_iptables_save() -> None:
    args = ("--pod", "rules/ipv6/pod.yaml")
    default = compile_(*args)
    assert default.code == 0 and default.stdout.startswith("# IPv4: iptables-save\n")
    assert compile_(*args, "--format", "iptables-restore").stdout == default.stdout
    assert compile_(*args, "--format", "iptables-save").stdout == default.stdout


def test_json_family_keeps_one_family_in_rules_and_plan() -> None:
    data = json.loads(compile_("--pod", "rules/ipv6/pod.yaml", "--format", "json", "--family", "6").stdout)
    assert data["families"]["ipv4"] is None and data["families"]["ipv6"]["tables"]
    assert {p["family"] for p in data["planned"]} == {6}
    both = json.loads(compile_("--pod", "rules/ipv6/pod.yaml", "--format", "json").stdout)
    assert {p["family"] for p in both["planned"]} == {4, 6}


def test_json_without_capture_says_why_and_has_no_rules() -> None:
    r = compile_("-b", "*", "--skip-rule-apply", "--format", "json")
    data = json.loads(r.stdout)
    assert (r.code, data["capture"], data["config"]) == (0, False, None)
    assert data["reason"] == "--skip-rule-apply (--skip-rule-apply): istio-iptables generates no rules"
    assert data["families"] == {"ipv4": None, "ipv6": None} and data["routes"] == data["planned"] == []


def test_skip_rule_apply_generates_nothing() -> None:
    r = compile_("-b", "*", "--skip-rule-apply")
    assert (r.code, r.stdout) == (0, "")
    assert "istio-iptables generates no rules" in r.stderr


# --- cold start ----------------------------------------------------------------------------------

def test_compile_does_not_load_scapy_pyroute2_dnslib_or_asyncio() -> None:
    code = (
        "import sys\n"
        "import netsim.cli\n"
        "for argv in (['compile', '--help'], ['compile', '--pod', 'rules/dns-capture/pod.yaml']):\n"
        "    try:\n"
        "        netsim.cli.main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('scapy', 'pyroute2', 'dnslib', 'asyncio'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stderr


# --- injected pods, pflag spellings, group names ---------------------------------------------------

INJECTED = """\
kind: Pod
metadata:
  name: web-7d4b9
  annotations:
    traffic.sidecar.istio.io/excludeOutboundPorts: "5701"
spec:
  initContainers:
  - name: istio-init
    args: [istio-iptables, -p, "15001", -z, "15006", -u, "1337", -m, REDIRECT, -i, '*', -x, "", -b, '*',
           -d, "15090,15021,15020", -o, "5701", --log_output_level=default:info]
    env: [{name: ISTIO_META_DNS_CAPTURE, value: "true"}]
  containers: [{name: web}]
status:
  podIPs: [{ip: 10.244.0.9}]
"""


def test_an_injected_pod_is_compiled_from_its_istio_init_command_line(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text(INJECTED)
    data = explain_json("--pod", str(f), "--istio-version", "1.2")
    row = option_row(data, "istio-local-outbound-ports-exclude")
    assert (row["value"], row["origin"]) == ("5701", "initContainers[istio-init].args "
                                                     "-o/--istio-local-outbound-ports-exclude")
    assert option_row(data, "istio-inbound-ports")["value"] == "*"  # the args, not the 1.2 defaults
    assert option_row(data, "redirect-dns")["origin"] == "initContainers[istio-init].env ISTIO_META_DNS_CAPTURE"
    assert option_row(data, "DNS_SERVERS_V4")["value"] == "10.96.0.10"
    assert finding(data, "initContainers[istio-init]")["used"] is True
    f.write_text(INJECTED.replace("-o, \"5701\"", "--bogus"))
    r = compile_("--pod", str(f))
    assert (r.code, r.stderr) == (2, f"Error: {f}: Pod web-7d4b9: initContainers[istio-init].args: '--bogus': "
                                     "unknown istio-iptables flag\n")


def test_pflag_short_option_with_equals() -> None:
    assert option_row(explain_json("-b=80"), "istio-inbound-ports")["value"] == "80"


def test_group_names_resolve_with_a_group_file(tmp_path: Path) -> None:
    g = tmp_path / "group"
    g.write_text("java:x:5001:\n")
    env = {"ISTIO_OUTBOUND_OWNER_GROUPS": "java"}
    r = compile_("-i", "*", f"--group-file={g}", env=env)
    assert "-A ISTIO_OUTPUT -m owner ! --gid-owner 5001 -j RETURN" in r.stdout
    r = compile_("-i", "*", f"--group-file={g}", env={"ISTIO_OUTBOUND_OWNER_GROUPS": "nosuchgroup"})
    assert r.code == 2 and r.stderr.startswith('Error: -m owner: Bad GID value "nosuchgroup": loading these rules')
    g.write_text("broken\n")
    r = compile_("-i", "*", f"--group-file={g}", env=env)
    assert (r.code, r.stderr) == (2, f"Error: {g}:1: 'broken': expected name:password:GID:members\n")
