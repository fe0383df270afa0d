"""The one reader of input files (netsim.reader), the bounded YAML/JSON loaders (netsim.k8s) and the
one-line error rendering (netsim.errors)."""

from __future__ import annotations

import codecs
import gzip
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsim import reader
from netsim.errors import MAX_ERROR_LINE, ConfigError, InputError, NetsimError, one_line, shorten
from netsim.k8s import MAX_DEPTH, YAMLSyntaxError, load_json, load_yaml, load_yaml_all, parse_objects

POD = (Path(__file__).resolve().parent.parent / "rules" / "dns-capture" / "pod.yaml").read_text()


@pytest.fixture(autouse=True)
def _alarm() -> Iterator[None]:
    """A test of 'never hangs' must not hang the suite when it fails."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("timed out: a read blocked"))
    signal.alarm(20)
    yield
    signal.alarm(0)


def _bomb(width: int = 9, levels: int = 9) -> str:
    value = "&a0 [" + ", ".join(["lol"] * width) + "]"
    for i in range(1, levels):
        value = f"&a{i} [{value}, " + ", ".join([f"*a{i - 1}"] * (width - 1)) + "]"
    return value


# --- encodings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    POD.encode(),
    codecs.BOM_UTF8 + POD.encode(),
    codecs.BOM_UTF16_LE + POD.encode("utf-16-le"),  # PowerShell's `>`
    codecs.BOM_UTF16_BE + POD.encode("utf-16-be"),
    gzip.compress(POD.encode()),
    gzip.compress(codecs.BOM_UTF16_LE + POD.encode("utf-16-le")),
    gzip.compress(POD.encode()[:100]) + gzip.compress(POD.encode()[100:]),  # two members, as `cat a.gz b.gz`
], ids=["utf8", "utf8-bom", "utf16le-bom", "utf16be-bom", "gzip", "gzip-utf16", "gzip-two-members"])
def test_every_encoding_a_user_has_reads_as_the_same_text(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "pod.yaml"
    p.write_bytes(data)
    assert reader.read_text(p) == POD


def test_a_latin1_byte_is_one_error_naming_file_byte_offset_and_line(tmp_path: Path) -> None:
    p = tmp_path / "rules"
    p.write_bytes(b"*filter\n# caf\xe9 rules\n-A INPUT -j ACCEPT\n")
    with pytest.raises(InputError) as e:
        reader.read_text(p)
    assert str(e.value) == (f"{p}: byte 13 (line 2): not UTF-8 (byte 0xE9); netsim reads UTF-8 (with or "
                            "without BOM), UTF-16 with BOM, or gzip of those")


@pytest.mark.parametrize(("data", "says"), [
    (gzip.compress(b"a: 1\n" * 100)[:-9], "truncated gzip stream"),
    (b"\x1f\x8b" + bytes(range(200)), "not a valid gzip stream"),
    ("a: 1\n".encode("utf-16-le"), "a NUL byte, so not a text file (UTF-16 without a BOM?)"),
    (codecs.BOM_UTF16_LE + b"a\x00\x00\xd8", "byte 4: not UTF-16 LE"),
    (codecs.BOM_UTF32_LE + "a: 1\n".encode("utf-32-le"), "byte 0: a UTF-32 byte order mark"),
])
def test_broken_encodings_are_one_clear_error(tmp_path: Path, data: bytes, says: str) -> None:
    p = tmp_path / "f"
    p.write_bytes(data)
    with pytest.raises(InputError, match=says.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        reader.read_text(p)


# --- what may be read, and how much ----------------------------------------------------------------

def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(InputError, match=r"cannot read: a FIFO, not a regular file"):
        reader.read_text(fifo)
    assert time.monotonic() - start < 1


@pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "a character device"), ("/dev/urandom", "a character device"),
                                             ("/dev/null", "a character device"), ("/", "a directory")])
def test_devices_and_directories_are_refused_before_reading(path: str, kind: str) -> None:
    with pytest.raises(InputError) as e:
        reader.read_bytes(path)
    assert str(e.value) == f"{path}: cannot read: {kind}, not a regular file"


def test_the_size_limit_counts_bytes_and_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "big.yaml"
    p.write_bytes(b"#" * 2048)
    monkeypatch.setenv("NETSIM_MAX_INPUT", "2K")
    assert len(reader.read_bytes(p)) == 2048
    monkeypatch.setenv("NETSIM_MAX_INPUT", "2047")
    with pytest.raises(InputError, match=r"big.yaml: larger than the input limit of 2047 bytes \(set NETSIM_MAX_INPUT"):
        reader.read_bytes(p)
    p.write_bytes(gzip.compress(b"#" * 4096))  # the limit holds for what gzip inflates to
    monkeypatch.setenv("NETSIM_MAX_INPUT", "4095")
    with pytest.raises(InputError, match=r"big.yaml \(gunzipped\): larger than the input limit of 4095"):
        reader.read_text(p)
    monkeypatch.setenv("NETSIM_MAX_INPUT", "lots")
    with pytest.raises(InputError, match=r"NETSIM_MAX_INPUT='lots': expected a positive size"):
        reader.read_bytes(p)
    monkeypatch.delenv("NETSIM_MAX_INPUT")
    assert reader.max_input() == 64 * 1024 * 1024


def _netsim(*argv: str, stdin: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netsim", *argv], stdin=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_stdin_is_read_as_dash_and_stops_at_the_limit(tmp_path: Path) -> None:
    p = tmp_path / "pod.yaml"
    p.write_text(POD)
    with open(p) as f:
        from_stdin = _netsim("compile", "--pod", "-", stdin=f)
    from_file = _netsim("compile", "--pod", str(p), stdin=subprocess.DEVNULL)
    assert from_stdin.returncode == 0 and from_stdin.stdout == from_file.stdout
    with open("/dev/zero", "rb") as zero:
        r = _netsim("compile", "--pod", "-", stdin=zero, env={"NETSIM_MAX_INPUT": "1M"})
    assert r.returncode == 2
    assert r.stderr == ("Error: <stdin>: larger than the input limit of 1048576 bytes "
                        "(set NETSIM_MAX_INPUT to change it)\n")


def test_trace_rules_reads_a_utf16_dump_as_powershell_writes_it(tmp_path: Path) -> None:
    rules = (Path(__file__).resolve().parent.parent / "rules" / "dns-capture" / "current.iptables-save").read_text()
    plain, utf16 = tmp_path / "plain", tmp_path / "utf16"
    plain.write_text(rules)
    utf16.write_bytes(codecs.BOM_UTF16_LE + rules.encode("utf-16-le"))
    argv = ("trace", "--src", "10.244.0.5", "--dst", "10.96.0.20:80", "--rules")
    a, b = (_netsim(*argv, str(f), stdin=subprocess.DEVNULL) for f in (plain, utf16))
    assert a.returncode == 0 and (b.returncode, b.stdout) == (0, a.stdout.replace(str(plain), str(utf16)))


# --- bounded YAML and JSON -------------------------------------------------------------------------

def test_a_700_byte_alias_bomb_fails_at_once_in_little_memory() -> None:
    text = f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {{a: {_bomb()}}}\n"
    assert len(text) < 700
    start = time.process_time()
    with pytest.raises(YAMLSyntaxError, match=r"line 5: invalid YAML: document contains excessive aliasing"):
        load_yaml(text)
    assert time.process_time() - start < 0.2
    tracemalloc.start()
    try:
        with pytest.raises(YAMLSyntaxError):
            load_yaml(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000


def test_aliases_within_kubernetes_bounds_load() -> None:
    assert load_yaml("base: &b {port: 80}\na: *b\nlist: [&x 1, *x, *x]\n") == \
        {"base": {"port": 80}, "a": {"port": 80}, "list": [1, 1, 1]}
    # 40 aliases of a 20-port list: 95% of the 1,700 nodes come from aliases (Kubernetes allows 99%)
    ports = "[" + ", ".join(f"{{port: {80 + i}}}" for i in range(20)) + "]"
    text = f"base: &p {ports}\nuses: [" + ", ".join(["*p"] * 40) + "]\n"
    assert len(load_yaml(text)["uses"]) == 40
    with pytest.raises(YAMLSyntaxError, match="excessive aliasing"):  # 99.6%: refused, as go-yaml would
        load_yaml(f"base: &p {ports}\nuses: [" + ", ".join(["*p"] * 400) + "]\n")


def test_a_recursive_anchor_is_refused() -> None:
    with pytest.raises(YAMLSyntaxError, match=r"line 2: invalid YAML: an alias refers to a node that contains it"):
        load_yaml("a: 1\nb: &r [1, [*r]]\n")


def test_nesting_is_bounded_in_yaml_with_and_without_aliases_and_in_json() -> None:
    ok = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert load_yaml(f"x: {ok}") is not None and load_json(f'{{"x": {ok}}}') is not None
    too_deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    with pytest.raises(YAMLSyntaxError, match=rf"nested deeper than {MAX_DEPTH} levels"):
        load_yaml(f"a: 1\nx: {too_deep}")
    half = "[" * 120 + "*d" + "]" * 120
    with pytest.raises(YAMLSyntaxError, match=r"line 2: invalid YAML: nested deeper than \d+ levels \(counting alias"):
        load_yaml(f"x: &d {'[' * 120 + ']' * 120}\ny: {half}\n")
    for n in (MAX_DEPTH + 1, 100_000):  # json's own recursion limit is not what stops it
        with pytest.raises(ConfigError, match=rf"JSON nested deeper than {MAX_DEPTH} levels"):
            load_json("[" * n + "]" * n)
    with pytest.raises(YAMLSyntaxError, match="exceeded maximum nesting depth"):  # libyaml's own bound
        load_yaml("[" * 100_000)


def test_each_document_is_reported_with_its_index_and_line_and_the_others_load() -> None:
    text = ("kind: Service\nmetadata: {name: a}\n---\nkind: Service\nmetadata:\n  name: " + _bomb() + "\n---\n"
            "kind: Service\nmetadata: {name: c}\n")
    loaded = parse_objects(text, "all.yaml", keep_going=True)
    assert [o.name for o in loaded.objects] == ["a", "c"]
    assert [str(e)[:80] for e in loaded.errors] == \
        ["all.yaml: document 2: line 6: invalid YAML: document contains excessive aliasing: "[:80]]
    with pytest.raises(YAMLSyntaxError, match=r"^all.yaml: line 6: invalid YAML: document contains excessive"):
        parse_objects(text, "all.yaml")
    assert load_yaml_all("a: 1\n---\nb: &x [1]\nc: *x\n") == [{"a": 1}, {"b": [1], "c": [1]}]


# --- one line, whatever the value holds --------------------------------------------------------------

def test_an_error_is_one_line_under_300_characters_with_values_cut_to_80() -> None:
    value = "Error: fake\nTraceback (most recent call last):\r\n" * 10_000
    e = ConfigError(f"spec.hosts[0]: not a hostname: {value!r}",
                    where="f.yaml: document 2: ServiceEntry ns/" + "n" * 500)
    text = str(e)
    assert "\n" not in text and "\r" not in text and len(text) <= MAX_ERROR_LINE
    assert text.startswith("f.yaml: document 2: ServiceEntry ns/nnn")
    assert ": spec.hosts[0]: not a hostname: 'Error: fake\\nTraceback" in text
    quoted = text.split("not a hostname: ")[1]
    assert len(quoted) <= 80 and "…" in quoted
    assert str(NetsimError("a\u2028b\x00c\x1bd")) == "a\\u2028b\\x00c\\x1bd"
    assert one_line("x" * 1000) == "x" * 198 + "…" + "x" * 100
    assert shorten([[[[[[1]]]]]]) == "[[[[...]]]]" and len(shorten("y" * 10_000)) == 80


def test_the_cli_prints_a_multiline_value_as_one_error_line(tmp_path: Path) -> None:
    p = tmp_path / "pod.yaml"
    p.write_text('apiVersion: v1\nkind: "Po\\nd\\nTraceback (most recent call last):"\nmetadata: {name: x}\n'
                 + "x" * 0)
    r = _netsim("compile", "--pod", str(p), stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith("Error: ")
    assert "Po\\nd\\nTraceback" in r.stderr


def test_an_object_name_longer_than_kubernetes_allows_is_refused_and_the_others_load() -> None:
    text = f"kind: Service\nmetadata: {{name: {'n' * 254}}}\n---\nkind: Service\nmetadata: {{name: {'n' * 253}}}\n"
    loaded = parse_objects(text, "s.yaml", keep_going=True)
    assert [len(o.name) for o in loaded.objects] == [253]
    assert [str(e) for e in loaded.errors] == [
        "s.yaml: document 1: Service: field metadata.name: 254 characters, more than Kubernetes' 253"]
