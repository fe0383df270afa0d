"""A lab's run directory and the record of everything ``up`` created, from which ``down`` derives cleanup.

Owns: ``/run/netsim/lab/<name>/state.json`` (``NETSIM_LAB_RUN_DIR`` overrides the parent) — written
atomically *before* each thing is created (an intent log), so a crash at any point leaves a record that
``down`` can finish from — and :func:`cleanup`, the pure function from that record to the commands that
undo it, in reverse order of creation. This is Istio's "cleanup derived from what was built"
(``BuildCleanupV4``) applied to namespaces, links, processes and files.

Never does: run anything (the runner does), or record things it did not create: a namespace is recorded
with its inode once made, and cleanup only deletes a namespace whose inode still matches.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from netsim.errors import LabError
from netsim.lab.runner import Command, Kill, KillNamespace, NetnsDel, RemovePath

DEFAULT_RUN_ROOT = Path("/run/netsim/lab")
# The capture backends a lab can load: iptables (iptables-restore) or Istio's native nftables (nft -f).
BACKENDS = ("iptables", "nft")
STATE_FILE = "state.json"
STATE_VERSION = 1


def run_root() -> Path:
    return Path(os.environ.get("NETSIM_LAB_RUN_DIR", str(DEFAULT_RUN_ROOT)))


def run_dir(name: str) -> Path:
    return run_root() / name


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    inode: int | None = None  # None: creation was intended but not confirmed (crash window)


@dataclass(frozen=True, slots=True)
class Link:
    """A link inside a lab namespace; goes away with its namespace."""

    netns: str
    ifname: str


@dataclass(frozen=True, slots=True)
class Process:
    role: str  # "dns", "listener-15001", ...
    pid: int
    start_time: int
    netns: str
    log: str


@dataclass(frozen=True, slots=True)
class File:
    """A file or directory the lab made (run-directory files, ``/etc/netns/<name>/``)."""

    path: str


Resource = Namespace | Link | Process | File
_KINDS: dict[str, type[Namespace] | type[Link] | type[Process] | type[File]] = {
    "namespace": Namespace, "link": Link, "process": Process, "file": File,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LabState:
    """One lab: its name, the digest of the inputs it was built from, whether ``up`` finished, its
    resources in creation order, and the inputs ``status``/``verify`` need again (``info``)."""

    name: str
    digest: str
    complete: bool = False
    resources: tuple[Resource, ...] = ()
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def adding(self, resource: Resource) -> LabState:
        return replace(self, resources=(*self.resources, resource))

    def replacing(self, old: Resource, new: Resource) -> LabState:
        return replace(self, resources=tuple(new if r == old else r for r in self.resources))

    def of(self, kind: type[Any]) -> list[Any]:
        return [r for r in self.resources if isinstance(r, kind)]

    @property
    def backend(self) -> str:
        """Which rules ``up`` loaded: ``iptables`` or ``nft`` (``info["backend"]``; labs recorded before the
        nft backend existed are iptables labs)."""
        backend = str(self.info.get("backend", "iptables"))
        if backend not in BACKENDS:
            raise LabError(f"lab {self.name}: unknown backend {backend!r} in its record")
        return backend


def to_json(state: LabState) -> str:
    body = {
        "version": STATE_VERSION,
        "name": state.name,
        "digest": state.digest,
        "complete": state.complete,
        "resources": [{"kind": _kind(r), **asdict(r)} for r in state.resources],
        "info": state.info,
    }
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def _kind(r: Resource) -> str:
    return next(k for k, t in _KINDS.items() if isinstance(r, t))


def from_json(text: str, where: str) -> LabState:
    try:
        body = json.loads(text)
        if body.get("version") != STATE_VERSION:
            raise LabError(f"state version {body.get('version')!r}, expected {STATE_VERSION}", where=where)
        resources: list[Resource] = []
        for item in body["resources"]:
            fields = dict(item)
            kind = _KINDS[fields.pop("kind")]
            resources.append(kind(**fields))
        return LabState(name=body["name"], digest=body["digest"], complete=bool(body["complete"]),
                        resources=tuple(resources), info=dict(body.get("info") or {}))
    except LabError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LabError(f"unreadable lab state ({type(e).__name__}: {e}); remove the directory by hand",
                       where=where) from None


def load(name: str) -> LabState | None:
    path = run_dir(name) / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LabError(f"cannot read: {e.strerror}", where=str(path)) from None
    return from_json(text, str(path))


def recorded() -> list[str]:
    """The names of every lab with a record in the run root (netsim's own state directory), sorted."""
    try:
        entries = sorted(os.listdir(run_root()))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise LabError(f"cannot list: {e.strerror}", where=str(run_root())) from None
    return [n for n in entries if (run_root() / n / STATE_FILE).is_file()]


def save(state: LabState) -> None:
    """Write the state atomically (temp file, fsync, rename): a crash leaves the old or the new record."""
    directory = run_dir(state.name)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(to_json(state))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / STATE_FILE)


def forget(name: str) -> None:
    """Remove the state file and the (then empty) run directory."""
    directory = run_dir(name)
    for leftover in (directory / STATE_FILE, directory / (STATE_FILE + ".tmp")):
        leftover.unlink(missing_ok=True)
    try:
        directory.rmdir()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise LabError(f"cannot remove {directory}: {e.strerror}") from None


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Hold an exclusive lock on the run root (``flock`` on the directory itself, so nothing is left behind):
    two ``up``/``down`` of any labs never interleave their records or their name checks."""
    root = run_root()
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def cleanup(state: LabState) -> tuple[Command, ...]:
    """The commands that undo ``state``, newest first.

    Processes: each recorded one (only if its pid still has the recorded start time), then anything else
    still inside a lab namespace (a process started by ``lab exec``, or one spawned just before a crash,
    whose pid never reached the record). Files and directories: removed, newest first. Links, addresses,
    routes, policy rules and the netfilter tables live inside the namespaces and go with them, so they
    need no command of their own. Namespaces: deleted last, only if their inode is the recorded one.
    """
    out: list[Command] = []
    for proc in reversed(state.of(Process)):
        out.append(Kill(proc.pid, proc.start_time))
    namespaces: list[Namespace] = state.of(Namespace)
    for ns in reversed(namespaces):
        out.append(KillNamespace(ns.name, ns.inode))
    for f in reversed(state.of(File)):
        out.append(RemovePath(Path(f.path)))
    for ns in reversed(namespaces):
        out.append(NetnsDel(ns.name, ns.inode))
    return tuple(out)


__all__ = [
    "BACKENDS",
    "DEFAULT_RUN_ROOT",
    "File",
    "LabState",
    "Link",
    "Namespace",
    "Process",
    "Resource",
    "cleanup",
    "forget",
    "from_json",
    "load",
    "locked",
    "recorded",
    "run_dir",
    "run_root",
    "save",
    "to_json",
]
