"""Reading Kubernetes objects from YAML or JSON: multi-document files, ``List`` kinds, directories.

Owns: the one YAML reader of netsim (libyaml's CSafeLoader when PyYAML has it, imported only when
text is parsed, so importing this module stays cheap), the numbering of documents as
``yaml.safe_load_all`` numbers them, the line of a YAML error (:class:`YAMLSyntaxError`), ``List``
flattening, and turning paths into :class:`K8sObject` values that remember where they came from
(file, document index, item index), with the one-line location used in every error about an object
(and, for those errors, the line their document, or their item of a ``List``, starts at and
file-then-document order: :func:`locate`,
:func:`in_document_order`).

Never does: interpret an object's ``spec`` (each consumer does that and reports field errors through
:meth:`K8sObject.where`), write files, or talk to a cluster.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from netsim import reader
from netsim.errors import ConfigError, NetsimError

SUFFIXES = (".yaml", ".yml", ".json")
# workload kind → path to its pod template inside the object ("Pod": the object itself)
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
_DOC_START = re.compile(r"^---(\s|$)")
_DOC_END = re.compile(r"^\.\.\.\s*$")


@functools.cache
def _loader() -> Any:
    import yaml  # lazy: `netsim compile` without a manifest never loads PyYAML

    # libyaml's safe loader when PyYAML was built with it (about 10x faster on large manifests)
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YAMLSyntaxError(ConfigError):
    """invalid YAML"""

    def __init__(self, problem: str = "", *, line: int | None = None, where: str = "") -> None:
        self.problem = problem  # what libyaml says, one line
        self.line = line  # 1-based line of the text (shifted by ``first_line``), None if unknown
        at = f"line {line}: " if line is not None else ""
        super().__init__(f"{at}invalid YAML: {problem}", where=where)


def _syntax_error(e: Exception, first_line: int) -> YAMLSyntaxError:
    if isinstance(e, RecursionError):  # PyYAML's pure-Python composer, without libyaml
        return YAMLSyntaxError(f"nested deeper than {MAX_DEPTH} levels", line=None)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or str(e).splitlines()[0]
    return YAMLSyntaxError(str(problem), line=first_line + mark.line if mark is not None else None)


# Kubernetes decodes YAML with go-yaml, which refuses "excessive aliasing" (CVE-2019-11253, the
# billion-laughs attack on kube-apiserver): once more than 100 aliases and 1000 nodes have been
# decoded, aliases may make up at most 99% of the nodes of a document up to 400,000 nodes, falling
# linearly to 10% at 4,000,000 (gopkg.in/yaml.v3 decode.go, allowedAliasRatio). netsim applies the
# same rule to the expanded size, before a value is built, so a 700-byte bomb fails at once.
_ALIAS_RATIO_LOW, _ALIAS_RATIO_HIGH = 400_000, 4_000_000
# The expanded text of scalars reached through aliases may add at most this many characters.
MAX_ALIASED_CHARS = 16 * 1024 * 1024
# Nesting: libyaml refuses more than 1000 levels of syntax; reached through aliases, or in JSON,
# netsim refuses more than this (a Kubernetes object with its CRD schema is well under 100 deep).
MAX_DEPTH = 200
MAX_NAME, MAX_NAMESPACE = 253, 63  # k8s.io/apimachinery validation: DNS-1123 subdomain and label
_ANCHOR = re.compile(r"(?:^|[\s\[{,:])&[^\s,\[\]{}]")


def _allowed_alias_ratio(nodes: int) -> float:
    if nodes <= _ALIAS_RATIO_LOW:
        return 0.99
    if nodes >= _ALIAS_RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (nodes - _ALIAS_RATIO_LOW) / (_ALIAS_RATIO_HIGH - _ALIAS_RATIO_LOW)


def _check_node(root: Any, first_line: int) -> None:
    """Refuse ``root`` (a composed node graph, aliases shared) whose expansion is too large or too deep,
    or which contains itself. One pass over the distinct nodes, without expanding anything."""
    # id -> (expanded nodes, expanded scalar characters, height)
    size: dict[int, tuple[int, int, int]] = {}
    aliased_nodes: dict[int, Any] = {}  # nodes reached more than once: an anchor's, through its aliases
    on_path: set[int] = set()
    distinct = chars_written = 0
    stack: list[tuple[Any, bool]] = [(root, False)]

    def children(node: Any) -> list[Any]:
        value = node.value
        if isinstance(value, str):
            return []
        if value and isinstance(value[0], tuple):  # a mapping: (key, value) pairs
            return [n for pair in value for n in pair]
        return list(value)

    def line(node: Any) -> int | None:
        mark = getattr(node, "start_mark", None)
        return first_line + mark.line if mark is not None else None

    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = children(node)
            nodes, chars, height = 1, len(node.value) if isinstance(node.value, str) else 0, 0
            for kid in kids:
                n, c, h = size[id(kid)]
                nodes, chars, height = nodes + n, chars + c, max(height, h)
            size[key] = (nodes, chars, height + 1)
            if height + 1 > MAX_DEPTH:
                raise YAMLSyntaxError(f"nested deeper than {MAX_DEPTH} levels (counting aliases)", line=line(node))
            continue
        if key in size:
            aliased_nodes[key] = node
            continue
        if key in on_path:
            raise YAMLSyntaxError("an alias refers to a node that contains it (a recursive anchor)",
                                  line=line(node))
        on_path.add(key)
        distinct += 1
        if isinstance(node.value, str):
            chars_written += len(node.value)
        stack.append((node, True))
        for kid in children(node):
            if id(kid) in size:
                aliased_nodes[id(kid)] = kid
            else:
                stack.append((kid, False))
    nodes, chars, _ = size[id(root)]
    aliased = nodes - distinct
    if (aliased > 100 and nodes > 1000 and aliased / nodes > _allowed_alias_ratio(nodes)) \
            or chars - chars_written > MAX_ALIASED_CHARS:
        # the line of the largest anchored value: where the bomb is
        worst = max(aliased_nodes.values(), key=lambda n: size[id(n)][0], default=root)
        raise YAMLSyntaxError(f"document contains excessive aliasing: {distinct} nodes written expand to {nodes} "
                              f"nodes and {chars} characters (refused as Kubernetes' YAML decoder refuses it)",
                              line=line(worst))


def _check_depth(root: Any, first_line: int) -> None:
    """Refuse ``root`` (a composed node tree without aliases) nested deeper than :data:`MAX_DEPTH`.
    Level by level: a few operations per node, so normal files keep most of libyaml's speed."""
    level, depth = [root], 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            mark = getattr(level[0], "start_mark", None)
            raise YAMLSyntaxError(f"nested deeper than {MAX_DEPTH} levels",
                                  line=first_line + mark.line if mark is not None else None)
        below: list[Any] = []
        for node in level:
            value = node.value
            if value.__class__ is list and value:
                if value[0].__class__ is tuple:
                    for pair in value:
                        below.extend(pair)
                else:
                    below.extend(value)
        level = below


