"""``netsim dns serve|table|query`` through click's CliRunner (and serve as a real process)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest
from dns_helpers import FakeUpstream, Result, run_main

REPO = Path(__file__).resolve().parents[2]
NGINX = str(REPO / "rules" / "dns" / "nginx-x.yaml")
MESH = str(REPO / "rules" / "dns" / "mesh.yaml")


def run(*args: str) -> Result:
    """``netsim dns ARGS`` in-process through ``netsim.cli.main``, exactly as the console script runs it."""
    return run_main("dns", *args)


def error_line(r: Result) -> str:
    """The one ``Error:`` line of a failed command (exit 2, no traceback)."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output + r.stderr
    return lines[0]


@pytest.mark.parametrize("sub", [[], ["serve"], ["table"], ["query"]])
def test_help(sub: list[str]) -> None:
    r = run(*sub, "--help")
    assert r.exit_code == 0 and "Usage:" in r.output


# --------------------------------------------------------------------------------------------
# query

@pytest.mark.parametrize(("version", "ip"), [("1.10", "240.240.0.1"), ("1.16.2", "240.240.0.1"),
                                             ("1.25", "240.240.0.1")])
def test_issue_example_nginx_x_resolves_like_istio(version: str, ip: str) -> None:
    r = run("query", "xxx.example.com", "--config", NGINX, "--istio-version", version)
    assert r.exit_code == 0, r.output
    assert re.search(rf"^xxx\.example\.com\.\s+30\s+IN\s+A\s+{re.escape(ip)}$", r.stdout, re.M), r.stdout


def test_query_allocator_overrides_version_and_hash_generation_differs() -> None:
    seq = run("query", "xxx.example.com", "--config", NGINX, "--allocator", "seq-v4", "--format", "json")
    h22 = run("query", "xxx.example.com", "--config", NGINX, "--istio-version", "1.10", "--allocator", "hash-1.22",
              "--format", "json")
    assert json.loads(seq.stdout)["answer"][0]["data"] == "240.240.0.1"
    h = json.loads(h22.stdout)["answer"][0]["data"]
    assert h.startswith("240.240.") and h != "240.240.0.1"


def test_query_aaaa_and_ipv6_pod() -> None:
    # IPv4 pod: the IPv6 VIP is filtered out → known name, empty NOERROR
    r = run("query", "xxx.example.com", "--type", "AAAA", "--config", NGINX, "--format", "json")
    out = json.loads(r.stdout)
    assert out["handled_by"] == "table" and out["rcode"] == "NOERROR" and out["answer"] == []
    r = run("query", "xxx.example.com", "--type", "aaaa", "--config", NGINX, "--pod-ip", "fd00::5")
    assert re.search(r"IN\s+AAAA\s+2001:2::1$", r.stdout, re.M), r.stdout


def test_query_forwarded_short_names_and_search_cnames() -> None:
    r = run("query", "legacy", "--config", MESH, "-n", "shop")
    assert "forwards it to the upstream" in r.stdout and r.exit_code == 0
    r = run("query", "productpage", "--config", MESH, "-n", "shop", "--format", "json")
    assert json.loads(r.stdout)["answer"] == [{"name": "productpage.", "type": "A", "ttl": 30, "data": "10.96.0.10"}]
    r = run("query", "productpage", "--config", MESH, "-n", "other")
    assert "forwards" in r.stdout  # the short name only exists in the Service's own namespace
    r = run("query", "productpage.shop.corp.internal", "--config", MESH, "-n", "shop", "--search", "corp.internal")
    assert "CNAME\tproductpage.shop." in r.stdout


def test_search_names_follow_the_stub_resolvers_order() -> None:
    from netsim.dns.resolvconf import search_names

    search = ("shop.svc.cluster.local", "svc.cluster.local.")
    assert search_names("db", search) == ("db.shop.svc.cluster.local.", "db.svc.cluster.local.", "db.")
    assert search_names("a.b.c.d.e.f", search)[0] == "a.b.c.d.e.f."  # ndots:5 reached: as is first
    assert search_names("db.", search) == ("db.",) and search_names("db", ()) == ("db.",)


