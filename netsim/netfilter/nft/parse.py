"""Reading nftables text into :class:`NftRuleset`: ``nft list ruleset`` output (``nft -a`` handles kept) and
``nft -f`` transactions (``add``/``insert``/``flush``/``delete`` commands, as Istio's backend writes them).

Raises :class:`RulesetError` with ``line N:`` for input nft itself would refuse (an unknown command or
family, a bad address, a jump to a chain that does not exist, an unclosed brace); the caller adds the
file. An expression netsim cannot evaluate is not an error: it is kept as :class:`Unknown` with its line,
and the trace says where its answer became uncertain. Never does IO, never evaluates a packet.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import cast

from netsim.errors import RulesetError
from netsim.netfilter.matches import Names
from netsim.netfilter.model import gc_paused
from netsim.netfilter.nft.model import (
    CHAIN_TYPES,
    CT_STATES,
    FIB_TYPES,
    FIELD_ALIASES,
    FIELDS,
    L4PROTOS,
    NAMED_PRIORITIES,
    NAMED_PRIORITY_HOOKS,
    NFPROTOS,
    TCP_FLAGS,
    Atom,
    Chain,
    Element,
    Elements,
    Expr,
    Kind,
    Match,
    NamedSet,
    Nat,
    NftFamily,
    NftRuleset,
    Notrack,
    Other,
    Rule,
    SetRef,
    SetStmt,
    Table,
    Tproxy,
    Unknown,
    Verdict,
    VerdictMap,
)
from netsim.netfilter.render import inet_ntop

_TOKEN = re.compile(r'[ \t\r]+|(#[^\n]*)|("(?:[^"\\\n]|\\.)*")|(\n)|([{}();,])|([^ \t\r\n{}();,"#]+)')
_HANDLE = re.compile(r"#\s*handle\s+(\d+)\s*$")
_FAMILIES = {f.value: f for f in NftFamily}
DEFAULT_NAMES = Names()
_VERDICTS = ("accept", "drop", "continue", "return", "queue")
_OPS = {"==": "==", "eq": "==", "!=": "!=", "ne": "!=", "<": "<", "lt": "<", ">": ">", "gt": ">", "<=": "<=",
        "le": "<=", ">=": ">=", "ge": ">="}
_SET_OPS = {"and": "&", "&": "&", "or": "|", "|": "|", "xor": "^", "^": "^"}
_SERVICES = {"ftp": 21, "ssh": 22, "smtp": 25, "domain": 53, "http": 80, "https": 443, "ntp": 123}
_KINDS_BY_TYPE = {k.value: k for k in Kind} | {"ipv4_addr": Kind.IPV4, "ipv6_addr": Kind.IPV6,
                                               "inet_service": Kind.PORT, "mark": Kind.MARK, "ifname": Kind.IFNAME,
                                               "inet_proto": Kind.L4PROTO, "ct_state": Kind.CTSTATE}
# MAX_SET_ELEMENTS: a sanity bound on one set (kube-proxy writes one element per Service port; 10^6 is far past
# any real cluster and keeps a hostile file from building a structure larger than the input limit suggests).
MAX_SET_ELEMENTS = 1_000_000


@dataclass(slots=True)
class _Tok:
    text: str
    line: int
    kind: str  # w word, s string, p punctuation, n newline, h handle comment


_FAST = re.compile(r"[{}();,]|[^ \t\r{}();,]+")
_PUNCT = frozenset("{}();,")
# the words that open a chain block's statements other than rules
_CHAIN_WORDS = frozenset({"type", "policy", "comment", "devices", "device", "}"})
# the commands of an ``nft -f`` transaction read whole (a ``t`` token) when they stand on a line of their own
_TX_PREFIXES = ("add rule ", "insert rule ", "create rule ", "add element ", "create element ", "add chain ",
                "create chain ")


_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def _bare(ln: str) -> str:
    """The line without strings and comments (for counting its braces)."""
    if '"' in ln:
        ln = _STRING.sub('""', ln)
    return ln.partition("#")[0] if "#" in ln else ln


def _nested(bare: str) -> bool:
    """Whether every ``}`` of the line closes a ``{`` of it."""
    if bare.count("{") == 1:
        return bare.index("{") < bare.index("}")
    depth = 0
    for c in bare:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return False
    return True


def _tokenize(text: str, fast: bool = True) -> list[_Tok]:
    """Tokens with their lines; a line without quotes or comments (most of a big listing) is cut in one
    regular-expression pass.

    Lines are followed through their blocks (``table``/``chain``/``set``/``map`` … ``{`` up to its ``}``): a
    whole rule line of a chain block becomes one ``r`` token and the ``{ … }`` of a set's ``elements =`` one
    ``e`` token, read by the shape cache (:class:`_Shapes`) instead of token by token; outside any block, an
    ``add rule``/``add element`` command of a transaction on a line of its own becomes one ``t`` token
    (:meth:`_Parser._transaction_line`). Anything the line walk is unsure of (a brace left open inside a
    rule, a continued line) ends it: the rest is tokenized."""
    out: list[_Tok] = []
    append = out.append
    lines = text.split("\n")
    stack: list[str] = []  # the kinds of the open blocks
    n = 0
    count = len(lines)
    while n < count:
        ln = lines[n]
        n += 1
        line = n
        if fast:
            body = ln.strip()
            bare = _bare(body) if ('"' in body or "#" in body) else body
            opens, closes = bare.count("{"), bare.count("}")
            top = stack[-1] if stack else ""
            if bare.endswith("\\"):
                fast = False
            elif opens == closes and (not opens or _nested(bare)):
                if top == "chain" and bare and ";" not in bare and bare.split(" ", 1)[0] not in _CHAIN_WORDS:
                    if '"' in body:
                        _tokenize_line(body, line, [])  # an unterminated string is refused here, as in full
                    append(_Tok(body, line, "r"))
                    append(_Tok("\n", line, "n"))
                    continue
                if top in ("set", "map") and bare.startswith("elements = {") and '"' not in body:
                    append(_Tok("elements", line, "w"))
                    append(_Tok(body[body.index("{") + 1:body.rindex("}")], line, "e"))
                    append(_Tok("\n", line, "n"))
                    continue
                if not top and body.startswith(_TX_PREFIXES) and ";" not in bare and "#" not in bare:
                    if '"' in body:
                        _tokenize_line(body, line, [])  # an unterminated string is refused here, as in full
                    append(_Tok(body, line, "t"))
                    append(_Tok("\n", line, "n"))
                    continue
            elif opens == closes + 1 and bare.endswith("{"):
                word = bare.split(" ", 1)[0]
                stack.append(word if word in ("table", "chain", "set", "map") else "other")
            elif top in ("set", "map") and bare.startswith("elements = {") and opens == 1 and not closes \
                    and '"' not in body:
                # the elements of a listing, one or a few per line up to the closing brace
                parts = [body[body.index("{") + 1:]]
                while n < count and "}" not in lines[n] and '"' not in lines[n] and "#" not in lines[n] \
                        and "{" not in lines[n]:
                    parts.append(lines[n])
                    n += 1
                last = lines[n] if n < count else ""
                if n < count and last.count("}") == 1 and "{" not in last and '"' not in last \
                        and "#" not in last and last.rstrip().endswith("}"):
                    parts.append(last.rstrip()[:-1])
                    n += 1
                    append(_Tok("elements", line, "w"))
                    append(_Tok("\n".join(parts), line, "e"))
                    append(_Tok("\n", n, "n"))
                    continue
                n = line  # not the shape expected: this line and the rest token by token
                fast = False
                ln = lines[n - 1]
            elif closes == opens + 1 and bare == "}":
                if stack:
                    stack.pop()
            else:
                fast = False
        if '"' not in ln and "#" not in ln:
            for w in _FAST.findall(ln):
                append(_Tok(w, line, "p" if w in _PUNCT else "w"))
        else:
            _tokenize_line(ln, line, out)
        append(_Tok("\n", line, "n"))
    return out


def _tokenize_line(ln: str, line: int, out: list[_Tok]) -> None:
    pos = 0
    n = len(ln)
    while pos < n:
        m = _TOKEN.match(ln, pos)
        if m is None:
            raise RulesetError(f"line {line}: unterminated string")
        pos = m.end()
        comment, string, _newline, punct, word = m.groups()
        if comment is not None:
            h = _HANDLE.search(comment)
            if h:
                out.append(_Tok(h.group(1), line, "h"))
        elif string is not None:
            out.append(_Tok(string[1:-1], line, "s"))
        elif punct is not None:
            out.append(_Tok(punct, line, "p"))
        elif word is not None:
            out.append(_Tok(word, line, "w"))


# A rule's tokens with ``{ … }`` groups nested.
_Item = _Tok | list["_Item"]


@dataclass
class _ChainB:
    name: str
    line: int
    rules: list[Rule] = field(default_factory=list)
    type: str | None = None
    hook: str | None = None
    priority: int = 0
    policy: str = "accept"


@dataclass
class _TableB:
    family: NftFamily
    name: str
    chains: dict[str, _ChainB] = field(default_factory=dict)
    sets: dict[str, NamedSet] = field(default_factory=dict)
    # elements ``add element`` appended to a set since it was defined (its items, its data), joined at the end
    added: dict[str, tuple[list[Element], list[Verdict]]] = field(default_factory=dict)


def _add_elements(tb: _TableB, s: NamedSet, more: Elements) -> None:
    items, data = tb.added.setdefault(s.name, ([], []))
    items += more.items
    data += more.data


def _with_added(tb: _TableB, s: NamedSet) -> NamedSet:
    added = tb.added.get(s.name)
    if not added:
        return s
    items, data = added
    return replace(s, elements=Elements(items=s.elements.items + tuple(items), data=s.elements.data + tuple(data)))


def _err(line: int, message: str) -> RulesetError:
    return RulesetError(f"line {line}: {message}")


class _Parser:
    def __init__(self, text: str, names: Names, fast: bool = True) -> None:
        self.names = names
        self.toks = _tokenize(text, fast)
        self.i = 0
        self.tables: dict[tuple[NftFamily, str], _TableB] = {}
        self.handles = False
        self.shapes = _Shapes()
        # the shortcut tokens the parser takes as they are where it stands now (a chain block's ``r``, a set
        # block's ``e``); any other meets :meth:`_expand_rest`
        self.raw: frozenset[str] = frozenset()

    # ---- token helpers

    def _peek(self) -> _Tok | None:
        if self.i >= len(self.toks):
            return None
        t = self.toks[self.i]
        if t.kind in self.raw or t.kind not in ("r", "e", "t"):
            return t
        self._expand_rest()  # the tokenizer's reading of the blocks and the parser's parted: no more shortcuts
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _expand_rest(self) -> None:
        """The rest of the input as plain tokens (the whole-line ``r`` and ``e`` tokens cut as the tokenizer
        cuts any other line): once, when a shortcut token turns up where the parser does not take one."""
        rest: list[_Tok] = []
        for t in self.toks[self.i:]:
            if t.kind in ("r", "t"):
                _tokenize_line(t.text, t.line, rest)
            elif t.kind == "e":
                rest.append(_Tok("{", t.line, "p"))
                at = t.line
                for x in _tokenize_plain(t.text):  # with the tokenizer's newlines inside the group
                    while at < x.line + t.line - 1:
                        rest.append(_Tok("\n", at, "n"))
                        at += 1
                    rest.append(_Tok(x.text, x.line + t.line - 1, x.kind))
                rest.append(_Tok("}", t.line + t.text.count("\n"), "p"))
            else:
                rest.append(t)
        self.toks[self.i:] = rest

    def _next(self, what: str = "a word") -> _Tok:
        t = self._peek()
        if t is None:
            last = self.toks[-1].line if self.toks else 1
            raise _err(last, f"unexpected end of input, expected {what}")
        self.i += 1
        return t

    def _word(self, what: str) -> _Tok:
        t = self._next(what)
        if t.kind not in ("w", "s"):
            raise _err(t.line, f"expected {what}, got `{t.text.strip()}'")
        return t

    def _skip_separators(self) -> None:
        while (t := self._peek()) is not None and (t.kind in ("n", "h") or t.text == ";"):
            self.i += 1

    def _at_end_of_statement(self) -> bool:
        t = self._peek()
        return t is None or t.kind == "n" or t.text in (";", "}")

    def _statement(self) -> list[_Item]:
        """Tokens up to the end of the line (or ``;`` / a closing brace), ``{ … }`` nested; a handle comment
        is kept as the last token."""
        items: list[_Item] = []
        stack: list[list[_Item]] = [items]
        while (t := self._peek()) is not None:
            if (t.kind == "r" and (items or len(stack) > 1)) or (t.kind == "e" and (len(stack) > 1 or not (
                    len(items) == 1 and isinstance(items[0], _Tok) and items[0].text == "elements"))):
                self._expand_rest()
                continue
            if len(stack) == 1 and (t.kind == "n" or t.text in (";", "}")):
                break
            self.i += 1
            if t.text == "{" and t.kind == "p":
                group: list[_Item] = []
                stack[-1].append(group)
                stack.append(group)
            elif t.text == "}" and t.kind == "p":
                stack.pop()
            elif t.kind != "n" or len(stack) == 1:
                stack[-1].append(t)
        if len(stack) > 1:
            raise _err(self.toks[-1].line, "unclosed `{'")
        return items

    # ---- top level

    def parse(self) -> NftRuleset:
        while True:
            self.raw = _TOP_RAW
            self._skip_separators()
            t = self._peek()
            if t is None:
                break
            if t.kind == "t":
                toks = self.toks
                while self._transaction_line(t):
                    self.i += 2  # the line and its newline
                    if self.i >= len(toks) or (t := toks[self.i]).kind != "t":
                        break
                else:
                    self._expand_rest()  # a form the shortcut does not take: the rest token by token
                continue
            self.raw = frozenset()
            self._command(self._word("a command"))
        return self._freeze()

    def _transaction_line(self, t: _Tok) -> bool:
        """A whole ``add rule``/``add element``/``add chain`` line (a ``t`` token) read as :meth:`_command`
        reads its tokens, the rule or the elements through the shape cache; False (nothing done) for a form it
        leaves to the token-by-token read: a name that is not a plain word, ``index``/``position``/``handle``,
        elements that are not exactly one ``{ … }`` group without nested braces, a chain with more than its
        name."""
        m = _TX_HEAD.match(t.text)
        if m is None:
            return False
        verb, obj, family, tname, name = m.groups()
        if (family is None and tname in _FAMILIES) or (obj == "element" and verb == "insert"):
            return False  # the expression matched by giving up the family word: not the command's reading
        fam = _FAMILIES[family] if family else NftFamily.IP
        rest = t.text[m.end():]
        line = t.line
        if obj == "chain":
            if rest:
                return False
            self._chain(self._table(fam, _Tok(tname, line, "w"), create=False), _Tok(name, line, "w"), create=True)
            return True
        if not rest or rest[0] == " ":
            return False
        if obj == "rule":
            if rest.split(" ", 1)[0] in ("index", "position", "handle"):
                return False
            ch = self._chain(self._table(fam, _Tok(tname, line, "w"), create=False), _Tok(name, line, "w"))
            rule = self.shapes.rule(rest, line, fam, self)
            if verb == "insert":
                ch.rules.insert(0, rule)
            else:
                ch.rules.append(rule)
            return True
        if not (rest.startswith("{") and rest.endswith("}") and "{" not in rest[1:-1] and "}" not in rest[1:-1]):
            return False
        tb = self._table(fam, _Tok(tname, line, "w"), create=False)
        s = tb.sets.get(name)
        if s is None:
            raise _err(line, f"no set `{name}' in table `{fam.value} {tname}'")
        more = self.shapes.elements(rest[1:-1], line, s.kinds, s.is_map)
        _add_elements(tb, s, more)
        return True

    def _family_name(self, count: int) -> tuple[NftFamily, list[_Tok]]:
        """``[family] name…``: nft's default family is ip."""
        first = self._word("a family or table name")
        fam = _FAMILIES.get(first.text)
        names = [] if fam is not None else [first]
        while len(names) < count:
            names.append(self._word("a name"))
        return fam or NftFamily.IP, names

    def _table(self, fam: NftFamily, tok: _Tok, create: bool = True) -> _TableB:
        key = (fam, tok.text)
        tb = self.tables.get(key)
        if tb is None:
            if not create:
                raise _err(tok.line, f"no table `{fam.value} {tok.text}' (No such file or directory)")
            tb = self.tables[key] = _TableB(fam, tok.text)
        return tb

    def _chain(self, tb: _TableB, tok: _Tok, create: bool = False) -> _ChainB:
        ch = tb.chains.get(tok.text)
        if ch is None:
            if not create:
                raise _err(tok.line, f"no chain `{tok.text}' in table `{tb.family.value} {tb.name}' "
                                     "(No such file or directory)")
            ch = tb.chains[tok.text] = _ChainB(tok.text, tok.line)
        return ch

    def _command(self, cmd: _Tok) -> None:
        verb = cmd.text
        if verb == "table":
            fam, (name,) = self._family_name(1)
            self._table_block(self._table(fam, name))
            return
        if verb in ("add", "create", "insert", "replace", "flush", "delete", "destroy"):
            what = self._word("an object (table, chain, rule, set, map, element)")
            obj = what.text
            if verb == "flush" and obj == "ruleset":
                self.tables.clear()
                return
            if obj == "table":
                fam, (name,) = self._family_name(1)
                if verb in ("delete", "destroy"):
                    self.tables.pop((fam, name.text), None)
                    self._statement()
                    return
                tb = self._table(fam, name, create=verb != "flush")
                if verb == "flush":
                    for ch in tb.chains.values():
                        ch.rules.clear()
                else:
                    self._table_block(tb)
                return
            if obj == "chain":
                fam, (tname, cname) = self._family_name(2)
                tb = self._table(fam, tname, create=False)
                if verb in ("delete", "destroy"):
                    tb.chains.pop(cname.text, None)
                    self._statement()
                    return
                ch = self._chain(tb, cname, create=verb != "flush")
                if verb == "flush":
                    ch.rules.clear()
                else:
                    self._chain_header(ch)
                return
            if obj == "rule" and verb in ("add", "insert", "create"):
                fam, (tname, cname) = self._family_name(2)
                ch = self._chain(self._table(fam, tname, create=False), cname)
                self._rule_command(ch, fam, insert=verb == "insert", line=what.line)
                return
            if obj in ("set", "map") and verb in ("add", "create"):
                fam, (tname, sname) = self._family_name(2)
                tb = self._table(fam, tname, create=False)
                self._set_block(tb, sname, obj == "map")
                return
            if obj == "element" and verb in ("add", "create"):
                fam, (tname, sname) = self._family_name(2)
                tb = self._table(fam, tname, create=False)
                s = tb.sets.get(sname.text)
                if s is None:
                    raise _err(sname.line, f"no set `{sname.text}' in table `{fam.value} {tname.text}'")
                items = self._statement()
                group = next((x for x in items if isinstance(x, list)), None)
                if group is None:
                    raise _err(sname.line, "expected `{ elements }'")
                _add_elements(tb, s, _elements(group, s.kinds, s.is_map, sname.line))
                return
        raise _err(cmd.line, f"unknown or unsupported command `{cmd.text}'")

    # ---- blocks

    def _expect_open(self) -> bool:
        """Consume ``{`` if it comes next (on this line); True if it did."""
        t = self._peek()
        if t is not None and t.text == "{" and t.kind == "p":
            self.i += 1
            return True
        return False

    def _block(self, what: str, line: int) -> Iterator[_Tok]:
        """The first token of each statement of a ``{ … }`` block whose ``{`` was read, up to its ``}``."""
        while True:
            self._skip_separators()
            t = self._peek()
            if t is None:
                raise _err(line, f"{what}: unclosed `{{'")
            if t.text == "}":
                self.i += 1
                return
            yield t

    def _table_block(self, tb: _TableB) -> None:
        if not self._expect_open():
            self._statement()
            return
        for _ in self._block(f"table `{tb.name}'", self.toks[-1].line):
            word = self._word("chain, set, map, flags or }")
            if word.text == "chain":
                ch = self._chain(tb, self._word("a chain name"), create=True)
                self._chain_block(ch, tb.family)
            elif word.text in ("set", "map"):
                self._set_block(tb, self._word("a set name"), word.text == "map")
            elif word.text in ("flags", "comment"):
                self._statement()
            else:
                raise _err(word.line, f"unknown or unsupported table statement `{word.text}'")

    def _chain_header(self, ch: _ChainB) -> None:
        """``add chain … { type T hook H priority P ; policy X ; }``"""
        if not self._expect_open():
            self._statement()
            return
        for _ in self._block(f"chain `{ch.name}'", ch.line):
            self._chain_statement(ch, self._statement(), None)

    def _chain_block(self, ch: _ChainB, fam: NftFamily) -> None:
        if not self._expect_open():
            raise _err(ch.line, f"chain `{ch.name}': expected `{{'")
        shapes, rules = self.shapes, ch.rules
        outer, self.raw = self.raw, frozenset({"r"})
        try:
            self._chain_rules(ch, fam, shapes, rules)
        finally:
            self.raw = outer

    def _chain_rules(self, ch: _ChainB, fam: NftFamily, shapes: _Shapes, rules: list[Rule]) -> None:
        for _ in self._block(f"chain `{ch.name}'", ch.line):
            # a run of whole rule lines (the tokenizer's ``r`` tokens, each followed by its newline)
            t = self._peek()
            if t is not None and t.kind == "r":
                while t is not None and t.kind == "r":
                    rules.append(shapes.rule(t.text, t.line, fam, self))
                    self.i += 2
                    t = self._peek()
                continue  # separators and the closing brace: the block's own
            self._chain_statement(ch, self._statement(), fam)

    def _chain_statement(self, ch: _ChainB, items: list[_Item], fam: NftFamily | None) -> None:
        if not items:
            return
        head = items[0]
        if isinstance(head, _Tok) and head.text == "type" and head.kind == "w":
            self._base_spec(ch, items)
        elif isinstance(head, _Tok) and head.text == "policy" and head.kind == "w":
            pol = items[1] if len(items) > 1 else head
            if not isinstance(pol, _Tok) or pol.text not in ("accept", "drop"):
                raise _err(head.line, "policy must be accept or drop")
            ch.policy = pol.text
        elif isinstance(head, _Tok) and head.text in ("comment", "devices", "device") and head.kind == "w":
            return
        elif fam is None:
            raise _err(_line(head), "expected type, policy or }")
        elif isinstance(head, _Tok) and head.kind == "r":
            ch.rules.append(self.shapes.rule(head.text, head.line, fam, self))
        else:
            ch.rules.append(_rule(items, fam, self))

    def _base_spec(self, ch: _ChainB, items: list[_Item]) -> None:
        words = [x for x in items if isinstance(x, _Tok)]
        line = words[0].line
        kv: dict[str, list[str]] = {}
        key = ""
        for w in words:
            if w.text in ("type", "hook", "priority", "device", "policy"):
                key = w.text
                kv[key] = []
            elif key:
                kv[key].append(w.text)
        typ, hook, prio = kv.get("type") or [""], kv.get("hook", [""]), kv.get("priority")
        if typ[0] not in CHAIN_TYPES:
            raise _err(line, f"unknown chain type `{typ[0]}' (filter, nat or route)")
        if not hook or not hook[0]:
            raise _err(line, "a base chain needs a hook")
        if prio is None or not prio:
            raise _err(line, "a base chain needs a priority")
        ch.type, ch.hook, ch.priority = typ[0], hook[0], _priority(prio, line, hook[0])
        if kv.get("policy"):
            ch.policy = kv["policy"][0]

    def _set_block(self, tb: _TableB, name: _Tok, is_map: bool) -> None:
        if not self._expect_open():
            raise _err(name.line, f"set `{name.text}': expected `{{'")
        outer, self.raw = self.raw, frozenset({"e"})
        try:
            self._set_body(tb, name, is_map)
        finally:
            self.raw = outer

    def _set_body(self, tb: _TableB, name: _Tok, is_map: bool) -> None:
        kinds: tuple[Kind, ...] = ()
        interval = False
        elements = Elements(items=())
        for _ in self._block(f"set `{name.text}'", name.line):
            items = self._statement()
            head = items[0] if items else None
            if not isinstance(head, _Tok):
                continue
            words = [x.text for x in items if isinstance(x, _Tok)]
            if head.text == "type":
                keys = words[1:words.index(":")] if ":" in words else words[1:]
                kinds = tuple(_set_kind(k, head.line) for k in keys if k != ".")
            elif head.text == "typeof":
                keys_text = " ".join(words[1:words.index(":")] if ":" in words else words[1:])
                kinds = tuple(FIELDS[_field_name(k.strip(), head.line)][0] for k in keys_text.split(" . "))
            elif head.text == "flags":
                interval = "interval" in words
            elif head.text == "elements":
                if not kinds:
                    raise _err(head.line, f"set `{name.text}': elements before its type")
                raw = next((x for x in items if isinstance(x, _Tok) and x.kind == "e"), None)
                if raw is not None:
                    elements = self.shapes.elements(raw.text, raw.line, kinds, is_map)
                else:
                    group = next((x for x in items if isinstance(x, list)), [])
                    elements = _elements(group, kinds, is_map, head.line)
        if not kinds:
            raise _err(name.line, f"set `{name.text}' has no type")
        tb.sets[name.text] = NamedSet(name=name.text, kinds=kinds, elements=elements, interval=interval,
                                      is_map=is_map, line=name.line)
        tb.added.pop(name.text, None)  # a set defined again starts from its own elements

    def _rule_command(self, ch: _ChainB, fam: NftFamily, *, insert: bool, line: int) -> None:
        items = self._statement()
        index: int | None = 0 if insert else None
        if len(items) >= 2 and isinstance(items[0], _Tok) and items[0].text in ("index", "position", "handle"):
            where, num = items[0], items[1]
            if not isinstance(num, _Tok):
                raise _err(where.line, f"{where.text}: expected a number")
            if where.text == "index":
                index = _int(num.text, num.line, "index") + (0 if insert else 1)
            else:
                handle = _int(num.text, num.line, where.text)
                pos = next((i for i, r in enumerate(ch.rules) if r.handle == handle), None)
                if pos is None:
                    raise _err(where.line, f"no rule with handle {handle} in chain `{ch.name}'")
                index = pos + (0 if insert else 1)
            items = items[2:]
        rule = _rule(items, fam, self, line)
        if index is None or index >= len(ch.rules):
            ch.rules.append(rule)
        else:
            ch.rules.insert(index, rule)

    # ---- result

    def _freeze(self) -> NftRuleset:
        tables = []
        for tb in self.tables.values():
            chains = tuple(Chain(name=c.name, rules=tuple(c.rules), type=c.type, hook=c.hook, priority=c.priority,
                                 policy=c.policy, line=c.line) for c in tb.chains.values())
            table = Table(family=tb.family, name=tb.name, chains=chains,
                          sets=tuple(_with_added(tb, s) for s in tb.sets.values()))
            _check_references(table)
            tables.append(table)
        return NftRuleset(tuple(tables), self.handles)


def _line(item: _Item) -> int:
    while isinstance(item, list):
        if not item:
            return 0
        item = item[0]
    return item.line


def _priority(words: list[str], line: int, hook: str) -> int:
    text = "".join(words)
    m = re.fullmatch(r"([a-z]+)?([+-]?\d+)?", text)
    if m is None or not text:
        raise _err(line, f"bad priority `{' '.join(words)}'")
    name, num = m.groups()
    base = 0
    if name is not None:
        if name not in NAMED_PRIORITIES:
            raise _err(line, f"unknown priority name `{name}'")
        if name in NAMED_PRIORITY_HOOKS and hook not in NAMED_PRIORITY_HOOKS[name]:
            raise _err(line, f"priority {name} on hook {hook}: invalid priority expression value in this context "
                             f"(nft takes {name} on {' and '.join(NAMED_PRIORITY_HOOKS[name])} only; give the number "
                             f"{NAMED_PRIORITIES[name]})")
        base = NAMED_PRIORITIES[name]
    return base + (int(num) if num else 0)


def _set_kind(name: str, line: int) -> Kind:
    kind = _KINDS_BY_TYPE.get(name)
    if kind is None:
        raise _err(line, f"unsupported set type `{name}'")
    return kind


def _check_references(table: Table) -> None:
    names = {c.name for c in table.chains}
    for c in table.chains:
        if c.hook is not None and c.type == "nat" and c.hook not in ("prerouting", "input", "output", "postrouting"):
            raise _err(c.line, f"chain `{c.name}': a nat chain cannot hook {c.hook}")
        for r in c.rules:
            for e in r.exprs:
                targets = [e] if isinstance(e, Verdict) else []
                if isinstance(e, VerdictMap) and isinstance(e.value, Elements):
                    targets = list(e.value.data)
                for v in targets:
                    if v.kind in ("jump", "goto") and v.chain not in names:
                        raise _err(r.line, f"{v.kind} {v.chain}: no such chain in table `{table.family.value} "
                                           f"{table.name}' (Could not process rule: No such file or directory)")
                value = e.value if isinstance(e, Match | VerdictMap) else None
                if isinstance(value, SetRef) and table.set(value.name) is None:
                    raise _err(r.line, f"@{value.name}: no such set in table `{table.family.value} {table.name}'")


# ------------------------------------------------------------------------------------------ values


def _int(text: str, line: int, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise _err(line, f"`{text}' is not a valid {what}") from None


def _ip_interval(text: str, kind: Kind, line: int) -> tuple[int, int]:
    want = 4 if kind is Kind.IPV4 else 6
    try:
        if "/" in text:
            net = IPv4Network(text, strict=False) if want == 4 else IPv6Network(text, strict=False)
            return int(net.network_address), int(net.broadcast_address)
        if ("-" in text and want == 4) or (want == 6 and "-" in text):
            a, b = text.split("-", 1)
            lo, hi = ip_address(a), ip_address(b)
            if lo.version != want or hi.version != want:
                raise ValueError
            return int(lo), int(hi)
        addr = IPv4Address(text) if want == 4 else IPv6Address(text)
        return int(addr), int(addr)
    except ValueError:
        raise _err(line, f"`{text}' is not an IPv{want} address, prefix or range") from None


def _range(text: str, line: int, what: str, names: dict[str, int] | None = None) -> tuple[int, int]:
    def one(t: str) -> int:
        if names is not None and t in names:
            return names[t]
        return _int(t, line, what)

    if "-" in text[1:]:
        a, b = text.split("-", 1) if not text.startswith("-") else ("-" + text[1:].split("-", 1)[0],
                                                                    text[1:].split("-", 1)[1])
        lo, hi = one(a), one(b)
        if lo > hi:
            raise _err(line, f"range `{text}' ends before it starts")
        return lo, hi
    v = one(text)
    return v, v


def _atom(text: str, kind: Kind, line: int) -> Atom:
    """One value of ``kind`` as written (a word, or the content of a string)."""
    if kind in (Kind.IPV4, Kind.IPV6):
        return _ip_interval(text, kind, line)
    if kind is Kind.PORT:
        lo, hi = _range(text, line, "port", _SERVICES)
        if not 0 <= lo <= hi <= 65535:
            raise _err(line, f"port `{text}' out of range")
        return lo, hi
    if kind in (Kind.INT, Kind.MARK):
        lo, hi = _range(text, line, "number")
        if lo < 0 or hi > 0xFFFFFFFF:
            raise _err(line, f"`{text}' out of range")
        return lo, hi
    if kind is Kind.IFNAME:
        return text
    if kind is Kind.L4PROTO:
        return _range(text, line, "protocol", L4PROTOS)
    if kind is Kind.NFPROTO:
        v = NFPROTOS.get(text)
        if v is None:
            raise _err(line, f"`{text}' is not ipv4 or ipv6")
        return v, v
    if kind is Kind.FIBTYPE:
        if text not in FIB_TYPES:
            raise _err(line, f"`{text}' is not an address type ({', '.join(FIB_TYPES)})")
        i = FIB_TYPES.index(text)
        return i, i
    bits = CT_STATES if kind is Kind.CTSTATE else TCP_FLAGS
    value = 0
    for part in text.split(","):
        if part not in bits and not part.startswith("0x"):
            raise _err(line, f"`{part}' is not a {kind.value} ({', '.join(bits)})")
        value |= bits[part] if part in bits else int(part, 16)
    return value, value


def _words_split(items: list[_Item], sep: str) -> list[list[_Tok]]:
    """Flat tokens of a ``{ … }`` group split at ``sep`` punctuation (newlines dropped)."""
    out: list[list[_Tok]] = [[]]
    for x in items:
        if isinstance(x, list):
            out[-1].extend(t for t in _flatten(x))
        elif x.text == sep and x.kind == "p":
            out.append([])
        elif x.kind in ("w", "s"):
            out[-1].append(x)
    return [g for g in out if g]


def _flatten(items: list[_Item]) -> list[_Tok]:
    out: list[_Tok] = []
    for x in items:
        out.extend(_flatten(x) if isinstance(x, list) else [x])
    return out


def _element(toks: list[_Tok], kinds: tuple[Kind, ...], line: int) -> Element:
    """``a . b . c`` (element options such as ``timeout 1s`` or ``counter …`` after it are ignored)."""
    parts: list[Atom] = []
    want_value = True
    for t in toks:
        if want_value:
            if len(parts) == len(kinds):
                break
            kind = kinds[len(parts)]
            parts.append(_atom(t.text, kind, t.line))
            want_value = False
        elif t.text == ".":
            want_value = True
        else:
            break
    if len(parts) != len(kinds):
        raise _err(line, f"element `{' '.join(t.text for t in toks)}' does not fit the key "
                         f"({' . '.join(k.value for k in kinds)})")
    return tuple(parts)


def _elements(group: list[_Item], kinds: tuple[Kind, ...], is_map: bool, line: int) -> Elements:
    items: list[Element] = []
    data: list[Verdict] = []
    for toks in _words_split(group, ","):
        if len(items) >= MAX_SET_ELEMENTS:
            raise _err(line, f"more than {MAX_SET_ELEMENTS} elements in one set")
        if is_map:
            cut = next((i for i, t in enumerate(toks) if t.text == ":"), None)
            if cut is None:
                raise _err(toks[0].line, "a map element needs `: verdict'")
            items.append(_element(toks[:cut], kinds, toks[0].line))
            v = _verdict([t.text for t in toks[cut + 1:]])
            if v is None:
                raise _err(toks[0].line, f"unsupported map data `{' '.join(t.text for t in toks[cut + 1:])}'")
            data.append(v)
        else:
            items.append(_element(toks, kinds, toks[0].line))
    return Elements(items=tuple(items), data=tuple(data))


def _verdict(words: list[str]) -> Verdict | None:
    if len(words) == 1 and words[0] in _VERDICTS:
        return Verdict(kind=words[0])
    if len(words) == 2 and words[0] in ("jump", "goto"):
        return Verdict(kind=words[0], chain=words[1])
    return None


# ------------------------------------------------------------------------------------------ rules


def _field_name(text: str, line: int) -> str:
    name = FIELD_ALIASES.get(text, text)
    if name not in FIELDS:
        raise _err(line, f"unsupported field `{text}'")
    return name


class _RuleReader:
    """Expressions and statements of one rule, left to right."""

    def __init__(self, items: list[_Item], fam: NftFamily, line: int, names: Names) -> None:
        self.names = names
        self.items = items
        self.i = 0
        self.fam = fam
        self.line = line

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        if j < len(self.items):
            x = self.items[j]
            return "{" if isinstance(x, list) else x.text
        return None

    def take(self) -> _Item:
        if self.i >= len(self.items):  # ``jump``, ``dnat to``, … with nothing after them: nft's syntax error
            last = self.items[-1] if self.items else None
            after = f" after `{last.text}'" if isinstance(last, _Tok) else ""
            raise _err(self.line, f"syntax error, unexpected end of rule{after}")
        x = self.items[self.i]
        self.i += 1
        return x

    def word(self) -> str:
        x = self.take()
        if isinstance(x, list):
            raise _err(self.line, "unexpected `{'")
        return x.text

    def selector(self) -> tuple[str, int] | None:
        """A field at the cursor (consumed), with numgen's modulus; None if none starts here."""
        a, b = self.peek(), self.peek(1)
        for name in (f"{a} {b}", a, f"{a} {b} {self.peek(2)}"):
            if name is None:
                continue
            canon = FIELD_ALIASES.get(name, name)
            if canon in FIELDS and canon != "numgen":
                self.i += len(name.split(" "))
                return canon, 0
        if a == "numgen" and b == "random" and self.peek(2) == "mod":
            self.i += 3
            mod = _int(self.word(), self.line, "modulus")
            if self.peek() == "offset":
                return None
            return "numgen", mod
        return None


def _rule(items: list[_Item], fam: NftFamily, parser: _Parser, line: int | None = None) -> Rule:
    handle = None
    if items and isinstance(items[-1], _Tok) and items[-1].kind == "h":
        handle = int(items[-1].text)
        parser.handles = True
        items = items[:-1]
    line = line if line is not None else (_line(items[0]) if items else 0)
    r = _RuleReader(items, fam, line, parser.names)
    exprs: list[Expr] = []
    comment = None
    while r.peek() is not None:
        start = r.i
        word = r.peek()
        assert word is not None
        if word == "comment":
            r.take()
            comment = r.word()
            continue
        expr = _statement(r, word)
        if expr is None:
            r.i = start
            expr = _match(r)
        if expr is None:
            r.i = start
            exprs.extend(_unknown(r))
            break
        exprs.append(expr)
    return Rule(exprs=tuple(exprs), line=line, handle=handle, comment=comment)


def _unknown(r: _RuleReader) -> list[Expr]:
    """The rest of the rule as one Unknown, but a final verdict kept as a verdict."""
    rest = r.items[r.i:]
    r.i = len(r.items)
    words = [" ".join(t.text for t in _flatten(x)) if isinstance(x, list) else x.text for x in rest]
    tail: list[Expr] = []
    for n in (2, 1):
        if len(words) > n and (v := _verdict(words[-n:])) is not None:
            tail = [v]
            words = words[:-n]
            break
    text = " ".join("{ " + w + " }" if isinstance(x, list) else w for x, w in zip(rest, words, strict=False))
    return [Unknown(text=text), *tail]


def _statement(r: _RuleReader, word: str) -> Expr | None:
    if word in _VERDICTS:
        r.take()
        return Verdict(kind=word)
    if word in ("jump", "goto"):
        r.take()
        return Verdict(kind=word, chain=r.word())
    if word == "reject":
        r.take()
        words = ["reject"]
        if r.peek() == "with":
            words.append(r.word())
            while r.peek() is not None and r.peek() not in ("comment",) and len(words) < 5:
                words.append(r.word())
        return Verdict(kind="reject", text=" ".join(words))
    if word == "counter":
        r.take()
        if r.peek() == "packets":
            r.i += 4
        elif r.peek() == "name":
            r.i += 2
        return Other(kind="counter", text="counter packets 0 bytes 0")
    if word == "log":
        r.take()
        words = ["log"]
        while r.peek() in ("prefix", "level", "group", "snaplen", "queue-threshold", "flags"):
            key = r.word()
            val = r.take()
            assert not isinstance(val, list)
            words += [key, f'"{val.text}"' if val.kind == "s" else val.text]
        return Other(kind="log", text=" ".join(words))
    if word == "limit":
        r.take()
        words = ["limit"]
        while (r.peek() is not None and r.peek() in ("rate", "over", "burst", "packets", "bytes")) or \
                (r.peek() or "")[:1].isdigit():
            words.append(r.word())
        return Other(kind="limit", text=" ".join(words))
    if word == "notrack":
        r.take()
        return Notrack()
    if word in ("redirect", "dnat", "snat", "masquerade"):
        return _nat(r)
    if word == "tproxy":
        return _tproxy(r)
    return None


def _nat(r: _RuleReader) -> Expr | None:
    kind = r.word()
    fam = ""
    if r.peek() in ("ip", "ip6") and r.peek(1) == "to":
        fam = r.word()
    addr: int | None = None
    addr_text = ""
    ports = None
    if r.peek() == "to":
        r.take()
        target = r.word()
        if r.peek() in ("map", ".") or target in ("ip", "ip6", "tcp", "udp", "meta", "th"):
            return None  # ``dnat to ip daddr map { … }``: a map netsim does not evaluate
        host, port = _split_target(target, kind in ("redirect", "masquerade"))
        if host:
            want = 6 if ":" in host else 4
            first = host.split("-")[0]
            try:
                a = ip_address(first)
            except ValueError:
                raise _err(r.line, f"{kind} to `{target}': not an address") from None
            if a.version != want:
                raise _err(r.line, f"{kind} to `{target}': not an address")
            addr, addr_text = int(a), "-".join(inet_ntop(ip_address(x)) for x in host.split("-"))
        if port:
            ports = _range(port, r.line, "port")
    flags: list[str] = []
    while r.peek() in ("random", "fully-random", "persistent"):
        flags.append(r.word())
        if r.peek() == ",":
            r.take()
    if not fam and addr is not None and r.fam is NftFamily.INET and kind in ("snat", "dnat"):
        fam = "ip6" if ":" in addr_text else "ip"  # an inet table's nat names its family (nft lists it so)
    return Nat(kind=kind, family=fam, addr=addr, addr_text=addr_text, ports=ports, flags=tuple(flags))


def _split_target(text: str, port_only: bool) -> tuple[str, str]:
    """``10.0.0.1:80``, ``[::1]:80``, ``::1``, ``:80`` → (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if text.startswith(":"):
        return "", text[1:]
    if port_only and text.isdigit():
        return "", text
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, port
    return text, ""


def _tproxy(r: _RuleReader) -> Expr | None:
    r.take()
    fam = ""
    if r.peek() in ("ip", "ip6"):
        fam = r.word()
    if r.word() != "to":
        return None
    host, port = _split_target(r.word(), False)
    addr = None
    if host:
        try:
            addr = int(ip_address(host))
        except ValueError:
            raise _err(r.line, f"tproxy to `{host}': not an address") from None
        host = inet_ntop(ip_address(host))
    return Tproxy(family=fam, addr=addr, addr_text=host, port=_int(port, r.line, "port") if port else 0)


def _match(r: _RuleReader) -> Expr | None:
    first = r.selector()
    if first is None:
        return None
    fields = [first[0]]
    mod = first[1]
    while r.peek() == ".":
        r.take()
        more = r.selector()
        if more is None:
            return None
        fields.append(more[0])
    kinds = tuple(FIELDS[f][0] for f in fields)
    mask = None
    if r.peek() in ("and", "&"):
        r.take()
        mask_atom = _atom(r.word(), kinds[0], r.line)
        if isinstance(mask_atom, str):
            return None
        mask = mask_atom[0]
    nxt = r.peek()
    if nxt == "set" and len(fields) == 1:
        r.take()
        return _set_stmt(r, fields[0])
    if nxt == "vmap":
        r.take()
        return VerdictMap(fields=tuple(fields), value=_value(r, kinds, is_map=True), numgen_mod=mod)
    op = "=="
    if nxt in _OPS:
        op = _OPS[r.word()]
    if r.peek() is None:
        return None
    if fields[0] in ("meta skuid", "meta skgid"):
        _resolve_owner(r, fields[0] == "meta skuid")
    return Match(fields=tuple(fields), op=op, value=_value(r, kinds, is_map=False), mask=mask, numgen_mod=mod)


def _value(r: _RuleReader, kinds: tuple[Kind, ...], *, is_map: bool) -> Elements | SetRef:
    x = r.take()
    if isinstance(x, list):
        return _elements(x, kinds, is_map, r.line)
    if x.text.startswith("@"):
        return SetRef(name=x.text[1:])
    if is_map:
        raise _err(r.line, f"vmap needs `{{ … }}' or `@map', got `{x.text}'")
    toks = [x]
    while r.peek() == "." and len(toks) < 2 * len(kinds) - 1:
        toks.append(r.take())  # type: ignore[arg-type]
        toks.append(r.take())  # type: ignore[arg-type]
    if kinds[0] in (Kind.CTSTATE, Kind.TCPFLAGS):
        text = x.text
        while r.peek() == ",":
            r.take()
            text += "," + r.word()
        toks = [_Tok(text, x.line, "w")]
    return Elements(items=(_element(toks, kinds, r.line),), braces=False)


def _resolve_owner(r: _RuleReader, user: bool) -> None:
    """A user or group name becomes its number, as nft resolves it when loading (and fails without it)."""
    x = r.items[r.i]
    if isinstance(x, list) or x.text[:1].isdigit():
        return
    number = r.names.uid(x.text) if user else r.names.gid(x.text)
    if number is None:
        raise _err(r.line, f"{'User' if user else 'Group'} `{x.text}' does not exist (nft resolves names when it "
                           "loads the rules)")
    r.items[r.i] = _Tok(str(number), x.line, x.kind)


def _set_stmt(r: _RuleReader, key: str) -> Expr | None:
    if key not in ("meta mark", "ct mark", "ct zone"):
        return None
    src = r.selector()
    if src is not None:
        if src[0] not in ("meta mark", "ct mark"):
            return None
        ops: list[tuple[str, int]] = []
        while r.peek() in _SET_OPS and len(ops) < 2:
            op = _SET_OPS[r.word()]
            ops.append((op, _int(r.word(), r.line, "number")))
        (op, operand), (op2, operand2) = [*ops, ("", 0), ("", 0)][:2]
        return SetStmt(key=key, source=src[0], op=op, operand=operand, op2=op2, operand2=operand2)
    value = _int(r.word(), r.line, "number")
    if not 0 <= value <= 0xFFFFFFFF:
        raise _err(r.line, f"{key} set {value}: out of range")
    return SetStmt(key=key, value=value)


# ------------------------------------------------------------------------------------------ the shape cache

# A big listing (kube-proxy's: tens of thousands of rules and map elements) repeats a handful of shapes that
# differ only in IPv4 addresses and chain names. A rule or element is cut at those values into a key; the
# first of a key is parsed in full with a distinct stand-in value in each place (255.254.x.y, a chain
# name no input has), and what each stand-in became in the parsed expressions is recorded, so every later
# one of that key is its values put in those places. Anything else (a shape whose stand-ins did not all
# come through, an address the full parse would refuse, a line with strings) is parsed in full, so errors
# are the full parser's. IPv4 only: an address next to ``-`` or ``/`` stays part of the key.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# an IPv4 address as the full parse reads it (an octet out of range or with a leading zero stays in the key,
# and the shape's full parse names the error)
_DIGITS = frozenset("0123456789")
_NOT_IN_NAMES = frozenset('{}();,:"#@\\ \t\r')
_STAND_IN = 0xFFFE0000  # 255.254.0.0: stand-in k is _STAND_IN + k
_TOP_RAW = frozenset({"t"})  # the shortcut tokens the parser takes between commands
# a ``t`` token's command, family (nft's default ip when it is not one), table and chain or set, each a plain word,
# then the end or one space and the rest
_NAME = r'[^{}();,:"#@\\ \t\r]+'
_TX_HEAD = re.compile(rf"(add|insert|create) (rule|element|chain) (?:({'|'.join(f.value for f in NftFamily)}) )?"
                      rf"({_NAME}) ({_NAME})(?: |\Z)")
_BAD_IN_NAME = re.compile(r'[{}();,:"#@\\ \t\r]')
_HANDLE_TAIL = re.compile(r"\s*#\s*handle\s+(\d+)\s*$")
_MISSING = object()

# what a stand-in became: ("a", k) address k, ("c", k) chain k; else the value itself
_Slot = tuple[str, int]


def _cut(text: str) -> tuple[str, list[str]] | None:
    """(key, values) of ``text``: each value's place in the key a NUL; None where a stand-in could be confused
    with one of its values. A value is a word right after ``jump``/``goto`` (a chain's name), or else a word of
    four dotted parts (an IPv4 address, its octets checked when it is read: one the full parse would refuse
    sends the rule there), with a ``:port`` or a list's comma after it; one with ``/`` or ``-`` stays in the
    key."""
    if "255.254." in text or "0xfffe" in text or "__nsim" in text:
        return None
    words = text.split(" ")
    values: list[str] = []
    prev = ""
    for i, w in enumerate(words):
        if prev == "jump" or prev == "goto":
            name, comma = (w[:-1], ",") if w.endswith(",") else (w, "")
            if not name or _BAD_IN_NAME.search(name):
                return None  # not a plain chain name: the full parse says what it is
            values.append(name)
            words[i] = "\x00" + comma
        elif w[:1] in _DIGITS and w.count(".") == 3 and "/" not in w and "-" not in w:
            core, sep, rest = w.partition(":") if ":" in w else w.partition(",")
            if core.endswith(","):
                core, sep, rest = core[:-1], ",", rest
            values.append(core)
            words[i] = "\x00" + sep + rest
        prev = w
    return (" ".join(words) if values else text), values


def _slots(key: str) -> tuple[str, list[int], list[int]]:
    """The stand-in text of a key, and which of its values are addresses and which chain names (a value right
    after ``jump ``/``goto `` is a chain's)."""
    out: list[str] = []
    addrs: list[int] = []
    chains: list[int] = []
    for i, part in enumerate(key.split("\x00")):
        if i:
            if out[-1][-5:] in ("jump ", "goto "):
                out.append(f"__nsim{len(chains)}")
                chains.append(i - 1)
            else:
                out.append(f"255.254.{len(addrs) >> 8}.{len(addrs) & 255}")
                addrs.append(i - 1)
        out.append(part)
    return "".join(out), addrs, chains


def _addr_values(addrs: list[str]) -> list[int] | None:
    """The addresses as integers; None if one is not in the form the full parse reads (an octet over 255 or
    with a leading zero: ``inet_ntoa`` would not give the text back)."""
    out = []
    for a in addrs:
        try:
            b = socket.inet_aton(a)
        except OSError:
            return None
        if socket.inet_ntoa(b) != a:
            return None
        out.append(int.from_bytes(b, "big"))
    return out


class _Recipe:
    """Where the stand-ins of one parsed shape went, to rebuild it with other values."""

    def __init__(self, n_addrs: int, n_chains: int) -> None:
        self.n_addrs, self.n_chains = n_addrs, n_chains
        self.used: list[_Slot] = []

    def atom(self, a: Atom) -> object:
        if isinstance(a, tuple) and a[0] == a[1] and _STAND_IN <= a[0] < _STAND_IN + self.n_addrs:
            slot = ("a", a[0] - _STAND_IN)
            self.used.append(slot)
            return slot
        return a

    def chain(self, name: str) -> object:
        if name.startswith("__nsim") and name[6:].isdigit() and int(name[6:]) < self.n_chains:
            slot = ("c", int(name[6:]))
            self.used.append(slot)
            return slot
        return name

    def complete(self) -> bool:
        """Every stand-in came through exactly once."""
        return sorted(self.used) == [("a", k) for k in range(self.n_addrs)] + [("c", k) for k in range(self.n_chains)]


_Fill = Callable[[list[int], list[str], list[str]], object]


def _const(value: object) -> _Fill:
    return lambda a, at, c: value


def _atom_fill(r: _Recipe, atom: Atom) -> _Fill | None:
    slot = r.atom(atom)
    if slot is atom:
        return None
    k = slot[1]  # type: ignore[index]
    return lambda a, at, c: (a[k], a[k])


def _verdict_fill(r: _Recipe, v: Verdict) -> _Fill | None:
    if v.kind not in ("jump", "goto"):
        return None
    slot = r.chain(v.chain)
    if slot == v.chain:
        return None
    k, kind = slot[1], v.kind  # type: ignore[index]

    def fill(a: list[int], at: list[str], c: list[str]) -> Verdict:
        name = c[k]
        got = _VERDICT_MEMO.get((kind, name))
        if got is None:
            got = _VERDICT_MEMO[(kind, name)] = Verdict(kind=kind, chain=name)
        return got

    return fill


_VERDICT_MEMO: dict[tuple[str, str], Verdict] = {}


def _elements_fill(r: _Recipe, el: Elements) -> _Fill | None:
    item_fills = [[_atom_fill(r, x) for x in e] for e in el.items]
    data_fills = [_verdict_fill(r, d) for d in el.data]
    if not any(f for fs in item_fills for f in fs) and not any(data_fills):
        return None
    items = el.items
    data = el.data
    braces = el.braces

    def fill(a: list[int], at: list[str], c: list[str]) -> Elements:
        new_items = tuple(tuple(f(a, at, c) if f else x for f, x in zip(fs, e, strict=True))
                          for fs, e in zip(item_fills, items, strict=True))
        new_data = tuple(f(a, at, c) if f else d for f, d in zip(data_fills, data, strict=True))
        return Elements(items=new_items, braces=braces, data=new_data)  # type: ignore[arg-type]

    return fill


def _expr_fill(r: _Recipe, e: Expr) -> _Fill | None:
    if isinstance(e, Match) and isinstance(e.value, Elements) and len(e.value.items) == 1 \
            and len(e.value.items[0]) == 1 and not e.value.data:
        # ``ip daddr 10.0.0.1``: one address (most rules of a big listing)
        slot = r.atom(e.value.items[0][0])
        if slot is e.value.items[0][0]:
            return None
        k = slot[1]  # type: ignore[index]
        fields, op, mask, mod, braces = e.fields, e.op, e.mask, e.numgen_mod, e.value.braces

        def one(a: list[int], at: list[str], c: list[str]) -> Match:
            v = a[k]
            return Match(fields=fields, op=op, value=Elements(items=(((v, v),),), braces=braces), mask=mask,
                         numgen_mod=mod)

        return one
    if isinstance(e, Match | VerdictMap) and isinstance(e.value, Elements):
        f = _elements_fill(r, e.value)
        if f is None:
            return None
        fields, mod = e.fields, e.numgen_mod
        if isinstance(e, VerdictMap):
            return lambda a, at, c: VerdictMap(fields=fields, value=f(a, at, c), numgen_mod=mod)  # type: ignore[arg-type]
        op, mask = e.op, e.mask
        return lambda a, at, c: Match(fields=fields, op=op, value=f(a, at, c), mask=mask,  # type: ignore[arg-type]
                                      numgen_mod=mod)
    if isinstance(e, Verdict):
        return _verdict_fill(r, e)
    if isinstance(e, Nat | Tproxy) and e.addr is not None:
        slot = r.atom((e.addr, e.addr))
        if slot == (e.addr, e.addr):
            return None
        k = slot[1]  # type: ignore[index]
        return lambda a, at, c: replace(e, addr=a[k], addr_text=at[k])
    return None


# a rule's shape: the rule parsed with stand-ins, (expression index, its fill), which values are addresses,
# which chain names
_RuleShape = tuple[Rule, list[tuple[int, _Fill]], list[int], list[int]]
_ElementShape = tuple[_Fill, _Fill, list[int], list[int]]


class _Shapes:
    """The shape cache of one parse."""

    def __init__(self) -> None:
        self.rules: dict[tuple[NftFamily, str], _RuleShape | None] = {}
        self.items: dict[tuple[tuple[Kind, ...], bool, str], _ElementShape | None] = {}

    def rule(self, text: str, line: int, fam: NftFamily, parser: _Parser) -> Rule:
        handle = None
        if "#" in text:
            m = _HANDLE_TAIL.search(text)
            if m is not None:
                handle = int(m.group(1))
                parser.handles = True
                text = text[:m.start()]
        cut = None if '"' in text or "#" in text else _cut(text)
        if cut is None:
            return self._full_rule(text, line, fam, parser, handle)
        key, vals = cut
        shape = self.rules.get((fam, key), _MISSING)
        if shape is _MISSING:
            shape = self.rules[(fam, key)] = self._learn_rule(key, fam, parser)
        if shape is None:
            return self._full_rule(text, line, fam, parser, handle)
        template, fills, a_idx, c_idx = cast(_RuleShape, shape)
        addrs = [vals[i] for i in a_idx]
        chains = [vals[i] for i in c_idx]
        values = _addr_values(addrs)
        if values is None:
            return self._full_rule(text, line, fam, parser, handle)
        exprs = list(template.exprs)
        for i, f in fills:
            exprs[i] = f(values, addrs, chains)  # type: ignore[call-overload]
        return Rule(exprs=tuple(exprs), line=line, handle=handle, comment=template.comment)

    @staticmethod
    def _full_rule(text: str, line: int, fam: NftFamily, parser: _Parser, handle: int | None) -> Rule:
        toks: list[_Tok] = []
        _tokenize_line(text, line, toks)
        rule = _rule(_group(toks, line), fam, parser, line)
        return rule if handle is None else replace(rule, handle=handle)

    @staticmethod
    def _learn_rule(key: str, fam: NftFamily, parser: _Parser) -> _RuleShape | None:
        text, a_idx, c_idx = _slots(key)
        try:
            rule = _Shapes._full_rule(text, 0, fam, parser, None)
        except RulesetError:
            return None
        r = _Recipe(len(a_idx), len(c_idx))
        fills = [(i, f) for i, e in enumerate(rule.exprs) if (f := _expr_fill(r, e)) is not None]
        if not r.complete() or any(isinstance(e, Unknown | Other) and "255.254." in e.text for e in rule.exprs):
            return None
        return rule, fills, a_idx, c_idx

    def elements(self, text: str, line: int, kinds: tuple[Kind, ...], is_map: bool) -> Elements:
        """The ``{ … }`` of ``elements =`` (its braces cut off), starting on ``line``."""
        items: list[Element] = []
        data: list[Verdict] = []
        for one in text.split(","):
            cut = _cut(one.strip())
            if cut is None:
                return self._full_elements(text, line, kinds, is_map)
            key, vals = cut
            shape = self.items.get((kinds, is_map, key), _MISSING)
            if shape is _MISSING:
                shape = self.items[(kinds, is_map, key)] = self._learn_element(key, kinds, is_map)
            if shape is None or len(items) >= MAX_SET_ELEMENTS:
                return self._full_elements(text, line, kinds, is_map)
            item, datum, a_idx, c_idx = cast(_ElementShape, shape)
            addrs = [vals[i] for i in a_idx]
            chains = [vals[i] for i in c_idx]
            values = _addr_values(addrs)
            if values is None:
                return self._full_elements(text, line, kinds, is_map)
            items.append(item(values, addrs, chains))  # type: ignore[arg-type]
            if is_map:
                data.append(datum(values, addrs, chains))  # type: ignore[arg-type]
        return Elements(items=tuple(items), data=tuple(data))

    @staticmethod
    def _full_elements(text: str, line: int, kinds: tuple[Kind, ...], is_map: bool) -> Elements:
        toks = [_Tok(t.text, t.line + line - 1, t.kind) for t in _tokenize_plain(text)]
        return _elements(_group(toks, line), kinds, is_map, line)

    @staticmethod
    def _learn_element(key: str, kinds: tuple[Kind, ...], is_map: bool) -> _ElementShape | None:
        text, a_idx, c_idx = _slots(key)
        try:
            el = _Shapes._full_elements(text, 0, kinds, is_map)
        except RulesetError:
            return None
        if len(el.items) != 1:
            return None
        r = _Recipe(len(a_idx), len(c_idx))
        fills = [_atom_fill(r, x) for x in el.items[0]]
        dfill = _verdict_fill(r, el.data[0]) if is_map else None
        if not r.complete():
            return None
        element = el.items[0]
        datum = el.data[0] if is_map else None

        def item(a: list[int], at: list[str], c: list[str]) -> Element:
            return tuple(f(a, at, c) if f else x for f, x in zip(fills, element, strict=True))  # type: ignore[misc]

        return item, (dfill or _const(datum)), a_idx, c_idx


def _tokenize_plain(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for line, ln in enumerate(text.split("\n"), 1):
        _tokenize_line(ln, line, out)
    return out


def _group(toks: list[_Tok], line: int) -> list[_Item]:
    """Tokens of one statement with ``{ … }`` nested (as :meth:`_Parser._statement` gives them)."""
    items: list[_Item] = []
    stack: list[list[_Item]] = [items]
    for t in toks:
        if t.text == "{" and t.kind == "p":
            group: list[_Item] = []
            stack[-1].append(group)
            stack.append(group)
        elif t.text == "}" and t.kind == "p":
            if len(stack) == 1:
                raise _err(t.line, "unexpected `}'")
            stack.pop()
        else:
            stack[-1].append(t)
    if len(stack) > 1:
        raise _err(line, "unclosed `{'")
    return items


def parse_nft(text: str, names: Names = DEFAULT_NAMES) -> NftRuleset:
    """Parse ``nft list ruleset`` output or an ``nft -f`` transaction; ``names`` resolves ``skuid``/``skgid``
    names. Raises RulesetError (``line N: …``)."""
    with gc_paused():
        return _Parser(text, names).parse()


__all__ = ["MAX_SET_ELEMENTS", "parse_nft"]
