"""Invariant (STYLE §5): every manifest, annotation value, flag and env value either works or raises
SpecError -- never another exception."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from netsim.errors import SpecError
from netsim.spec import flags as F
from netsim.spec.pod import CAPTURE_ANNOTATIONS, load_pod
from netsim.spec.resolve import PodNetwork, resolve
from netsim.spec.versions import profile_for

TOKENS = st.sampled_from(["", "*", "80", "70000", "80-", "abc", "10.0.0.0/8", "10.0.0.1", "fd00::/8", "TPROXY",
                          "REDIRECT", "NONE", "true", "0", ",", " ", "eth0", "{", "[x", "proxyMetadata: 3",
                          "interceptionMode: X", "proxyMetadata: {INVALID_DROP: 'yes'}"])
VALUES = st.lists(TOKENS, max_size=4).map(",".join) | st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(CAPTURE_ANNOTATIONS)), VALUES, max_size=4),
       st.sampled_from([None, "1.0", "1.2", "1.5", "1.12"]))
def test_any_annotation_values_derive_or_raise_spec_error(annotations: dict[str, str], version: str | None) -> None:
    lines = "".join(f"    {k!r}: {v!r}\n" for k, v in annotations.items()) or "    {}\n"
    text = f"kind: Pod\nmetadata:\n  name: p\n  annotations:\n{lines}spec:\n  containers: [{{name: a}}]\n"
    try:
        pod = load_pod("pod.yaml", text=text)
        resolve(pod=pod, profile=profile_for(version), profile_given=version is not None)
    except SpecError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([o.key for o in F.OPTIONS if o.long]), VALUES, max_size=4),
       st.dictionaries(st.sampled_from(sorted(F.ENV_TO_KEY)), VALUES, max_size=3),
       st.lists(st.sampled_from(["10.0.0.5", "fd00::5", "fe80::1", "127.0.0.1"]), max_size=3))
def test_any_flags_and_env_resolve_or_raise_spec_error(flags: dict[str, str], env: dict[str, str],
                                                        ips: list[str]) -> None:
    with contextlib.suppress(SpecError):
        resolve(flags=flags, env=env, net=PodNetwork(pod_ips=tuple(ips)))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.lists(st.sampled_from(
    ["kind: Pod\n", "kind: List\n", "items: 3\n", "items: [1]\n", "metadata: 3\n", "spec: {}\n", "spec:\n",
     "  containers: 5\n", "  containers: [{name: a, ports: [{containerPort: x}]}]\n", "---\n", "- 1\n",
     "status: {podIPs: [{ip: 1}]}\n", "  initContainers: [{name: istio-init, args: [-b]}]\n",
     "  dnsPolicy: Weird\n", "kind: CronJob\n", "metadata: {annotations: {a: 1}}\n",
     "  containers: [{name: a, ports: 5, env: 3}]\n", "status: {podIPs: 7}\n", "kind: [1]\n",
     "spec: {template: 3, jobTemplate: {spec: 4}}\n"]), max_size=8).map("".join))
def test_any_yaml_text_loads_or_raises_spec_error(text: str) -> None:
    try:
        pod = load_pod("pod.yaml", text=text)
        resolve(pod=pod)
    except SpecError:
        pass