def _documents(text: str, first_line: int, *, single: bool) -> Iterator[Any]:
    import yaml

    loader = _loader()(text)
    aliases = _ANCHOR.search(text) is not None  # without an anchor there can be no alias
    try:
        while single or loader.check_node():
            node = loader.get_single_node() if single else loader.get_node()
            if node is not None:
                (_check_node if aliases else _check_depth)(node, first_line)
            yield None if node is None else loader.construct_document(node)
            if single:
                return
    except (yaml.YAMLError, RecursionError) as e:
        raise _syntax_error(e, first_line) from None
    finally:
        loader.dispose()


def load_yaml(text: str, *, first_line: int = 1) -> Any:
    """The value of the one YAML (or JSON) document in ``text``; None for an empty one.

    Raises YAMLSyntaxError, its ``line`` counted from ``first_line`` (the line ``text`` starts at), also
    for a document whose aliases expand too far or nest too deep (see :data:`MAX_DEPTH`).
    """
    return next(_documents(text, first_line, single=True))


def load_yaml_all(text: str) -> list[Any]:
    """Every document of ``text`` (None for an empty one), numbered from 1 as ``yaml.safe_load_all`` does.

    Raises YAMLSyntaxError with the line in ``text``; nothing of a broken file is returned.
    """
    return list(_documents(text, 1, single=False))