def test_a_short_name_the_agent_knows_only_through_the_search_list_is_answered() -> None:
    """The app's resolver (ndots:5) sends the search-list names too; the agent answers the FQDN it knows."""
    absolute = run("query", "productpage.", "--config", MESH, "-n", "other", "--search", "shop.svc.cluster.local")
    assert "forwards it to the upstream" in absolute.stdout  # an absolute name is asked as it is
    r = run("query", "productpage", "--config", MESH, "-n", "other", "--search", "a.example",
            "--search", "shop.svc.cluster.local", "--format", "json")
    out = json.loads(r.stdout)
    assert (out["handled_by"], out["name"], out["search_forwarded"]) == (
        "table", "productpage.shop.svc.cluster.local.", ["productpage.a.example."])
    assert [a["data"] for a in out["answer"]] == ["10.96.0.10"]
    text = run("query", "productpage", "--config", MESH, "-n", "other", "--search", "a.example",
               "--search", "shop.svc.cluster.local").stdout
    assert ";; the agent forwards productpage.a.example. upstream; the pod's resolver then asks " \
           "productpage.shop.svc.cluster.local. from its search list" in text
    same = json.loads(run("query", "productpage", "--config", MESH, "-n", "shop", "--format", "json").stdout)
    assert same["name"] == "productpage." and "search_forwarded" not in same  # known as asked: unchanged


def test_query_resolv_conf_and_name_table(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local\n")
    nt = tmp_path / "ndsz.json"
    nt.write_text(json.dumps({"table": {"reviews.shop.svc.cluster.local": {
        "ips": ["10.96.1.1"], "registry": "Kubernetes", "shortname": "reviews", "namespace": "shop"}}}))
    r = run("query", "reviews.shop.shop.svc.cluster.local", "--name-table", str(nt), "-n", "shop",
            "--resolv-conf", str(rc))
    assert "CNAME\treviews.shop." in r.stdout and "10.96.1.1" in r.stdout
    y = tmp_path / "ndsz.yaml"
    y.write_text("reviews.shop.svc.cluster.local:\n  ips: [10.96.1.2]\n  registry: Kubernetes\n"
                 "  shortname: reviews\n  namespace: shop\n")
    r = run("query", "reviews", "--name-table", str(y), "-n", "shop")
    assert "10.96.1.2" in r.stdout


# --------------------------------------------------------------------------------------------
# table

def test_table_json_lists_names_addresses_origin_and_allocator() -> None:
    r = run("table", "--config", MESH, "-n", "shop", "--format", "json")
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["productpage.shop.svc.cluster.local"]["addresses"] == ["10.96.0.10"]
    assert rows["db.shop.svc.cluster.local"]["addresses"] == ["10.244.1.5", "10.244.2.7"]
    assert rows["db-0.db.shop.svc.cluster.local"]["addresses"] == ["10.244.1.5"]
    auto = rows["api.payments.example.com"]
    assert auto["addresses"] == ["240.240.0.1"] and auto["allocator"] == "v2"
    assert "ServiceEntry shop/payments" in auto["sources"][0]
    assert rows["hz.internal.example"]["allocator"] is None
    assert "legacy.shop.svc.cluster.local" not in rows  # ExternalName: forwarded, never in the table
    assert "productpage." in rows["productpage.shop.svc.cluster.local"]["aliases"]


def test_table_text_and_exportto(tmp_path: Path) -> None:
    r = run("table", "--config", MESH, "-n", "shop")
    assert "api.payments.example.com  240.240.0.1  (External)  [auto-allocated: v2]" in r.stdout
    p = tmp_path / "se.yaml"
    p.write_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: private, namespace: a}\n"
                 "spec: {hosts: [p.example.com], addresses: [192.0.2.9], exportTo: ['.'], resolution: STATIC}\n")
    assert "p.example.com" in run("table", "--config", str(p), "-n", "a").stdout
    assert "no names" in run("table", "--config", str(p), "-n", "b").stdout


