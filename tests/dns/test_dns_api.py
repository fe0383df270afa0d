"""The public surface of netsim.dns: its exports, and that importing the core stays cheap."""

from __future__ import annotations

import subprocess
import sys

import netsim.dns


def test_exports_are_pinned_and_documented() -> None:
    assert sorted(netsim.dns.__all__) == netsim.dns.__all__
    for name in netsim.dns.__all__:
        obj = getattr(netsim.dns, name)
        assert obj.__doc__, name


def test_importing_the_resolver_loads_no_server_shell() -> None:
    code = ("import sys, netsim.dns, netsim.dns.resolve, netsim.dns.cli; "
            "print(sorted(m for m in ('asyncio', 'uvloop', 'netsim.dns.server', 'dnslib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_library_use_without_the_cli() -> None:
    from netsim.dns import (
        AllocService,
        CounterRNG,
        Generation,
        NameInfo,
        NameTable,
        Reply,
        allocate,
        build_lookup,
        make_query,
        resolve,
    )

    allocs = allocate([AllocService(hostname="a.example.com"), AllocService(hostname="*.w.example.com")],
                      Generation.SEQ_DEDUPE)
    assert [(a.ipv4, a.ipv6) for a in allocs] == [("240.240.0.1", "2001:2::f0f0:1"), (None, None)]
    table = NameTable({"a.example.com": NameInfo(ips=(allocs[0].ipv4 or "",), registry="External")})
    d = resolve(make_query("A.example.com.", qid=5), build_lookup(table, namespace="default"), rng=CounterRNG())
    assert isinstance(d, Reply) and d.wire.endswith(bytes([240, 240, 0, 1]))


def test_dns_help_loads_nothing_heavy() -> None:
    """``netsim dns <cmd> --help`` stays off PyYAML, dnslib, asyncio and uvloop (they load only to do the work)."""
    code = ("import sys, runpy\n"
            "for sub in ('serve', 'table', 'query'):\n"
            "    sys.argv = ['netsim', 'dns', sub, '--help']\n"
            "    try:\n"
            "        runpy.run_module('netsim', run_name='__main__')\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in ('yaml', 'dnslib', 'asyncio', 'uvloop', 'netsim.dns.server') if m in sys.modules),"
            " file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage: netsim dns query" in r.stdout
    assert r.stderr.strip() == "[]"