def load_json(text: str) -> Any:
    """The value of the JSON ``text``. Raises ValueError for invalid JSON, and ConfigError for a value
    nested deeper than :data:`MAX_DEPTH` (never RecursionError)."""
    import json

    try:
        value = json.loads(text)
    except RecursionError:
        raise ConfigError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            if level > MAX_DEPTH:
                raise ConfigError(f"JSON nested deeper than {MAX_DEPTH} levels")
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return value


@dataclass(frozen=True, slots=True)
class Document:
    """One document of a multi-document text, cut at its ``---``/``...`` lines, not yet parsed."""

    number: int  # 1-based, as yaml.safe_load_all numbers them
    first_line: int  # the line of the file where ``text`` starts (after its ``---`` line, or on it)
    text: str


def split_documents(text: str) -> Iterator[Document]:
    """The documents of ``text`` as text, so that one broken document does not hide the others."""
    lines = text.splitlines(keepends=True)
    chunks: list[tuple[int, list[str]]] = [(1, [])]
    for i, line in enumerate(lines, start=1):
        if _DOC_START.match(line):
            rest = line[3:].lstrip(" ")
            chunks.append((i, [rest]) if rest.strip() else (i + 1, []))  # where the text starts
        elif _DOC_END.match(line):
            chunks.append((i + 1, []))
        else:
            chunks[-1][1].append(line)
    n = 0
    for idx, (start, body) in enumerate(chunks):
        content = [ln for ln in body if ln.strip() and not ln.lstrip().startswith("#")]
        if idx == 0 and not content:
            continue  # a preamble of comments before the first --- is not a document
        n += 1
        yield Document(number=n, first_line=start, text="".join(body))


def _split_all(text: str) -> list[Document]:
    """:func:`split_documents` as a list; one regular-expression search instead of a line loop when the text
    has no ``---``/``...`` line (a ``kubectl get -o yaml`` List, a JSON file)."""
    if _SEPARATOR.search("\n" + text + "\n") is not None:
        return list(split_documents(text))
    return [Document(number=1, first_line=1, text=text)] if _CONTENT.search(text) is not None else []


_SEPARATOR = re.compile(r"\n(?:---|\.\.\.)\s")  # on "\n" + text + "\n": a newline skips ahead, "^" does not
_CONTENT = re.compile(r"^[ \t]*[^\s#]", re.M)

# Large inputs (a whole cluster's `kubectl get -A -o yaml|json`) are read by a faster reader when one is
# installed and the text holds nothing it could read differently from PyYAML; anything else, and every
# smaller input, goes through PyYAML with netsim's alias and nesting bounds, as before.
FAST_MIN = 1 << 20
# plain scalars that PyYAML (YAML 1.1) resolves to something else than the JSON that rapidyaml emits for them:
# 1.1 booleans and nulls, octal/hex/binary/sexagesimal/underscored ints, exponent-only and special floats,
# timestamps, merge keys and the value key
_RISKY = (r"(?:yes|Yes|YES|no|No|NO|True|TRUE|False|FALSE|on|On|ON|off|Off|OFF|~|Null|NULL|<<|="
          r"|[-+]?0[0-7_]+|[-+]?0[bxo][0-9a-fA-F_]+|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?"
          r"|[-+]?[0-9.][0-9_.]*[eE][-+]?[0-9]+|[-+]?[0-9]+_[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
          r"|[0-9]{4}-[0-9][0-9]?-[0-9][0-9]?(?:[Tt ][^\n]*)?)")
# each starts with a literal character, so that the regular-expression engine skips ahead to it: a whole
# cluster's dump is scanned in well under a second
_FIRST = r"(?=[-+.0-9yYnNtTfFoO~<=])"  # the first character of every risky scalar: most lines fail here
_RISKY_VALUES = (re.compile(r":[ \t]+" + _FIRST + _RISKY + r"[ \t]*(?:#[^\n]*)?(?=\n)"),
                 re.compile(r"\n[ \t]*-[ \t]+" + _FIRST + _RISKY + r"[ \t]*(?:#[^\n]*)?(?=\n)"))
