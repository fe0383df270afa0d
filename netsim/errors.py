"""The one exception family of netsim.

Errors carry where they happened as data and print as a single line a person can act on.
They are raised low (a token parser knows the bad value, not the file) and located high
(the file reader adds ``file:line``), see :meth:`NetsimError.at`.

Every error renders as one line of at most :data:`MAX_ERROR_LINE` characters whatever its values
hold: :func:`one_line` escapes line breaks and other control characters and cuts the middle of
a longer line, here in :meth:`NetsimError.__str__` and once more in the CLI's ``Error:`` printer.
Each value in a message (a quoted string, or a run without spaces) is cut to 80 characters
(:func:`shorten_values`), so that a 150 KB value leaves room for the file, the field and what was
expected; :func:`shorten` quotes a value of any type the same way.
"""

from __future__ import annotations

import copy
import re
import reprlib

# An error is read on a terminal and grepped in CI logs: one line, short enough to read whole
# (the hostile-input suite pins both). A value inside it gets 80 characters, a line under 300.
MAX_VALUE = 80
MAX_ERROR_LINE = 299  # "under 300"
_ELLIPSIS = "…"

# control characters (C0, DEL, C1) and the Unicode line/paragraph separators a terminal or
# str.splitlines() would break a line at
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})
# a quoted value, or a run without spaces, longer than MAX_VALUE
_LONG_VALUE = re.compile(rf"""'[^'\n]{{{MAX_VALUE},}}?'(?=[\s:;,)]|$)|"[^"\n]{{{MAX_VALUE},}}?"(?=[\s:;,)]|$)"""
                         rf"""|[^\s'"]{{{MAX_VALUE + 1},}}""")

_repr = reprlib.Repr()
_repr.maxlevel = 3  # reprlib stops at this depth: no RecursionError on a deeply nested value
_repr.maxstring = _repr.maxother = _repr.maxlong = MAX_VALUE
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6


def one_line(text: str, limit: int = MAX_ERROR_LINE) -> str:
    """``text`` on one line (line breaks and control characters escaped), cut in the middle to ``limit``."""
    return _cut(text.translate(_ESCAPES), limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = (limit - len(_ELLIPSIS)) * 2 // 3
    return text[:head] + _ELLIPSIS + text[len(text) - (limit - len(_ELLIPSIS) - head):]


def shorten_values(message: str) -> str:
    """``message`` with each value in it (a quoted string, or a run of characters without a space)
    longer than :data:`MAX_VALUE` cut in the middle to that length."""
    if len(message) <= MAX_VALUE:
        return message
    message = _cut(message, 20 * MAX_ERROR_LINE)  # a 150 KB value: keep its ends, bound the work below
    return _LONG_VALUE.sub(lambda m: _cut(m.group(0), MAX_VALUE), message)


def shorten(value: object, limit: int = MAX_VALUE) -> str:
    """``value`` quoted for a message: ``repr`` of a string, a bounded ``repr`` of anything else,
    on one line and at most ``limit`` characters (the middle cut out)."""
    try:
        text = repr(value[: limit * 4]) if isinstance(value, str) else _repr.repr(value)
    except Exception:  # a hostile __repr__ cannot be reached from YAML or JSON, but be sure
        text = f"<{type(value).__name__}>"
    return one_line(text, limit)


class NetsimError(Exception):
    """netsim could not do what was asked."""

    def __init__(self, message: str = "", *, where: str = "") -> None:
        self.message = message or (self.__doc__ or "error").strip()
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        message = shorten_values(self.message.translate(_ESCAPES))
        if not self.where:
            return one_line(message)
        # the file (first) is kept whole; the rest of the location holds values (a kind, a name)
        source, sep, rest = self.where.translate(_ESCAPES).partition(": ")
        return one_line(f"{source}{sep}{shorten_values(rest)}: {message}")

    def at(self, where: str) -> NetsimError:
        """Return the same error located at ``where`` (prefixed to any location it already has)."""
        new = copy.copy(self)
        new.where = f"{where}: {self.where}" if self.where else where
        new.args = (str(new),)
        return new


class SpecError(NetsimError):
    """bad pod spec, manifest, flag or option value"""


class RulesetError(NetsimError):
    """the ruleset text could not be parsed"""


class DNSWireError(NetsimError):
    """malformed DNS message"""


class ConfigError(NetsimError):
    """bad Kubernetes/Istio object"""


class InputError(NetsimError):
    """an input file could not be read (missing, not a regular file, too large, or an unknown encoding)"""


class LabError(NetsimError):
    """the lab could not be set up or torn down"""


__all__ = ["MAX_ERROR_LINE", "MAX_VALUE", "ConfigError", "DNSWireError", "InputError", "LabError", "NetsimError",
           "RulesetError", "SpecError", "one_line", "shorten", "shorten_values"]
