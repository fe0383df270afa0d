"""The one reader of input files: every manifest, ``--config`` file, rules dump, name table, pod file,
group file, resolv.conf and capture file netsim reads comes through here.

Owns: what may be read (a regular file, or standard input as ``-``; never a FIFO, a device or a
directory, so that ``/dev/zero`` or a forgotten FIFO cannot hang a command), how much (at most
:func:`max_input` bytes, counted on the bytes actually read, ``NETSIM_MAX_INPUT`` to change it), and
how bytes become text (:func:`decode`: UTF-8 with or without BOM, UTF-16 with BOM as PowerShell's ``>``
writes it, gzip by its magic bytes; anything else is one error naming the byte offset and line).

Never does: parse what it reads (YAML and JSON: :mod:`netsim.k8s`; rules: :mod:`netsim.netfilter.parse`)
or import anything of netsim but :mod:`netsim.errors` (layer 1).
"""

from __future__ import annotations

import codecs
import functools
import os
import stat
import sys
from pathlib import Path

from netsim.errors import InputError, SpecError

# Generous for any manifest or rules dump a person feeds a CLI (a `kubectl get -A -o yaml` of a
# large cluster is tens of MB), small enough that /dev/urandom or a runaway file cannot exhaust memory.
DEFAULT_MAX_INPUT = 64 * 1024 * 1024
MAX_INPUT_ENV = "NETSIM_MAX_INPUT"
STDIN = "-"
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_UNITS = {"": 1, "K": 1 << 10, "KI": 1 << 10, "M": 1 << 20, "MI": 1 << 20, "G": 1 << 30, "GI": 1 << 30}
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
ENCODINGS = "UTF-8 (with or without BOM), UTF-16 with BOM, or gzip of those"


def max_input() -> int:
    """The byte limit of one input: ``NETSIM_MAX_INPUT`` (bytes, or with a K/M/G suffix), else 64 MiB.

    Raises InputError for a value that is not a positive size.
    """
    raw = os.environ.get(MAX_INPUT_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_INPUT
    digits = raw.upper().removesuffix("B")
    unit = digits.lstrip("0123456789")
    number = digits[: len(digits) - len(unit)]
    if not number or unit not in _UNITS or int(number) <= 0:
        raise InputError(f"{MAX_INPUT_ENV}={raw[:40]!r}: expected a positive size in bytes, e.g. 64M")
    return int(number) * _UNITS[unit]


def display_name(path: str | Path) -> str:
    """How errors name ``path`` (``<stdin>`` for ``-``)."""
    return "<stdin>" if str(path) == STDIN else str(path)


def _too_large(name: str, limit: int) -> InputError:
    return InputError(f"larger than the input limit of {limit} bytes (set {MAX_INPUT_ENV} to change it)",
                      where=name)


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _read_fd(fd: int, name: str, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise _too_large(name, limit)


@functools.cache
def _stdin_bytes(limit: int) -> bytes:
    # cached: two options given `-` read the same text, not the rest of the stream
    fd = sys.stdin.fileno()
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise InputError("cannot read: standard input is a directory", where="<stdin>")
    return _read_fd(fd, "<stdin>", limit)


def read_bytes(path: str | Path, *, what: str = "") -> bytes:
    """The bytes of the regular file ``path`` (``-``: standard input), at most :func:`max_input` of them.

    A FIFO, device, socket or directory is refused before anything is read (opened non-blocking, so
    a FIFO without a writer cannot hang). Raises InputError ``path: cannot read [what]: ...``.
    """
    name = str(path)
    cannot = f"cannot read {what}" if what else "cannot read"
    limit = max_input()
    if name == STDIN:
        try:
            return _stdin_bytes(limit)
        except OSError as e:
            raise InputError(f"{cannot}: {e.strerror or e}", where="<stdin>") from None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise InputError(f"{cannot}: {e.strerror or e}", where=name) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{cannot}: {_kind(st.st_mode)}, not a regular file", where=name)
        if st.st_size > limit:
            raise _too_large(name, limit)
        return _read_fd(fd, name, limit)
    except OSError as e:
        raise InputError(f"{cannot}: {e.strerror or e}", where=name) from None
    finally:
        os.close(fd)


def _gunzip(data: bytes, name: str, limit: int) -> bytes:
    import zlib

    out: list[bytes] = []
    total = 0
    while data:  # a gzip file may hold several members, as `cat a.gz b.gz` makes
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            while data:
                chunk = inflater.decompress(data, limit + 1 - total)
                out.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise _too_large(f"{name} (gunzipped)", limit)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
        except zlib.error as e:
            raise InputError(f"cannot read: not a valid gzip stream ({e})", where=name) from None
        if not inflater.eof:
            raise InputError("cannot read: truncated gzip stream", where=name)
        data = inflater.unused_data
        if data and not data.startswith(_GZIP_MAGIC):
            break  # trailing garbage after the last member is ignored, as gzip -d does (with a warning)
    return b"".join(out)


def _position(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    return f"byte {offset} (line {line})"


def decode(data: bytes, name: str) -> str:
    """``data`` as text: gzip is inflated (by its magic bytes), then a BOM picks UTF-8, UTF-16 LE/BE,
    and without one the bytes must be UTF-8. Raises InputError naming ``name``, the byte offset and line
    of the first byte that does not decode, and the encodings that do."""
    if data.startswith(_GZIP_MAGIC):
        data = _gunzip(data, name, max_input())
        name = f"{name} (gunzipped)"
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16: FF FE starts both
        raise InputError(f"byte 0: a UTF-32 byte order mark; netsim reads {ENCODINGS}", where=name)
    if data.startswith(codecs.BOM_UTF8):
        data, encoding, skip = data[3:], "utf-8", 0
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16-le" if data.startswith(codecs.BOM_UTF16_LE) else "utf-16-be"
        data, skip = data[2:], 2
    else:
        encoding, skip = "utf-8", 0
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        at = _position(data, e.start) if encoding == "utf-8" else f"byte {e.start + skip}"
        bad = data[e.start:e.start + 1].hex().upper()
        raise InputError(f"{at}: not {encoding.upper().replace('-LE', ' LE').replace('-BE', ' BE')} "
                         f"(byte 0x{bad}); netsim reads {ENCODINGS}", where=name) from None
    nul = text.find("\0")
    if nul >= 0:  # UTF-16 without a BOM, or a binary file: no text input of netsim holds a NUL
        line = text.count("\n", 0, nul) + 1
        raise InputError(f"character {nul} (line {line}): a NUL byte, so not a text file (UTF-16 without a BOM?); "
                         f"netsim reads {ENCODINGS}", where=name)
    return text


def read_text(path: str | Path, *, what: str = "") -> str:
    """The text of ``path`` (``-``: standard input), read by :func:`read_bytes` and decoded by :func:`decode`.

    Raises InputError ``path: ...`` for a file that cannot be read, is too large, or is in another encoding.
    """
    return decode(read_bytes(path, what=what), display_name(path))


def read_group_file(path: str) -> tuple[tuple[str, int], ...]:
    """The (name, gid) of each ``name:x:gid:members`` line of an /etc/group-format file (``--group-file``)."""
    groups = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 3 or not fields[2].isdigit():
            raise SpecError(f"{line!r}: expected name:password:GID:members", where=f"{path}:{number}")
        groups.append((fields[0], int(fields[2])))
    return tuple(groups)


__all__ = [
    "DEFAULT_MAX_INPUT",
    "ENCODINGS",
    "MAX_INPUT_ENV",
    "STDIN",
    "decode",
    "display_name",
    "max_input",
    "read_bytes",
    "read_group_file",
    "read_text",
]