# keys PyYAML reads as something other than a string (8080: → int, yes: → True), complex keys
_RISKY_KEYS = (re.compile(r"\n[ \t]*(?:-[ \t]+)*" + _FIRST + r"(?:[-+]?\.?[0-9][^:\n]*|" + _RISKY
                          + r")[ \t]*:(?=[ \t\n])"),
               re.compile(r"\n[ \t]*\?(?=[ \t\n])"))
_TAG = re.compile(r"![^\s]*")
_MARK = re.compile(r"[&*][^\s,\[\]{}]")  # an anchor or alias when it starts a node
_FLOW = re.compile(r"[\[{][ \t]*[^\s\]}]")  # a flow collection with content (only [] and {} are left alone)


def _yaml_risky(text: str) -> bool:
    """Whether rapidyaml's JSON of ``text`` might differ from PyYAML's value: anchors and aliases (PyYAML
    applies Kubernetes' alias bounds), tags, flow collections with content, and plain scalars or keys that
    YAML 1.1 resolves to something else than a string or a JSON number (:data:`_RISKY`)."""
    text = "\n" + text + "\n"
    if ("&" in text or "*" in text) and any(text[m.start() - 1] in " \t\n[{,:-" for m in _MARK.finditer(text)):
        return True
    if "!" in text and any(text[m.start() - 1] in " \t\n[{,:-" for m in _TAG.finditer(text)):
        return True
    if ("[" in text or "{" in text) and any(text[m.start() - 1] in " \t\n,:-" for m in _FLOW.finditer(text)):
        return True
    return any(r.search(text) is not None for r in (*_RISKY_VALUES, *_RISKY_KEYS))


def _json_depth_ok(value: Any, level: int = 1) -> bool:
    """Whether ``value`` (dicts, lists and scalars) nests at most :data:`MAX_DEPTH` levels."""
    if level > MAX_DEPTH:
        return False
    kind = value.__class__
    items = value.values() if kind is dict else value if kind is list else ()
    for v in items:
        k = v.__class__
        if (k is dict or k is list) and not _json_depth_ok(v, level + 1):
            return False
    return True


class _QuietStderr:
    """rapidyaml's C++ error handler writes to file descriptor 2 before it raises: keep that off the terminal
    (the input then goes through PyYAML, whose error is the one reported)."""

    def __enter__(self) -> None:
        import os

        sys_stderr = 2
        self.saved = os.dup(sys_stderr)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys_stderr)
        os.close(null)

    def __exit__(self, *exc: object) -> None:
        import os

        os.dup2(self.saved, 2)
        os.close(self.saved)


def fast_documents(text: str, docs: list[Document] | None = None) -> list[Any] | None:
    """The values of ``docs`` (the documents of ``text``), read by orjson (a JSON text) or rapidyaml (YAML,
    emitted as JSON and read by orjson), or None when PyYAML must read them: a text under
    :data:`FAST_MIN`, without those libraries, with anchors, aliases or tags (PyYAML applies Kubernetes'
    alias bounds), with a plain scalar or key that YAML 1.1 reads otherwise (``yes``, ``010``, ``8080:``,
    timestamps), nested deeper than :data:`MAX_DEPTH` (or than rapidyaml emits), or that either library
    refuses. The values equal what PyYAML gives for such a text."""
    if len(text) < FAST_MIN:
        return None
    try:
        import orjson
    except ImportError:
        return None
    docs = _split_all(text) if docs is None else docs
    if len(docs) == 1 and text.lstrip()[:1] in ("{", "["):
        try:
            value = orjson.loads(docs[0].text)
        except (orjson.JSONDecodeError, RecursionError):
            return None
        return [value] if _json_depth_ok(value) else None
    if _yaml_risky(text):
        return None
    try:
        import ryml
    except ImportError:
        return None
    out: list[Any] = []
    with _QuietStderr():
        for doc in docs:
            try:
                tree = ryml.parse_in_arena(doc.text.encode())
                if tree.size() <= 1 and not tree.has_children(tree.root_id()) and not tree.has_val(tree.root_id()):
                    out.append(None)
                    continue
                value = orjson.loads(ryml.emit_json(tree))
            except Exception:  # rapidyaml's parse and visit errors, orjson's: PyYAML says what is wrong
                return None
            out.append(value)
    return out if all(v is None or _json_depth_ok(v) for v in out) else None


