"""ServiceEntry VIP auto-allocation, every generation Istio has shipped (spec/istio-autoalloc.md).

Owns: the allocator records (:class:`AllocService` in, :class:`Allocation` out), the sequential
(``seq-v4``, ``seq-v6``, ``seq-dedupe``) and hash (``hash-1.17`` … ``hash-1.22``) allocators, the
status controller of 1.23+ (``v2``, :class:`StatusController`, a pure state machine over
ServiceEntry values), the consumption of its status addresses, and the Istio-version → generation
profile.

Never does: IO, reading YAML, or deciding which proxy sees an address (that is ``netsim.dns.table``).

Addresses are returned as the *strings Istio produces*: ``hash-1.17``/``hash-1.18`` can emit the
invalid ``240.240.256.1`` on a full table and the IPv6 spelling ``2001:2::f0f0:%x%x`` is ambiguous;
both are reproduced, not fixed (spec section 1.3, 2.2). Valid IPv6 strings are canonicalised the way
Go prints a parsed address.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from netsim.errors import ConfigError, SpecError
from netsim.istio_version import IstioVersion, parse_istio_version

UNSPECIFIED = "0.0.0.0"  # a ServiceEntry without addresses has this default address


class Generation(enum.Enum):
    """One allocator generation, named as in the conformance vectors."""

    SEQ_V4 = "seq-v4"
    SEQ_V6 = "seq-v6"
    SEQ_DEDUPE = "seq-dedupe"
    HASH_1_17 = "hash-1.17"
    HASH_1_18 = "hash-1.18"
    HASH_1_20 = "hash-1.20"
    HASH_1_21 = "hash-1.21"
    HASH_1_22 = "hash-1.22"
    V2 = "v2"

    @property
    def is_sequential(self) -> bool:
        return self in (Generation.SEQ_V4, Generation.SEQ_V6, Generation.SEQ_DEDUPE)

    @property
    def is_hash(self) -> bool:
        return self.value.startswith("hash-")

    @classmethod
    def parse(cls, text: str) -> Generation:
        for g in cls:
            if g.value == text:
                return g
        raise SpecError(f"unknown allocator {text!r}, expected one of {', '.join(g.value for g in cls)}")


@dataclass(frozen=True, slots=True)
class AllocService:
    """One internal service as the legacy allocators see it: one per (ServiceEntry, host[, address]).

    ``address`` is the default address, ``0.0.0.0`` when the ServiceEntry had no addresses.
    ``creation`` (seconds) and ``se_name`` only matter for the sequential generation's input order.
    """

    hostname: str
    namespace: str = ""
    resolution: str = "STATIC"
    address: str = UNSPECIFIED
    creation: float = 0.0
    se_name: str = ""


@dataclass(frozen=True, slots=True)
class Allocation:
    """The addresses a generation gave one service (``None`` = none)."""

    ipv4: str | None
    ipv6: str | None


NO_ALLOCATION = Allocation(None, None)

# resolutions that qualify (spec 1.1, rule 3); DNS_ROUND_ROBIN and DYNAMIC_DNS included.
_ALLOCATABLE = frozenset({"STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS", "CLIENTSIDELB", "DNSLB",
                          "DNSROUNDROBINLB"})

# Sequential range: x < 65025 (spec 1.3); hash tables: 255x255 then 256x254 slots (spec 2.1).
_SEQ_LIMIT = 65025
_HASH_SECONDARY_PRIME = 65011
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK32 = 0xFFFFFFFF


def eligible(s: AllocService) -> bool:
    """Legacy eligibility (spec 1.1): no addresses, not a wildcard, resolution not NONE."""
    return (s.address == UNSPECIFIED and not s.hostname.startswith("*")
            and s.resolution.upper() in _ALLOCATABLE)


def fnv1a_32(data: bytes) -> int:
    """32-bit FNV-1a (xor, then multiply)."""
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK32
    return h


def _v4(a: int, b: int) -> str:
    return f"240.240.{a}.{b}"


def _v6(a: int, b: int, *, drop_zero_a: bool) -> str:
    tail = f"{b:x}" if (drop_zero_a and a == 0) else f"{a:x}{b:x}"
    if len(tail) > 4:  # not one hextet: Go cannot parse it, the string stays as built
        return "2001:2::f0f0:" + tail
    # Go parses then prints it: leading zeros of the last hextet vanish (the same as
    # str(IPv6Address(...)), without its parse and print on the allocator's 65,025-slot loops)
    return f"2001:2::f0f0:{int(tail, 16):x}"


def allocate(services: Sequence[AllocService], generation: Generation) -> tuple[Allocation, ...]:
    """Allocate VIPs to ``services`` (in the order given) with a legacy ``generation``.

    Returns one :class:`Allocation` per service, in input order. For the sequential generation the
    caller supplies Istio's input order (see :func:`sequential_order`). ``v2`` is stateful: use
    :class:`StatusController` (or :func:`allocate_v2_fresh`).

    Raises ConfigError when a hash table of 1.20+ can only place a service in its unreachable last
    slot (Istio would loop forever there).
    """
    if generation.is_sequential:
        return _sequential(services, generation)
    if generation.is_hash:
        return _hash(services, generation)
    raise SpecError("the v2 allocator is stateful: use StatusController")


def _sequential(services: Sequence[AllocService], gen: Generation) -> tuple[Allocation, ...]:
    out: list[Allocation] = []
    x = 0
    seen: dict[str, Allocation] = {}
    exhausted = False
    for s in services:
        if exhausted or not eligible(s):
            out.append(NO_ALLOCATION)
            continue
        if gen is Generation.SEQ_DEDUPE and s.hostname in seen:
            out.append(seen[s.hostname])
            continue
        x += 1
        if x % 255 == 0:
            x += 1
        if x >= _SEQ_LIMIT:
            exhausted = True
            out.append(NO_ALLOCATION)
            continue
        a, b = divmod(x, 255)
        alloc = Allocation(_v4(a, b), None if gen is Generation.SEQ_V4 else _v6(a, b, drop_zero_a=True))
        seen[s.hostname] = alloc
        out.append(alloc)
    return tuple(out)


def _hash(services: Sequence[AllocService], gen: Generation) -> tuple[Allocation, ...]:
    old = gen in (Generation.HASH_1_17, Generation.HASH_1_18)
    n_slots = 65025 if old else 65024
    modulus = n_slots if old else n_slots - 1
    slots: list[int] = [-1] * n_slots  # index into services
    placed = 0
    below_modulus = 0  # occupied slots that probing can reach
    for idx, s in enumerate(services):
        if not eligible(s):
            continue
        if not old and placed >= n_slots:
            break
        h = fnv1a_32(f"{s.namespace}/{s.hostname}".encode())
        k = h % n_slots
        if slots[k] >= 0:
            if below_modulus >= modulus:
                raise ConfigError(
                    f"{gen.value}: only the last slot is free for {s.namespace}/{s.hostname}; Istio's "
                    "probe would loop forever here (netsim stops)")
            d = _HASH_SECONDARY_PRIME - (h % _HASH_SECONDARY_PRIME)
            i = 1
            while True:
                k = ((h + i * d) & _MASK32) % modulus
                if slots[k] < 0:
                    break
                i += 1
                if i > 64 * n_slots:
                    raise ConfigError(f"{gen.value}: probe for {s.namespace}/{s.hostname} found no free "
                                      "slot (Istio would loop forever)")
        slots[k] = idx
        placed += 1
        if k < modulus:
            below_modulus += 1

    reuse_by_host = gen is Generation.HASH_1_17
    result: dict[int, Allocation] = {}
    seen: dict[str, tuple[int, int]] = {}
    x = 0
    y = 0
    for idx in slots:
        if gen is Generation.HASH_1_22:
            x += 1
            if idx < 0:
                continue
            if x % 255 == 0:
                x += 1
        elif idx < 0:
            x += 1
            if old and x % 255 == 0:
                x += 1
            continue
        s = services[idx]
        key = s.hostname if reuse_by_host else f"{s.namespace}/{s.hostname}"
        ab = seen.get(key)
        if ab is None:
            if gen is Generation.HASH_1_20:
                if x // 255 < 255:
                    x += 1
                    if x % 255 == 0:
                        x += 1
                if x // 255 >= 255:
                    y += 1
                    ab = (255, y)
                else:
                    ab = divmod(x, 255)
            elif gen is Generation.HASH_1_22:
                ab = divmod(x, 255)
            else:
                x += 1
                if x % 255 == 0:
                    x += 1
                ab = divmod(x, 255)
            seen[key] = ab
        a, b = ab
        result[idx] = Allocation(_v4(a, b), _v6(a, b, drop_zero_a=False))
    return tuple(result.get(i, NO_ALLOCATION) for i in range(len(services)))


def sequential_order(services: Iterable[AllocService], *, by_hostname: bool) -> list[AllocService]:
    """Istio's input order for the sequential allocator (spec 1.2).

    1.7–1.12 (``by_hostname=False``): ServiceEntries by creation time, ties by ``"<SE name>.<ns>"``,
    hosts in spec order (a stable sort keeps that). 1.13–1.16 (``by_hostname=True``): services by
    creation time, ties by ``"<hostname>.<ns>"`` (equal keys keep input order, Istio's is unspecified).
    """
    def key(s: AllocService) -> tuple[float, str]:
        tie = s.hostname if by_hostname else s.se_name
        return (int(s.creation), f"{tie}.{s.namespace}")

    return sorted(services, key=key)


# --------------------------------------------------------------------------------------------
# Version profiles

def parse_version(text: str) -> IstioVersion:
    """``"1.14"`` → ``(1, 14, 0)``, ``current`` → Istio HEAD; raises SpecError naming --istio-version."""
    return parse_istio_version(text, option="--istio-version")


def generation_for_version(version: str) -> Generation:
    """The allocator an Istio release uses by default (spec section 0)."""
    v = parse_version(version)
    if v < (1, 7, 0):
        raise SpecError(f"--istio-version {version}: ServiceEntry auto-allocation first shipped in 1.7")
    if v < (1, 14, 0):
        return Generation.SEQ_V4
    if v < (1, 14, 5) or (1, 15, 0) <= v < (1, 15, 1):
        return Generation.SEQ_V6
    if v < (1, 17, 0):
        return Generation.SEQ_DEDUPE
    if v < (1, 17, 2):
        return Generation.HASH_1_17
    if v < (1, 20, 0):
        return Generation.HASH_1_18
    if v < (1, 21, 0):
        return Generation.HASH_1_20
    if v < (1, 22, 0):
        return Generation.HASH_1_21
    if v < (1, 25, 0):
        return Generation.HASH_1_22  # the controller exists from 1.23 but is off by default until 1.25
    return Generation.V2


def sequential_by_hostname(version: str | None) -> bool:
    """Whether the sequential input order is by hostname (1.13+) rather than by SE name."""
    return version is not None and parse_version(version) >= (1, 13, 0)


# --------------------------------------------------------------------------------------------
# v2: the status controller (spec section 3)

OPT_OUT_LABEL = "networking.istio.io/enable-autoallocate-ip"
DEFAULT_V4_PREFIX = "240.240.0.0/16"
DEFAULT_V6_PREFIX = "2001:2::/48"
_WRITE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class StatusAddress:
    host: str
    value: str


@dataclass(frozen=True, slots=True)
class ServiceEntryState:
    """The fields of a ServiceEntry the status controller reads and writes."""

    namespace: str
    name: str
    hosts: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    resolution: str = "NONE"
    labels: Mapping[str, str] = field(default_factory=dict)
    creation: float = 0.0
    status_addresses: tuple[StatusAddress, ...] = ()
    conditions: tuple[Mapping[str, object], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def v2_eligible(se: ServiceEntryState) -> bool:
    """Spec 3.2: resolution not NONE, not opted out, no spec addresses."""
    opt = se.labels.get(OPT_OUT_LABEL)
    return (se.resolution.upper() != "NONE" and not (opt is not None and opt.lower() == "false")
            and not se.addresses)


def v2_hosts(se: ServiceEntryState) -> list[str]:
    """Hosts considered, spec order, duplicates dropped, wildcards only for DYNAMIC_DNS."""
    out: list[str] = []
    for h in se.hosts:
        if h in out:
            continue
        if h.startswith("*") and se.resolution.upper() != "DYNAMIC_DNS":
            continue
        out.append(h)
    return out


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class _Pool:
    """One family's allocator state (spec 3.3)."""

    def __init__(self, prefix: str) -> None:
        try:
            iface = ipaddress.ip_interface(prefix)
        except ValueError as e:
            raise SpecError(f"auto-allocation prefix {prefix!r} is not a CIDR") from e
        self.network = iface.network
        self.first = int(iface.ip) + 1  # parsed without masking: start at the written address + 1
        self.lo = int(self.network.network_address)
        self.hi = int(self.network.broadcast_address)
        self.version = iface.version
        self.used: dict[int, str] = {}
        self.next = self.first

    def inside(self, n: int) -> bool:
        return self.lo <= n <= self.hi

    def allocate(self, owner: str) -> str | None:
        n = self.next
        looped = False
        if not self.inside(n):
            n, looped = self.first, True
        while n in self.used:
            n += 1
            if not self.inside(n):
                if looped:
                    return None
                looped, n = True, self.first
        self.used[n] = owner
        self.next = n + 1
        return str(ipaddress.ip_address(n))

    def free(self, n: int, owner: str) -> None:
        if self.used.get(n) == owner:
            del self.used[n]
            if n < self.next or not self.inside(self.next):
                self.next = n


class StatusController:
    """Istio's ``ipallocate`` controller as a pure state machine (spec 3.3–3.6).

    Feed it ServiceEntries with :meth:`start`, :meth:`create`, :meth:`update` and :meth:`delete`;
    read back their ``status.addresses`` with :meth:`get`. Each call processes its event and every
    conflict it raises before returning, in the order Istio's work queue would.
    """

    def __init__(self, *, v4_prefix: str = DEFAULT_V4_PREFIX, v6_prefix: str = DEFAULT_V6_PREFIX) -> None:
        self._v4 = _Pool(v4_prefix)
        self._v6 = _Pool(v6_prefix)
        self._ses: dict[str, ServiceEntryState] = {}
        self._conflicts: list[set[str]] = []
        self._started = False

    # -- public events ---------------------------------------------------------------------
    def add_initial(self, se: ServiceEntryState) -> None:
        """An object that exists before the leader starts."""
        self._ses[se.key] = se

    def start(self) -> None:
        """Leader start: warm the used sets from every SE, then reconcile every SE once."""
        self._started = True
        for se in list(self._ses.values()):
            self._mark_many(se, se.addresses)
            self._mark_many(se, [a.value for a in se.status_addresses])
        for key in list(self._ses):
            self._reconcile(key)
        self._drain()

    def create(self, se: ServiceEntryState) -> None:
        self._ses[se.key] = se
        if self._started:
            self._reconcile(se.key)
            self._drain()

    def update(self, key: str, **changes: object) -> None:
        """Replace fields of the SE ``key`` (``labels=None`` removes the labels)."""
        if key not in self._ses:
            raise ConfigError(f"no ServiceEntry {key}")
        if "labels" in changes and changes["labels"] is None:
            changes["labels"] = {}
        self._ses[key] = replace(self._ses[key], **changes)  # type: ignore[arg-type]
        if self._started:
            self._reconcile(key)
            self._drain()

    def delete(self, key: str) -> None:
        self._ses.pop(key, None)  # its addresses stay marked used (spec 3.5)

    def get(self, key: str) -> ServiceEntryState:
        return self._ses[key]

    # -- internals -------------------------------------------------------------------------
    def _pool(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> _Pool:
        return self._v4 if ip.version == 4 else self._v6

    def _mark_many(self, se: ServiceEntryState, values: Iterable[str]) -> None:
        conflicts: set[str] = set()
        for value in values:
            ip = _parse_ip(value)
            if ip is None:
                continue
            pool = self._pool(ip)
            n = int(ip)
            if not pool.inside(n):
                continue
            owner = pool.used.get(n)
            if owner is None:
                pool.used[n] = se.key
            elif owner != se.key:
                conflicts.add(str(ip))
        if conflicts:
            self._conflicts.append(conflicts)

    def _write_status(self, key: str, addresses: list[StatusAddress]) -> None:
        self._ses[key] = replace(self._ses[key], status_addresses=tuple(addresses))

    def _reconcile(self, key: str, *, force: bool = False) -> None:
        se = self._ses.get(key)
        if se is None:
            return
        if not v2_eligible(se):
            self._mark_many(se, se.addresses)
            if se.status_addresses:
                old = list(se.status_addresses)
                self._write_status(key, [])
                for a in old:
                    ip = _parse_ip(a.value)
                    if ip is not None:
                        self._pool(ip).free(int(ip), key)
            return
        existing: dict[str, list[str]] = {}
        for a in se.status_addresses:
            if _parse_ip(a.value) is not None:
                existing.setdefault(a.host, []).append(a.value)
        self._mark_many(se, [v for vs in existing.values() for v in vs])
        hosts = v2_hosts(se)
        if not force and set(hosts) == set(existing):
            return
        new: list[StatusAddress] = []
        for h in hosts:
            if h in existing and not force:
                new.extend(StatusAddress(h, v) for v in existing[h])
                continue
            for pool in (self._v4, self._v6):
                value = pool.allocate(key)
                if value is not None:
                    new.append(StatusAddress(h, value))
        self._write_status(key, new)

    def _drain(self) -> None:
        while self._conflicts:
            addrs = self._conflicts.pop(0)
            self._resolve_conflict(addrs)

    def _resolve_conflict(self, addrs: set[str]) -> None:
        auto: list[ServiceEntryState] = []
        user = False
        for se in self._ses.values():
            if any(a.value in addrs for a in se.status_addresses) and se not in auto:
                auto.append(se)
            if any(a in addrs for a in se.addresses):
                user = True
        auto.sort(key=lambda s: s.creation)
        victims = auto if user else auto[1:]
        for se in victims:
            self._reconcile(se.key, force=True)


def consume_status(se: ServiceEntryState, *, enabled: bool = True) -> dict[str, Allocation]:
    """Spec 3.7 (1.23.1+): host → (last IPv4, last IPv6) of its status entries, if eligible."""
    if not enabled or not v2_eligible(se):
        return {}
    hosts = set(se.hosts)
    out: dict[str, Allocation] = {}
    for a in se.status_addresses:
        if a.host not in hosts:
            continue
        ip = _parse_ip(a.value)
        if ip is None:
            continue
        cur = out.get(a.host, NO_ALLOCATION)
        out[a.host] = replace(cur, ipv4=a.value) if ip.version == 4 else replace(cur, ipv6=a.value)
    return out


def allocate_v2_fresh(entries: Sequence[ServiceEntryState], *, v4_prefix: str = DEFAULT_V4_PREFIX,
                      v6_prefix: str = DEFAULT_V6_PREFIX) -> tuple[ServiceEntryState, ...]:
    """Run the controller once over ``entries`` (leader start) and return them with their status.

    Existing ``status.addresses`` are kept, as the real controller keeps them; the others are
    allocated in the order given (Istio's informer order, which netsim takes as creation time,
    then namespace/name: see :func:`netsim.dns.table.build_from_objects`).
    """
    ctl = StatusController(v4_prefix=v4_prefix, v6_prefix=v6_prefix)
    for se in entries:
        ctl.add_initial(se)
    ctl.start()
    return tuple(ctl.get(se.key) for se in entries)


__all__ = [
    "NO_ALLOCATION",
    "OPT_OUT_LABEL",
    "UNSPECIFIED",
    "AllocService",
    "Allocation",
    "Generation",
    "ServiceEntryState",
    "StatusAddress",
    "StatusController",
    "allocate",
    "allocate_v2_fresh",
    "consume_status",
    "eligible",
    "fnv1a_32",
    "generation_for_version",
    "parse_version",
    "sequential_by_hostname",
    "sequential_order",
    "v2_eligible",
    "v2_hosts",
]
