"""The faster reader of large inputs (orjson, rapidyaml) gives what PyYAML gives, with the same object lines,
and leaves to PyYAML every text it could read differently."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from netsim import k8s


def _list(n: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"w{i}", "namespace": f"n{i % 7}",
                                                                     "annotations": {"a": "x: 1", "b": "yes"}},
         "spec": {"replicas": i % 3, "template": {"spec": {"containers": [
             {"name": "c", "image": "i", "ports": [{"containerPort": 8080 + i % 5}], "args": ["--x=1.5", "on"],
              "env": [{"name": "E", "value": "multi\nline: text"}]}]}}}} for i in range(n)]}


_TEXT = yaml.dump(_list(3000), Dumper=yaml.CSafeDumper, sort_keys=False)


def _read(text: str, monkeypatch: pytest.MonkeyPatch, fast: bool) -> list[tuple[str, int | None, Any]]:
    monkeypatch.setattr(k8s, "FAST_MIN", 1 << 20 if fast else 1 << 60)
    loaded = k8s.parse_objects(text, "f")
    assert not loaded.errors
    return [(o.name, o.line, o.body) for o in loaded.objects]


@pytest.mark.parametrize("fmt", ["yaml", "json", "yaml-docs"])
def test_fast_reader_equals_pyyaml(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    data = _list(3000)
    if fmt == "json":
        text = json.dumps(data, indent=4)
    elif fmt == "yaml":
        text = yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False)
    else:
        text = "---\n".join(yaml.dump(item, Dumper=yaml.CSafeDumper, sort_keys=False) for item in data["items"])
    assert len(text) > 1 << 20
    assert k8s.fast_documents(text) is not None  # the fast path is taken
    fast, slow = _read(text, monkeypatch, True), _read(text, monkeypatch, False)
    assert fast == slow and len(fast) == 3000 and all(line for _n, line, _b in fast)


@pytest.mark.parametrize("risky", ["    b: yes\n", "    b: 010\n", "    b: 1e3\n", "    b: 2024-01-01\n",
                                   "    8080: x\n", "    b: &a x\n    c: *a\n", "    b: !!str 1\n"])
def test_texts_yaml_1_1_reads_otherwise_go_to_pyyaml(risky: str) -> None:
    text = _TEXT
    head, sep, tail = text.partition("  metadata:\n")
    assert sep and k8s.fast_documents(head + sep + "    b: x\n" + tail) is not None
    assert k8s.fast_documents(head + sep + risky + tail) is None


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_list_item_lines_from_indentation_equal_the_composed_ones(fmt: str) -> None:
    """One finder of List item lines: from the items' indentation when the count read agrees (large dumps),
    else from PyYAML's composed document (what locating an error in an item uses); both give the same."""
    data = _list(40)
    text = yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False) if fmt == "yaml" else json.dumps(data, indent=4)
    by_indent = k8s.list_item_lines(text, 3, len(data["items"]))
    composed = k8s.list_item_lines(text, 3)
    assert by_indent == composed and len(composed) == 40 and composed[0] > 3
    # a count that disagrees with the indentation is not trusted: the composed lines are given
    assert k8s.list_item_lines(text, 3, 39) == composed
    lines = text.split("\n")
    assert all(lines[n - 3].lstrip().startswith(("- ", "{")) for n in composed)