def list_item_lines(text: str, first_line: int, count: int | None = None) -> tuple[int, ...]:
    """The line where each item of the ``List`` document ``text`` (starting at line ``first_line``) starts:
    the one finder of item lines. With ``count`` (the items read), the items of a block sequence under a
    top-level ``items:`` key (``kubectl -o yaml``) or of a pretty-printed JSON ``"items": [`` (``kubectl -o
    json``) are found from their indentation when exactly ``count`` of them are; otherwise (and without
    ``count``) PyYAML composes the document (slower, exact). () when it cannot be read."""
    found = _item_starts(text, count) if count is not None else None
    if found is None:
        found = _composed_item_starts(text)
    return tuple(first_line + n for n in found)


def _item_starts(text: str, count: int) -> list[int] | None:
    """0-based line of each item, from indentation alone; None unless exactly ``count`` are found.

    The expressions look for a newline, not for ``^`` in MULTILINE mode: that is tried at every character
    of a whole cluster's dump, while a leading literal lets the engine skip ahead to each newline."""
    t = "\n" + text + "\n"  # every line follows a newline
    m = _ITEMS_KEY.search(t)
    if m is not None:
        ind = m.group(1)
        start = m.start(1) - 1  # the newline before the first item
        end_m = re.compile(r"\n(?!" + ind + r"-[ \t\n])[ ]{0," + str(len(ind)) + r"}[^\s#]").search(t, start)
        end = end_m.start() + 1 if end_m is not None else len(t)  # + its newline: the last item's lookahead
        starts = [x.start() for x in re.compile(r"\n" + ind + r"-(?=[ \t\n])").finditer(t, start, end)]
    else:
        j = _JSON_ITEMS.search(t)
        if j is None:
            return [0] * count if count and "\n" not in text.strip() else None  # one line: every item on it
        ind = j.group(2)
        starts = [x.start() for x in re.compile(r"\n" + ind + r"\{").finditer(t, j.start(2) - 1)]
        closing = re.compile(r"\n" + j.group(1) + r"\]").search(t, j.start(2) - 1)
        if closing is not None:
            starts = [s for s in starts if s < closing.start()]
    if len(starts) != count:
        return None
    out, line, pos = [], -1, 0  # t's first newline is not one of text's
    for s in starts:
        line += t.count("\n", pos, s + 1)
        pos = s + 1
        out.append(line)
    return out


_ITEMS_KEY = re.compile(r"\nitems:[ \t]*(?:#[^\n]*)?\n(?:[ \t]*(?:#[^\n]*)?\n)*([ ]*)-[ \t\n]")
_JSON_ITEMS = re.compile(r'\n([ ]*)"items":[ ]*\[[ ]*\n([ ]*)\{')


def _composed_item_starts(text: str) -> list[int]:
    import yaml

    try:
        loader = _loader()(text)
        try:
            node = loader.get_single_node()  # composed only: nothing is constructed or expanded
        finally:
            loader.dispose()
    except (yaml.YAMLError, RecursionError):
        return []
    if not isinstance(node, yaml.MappingNode):
        return []
    items = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "items"), None)
    if not isinstance(items, yaml.SequenceNode):
        return []
    return [item.start_mark.line for item in items.value]


