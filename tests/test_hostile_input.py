"""Hostile-input corpus: every command and every file option, fed what a careless or hostile user feeds it.

Each case runs ``python -m netsim`` in a subprocess under a 5 s timeout and a 1 GiB address-space limit
and must end with exit status 0 or 2 (1 only where the command's contract has it: ``diagnose`` with a
finding), nothing that looks like a traceback on stderr, and every ``Error:`` line a single line under
300 characters (exit 2 prints exactly one). The cases are generated from a fixed seed: alias bombs in
every field a pod, a Service, a ServiceEntry, a VirtualService, a mesh config or a name table has,
``/dev/zero``, ``/dev/urandom``, FIFOs, directories, standard input, deep nesting, huge values, every
encoding (each valid encoding of a valid file must give the same exit 0 as the file itself), truncated
and oversized gzip, binary junk and mutated files.

Run it alone to see each case: ``python tests/test_hostile_input.py [-v]``.
``NETSIM_HOSTILE_CASES=all`` runs the whole generated corpus (the suite runs a seeded sample).
"""

from __future__ import annotations

import codecs
import gzip
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED = 13
TIMEOUT = 5.0  # CPU seconds a case may use
WALL_TIMEOUT = 20.0  # wall-clock seconds before a case counts as hung
MEMORY = 1 << 30
SAMPLE = 200  # cases the suite runs (every content kind and every option at least once); "all": the corpus
MAX_LINE = 300

# --- valid inputs ------------------------------------------------------------------------------------

POD = """apiVersion: v1
kind: {kind}
metadata:
  name: {name}
  namespace: istio-demo
  labels: {labels}
  annotations:
    traffic.sidecar.istio.io/excludeInboundPorts: {annotation}
    proxy.istio.io/config: {proxy_config}
spec:
  containers:
  - name: app
    image: app
    args: {args}
    env: [{{name: A, value: {env}}}]
    ports: [{{containerPort: {port}}}]
status: {{podIP: {pod_ip}}}
"""
POD_SLOTS = {"kind": "Pod", "name": "sleep", "labels": "{app: sleep}", "annotation": '"15020"',
             "proxy_config": '"{}"', "args": "[sleep, infinity]", "env": '"1"', "port": "8080",
             "pod_ip": "10.244.2.9"}

OBJECTS = """apiVersion: v1
kind: Service
metadata: {{name: {svc_name}, namespace: istio-demo}}
spec:
  clusterIP: {cluster_ip}
  ports: {svc_ports}
  selector: {{app: web}}
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {{name: ext, namespace: istio-demo}}
spec:
  hosts: {se_hosts}
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: {resolution}
  endpoints: [{{address: 192.168.0.204}}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: vs, namespace: istio-demo}}
spec:
  hosts: {vs_hosts}
  http:
  - route:
    - destination: {{host: web}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: dr, namespace: istio-demo}}
spec:
  host: web
  trafficPolicy: {traffic_policy}
"""
OBJECT_SLOTS = {"svc_name": "web", "cluster_ip": "10.96.0.20", "svc_ports": "[{name: http, port: 80}]",
                "se_hosts": "[ext.example.com]", "resolution": "STATIC", "vs_hosts": "[web]",
                "traffic_policy": "{tls: {mode: ISTIO_MUTUAL}}"}

MESH_CONFIG = """outboundTrafficPolicy: {{mode: ALLOW_ANY}}
defaultConfig:
  proxyMetadata: {proxy_metadata}
"""
MESH_SLOTS = {"proxy_metadata": "{ISTIO_META_DNS_CAPTURE: \"true\"}"}

NAME_TABLE = """table:
  web.istio-demo.svc.cluster.local:
    ips: {ips}
    registry: Kubernetes
    shortname: web
    namespace: istio-demo
"""
NAME_TABLE_SLOTS = {"ips": "[10.96.0.20]"}

RESOLV = "nameserver 127.0.0.1\nsearch istio-demo.svc.cluster.local svc.cluster.local cluster.local\n"
GROUPS = "root:x:0:\nistio-proxy:x:1337:\n"
RULES = (REPO / "rules" / "dns-capture" / "current.iptables-save").read_text()


