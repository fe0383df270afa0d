"""netsim.k8s, the one Kubernetes YAML reader: strict and keep-going modes, error lines as data, lazy PyYAML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netsim.errors import ConfigError
from netsim.k8s import YAMLSyntaxError, load_yaml, load_yaml_all, parse_objects

TEXT = ("kind: Service\nmetadata: {name: a}\n---\nkind: Service\nmetadata: {name: [b\n---\n"
        "kind: List\nitems:\n- {kind: Pod, metadata: {name: c}}\n")


def test_strict_mode_raises_for_the_whole_text_with_the_file_line() -> None:
    with pytest.raises(YAMLSyntaxError) as e:
        parse_objects(TEXT, "x.yaml")
    assert isinstance(e.value, ConfigError)
    assert e.value.line == 6 and e.value.where == "x.yaml"
    assert str(e.value).startswith("x.yaml: line 6: invalid YAML: ")


def test_keep_going_reports_the_broken_document_and_loads_the_others() -> None:
    res = parse_objects(TEXT, "x.yaml", keep_going=True)
    assert [(o.name, o.document, o.item) for o in res.objects] == [("a", 1, None), ("c", 3, 1)]
    assert [str(e).split(": line ")[0] for e in res.errors] == ["x.yaml: document 2"]


def test_single_document_lines_count_from_first_line() -> None:
    assert load_yaml("a: 1\n") == {"a": 1}
    with pytest.raises(YAMLSyntaxError) as e:
        load_yaml("a: [\n", first_line=10)
    assert e.value.line == 11 and e.value.problem
    assert load_yaml_all("a: 1\n---\n---\nb: 2\n") == [{"a": 1}, None, {"b": 2}]


def test_importing_the_reader_and_spec_does_not_load_pyyaml() -> None:
    code = "import sys, json, netsim.k8s, netsim.spec; print(json.dumps('yaml' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) is False


def test_an_error_in_an_item_of_a_list_names_the_items_own_line(tmp_path: Path) -> None:
    from netsim.k8s import in_document_order, read_objects

    items = "".join(f"- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: c{i}\n" for i in range(50))
    bad = "- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: ''\n"
    path = tmp_path / "list.yaml"
    path.write_text("# objects\n---\napiVersion: v1\nkind: List\nitems:\n" + items + bad)
    loaded = read_objects([path], keep_going=True)
    (error,) = in_document_order(loaded.errors)
    # the bad item's "- apiVersion" line: 5 lines of header, 50 items of 4 lines before it (on main: line 3)
    assert str(error).startswith(f"{path}: document 1: line 206 item 51: ConfigMap"), str(error)