def is_list_kind(raw: Any) -> bool:
    """Whether ``raw`` is a ``List`` wrapper (``kind: List``, ``ServiceList``, ...) whose ``items`` are objects."""
    return isinstance(raw, Mapping) and isinstance(raw.get("kind"), str) and raw["kind"].endswith("List")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an object was read, as data (what every message's ``file: document N [item M]: Kind ns/name``
    text says, and the line): a finding or an error about the object is placed by it, not by its text."""

    source: str  # the file (as displayed), or "-" for standard input
    document: int  # 1-based index of the YAML document in ``source``
    item: int | None  # 1-based index inside a ``List``, if it came from one
    line: int | None  # the line where its document (or its item of a ``List``) starts; None: not known
    object: str  # "Kind namespace/name"


@dataclass(frozen=True, slots=True)
class K8sObject:
    """One object as read, with its origin. ``body`` is the parsed mapping, unchanged."""

    source: str
    document: int  # 1-based index of the YAML document in ``source``
    item: int | None  # 1-based index inside a ``List``, if it came from one
    api_version: str
    kind: str
    namespace: str
    name: str
    body: Mapping[str, Any] = field(repr=False, compare=False)
    # the line of ``source`` where the object's document (or its item of a ``List``) starts; None: not known
    line: int | None = field(default=None, compare=False)

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    @property
    def labels(self) -> Mapping[str, str]:
        meta = self.body.get("metadata") or {}
        labels = meta.get("labels") if isinstance(meta, Mapping) else None
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}

    @property
    def origin(self) -> Origin:
        """Where the object was read (:class:`Origin`)."""
        return Origin(source=self.source, document=self.document, item=self.item, line=self.line,
                      object=f"{self.kind} {self.namespace}/{self.name}")

    def where(self) -> str:
        """``file: document 2: ServiceEntry ns/name`` (``item 3`` added inside a List)."""
        item = f" item {self.item}" if self.item is not None else ""
        return f"{self.source}: document {self.document}{item}: {self.kind} {self.namespace}/{self.name}"

    def created(self) -> float:
        """``metadata.creationTimestamp`` as a POSIX time, 0.0 when absent. Raises ConfigError if malformed."""
        raw = (self.body.get("metadata") or {}).get("creationTimestamp")
        if isinstance(raw, datetime):
            return raw.timestamp()
        if isinstance(raw, str) and raw:
            try:
                return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise self.error("metadata.creationTimestamp", f"not a timestamp: {raw!r}") from None
        return 0.0

    def error(self, field_path: str, message: str) -> ConfigError:
        """A ConfigError about ``field_path`` of this object, located."""
        return ConfigError(f"{field_path}: {message}", where=self.where())


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Objects read, in file then document order, and the errors of the documents that were skipped."""

    objects: tuple[K8sObject, ...]
    errors: tuple[NetsimError, ...]
    skipped: tuple[str, ...] = ()  # documents that are no Kubernetes object, each a note (``skip_non_objects``)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named (``-``: standard input), and the ``*.yaml|*.yml|*.json`` files under directories (sorted,
    recursive).

    Raises ConfigError for a path that does not exist.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if str(p) == reader.STDIN:
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES))
        elif p.exists():
            out.append(p)
        else:
            raise ConfigError("no such file or directory", where=str(p))
    return out


def read_text(path: str | Path) -> str:
    """The text of ``path`` through :func:`netsim.reader.read_text` (size, file type and encoding checked).

    Raises InputError ``path: cannot read: ...``.
    """
    return reader.read_text(path)


def _make(source: str, doc_i: int, item: int | None, raw: Any, default_namespace: str,
          line: int | None = None) -> K8sObject:
    where = f"{source}: document {doc_i}" + (f" item {item}" if item is not None else "")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a Kubernetes object (a mapping), got {type(raw).__name__}", where=where)
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ConfigError("field kind: missing", where=where)
    api = raw.get("apiVersion", "")
    meta = raw.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise ConfigError("field metadata: must be a mapping", where=f"{where}: {kind}")
    name = meta.get("name", "")
    if not isinstance(name, str) or not name:
        raise ConfigError("field metadata.name: missing", where=f"{where}: {kind}")
    ns = meta.get("namespace") or default_namespace
    # the API server's own limits (a DNS-1123 subdomain name, a DNS-1123 label namespace): a longer
    # value names no object a cluster can hold, and would be carried into every message and index
    for field_name, value, limit in (("name", name, MAX_NAME), ("namespace", str(ns), MAX_NAMESPACE)):
        if len(value) > limit:
            raise ConfigError(f"field metadata.{field_name}: {len(value)} characters, more than Kubernetes' "
                              f"{limit}", where=f"{where}: {kind}")
    return K8sObject(source=source, document=doc_i, item=item, api_version=str(api), kind=kind,
                     namespace=str(ns), name=name, body=raw, line=line)


# apiVersion groups of files that sit among manifests but are build or tool configuration, never served
# by an API server (kustomize's kustomization.yaml: Kustomization, Component)
_TOOL_GROUPS = frozenset({"kustomize.config.k8s.io", "config.kubernetes.io"})