def _pcap() -> bytes:
    """A one-packet capture (LINKTYPE_RAW: an IPv4 TCP SYN from the pod to 10.96.0.20:80)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, bytes([10, 244, 2, 9]), bytes([10, 96, 0, 20]))
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x02, 65535, 0, 0)
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
    return header + struct.pack("<IIII", 0, 0, 40, 40) + ip + tcp


# --- hostile values --------------------------------------------------------------------------------


def bomb(width: int = 9, levels: int = 9) -> str:
    """An inline billion-laughs value (~450 bytes): each level holds ``width`` copies of the one below."""
    value = "&a0 [" + ", ".join(["lol"] * width) + "]"
    for i in range(1, levels):
        value = f"&a{i} [{value}, " + ", ".join([f"*a{i - 1}"] * (width - 1)) + "]"
    return value


def deep(depth: int, mapping: bool = False) -> str:
    return ("{a: " * depth + "1" + "}" * depth) if mapping else ("[" * depth + "]" * depth)


def huge(size: int) -> str:
    """A double-quoted YAML value of ``size`` characters full of line breaks and things that look like errors."""
    unit = "Error: x\\nTraceback (most recent call last):\\r\\n\\t"
    return '"' + unit * (size // len(unit)) + '"'


VALUES: dict[str, Callable[[], str]] = {
    "bomb": bomb,
    "recursive-anchor": lambda: "&r [*r, *r]",
    "deep150": lambda: deep(150),
    "deep300": lambda: deep(300),
    "deep999-map": lambda: deep(999, mapping=True),
    "deep5000": lambda: deep(5000),
    "huge2M": lambda: huge(2_000_000),
    "newlines": lambda: '"Po\\nd\\r\\nError: fake\\u2028line"',
}

# --- files, as bytes or a special kind -------------------------------------------------------------

FIFO, DIRECTORY, DEV_ZERO, DEV_URANDOM, DEV_NULL, STDIN_ZERO = (
    "<fifo>", "<dir>", "/dev/zero", "/dev/urandom", "/dev/null", "<stdin:/dev/zero>")
SPECIALS = (FIFO, DIRECTORY, DEV_ZERO, DEV_URANDOM, DEV_NULL)


@dataclass(frozen=True)
class Slot:
    """One file option of one command: ``argv`` with ``{F}`` for the file under test."""

    name: str
    argv: tuple[str, ...]
    base: str  # the valid content of the option
    template: tuple[str, dict[str, str]] | None = None  # YAML with value slots, for bombs and deep values
    codes: frozenset[int] = frozenset({0, 2})
    serves: bool = False
    read_fails_only: bool = False  # the command would act on a valid input (lab up): only inputs it must refuse


@dataclass
class Case:
    name: str
    slot: Slot
    content: bytes | str  # bytes, or one of SPECIALS / STDIN_ZERO
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes | None = None
    expect_ok: bool = False  # must exit 0 (a valid input in another encoding)
    expect_error: bool = False  # must exit 2


def _slots(base_dir: Path) -> list[Slot]:
    pod = POD.format(**POD_SLOTS)
    objects = OBJECTS.format(**OBJECT_SLOTS)
    files = {"pod.yaml": pod, "objects.yaml": objects, "rules.txt": RULES, "resolv.conf": RESOLV}
    for name, text in files.items():
        (base_dir / name).write_text(text)
    P, OBJ, R, RC = (str(base_dir / n) for n in ("pod.yaml", "objects.yaml", "rules.txt", "resolv.conf"))
    dst = ("--dst", "10.96.0.20:80")
    pod_t, obj_t, mesh_t, nt_t = (POD, POD_SLOTS), (OBJECTS, OBJECT_SLOTS), (MESH_CONFIG, MESH_SLOTS), \
        (NAME_TABLE, NAME_TABLE_SLOTS)
    mesh = MESH_CONFIG.format(**MESH_SLOTS)
    nt = NAME_TABLE.format(**NAME_TABLE_SLOTS)
    serve = ("--listen", "127.0.0.1:0", "--reload-interval", "0")
    return [
        Slot("compile --pod", ("compile", "--pod", "{F}"), pod, pod_t),
        Slot("compile --group-file", ("compile", "--pod", P, "--group-file", "{F}"), GROUPS),
        Slot("trace --pod", ("trace", "--pod", "{F}", *dst), pod, pod_t),
        Slot("trace --rules", ("trace", "--rules", "{F}", "--src", "10.244.2.9", *dst), RULES),
        Slot("trace --pcap", ("trace", "--rules", R, "--pcap", "{F}"), ""),
        Slot("trace --config", ("trace", "--pod", P, "--config", "{F}", *dst), objects, obj_t),
        Slot("trace --mesh-config", ("trace", "--pod", P, "--config", OBJ, "--mesh-config", "{F}", *dst), mesh, mesh_t),
        Slot("dns table --config", ("dns", "table", "--config", "{F}"), objects, obj_t),
        Slot("dns table --name-table", ("dns", "table", "--name-table", "{F}"), nt, nt_t),
        Slot("dns query --config", ("dns", "query", "web.istio-demo.svc.cluster.local", "--config", "{F}"),
             objects, obj_t),
        Slot("dns query --name-table", ("dns", "query", "web", "-n", "istio-demo", "--name-table", "{F}"), nt, nt_t),
        Slot("dns query --resolv-conf", ("dns", "query", "web", "--config", OBJ, "--resolv-conf", "{F}"), RESOLV),
        Slot("dns serve --config", ("dns", "serve", "--config", "{F}", "--resolv-conf", RC, *serve), objects, obj_t,
             serves=True),
        Slot("dns serve --resolv-conf", ("dns", "serve", "--config", OBJ, "--resolv-conf", "{F}", *serve), RESOLV,
             serves=True),
        Slot("mesh hop --config", ("mesh", "hop", "--config", "{F}", "--proxy-ip", "10.244.2.9", *dst), objects,
             obj_t),
        Slot("mesh hop --mesh-config", ("mesh", "hop", "--config", OBJ, "--mesh-config", "{F}", "--proxy-ip",
                                        "10.244.2.9", *dst), mesh, mesh_t),
        Slot("mesh listeners --pod", ("mesh", "listeners", "--pod", "{F}", "--config", OBJ), pod, pod_t),
        Slot("mesh clusters --config", ("mesh", "clusters", "--pod", P, "--config", "{F}"), objects, obj_t),
        Slot("diagnose --pod", ("diagnose", "--pod", "{F}", "--config", OBJ), pod, pod_t, codes=frozenset({0, 1, 2})),
        Slot("diagnose --config", ("diagnose", "--pod", P, "--config", "{F}"), objects, obj_t,
             codes=frozenset({0, 1, 2})),
        Slot("lab up --pod", ("lab", "up", "--pod", "{F}", "--name", "h4hostile"), pod, pod_t,
             read_fails_only=True),
    ]


def _encodings(text: str) -> dict[str, tuple[bytes, bool]]:
    """Name → (bytes, whether netsim must read it as it reads the UTF-8 text)."""
    raw = text.encode()
    return {
        "utf8": (raw, True),
        "utf8-bom": (codecs.BOM_UTF8 + raw, True),
        "utf16le-bom": (codecs.BOM_UTF16_LE + text.encode("utf-16-le"), True),
        "utf16be-bom": (codecs.BOM_UTF16_BE + text.encode("utf-16-be"), True),
        "gzip": (gzip.compress(raw, mtime=0), True),
        "gzip-utf16": (gzip.compress(codecs.BOM_UTF16_LE + text.encode("utf-16-le"), mtime=0), True),
        "gzip-twice-concatenated": (gzip.compress(raw[: len(raw) // 2], mtime=0)
                                    + gzip.compress(raw[len(raw) // 2:], mtime=0), True),
        "latin1-comment": (b"# caf\xe9\n" + raw, False),
        "utf16le-no-bom": (text.encode("utf-16-le"), False),
        "utf32-bom": (codecs.BOM_UTF32_LE + text.encode("utf-32-le"), False),
        "truncated-gzip": (gzip.compress(raw, mtime=0)[:-9], False),
        "gzip-magic-junk": (b"\x1f\x8b" + bytes(range(256)), False),
        "crlf": (text.replace("\n", "\r\n").encode(), False),
    }


def _generate(base_dir: Path) -> list[Case]:
    rng = random.Random(SEED)
    cases: list[Case] = []
    for slot in _slots(base_dir):
        def add(name: str, content: bytes | str, slot: Slot = slot, **kw: object) -> None:
            cases.append(Case(f"{slot.name} <- {name}", slot, content, **kw))  # type: ignore[arg-type]

        must_fail = slot.read_fails_only
        if slot.name == "trace --pcap":
            add("valid pcap", _pcap(), expect_ok=True)
            add("gzip pcap", gzip.compress(_pcap(), mtime=0))
            add("truncated pcap", _pcap()[:30])
            add("pcap with a 4 GB record", _pcap()[:24] + struct.pack("<IIII", 0, 0, 0xFFFFFFF0, 0xFFFFFFF0))
        elif not must_fail:
            for enc, (data, same) in _encodings(slot.base).items():
                add(f"encoding {enc}", data, expect_ok=same)
        else:
            for enc, (data, same) in _encodings(slot.base).items():
                if not same and enc != "crlf":
                    add(f"encoding {enc}", data, expect_error=True)
        for special in SPECIALS:
            add(special, special, expect_error=True)
        add("stdin from /dev/zero", "-", env={"NETSIM_MAX_INPUT": "4M"}, expect_error=True)
        add("oversized (NETSIM_MAX_INPUT=64K)", (slot.base.encode() or b"x") * (70_000 // max(1, len(slot.base)) + 1),
            env={"NETSIM_MAX_INPUT": "64K"}, expect_error=True)
        add("gzip bomb past the limit", gzip.compress(b"#" * 9_000_000, mtime=0), env={"NETSIM_MAX_INPUT": "8M"},
            expect_error=True)
        add("NETSIM_MAX_INPUT=lots", slot.base.encode() or _pcap(), env={"NETSIM_MAX_INPUT": "lots"},
            expect_error=True)
        for i in range(2):
            add(f"random bytes #{i}", rng.randbytes(rng.choice((16, 700, 40_000))), expect_error=must_fail)
        if not must_fail and slot.base:
            base = slot.base.encode()
            for i in range(2):
                cut = rng.randrange(1, len(base))
                add(f"truncated at {cut}", base[:cut])
                mutated = bytearray(base)
                for _ in range(8):
                    mutated[rng.randrange(len(mutated))] = rng.choice(b"\x00\x7f:-[]{}&*!|>'\"#\n\t ")
                add(f"mutated #{i}", bytes(mutated))
            add("a 1.5 MB line", slot.base.encode() + b"#" + b"x" * 1_500_000 + b"\n")
        if slot.template is not None:
            template, defaults = slot.template
            for key in defaults:
                for value_name, make in VALUES.items():
                    if must_fail and value_name not in ("bomb", "recursive-anchor", "deep5000"):
                        continue
                    value = make()
                    if key == "proxy_config":  # the annotation is a string holding YAML: the bomb inside it
                        value = "|\n      proxyMetadata: " + value.replace("\n", " ")
                    text = template.format(**{**defaults, key: value})
                    add(f"{value_name} in {key}", text.encode(), expect_error=must_fail)
    return cases


# --- running ---------------------------------------------------------------------------------------


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    # 5 s of CPU (SIGXCPU ends a loop); the wall clock only catches a process blocked without
    # spinning (a FIFO), with room for a machine shared by other jobs
    resource.setrlimit(resource.RLIMIT_CPU, (int(TIMEOUT), int(TIMEOUT) + 1))
    os.setsid()


@dataclass
class Result:
    case: Case
    code: int | None
    stderr: str
    seconds: float
    cpu: float
    problems: list[str]


def _materialize(case: Case, work: Path, index: int) -> str:
    if case.content == "-":
        return "-"
    if case.content in (DEV_ZERO, DEV_URANDOM, DEV_NULL):
        return str(case.content)
    path = work / f"case{index}.yaml"
    if case.content == FIFO:
        os.mkfifo(path)
    elif case.content == DIRECTORY:
        path.mkdir()
        (path / "junk.yaml").write_bytes(b"\xff\xfe\x00")
        os.mkfifo(path / "fifo.yaml")
    else:
        assert isinstance(case.content, bytes)
        path.write_bytes(case.content)
    return str(path)


def _wait(proc: subprocess.Popen[bytes], timeout: float, serving: Path | None = None) -> tuple[int | None, float]:
    """Exit status (None: still running after ``timeout`` seconds, or serving: ``serving``, its stderr,
    says so) and the CPU seconds the process used."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline or (serving is not None and b"serving" in serving.read_bytes()):
            return None, 0.0
        time.sleep(0.02)


