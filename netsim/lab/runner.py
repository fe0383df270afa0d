"""The lab's one seam to the world: "restore this text into that namespace, run this command there".

Owns: the typed commands the lab issues (:data:`Command`), the two-method :class:`Runner` protocol,
:class:`RealRunner` (subprocess ``ip netns exec`` + ``setpriv`` for programs, pyroute2 via
``netsim.lab.netns`` for netlink, plain ``os`` for files and signals) and :class:`RecordingRunner`,
which runs nothing: it records each command and answers queries from a tiny model of what was
recorded, so unit tests can drive ``up``/``down`` without root (Istio's ``dependencies.StdoutStubDependencies``).

Never does: decide anything (``netsim.lab.control`` does), or act in the host's network namespace:
every network command names a namespace the lab created, and namespaces are created empty.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Protocol

from netsim.errors import LabError
from netsim.netfilter.model import Family

Interface = IPv4Interface | IPv6Interface
Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# How long a process gets between SIGTERM and SIGKILL (a listener closes its sockets well within it).
KILL_GRACE_SECONDS = 2.0
# A program run with Exec that hangs longer than this is a lab failure, not something to wait for.
EXEC_TIMEOUT_SECONDS = 60.0


# --- commands: what the lab asks for, as values -------------------------------------------------------

@dataclass(frozen=True, slots=True)
class NetnsAdd:
    """Create the named network namespace (``/run/netns/<name>``), empty but for a down ``lo``."""

    name: str


@dataclass(frozen=True, slots=True)
class NetnsDel:
    """Delete the named namespace; with it go every link, address, route, rule and netfilter table in it.
    ``inode`` (when known) guards against deleting a namespace of the same name that the lab did not make."""

    name: str
    inode: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VethAdd:
    """A veth pair whose two ends are created directly in two lab namespaces (never in the host's)."""

    netns: str
    ifname: str
    peer_netns: str
    peer_ifname: str


@dataclass(frozen=True, slots=True)
class LinkUp:
    netns: str
    ifname: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AddrAdd:
    """``ip addr add``; ``nodad`` skips IPv6 duplicate address detection (no tentative addresses, spec §1.4)."""

    netns: str
    ifname: str
    address: Interface
    nodad: bool = True
    ignore_exists: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteAdd:
    """``ip route add [local] DST [via GW] [dev DEV] [table T]``."""

    netns: str
    dst: Network
    gateway: Address | None = None
    dev: str | None = None
    table: int | None = None
    local: bool = False
    ignore_exists: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleAdd:
    """``ip rule add fwmark M[/MASK] lookup T [pref P]`` for one family (TPROXY policy routing,
    spec/istio-iptables.md §6; ambient's ``fwmark 0x111/0xfff lookup 100 pref 32764``, istio-ambient-capture.md §7)."""

    netns: str
    family: Family
    fwmark: int
    table: int
    fwmask: int | None = None  # None: the kernel's default, every bit
    priority: int | None = None  # None: the kernel picks one below the last rule


@dataclass(frozen=True, slots=True, kw_only=True)
class Exec:
    """Run ``argv`` in ``netns`` (via ``ip netns exec``, so ``/etc/netns/<netns>/`` is bind-mounted over
    ``/etc``) as ``uid``/``gid`` when given; wait for it and return its output."""

    netns: str
    argv: tuple[str, ...]
    uid: int | None = None
    gid: int | None = None
    stdin: str | None = None
    check: bool = True
    timeout: float = EXEC_TIMEOUT_SECONDS


@dataclass(frozen=True, slots=True, kw_only=True)
class Spawn:
    """Start ``argv`` in ``netns`` as a detached session leader, stdout and stderr appended to ``log``."""

    netns: str
    argv: tuple[str, ...]
    log: Path
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True, slots=True)
class Kill:
    """SIGTERM then SIGKILL the process group of ``pid``, only if it is still the process started at
    ``start_time`` (clock ticks since boot, ``/proc/<pid>/stat`` field 22): a recycled pid is left alone."""

    pid: int
    start_time: int


@dataclass(frozen=True, slots=True)
class KillNamespace:
    """Kill every process whose network namespace is ``name`` (identified by ``inode`` when known): what a
    crash or ``lab exec`` left running would otherwise keep the namespace alive after it is deleted."""

    name: str
    inode: int | None = None


@dataclass(frozen=True, slots=True)
class MakeDir:
    path: Path


@dataclass(frozen=True, slots=True)
class WriteFile:
    path: Path
    text: str


@dataclass(frozen=True, slots=True)
class RemovePath:
    """Remove a file or an empty directory; absent is fine."""

    path: Path


@dataclass(frozen=True, slots=True)
class NetnsInode:
    """Query: the inode of ``/run/netns/<name>`` (the namespace's identity), or None if there is none."""

    name: str


@dataclass(frozen=True, slots=True)
class ProcessAlive:
    """Query: is ``pid`` still the (non-zombie) process started at ``start_time``?"""

    pid: int
    start_time: int