def not_an_object(raw: Any) -> str | None:
    """Why a parsed document is not a Kubernetes object at all, so that a reader of a manifests directory may
    skip it (a Helm ``values.yaml``, a ``kustomization.yaml``, a tool's JSON config); None when it is an
    object, or meant as one (an object with a mistake, such as ``kind`` without a name, is an error).

    Not an object: a value that is not a mapping; a mapping with neither ``apiVersion`` nor ``kind``; a
    kustomize file (its ``apiVersion`` group is kustomize's)."""
    if not isinstance(raw, Mapping):
        return f"a {_YAML_TYPE.get(type(raw).__name__, type(raw).__name__)}, not a Kubernetes object"
    if "apiVersion" not in raw and "kind" not in raw:
        return "not a Kubernetes object (no apiVersion or kind: a Helm values file, a tool's configuration?)"
    api = raw.get("apiVersion")
    if isinstance(api, str) and api.partition("/")[0] in _TOOL_GROUPS:
        return f"{raw.get('kind') or 'a file'} ({api}) is kustomize's configuration, not a Kubernetes object"
    return None


_YAML_TYPE = {"list": "sequence", "str": "string", "int": "number", "float": "number", "bool": "boolean"}


def _add(objects: list[K8sObject], errors: list[NetsimError], source: str, doc_i: int, raw: Any,
         default_namespace: str, doc: Document | None = None, skipped: list[str] | None = None) -> None:
    """The object(s) of one parsed document into ``objects``; the unusable ones into ``errors``. ``doc``: the
    document's text and first line, from which each object's :attr:`K8sObject.line` is found. ``skipped``:
    a document that is not an object at all (:func:`not_an_object`) is noted there instead of an error."""
    if raw is None:
        return
    if skipped is not None:
        why = not_an_object(raw)
        if why is not None:
            at = f" (line {doc.first_line})" if doc is not None else ""
            skipped.append(f"{source}: document {doc_i}{at}: {why}: skipped")
            return
    items: list[tuple[int | None, Any]]
    lines: tuple[int, ...] = ()
    if is_list_kind(raw) and isinstance(raw.get("items"), list):
        items = list(enumerate(raw["items"], start=1))
        if doc is not None:
            lines = list_item_lines(doc.text, doc.first_line, len(items))
    else:
        items = [(None, raw)]
    for item_i, item in items:
        line = doc.first_line if doc is not None else None
        if item_i is not None:
            line = lines[item_i - 1] if lines else None
        try:
            objects.append(_make(source, doc_i, item_i, item, default_namespace, line))
        except NetsimError as e:
            errors.append(e)


def parse_objects(text: str, source: str, *, default_namespace: str = "default",
                  keep_going: bool = False, skip_non_objects: bool = False) -> LoadResult:
    """Every object of ``text`` (multi-document, ``List`` kinds), reported as coming from ``source``.

    A document that is not a usable object is skipped and reported in ``errors``. Invalid YAML raises
    YAMLSyntaxError ``source: line N: invalid YAML: ...``; with ``keep_going`` each document is parsed
    on its own instead, and a broken one is reported (``source: document N: line L: invalid YAML: ...``)
    and skipped while the others still load. Objects without ``metadata.namespace`` get
    ``default_namespace``. With ``skip_non_objects``, a document that is not a Kubernetes object at all
    (:func:`not_an_object`) is skipped and noted in ``skipped``, not an error.
    """
    objects: list[K8sObject] = []
    errors: list[NetsimError] = []
    skipped: list[str] | None = [] if skip_non_objects else None
    docs = _split_all(text)
    fast = fast_documents(text, docs)
    if fast is not None:
        for doc, raw in zip(docs, fast, strict=True):
            _add(objects, errors, source, doc.number, raw, default_namespace, doc, skipped)
    elif keep_going:
        for doc in docs:
            try:
                raw = load_yaml(doc.text, first_line=doc.first_line)
            except YAMLSyntaxError as e:
                errors.append(e.at(f"{source}: document {doc.number}"))
                continue
            _add(objects, errors, source, doc.number, raw, default_namespace, doc, skipped)
    else:
        try:
            values = load_yaml_all(text)
        except YAMLSyntaxError as e:
            raise e.at(source) from None
        by_number = {d.number: d for d in docs} if len(docs) == len(values) else {}
        for doc_i, raw in enumerate(values, start=1):
            _add(objects, errors, source, doc_i, raw, default_namespace, by_number.get(doc_i), skipped)
    return LoadResult(objects=tuple(objects), errors=tuple(errors), skipped=tuple(skipped or ()))