def test_bad_object_is_reported_with_location_and_the_rest_load(tmp_path: Path) -> None:
    p = tmp_path / "mixed.yaml"
    p.write_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: bad, namespace: ns}\n"
                 "spec: {hosts: [x.example.com], resolution: SOMETIMES}\n---\n"
                 "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: good, namespace: ns}\n"
                 "spec: {hosts: [y.example.com], addresses: [192.0.2.7], resolution: STATIC}\n---\n"
                 "apiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: ns}\n"
                 "spec: {clusterIP: 10.0.0.300, ports: [{port: 80}]}\n")
    r = run("table", "--config", str(tmp_path), "-n", "ns", "--format", "json", "--keep-going")
    assert r.exit_code == 0
    assert [row["name"] for row in json.loads(r.stdout)] == ["y.example.com"]
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert f"warning: {p}: document 1: line 1: ServiceEntry ns/bad: spec.resolution: 'SOMETIMES' is not one of" \
        in warnings[0]
    assert f"{p}: document 3: line 11: Service ns/svc: spec.clusterIP: not an IP address: '10.0.0.300'" \
        in warnings[1]
    # without --keep-going the first bad document is the answer: exit 2, one line
    assert error_line(run("table", "--config", str(tmp_path), "-n", "ns")).startswith(
        f"Error: {p}: document 1: line 1: ServiceEntry ns/bad: spec.resolution: 'SOMETIMES'")


# --------------------------------------------------------------------------------------------
# errors: exit 2 and one Error: line naming the file/field/option

def test_error_missing_file(tmp_path: Path) -> None:
    assert error_line(run("table", "--config", str(tmp_path / "nope.yaml"))) == \
        f"Error: {tmp_path / 'nope.yaml'}: no such file or directory"