@dataclass(frozen=True, slots=True)
class Listening:
    """Query: does something in ``netns`` listen on ``port`` (TCP, or UDP with ``udp``)?"""

    netns: str
    port: int
    udp: bool = False


Command = (
    NetnsAdd | NetnsDel | VethAdd | LinkUp | AddrAdd | RouteAdd | RuleAdd | Exec | Spawn | Kill | KillNamespace
    | MakeDir | WriteFile | RemovePath | NetnsInode | ProcessAlive | Listening
)
QUERIES = (NetnsInode, ProcessAlive, Listening)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command gave back: program output, the identity of what was created, or a query's answer."""

    stdout: str = ""
    pid: int | None = None
    start_time: int | None = None
    inode: int | None = None
    truth: bool = False


@dataclass(frozen=True, slots=True)
class Restore:
    """What :meth:`Runner.restore` was asked (as the recorder keeps it)."""

    netns: str
    family: Family
    text: str


class Runner(Protocol):
    """The two methods every lab action goes through."""

    def restore(self, netns: str, family: Family, text: str) -> None:
        """Load ``text`` with ``iptables-restore``/``ip6tables-restore`` inside ``netns``."""
        ...

    def run(self, command: Command) -> Outcome:
        """Carry out ``command``; raise :class:`LabError` (one line) if it fails."""
        ...


# --- the recording side -------------------------------------------------------------------------------

@dataclass
class RecordingRunner:
    """Records every command and restore; answers queries from what it recorded.

    ``outputs`` maps an Exec's argv to the stdout to give back; ``fail_on`` makes the first command equal
    to it raise LabError (to test that a failing ``up`` leaves nothing behind). :meth:`crash` forgets a
    process, as if it had been killed behind the lab's back.
    """

    log: list[Command | Restore] = field(default_factory=list)
    outputs: dict[tuple[str, ...], str] = field(default_factory=dict)
    fail_on: Command | Restore | None = None
    namespaces: dict[str, int] = field(default_factory=dict)
    processes: set[tuple[int, int]] = field(default_factory=set)
    files: set[Path] = field(default_factory=set)
    _next: int = 1000

    def restore(self, netns: str, family: Family, text: str) -> None:
        self.log.append(Restore(netns, family, text))
        if self.fail_on is not None and Restore(netns, family, text) == self.fail_on:
            raise LabError("recorded failure of Restore")

    def run(self, command: Command) -> Outcome:
        if not isinstance(command, QUERIES):
            self.log.append(command)
        if self.fail_on is not None and command == self.fail_on:
            raise LabError(f"recorded failure of {type(command).__name__}")
        match command:
            case NetnsAdd(name):
                self._next += 1
                self.namespaces[name] = self._next
                return Outcome(inode=self._next)
            case NetnsDel(name, inode):
                if inode is None or self.namespaces.get(name) == inode:
                    self.namespaces.pop(name, None)
                return Outcome()
            case NetnsInode(name):
                return Outcome(inode=self.namespaces.get(name))
            case Spawn():
                self._next += 1
                self.processes.add((self._next, 7))
                return Outcome(pid=self._next, start_time=7)
            case Kill(pid, start):
                self.processes.discard((pid, start))
                return Outcome()
            case ProcessAlive(pid, start):
                return Outcome(truth=(pid, start) in self.processes)
            case Listening():
                return Outcome(truth=bool(self.processes))
            case WriteFile(path) | MakeDir(path):
                self.files.add(path)
                return Outcome()
            case RemovePath(path):
                self.files.discard(path)
                return Outcome()
            case Exec(argv=argv):
                return Outcome(stdout=self.outputs.get(argv, ""))
        return Outcome()

    def crash(self) -> None:
        self.processes.clear()


# --- the real side ------------------------------------------------------------------------------------

REQUIRED_TOOLS = ("iptables-restore", "iptables-save", "ip", "setpriv")