def run_case(case: Case, work: Path, index: int) -> Result:
    target = _materialize(case, work, index)
    argv = [sys.executable, "-m", "netsim", *(target if a == "{F}" else a for a in case.slot.argv)]
    env = {**os.environ, **case.env}
    err_path = work / f"case{index}.stderr"
    start = time.monotonic()
    with open(err_path, "wb") as err, open("/dev/zero" if case.content == "-" else os.devnull, "rb") as stdin:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                preexec_fn=_limits, cwd=work)
        code, cpu = _wait(proc, WALL_TIMEOUT, err_path if case.slot.serves else None)
        served = False
        if code is None:
            served = case.slot.serves and b"serving" in err_path.read_bytes()
            os.killpg(proc.pid, signal.SIGTERM if served else signal.SIGKILL)
            stopped, cpu = _wait(proc, 5)
            if stopped is None:
                os.killpg(proc.pid, signal.SIGKILL)
                stopped, cpu = _wait(proc, 5)
            if served:  # a valid table: the agent serves until stopped, and stops cleanly
                code = 0 if stopped in (0, -signal.SIGTERM) else stopped
    seconds = time.monotonic() - start
    stderr = err_path.read_text(errors="replace")
    problems = []
    if code is None:
        problems.append(f"no exit within {WALL_TIMEOUT:g}s")
    elif code == -signal.SIGXCPU:
        problems.append(f"more than {TIMEOUT:g}s of CPU")
    elif code not in case.slot.codes:
        problems.append(f"exit {code}")
    elif case.expect_ok and code not in (0, 1):
        problems.append(f"exit {code} for a valid input")
    elif case.expect_error and code != 2:
        problems.append(f"exit {code} where the input must be refused")
    if cpu > TIMEOUT and not served:
        problems.append(f"{cpu:.1f}s of CPU")
    if any(ln.startswith(("Traceback", "Fatal Python error")) for ln in stderr.splitlines()):
        problems.append("traceback")
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    if code == 2 and len(errors) != 1:
        problems.append(f"{len(errors)} Error: lines")
    for ln in stderr.splitlines():
        if len(ln) >= MAX_LINE:
            problems.append(f"a stderr line of {len(ln)} characters")
            break
    return Result(case, code, stderr, seconds, cpu, problems)