def test_invalid_yaml_document_is_reported_with_file_document_and_line(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("kind: Service\nmetadata:\n  name: [unclosed\n---\napiVersion: networking.istio.io/v1\n"
                 "kind: ServiceEntry\nmetadata: {name: ok}\n"
                 "spec: {hosts: [ok.example.com], addresses: [192.0.2.3], resolution: STATIC}\n")
    assert error_line(run("query", "ok.example.com", "--config", str(p))).startswith(
        f"Error: {p}: document 1: line 4: invalid YAML")
    r = run("query", "ok.example.com", "--config", str(p), "--keep-going")
    assert r.exit_code == 0 and "192.0.2.3" in r.stdout  # the other document still loads
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {p}: document 1: line ")
    assert "invalid YAML" in warnings[0]


def test_error_config_and_name_table_together_or_neither(tmp_path: Path) -> None:
    assert error_line(run("table", "--config", NGINX, "--name-table", NGINX)) == \
        "Error: use --config or --name-table, not both"
    assert "no name table" in error_line(run("query", "x"))
    assert "no name table" in error_line(run("serve"))


def test_error_bad_versions_and_allocator() -> None:
    assert "--istio-version 'one.two'" in error_line(run("table", "--config", NGINX, "--istio-version", "one.two"))
    assert "first shipped in 1.7" in error_line(run("serve", "--config", NGINX, "--istio-version", "1.6"))
    assert "--allocator" in error_line(run("table", "--config", NGINX, "--allocator", "hash-9"))


def test_error_bad_name_table(tmp_path: Path) -> None:
    p = tmp_path / "nt.json"
    p.write_text(json.dumps({"table": {"a.example.com": {"ips": "1.2.3.4", "registry": "External"}}}))
    assert error_line(run("query", "a.example.com", "--name-table", str(p))) == \
        f"Error: {p}: a.example.com: field ips: must be a list of strings"
    p.write_text("{not json: [")
    assert str(p) in error_line(run("table", "--name-table", str(p)))


def test_error_bad_query_name_and_options(tmp_path: Path) -> None:
    assert "label" in error_line(run("query", "a" * 64 + ".com", "--config", NGINX))
    assert "--type" in error_line(run("query", "x", "--type", "MX", "--config", NGINX))
    assert "--pod-ip 'ten'" in error_line(run("query", "x", "--config", NGINX, "--pod-ip", "ten"))
    assert error_line(run("table", "--config", NGINX, "--pod-ip", "10.0.0.1:5")) == \
        "Error: --pod-ip '10.0.0.1:5': not an IP address"
    rc = tmp_path / "rc"
    rc.write_text("search a\n")
    assert "--search or --resolv-conf" in error_line(run("query", "x", "--config", NGINX, "--search", "a",
                                                         "--resolv-conf", str(rc)))


def test_error_serve_options(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.1\n")
    assert error_line(run("serve", "--config", NGINX, "--resolv-conf", str(tmp_path / "none"))) == \
        f"Error: {tmp_path / 'none'}: cannot read resolv.conf: No such file or directory"
    assert "--listen 'nowhere:53'" in error_line(run("serve", "--config", NGINX, "--resolv-conf", str(rc),
                                                      "--listen", "nowhere:53"))
    assert "--upstream '1.2.3.4:99999'" in error_line(run("serve", "--config", NGINX, "--resolv-conf", str(rc),
                                                           "--upstream", "1.2.3.4:99999"))
    assert "--timeout" in error_line(run("serve", "--config", NGINX, "--timeout", "0"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        line = error_line(run("serve", "--config", NGINX, "--resolv-conf", str(rc), "--listen",
                              f"127.0.0.1:{port}"))
        assert line.startswith(f"Error: cannot listen on 127.0.0.1:{port}")


# --------------------------------------------------------------------------------------------
# serve, as a real process: signals

def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 10) -> re.Match[str]:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"{pattern!r} not in {seen}")


def test_serve_process_answers_and_handles_signals(tmp_path: Path) -> None:
    cfg = tmp_path / "nginx.yaml"
    cfg.write_text(Path(NGINX).read_text())
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.1\nsearch default.svc.cluster.local\n")
    proc = subprocess.Popen([sys.executable, "-m", "netsim", "dns", "serve", "--config", str(cfg),
                             "--resolv-conf", str(rc), "--listen", "127.0.0.1:0", "--upstream", "127.0.0.9:53",
                             "--timeout", "0.2", "--istio-version", "1.10", "--reload-interval", "0"],
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        m = _read_until(proc, r"serving 1 names on 127\.0\.0\.1:(\d+) \(udp, tcp\); upstreams: 127\.0\.0\.9:53")
        port = int(m[1])
        q = dns.message.make_query("xxx.example.com.", "A")
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=5)
        assert [rd.address for rs in r.answer for rd in rs] == ["240.240.0.1"]
        r = dns.query.tcp(dns.message.make_query("xxx.example.com.default.svc.cluster.local.", "A"), "127.0.0.1",
                          port=port, timeout=5)
        assert [rd.to_text() for rs in r.answer for rd in rs] == ["xxx.example.com.", "240.240.0.1"]
        proc.send_signal(signal.SIGUSR1)
        _read_until(proc, r"counters \(SIGUSR1\): queries=2 local=2 forwarded=0 failed=0 malformed=0")
        cfg.write_text(Path(NGINX).read_text().replace("xxx.example.com", "yyy.example.com"))
        proc.send_signal(signal.SIGHUP)
        _read_until(proc, r"reloaded \(SIGHUP\): 1 names")
        r = dns.query.udp(dns.message.make_query("yyy.example.com.", "A"), "127.0.0.1", port=port, timeout=5)
        assert [rd.address for rs in r.answer for rd in rs] == ["240.240.0.1"]
        proc.send_signal(signal.SIGTERM)
        _read_until(proc, r"counters \(exit\): queries=3 local=3")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_reload_keeps_the_resolv_conf_upstreams(tmp_path: Path) -> None:
    """pilot-agent reads resolv.conf once: a reload swaps the table (and search list), never the upstreams."""
    with contextlib.ExitStack() as stack:
        try:  # resolv.conf nameservers are always port 53
            ups = [stack.enter_context(FakeUpstream(host=h, port=53)) for h in ("127.0.0.5", "127.0.0.6")]
        except OSError as e:
            pytest.skip(f"cannot bind a fake upstream on port 53: {e}")
        _serve_and_reload_resolv_conf(tmp_path, ups)


def _serve_and_reload_resolv_conf(tmp_path: Path, ups: list[FakeUpstream]) -> None:
    cfg = tmp_path / "nginx.yaml"
    cfg.write_text(Path(NGINX).read_text())
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.5\nsearch default.svc.cluster.local\n")
    proc = subprocess.Popen([sys.executable, "-m", "netsim", "dns", "serve", "--config", str(cfg),
                             "--resolv-conf", str(rc), "--listen", "127.0.0.1:0", "--timeout", "2",
                             "--istio-version", "1.10", "--reload-interval", "0"],
                            stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        m = _read_until(proc, r"serving 1 names on 127\.0\.0\.1:(\d+) \(udp, tcp\); upstreams: 127\.0\.0\.5:53$")
        port = int(m[1])

        def ask(name: str) -> list[str]:
            r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=5)
            return [rd.to_text() for rs in r.answer for rd in rs]

        assert ask("www.bing.com.") == ["1.1.1.1"] and (ups[0].queries, ups[1].queries) == (1, 0)
        rc.write_text("nameserver 127.0.0.6\nsearch other.svc.cluster.local\n")
        proc.send_signal(signal.SIGHUP)
        _read_until(proc, r"reloaded \(SIGHUP\): 1 names")
        assert ask("xxx.example.com.other.svc.cluster.local.") == ["xxx.example.com.", "240.240.0.1"]  # new search
        assert ask("www.bing.com.") == ["1.1.1.1"] and (ups[0].queries, ups[1].queries) == (2, 0)  # old upstream
        rc.write_text("search only.example\n")  # no nameserver at all: still a good reload, same upstream
        proc.send_signal(signal.SIGHUP)
        _read_until(proc, r"reloaded \(SIGHUP\): 1 names")
        assert ask("www.bing.com.") == ["1.1.1.1"] and (ups[0].queries, ups[1].queries) == (3, 0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_help_says_resolv_conf_is_read_once() -> None:
    text = " ".join(run("serve", "--help").output.split())
    assert "The nameservers are read once, at start, as pilot-agent does (it never reads the file again)" in text
    assert "keeps the upstreams and takes only the new search list" in text
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "read from `--resolv-conf` once, at start, as pilot-agent does" in readme


def test_serve_options_reach_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import netsim.dns.server as server_mod

    seen: dict[str, object] = {}

    def fake_run(cfg: object, loader: object, *, watch: object, on_ready: object) -> None:
        seen["cfg"] = cfg
        seen["lookup"] = loader()  # type: ignore[operator]
        seen["watch"] = watch()  # type: ignore[operator]

    monkeypatch.setattr(server_mod, "run", fake_run)
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 10.96.0.10\nnameserver fd00::10\nsearch corp.svc.cluster.local svc.cluster.local\n")
    r = run("serve", "--config", NGINX, "--namespace", "corp", "--domain", "corp.svc.cluster.local",
            "--resolv-conf", str(rc), "--listen", "localhost:5353", "--listen", "[::1]:5454",
            "--timeout", "0.5", "--forward-parallel", "--max-inflight", "7", "--max-tcp", "3",
            "--reload-interval", "0", "--no-answer-cache", "--allocator", "seq-v6", "--pod-ip", "10.0.0.9")
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert cfg.listen == (("127.0.0.1", 5353), ("::1", 5353), ("::1", 5454))  # type: ignore[attr-defined]
    assert cfg.upstreams == (("10.96.0.10", 53), ("fd00::10", 53))  # type: ignore[attr-defined]
    assert (cfg.timeout, cfg.parallel, cfg.max_inflight, cfg.max_tcp, cfg.reload_interval,  # type: ignore[attr-defined]
            cfg.answer_cache) == (0.5, True, 7, 3, 0, False)  # type: ignore[attr-defined]
    lookup = seen["lookup"]
    assert lookup.search == ("corp.svc.cluster.local", "svc.cluster.local")  # type: ignore[attr-defined]
    entry = lookup.table.entries["xxx.example.com"]  # type: ignore[attr-defined]  # exported to every namespace
    assert (entry.ips, entry.allocator) == (("240.240.0.1",), "seq-v6")
    assert seen["watch"] == [Path(NGINX), rc]


def test_serve_with_name_table_and_explicit_upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import netsim.dns.server as server_mod

    seen: dict[str, object] = {}
    monkeypatch.setattr(server_mod, "run", lambda cfg, loader, **kw: seen.update(cfg=cfg, lookup=loader()))
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 10.96.0.10\n")
    nt = tmp_path / "nt.json"
    nt.write_text(json.dumps({"a.example.com": {"ips": ["192.0.2.1"], "registry": "External"}}))
    r = run("serve", "--name-table", str(nt), "--resolv-conf", str(rc), "--upstream", "127.0.0.1:5300",
            "--upstream", "[::1]")
    assert r.exit_code == 0, r.output
    assert "warning" not in r.stderr
    assert seen["cfg"].upstreams == (("127.0.0.1", 5300), ("::1", 53))  # type: ignore[attr-defined]
    rc.write_text("search a.example\n")
    r = run("serve", "--name-table", str(nt), "--resolv-conf", str(rc))
    assert r.exit_code == 0 and seen["cfg"].upstreams == ()  # type: ignore[attr-defined]
    assert f"warning: no upstream nameserver (none in {rc}, no --upstream)" in r.stderr
    assert seen["cfg"].listen == (("127.0.0.1", 15053),)  # type: ignore[attr-defined]
    assert list(seen["lookup"].table.entries) == ["a.example.com"]  # type: ignore[attr-defined]


def test_query_and_table_explain_why_a_host_is_forwarded(tmp_path: Path) -> None:
    p = tmp_path / "se.yaml"
    p.write_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: vm, namespace: a}\n"
                 "spec: {hosts: [vm.corp.internal], ports: [{number: 22, name: ssh}], resolution: NONE}\n")
    r = run("query", "vm.corp.internal", "--config", str(p), "-n", "a")
    assert ";; vm.corp.internal is configured but has no entry: headless/NONE without a usable endpoint" in r.stdout
    assert f";;   from {p}: document 1: ServiceEntry a/vm" in r.stdout
    out = json.loads(run("query", "vm.corp.internal", "--config", str(p), "-n", "a", "--format", "json").stdout)
    assert out["handled_by"] == "upstream" and out["configured_as"]["hostname"] == "vm.corp.internal"
    r = run("table", "--config", str(p), "-n", "a")
    assert "not in the table (the agent forwards these upstream):\nvm.corp.internal  headless/NONE" in r.stdout
    assert json.loads(run("table", "--config", str(p), "-n", "a", "--format", "json").stdout) == []


# --------------------------------------------------------------------------------------------
# promises of the help texts, README.md and rules/dns/README.md

def test_query_default_search_list_follows_namespace_and_domain() -> None:
    """--search defaults to <ns>.svc.<cluster domain>, …; the cluster domain comes from --domain."""
    r = run("query", "productpage.shop.shop.svc.cluster.local", "--config", MESH, "-n", "shop")
    assert "CNAME\tproductpage.shop." in r.stdout and "10.96.0.10" in r.stdout
    corp = "productpage.shop.shop.svc.corp.local"
    assert "forwards" in run("query", corp, "--config", MESH, "-n", "shop").stdout
    r = run("query", corp, "--config", MESH, "-n", "shop", "--domain", "shop.svc.corp.local")
    assert "CNAME\tproductpage.shop." in r.stdout and "10.96.0.10" in r.stdout


def test_rules_readme_examples_answer_as_commented() -> None:
    r = run("query", "db-0.db", "--config", MESH, "-n", "shop")  # per-pod name of a headless Service
    assert re.search(r"^db-0\.db\.\s+30\s+IN\s+A\s+10\.244\.1\.5$", r.stdout, re.M), r.stdout
    r = run("query", "foo.cdn.example.net.shop.svc.cluster.local", "--config", MESH, "-n", "shop")
    assert re.search(r"IN\s+CNAME\s+\*\.cdn\.example\.net\.$", r.stdout, re.M), r.stdout  # search CNAME → wildcard


def test_query_text_for_a_known_name_without_records_of_the_type() -> None:
    r = run("query", "xxx.example.com", "--type", "AAAA", "--config", NGINX)
    assert r.exit_code == 0
    assert ";; xxx.example.com. is known but has no AAAA records (empty NOERROR, never NXDOMAIN)" in r.stdout


def test_error_listen_and_upstream_syntax(tmp_path: Path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.1\n")
    base = ("serve", "--config", NGINX, "--resolv-conf", str(rc))
    assert error_line(run(*base, "--listen", "[::1")) == "Error: --listen '[::1': missing ']'"
    assert error_line(run(*base, "--listen", "[::1]53")) == "Error: --listen '[::1]53': expected [IPv6]:PORT"
    assert error_line(run(*base, "--upstream", ":53")) == "Error: --upstream ':53': missing host"


def test_serve_defaults_are_the_server_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults --help shows (timeout 5, 2048 in flight, 512 TCP, reload every 1 s, answer cache on,
    127.0.0.1:15053) are the ones the server has, and HEAD shuffles the upstreams."""
    import netsim.dns.server as server_mod

    seen: list[object] = []
    monkeypatch.setattr(server_mod, "run", lambda cfg, loader, **kw: seen.append(cfg))
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 10.96.0.10\n")
    assert run("serve", "--config", NGINX, "--resolv-conf", str(rc)).exit_code == 0
    assert seen == [server_mod.ServerConfig(upstreams=(("10.96.0.10", 53),))]


def test_serve_reload_skips_a_document_that_is_no_kubernetes_object(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A Helm values file in the watched directory is skipped with a note at start and on every reload (a reload
    refuses a bad object, not a file that is no object at all), and the objects beside it are read."""
    import netsim.dns.server as server_mod

    loaders: list[Any] = []
    monkeypatch.setattr(server_mod, "run", lambda cfg, loader, **kw: loaders.append(loader))
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "nginx.yaml").write_text(Path(NGINX).read_text())
    (d / "values.yaml").write_text("replicaCount: 2\n")
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.1\n")
    r = run("serve", "--config", str(d), "--resolv-conf", str(rc))
    assert r.exit_code == 0, r.output
    assert f"note: {d / 'values.yaml'}: document 1 (line 1): not a Kubernetes object" in r.stderr
    (loader,) = loaders
    assert list(loader().table.entries) == ["xxx.example.com"]  # the table read at start
    (d / "nginx.yaml").write_text(Path(NGINX).read_text().replace("xxx.example.com", "yyy.example.com"))
    assert list(loader().table.entries) == ["yyy.example.com"]  # a reload: strict, and not refused


def test_serve_reload_reads_the_files_again_and_refuses_a_bad_object(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """At start a bad object is a warning; on reload it fails the reload, so the server keeps the old table."""
    import netsim.dns.server as server_mod
    from netsim.errors import ConfigError

    loaders: list[Any] = []
    monkeypatch.setattr(server_mod, "run", lambda cfg, loader, **kw: loaders.append(loader))
    cfg = tmp_path / "nginx.yaml"
    cfg.write_text(Path(NGINX).read_text())
    rc = tmp_path / "resolv.conf"
    rc.write_text("nameserver 127.0.0.1\nsearch default.svc.cluster.local\n")
    r = run("serve", "--config", str(cfg), "--resolv-conf", str(rc))
    assert r.exit_code == 0, r.output
    (loader,) = loaders
    assert list(loader().table.entries) == ["xxx.example.com"]
    cfg.write_text(Path(NGINX).read_text().replace("xxx.example.com", "yyy.example.com"))
    rc.write_text("nameserver 127.0.0.1\nsearch other.svc.cluster.local\n")
    lookup = loader()
    assert list(lookup.table.entries) == ["yyy.example.com"] and lookup.search == ("other.svc.cluster.local",)
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: bad}\n"
                   "spec: {hosts: [b.example.com], resolution: SOMETIMES}\n")
    r = run("serve", "--config", str(cfg), "--config", str(bad), "--resolv-conf", str(rc))
    assert r.exit_code == 0 and "warning: " in r.stderr and "spec.resolution" in r.stderr
    first = loaders[-1]()  # the table read at start (with the warning), not read again
    assert list(first.table.entries) == ["yyy.example.com"]
    with pytest.raises(ConfigError, match=r"ServiceEntry default/bad: spec\.resolution"):
        loaders[-1]()  # a reload