def check_host() -> None:
    """The real runner's preconditions, each a one-line LabError: root, and the tools it calls."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, iptables): run it with sudo")
    for tool in REQUIRED_TOOLS:
        if shutil.which(tool) is None:
            package = {"ip": "iproute2", "setpriv": "util-linux"}.get(tool, "iptables")
            raise LabError(f"{tool} not found: install the {package} package")


def _as_user(argv: Sequence[str], uid: int | None, gid: int | None) -> list[str]:
    if uid is None and gid is None:
        return list(argv)
    creds = ["setpriv"]
    if uid is not None:
        creds.append(f"--reuid={uid}")
    if gid is not None:
        creds.append(f"--regid={gid}")
    return [*creds, "--clear-groups", "--", *argv]


def netns_argv(netns: str, argv: Sequence[str], uid: int | None = None, gid: int | None = None) -> list[str]:
    """``ip netns exec NETNS [setpriv --reuid U --regid G --clear-groups --] ARGV``."""
    return ["ip", "netns", "exec", netns, *_as_user(argv, uid, gid)]


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat``, or None if there is no such (live, non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


NETNS_DIR = "/run/netns"  # where ``ip netns`` and pyroute2 bind-mount named namespaces


def netns_inode(name: str) -> int | None:
    """The inode of the namespace bound at ``/run/netns/<name>`` (its identity), or None."""
    try:
        return os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except OSError:
        return None


def pids_in_netns(name: str, inode: int | None) -> list[tuple[int, int]]:
    """(pid, start time) of every live process in the namespace bound at ``/run/netns/<name>`` — or, when
    that mount is gone, in the namespace with inode ``inode``."""
    if inode is None:
        inode = netns_inode(name)
        if inode is None:
            return []
    found: list[tuple[int, int]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != inode:
                continue
        except OSError:
            continue
        start = process_start_time(int(entry))
        if start is not None:
            found.append((int(entry), start))
    return found


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


class RealRunner:
    """Runs commands for real. Construct it only after :func:`check_host` (the CLI does both)."""

    def restore(self, netns: str, family: Family, text: str) -> None:
        self.run(Exec(netns=netns, argv=(family.restore_command, "--noflush"), stdin=text))

    def run(self, command: Command) -> Outcome:
        from netsim.lab import netns as nl  # pyroute2 is loaded only when the lab really touches netlink

        match command:
            case NetnsAdd() | NetnsDel() | VethAdd() | LinkUp() | AddrAdd() | RouteAdd() | RuleAdd() | NetnsInode():
                return nl.apply(command)
            case Exec():
                return self._exec(command)
            case Spawn():
                return self._spawn(command)
            case Kill(pid, start):
                self._kill(pid, start)
                return Outcome()
            case ProcessAlive(pid, start):
                return Outcome(truth=process_start_time(pid) == start)
            case KillNamespace(name, inode):
                for pid, start in pids_in_netns(name, inode):
                    self._kill(pid, start)
                return Outcome()
            case Listening(netns, port, udp):
                listening = self._exec(Exec(netns=netns, argv=("ss", "-Hln" + ("u" if udp else "t"),
                                                                f"sport = :{port}"), check=False))
                return Outcome(truth=bool(listening.stdout.strip()))
            case MakeDir(path):
                path.mkdir(parents=True, exist_ok=True)
                return Outcome()
            case WriteFile(path, text):
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(text)
                os.replace(tmp, path)
                return Outcome()
            case RemovePath(path):
                try:
                    if path.is_dir() and not path.is_symlink():
                        path.rmdir()
                    else:
                        path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise LabError(f"cannot remove {path}: {e.strerror}") from None
                return Outcome()
        raise AssertionError(command)  # pragma: no cover - the match is exhaustive

    @staticmethod
    def _exec(c: Exec) -> Outcome:
        argv = netns_argv(c.netns, c.argv, c.uid, c.gid)
        try:
            done = subprocess.run(argv, input=c.stdin, capture_output=True, text=True, timeout=c.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise LabError(f"{' '.join(c.argv)} in {c.netns}: no answer after {c.timeout:g}s") from None
        if c.check and done.returncode != 0:
            why = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise LabError(f"{' '.join(c.argv)} in {c.netns} failed ({done.returncode}): "
                           f"{why[-1] if why else 'no output'}")
        return Outcome(stdout=done.stdout)

    @staticmethod
    def _spawn(c: Spawn) -> Outcome:
        argv = netns_argv(c.netns, c.argv, c.uid, c.gid)
        with open(c.log, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        start = None
        for _ in range(50):  # the child is visible in /proc at once; this only guards a busy host
            start = process_start_time(proc.pid)
            if start is not None:
                break
            time.sleep(0.01)
        if start is None:
            raise LabError(f"{c.argv[0]} in {c.netns} exited at once: see {c.log}")
        # ``ip netns exec`` and ``setpriv`` exec in place, so this pid is the program's own.
        return Outcome(pid=proc.pid, start_time=start)

    @staticmethod
    def _kill(pid: int, start: int) -> None:
        if process_start_time(pid) != start:
            _reap(pid)
            return
        try:
            leader = os.getpgid(pid) == pid  # a session we spawned: take its children down with it
        except ProcessLookupError:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                if leader:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + KILL_GRACE_SECONDS
            while time.monotonic() < deadline:
                _reap(pid)
                if process_start_time(pid) != start:
                    return
                time.sleep(0.02)
        raise LabError(f"process {pid} survived SIGKILL")


__all__ = [
    "NETNS_DIR",
    "QUERIES",
    "AddrAdd",
    "Command",
    "Exec",
    "Kill",
    "KillNamespace",
    "LinkUp",
    "Listening",
    "MakeDir",
    "NetnsAdd",
    "NetnsDel",
    "NetnsInode",
    "Outcome",
    "ProcessAlive",
    "RealRunner",
    "RecordingRunner",
    "RemovePath",
    "Restore",
    "RouteAdd",
    "RuleAdd",
    "Runner",
    "Spawn",
    "VethAdd",
    "WriteFile",
    "check_host",
    "netns_argv",
    "netns_inode",
    "pids_in_netns",
    "process_start_time",
]