def run_corpus(cases: list[Case], workers: int = 2) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="netsim-hostile-") as tmp:
        work = Path(tmp)
        with ThreadPoolExecutor(workers) as pool:  # each case is its own process: threads only wait
            return list(pool.map(lambda ic: run_case(ic[1], work, ic[0]), enumerate(cases)))


def _sample(cases: list[Case]) -> list[Case]:
    only = os.environ.get("NETSIM_HOSTILE_ONLY")
    if only:
        return [c for c in cases if only in c.name]
    want = os.environ.get("NETSIM_HOSTILE_CASES", str(SAMPLE))
    if want == "all" or int(want) >= len(cases):
        return cases
    rng = random.Random(SEED)
    chosen: dict[int, Case] = {}
    # every slot, every kind of content, every case that must be refused outright, at least once
    seen: set[str] = set()
    for i, case in enumerate(cases):
        kind = case.name.split(" <- ")[1].split(" #")[0].split(" at ")[0]
        kind = kind.split(" in ")[0] if " in " in kind else kind
        for key in (case.slot.name, kind):
            if key not in seen:
                seen.add(key)
                chosen[i] = case
    rest = [i for i in range(len(cases)) if i not in chosen]
    for i in rng.sample(rest, max(0, int(want) - len(chosen))):
        chosen[i] = cases[i]
    return [chosen[i] for i in sorted(chosen)]