def read_objects(paths: Iterable[str | Path], *, default_namespace: str = "default",
                 keep_going: bool = False, skip_non_objects: bool = False) -> LoadResult:
    """Read every object of ``paths`` (files or directories), as :func:`parse_objects` does for each file.

    Raises ConfigError for a path that does not exist or cannot be read, and (without ``keep_going``)
    for a file that is not valid YAML (``file: line N: invalid YAML: ...``).
    """
    objects: list[K8sObject] = []
    errors: list[NetsimError] = []
    skipped: list[str] = []
    for path in expand_paths(paths):
        loaded = parse_objects(read_text(path), reader.display_name(path), default_namespace=default_namespace,
                               keep_going=keep_going, skip_non_objects=skip_non_objects)
        objects.extend(loaded.objects)
        errors.extend(loaded.errors)
        skipped.extend(loaded.skipped)
    return LoadResult(objects=tuple(objects), errors=tuple(errors), skipped=tuple(skipped))


@functools.lru_cache(maxsize=64)
def _first_lines(source: str) -> dict[int, int]:
    try:
        return {d.number: d.first_line for d in split_documents(read_text(Path(source)))}
    except NetsimError:
        return {}


@functools.lru_cache(maxsize=64)
def _item_lines(source: str, doc: int) -> tuple[int, ...]:
    """The line each item of the ``List`` document ``doc`` of ``source`` starts at (() when unknown)."""
    try:
        d = next((d for d in split_documents(read_text(Path(source))) if d.number == doc), None)
    except NetsimError:
        return ()
    if d is None:
        return ()
    return list_item_lines(d.text, d.first_line)


_DOC_WHERE = re.compile(r"^(?P<src>.+?): document (?P<doc>\d+)(?P<rest>(?: item (?P<item>\d+))?(?::.*)?)$")


def locate(error: NetsimError) -> NetsimError:
    """``error`` with the line its document starts at (an item of a ``List``: the line the item starts
    at), when it names a document but no line (``file: document 2: line 14: ServiceEntry default/x:
    spec.ports[0].number: ...``, ``file: document 1: line 1049 item 51: Service default/y: ...``)."""
    m = _DOC_WHERE.match(error.where)
    if m is None or m["rest"].startswith(": line ") or error.message.startswith("line "):
        return error
    line = _first_lines(m["src"]).get(int(m["doc"]))
    if m["item"] is not None:
        items = _item_lines(m["src"], int(m["doc"]))
        if 0 < int(m["item"]) <= len(items):
            line = items[int(m["item"]) - 1]
    if line is None:
        return error
    located = copy.copy(error)
    located.where = f"{m['src']}: document {m['doc']}: line {line}{m['rest']}"
    located.args = (str(located),)
    return located


def in_document_order(errors: Iterable[NetsimError], files: Iterable[str] = ()) -> tuple[NetsimError, ...]:
    """``errors`` located (:func:`locate`) and sorted by file (in ``files``' order, then as met), then document;
    the first is the one to stop at."""
    located = [locate(e) for e in errors]
    order = {f: i for i, f in enumerate(dict.fromkeys(files))}
    for e in located:
        m = _DOC_WHERE.match(e.where)
        if m is not None:
            order.setdefault(m["src"], len(order))

    def key(e: NetsimError) -> tuple[int, int]:
        m = _DOC_WHERE.match(e.where)
        return (len(order), 0) if m is None else (order[m["src"]], int(m["doc"]))

    return tuple(sorted(located, key=key))


__all__ = [
    "FAST_MIN",
    "MAX_DEPTH",
    "POD_TEMPLATE_PATHS",
    "SUFFIXES",
    "Document",
    "K8sObject",
    "LoadResult",
    "Origin",
    "YAMLSyntaxError",
    "expand_paths",
    "fast_documents",
    "in_document_order",
    "is_list_kind",
    "list_item_lines",
    "load_json",
    "load_yaml",
    "load_yaml_all",
    "locate",
    "not_an_object",
    "parse_objects",
    "read_objects",
    "read_text",
    "split_documents",
]