def test_hostile_corpus_exits_0_or_2_with_one_error_line_and_no_traceback(tmp_path: Path) -> None:
    cases = _generate(tmp_path)
    assert len(cases) >= 200
    chosen = _sample(cases)
    assert len(chosen) >= 200
    results = run_corpus(chosen)
    failed = [r for r in results if r.problems]
    report = "\n".join(f"{r.case.name}: {', '.join(r.problems)}: {r.stderr.strip()[-400:]!r}" for r in failed)
    assert not failed, f"{len(failed)} of {len(results)} hostile cases failed:\n{report}"


def _main(argv: list[str]) -> int:
    verbose = "-v" in argv
    with tempfile.TemporaryDirectory(prefix="netsim-hostile-base-") as base:
        cases = _generate(Path(base))
        chosen = cases if "--all" in argv else _sample(cases)
        start = time.monotonic()
        results = run_corpus(chosen)
    for r in results:
        if verbose or r.problems:
            last = r.stderr.strip().splitlines()[-1:] or [""]
            print(f"{'FAIL' if r.problems else 'ok  '} {r.code!s:>4} {r.seconds:5.2f}s {r.cpu:5.2f}cpu {r.case.name}: "
                  f"{', '.join(r.problems)} {last[0][:160]}")
    bad = sum(1 for r in results if r.problems)
    print(f"{len(results)} cases ({len(cases)} generated), {bad} failed, {time.monotonic() - start:.1f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

