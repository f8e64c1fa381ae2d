"""Portcullis beside the transparent MCP proxies, in one run, on the same echo upstream (issue 18's table):

    direct                      the echo upstream over Streamable HTTP (bench/echo_upstream.py)
    supergateway (npm)          stdio echo upstream behind supergateway's Streamable HTTP (transparent, Node)
    mcp-proxy (PyPI)            stdio echo upstream behind mcp-proxy's Streamable HTTP (transparent, Python)
    Portcullis, stdio upstream  policy + a counter on every call + the audit row, stdio echo upstream
    Portcullis, HTTP upstream   the same, HTTP echo upstream
    (each on daphne and on uvicorn, PORTCULLIS_SERVER; --server picks one)

The same raw keep-alive client as `python -m bench` (session era, one MCP session per connection; it checks every
echo): p50/p99 at concurrency 1 over the latency calls, throughput at 1/4/16 for the run's seconds, and each
proxy's CPU per call read from /proc around the c=16 run. Ratios are to direct. With `--era both` (the default)
direct and Portcullis are measured again with stateless-era (2026-07-28) agents, whose ratios are to direct in that
era (the transparent peers speak the session era only).

At scale: `--tools 279` lists 279 tools upstream (the TrueNAS catalogue's size), `--rows 1000000` puts that many
settled audit rows in the table before the run, `--sessions 100` keeps that many agent sessions open on each
Portcullis server during it; run it with and without them: the cost per call should not change.

`--dispatcher` declares Portcullis's echo tool a dispatcher (TrueNAS-style: `set_dispatcher echo --action /text`,
one imported action named after the bench's echo text), so each call through it is decided, counted and audited
as a call of that action; the transparent peers call echo as always.

`--counters N` counts each call on N counters (the tool's own and N-1 for every tool, `all_tools.limits`), all of
which are reserved, all or none, on every call.

`--redis URL` runs Portcullis as a team's replicas do, with REDIS_URL set: the channel layer (the live events of
every call) and the peers' messages go through that Redis, and Redis's own CPU per call is shown apart. Give it a
database number of its own (redis://127.0.0.1:6379/14): the bench flushes nothing, but it writes there.

Run: .venv/bin/python -m bench.peers_bench [--quick] [--db sqlite|postgres] [--era session|stateless|both]
         [--server daphne|uvicorn|both] [--tools N] [--rows N] [--sessions N] [--dispatcher] [--counters N]
         [--postgres-url URL] [--redis URL]

The peers are pinned and installed on first use, outside the project's environment: supergateway from npm into
var/bench-peers/node (npm), mcp-proxy from PyPI into its own virtual environment var/bench-peers/mcp-proxy (so its
dependencies never meet the gateway's). Nothing here runs in the product.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.gateway_bench import (
    BENCH_POSTGRES_DB,
    CONCURRENCIES,
    DEFAULT_POSTGRES_URL,
    ECHO_TEXT,
    FULL_PLAN,
    POLICY,
    QUICK_PLAN,
    TOOL,
    Endpoint,
    McpConnection,
    SideResult,
    call_echo,
    measure_side,
    start_gateway,
    start_upstream,
)
from bench.harness import (
    PY,
    ROOT,
    BenchError,
    Processes,
    clean_env,
    free_port,
    gateway_env,
    manage,
    postgres_pids,
    redis_pids,
    say,
    scratch_postgres,
    set_up_server,
    with_database,
)

SUPERGATEWAY = "supergateway@4.0.0"
MCP_PROXY = "mcp-proxy==0.13.0"
PEERS = ROOT / "var" / "bench-peers"
STDIO_ECHO = [PY, "-m", "bench.echo_upstream", "--stdio"]

# Rows for --rows: one settled call, then copies of what is there (doubling) until the count is reached.
PREFILL = """
from datetime import timedelta
from django.db import connection
from django.utils import timezone
from gateway.models import Call
wanted = {rows}
at = timezone.now() - timedelta(days=1)
Call.objects.create(created_at=at, finished_at=at, grant_name="prefill", server_slug="bench", tool_name="echo",
                    arguments={{"text": "portcullis-bench"}}, decision="allow", outcome="ok", latency_ms=1.0,
                    result_size=60, counters=["bench_echo"])
columns = ", ".join(f.column for f in Call._meta.concrete_fields if f.column != "id")
have = 1
with connection.cursor() as cursor:
    while have < wanted:
        cursor.execute(f"INSERT INTO gateway_call ({{columns}}) SELECT {{columns}} FROM gateway_call LIMIT %s",
                       [min(have, wanted - have)])
        have += min(have, wanted - have)
print(Call.objects.count())
"""


def install_peers() -> tuple[list[str], list[str]]:
    """(supergateway argv prefix, mcp-proxy argv prefix), installed once under var/bench-peers."""
    node_dir, proxy_venv = PEERS / "node", PEERS / "mcp-proxy"
    supergateway = node_dir / "node_modules" / ".bin" / "supergateway"
    if not supergateway.exists():
        say(f"installing {SUPERGATEWAY} into {node_dir} (once)")
        node_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(node_dir), SUPERGATEWAY],
                       check=True, capture_output=True, timeout=600)
    proxy = proxy_venv / "bin" / "mcp-proxy"
    if not proxy.exists():
        say(f"installing {MCP_PROXY} into its own virtual environment {proxy_venv} (once)")
        subprocess.run([sys.executable, "-m", "venv", str(proxy_venv)], check=True, timeout=300)
        subprocess.run([str(proxy_venv / "bin" / "pip"), "install", "--quiet", MCP_PROXY], check=True,
                       capture_output=True, timeout=900)
    node = shutil.which("node") or str(ROOT / "node_modules" / ".bin" / "node")
    return [node, str(supergateway)], [str(proxy)]


@dataclass
class Target:
    label: str
    url: str
    token: str | None
    pid: int  # the proxy's own process (its CPU per call)
    upstream_pid: int | None = None


def start_supergateway(procs: Processes, prefix: list[str], tmp: Path) -> Target:
    port = free_port()
    proc = procs.start([*prefix, "--stdio", " ".join(STDIO_ECHO), "--outputTransport", "streamableHttp",
                        "--stateful", "--port", str(port), "--logLevel", "none"], clean_env(),
                       tmp / "supergateway.log", port)
    return Target("supergateway 4.0 (Node, transparent, stdio upstream)", f"http://127.0.0.1:{port}/mcp", None,
                  proc.pid)


def start_mcp_proxy(procs: Processes, prefix: list[str], tmp: Path) -> Target:
    port = free_port()
    proc = procs.start([*prefix, "--port", str(port), "--host", "127.0.0.1", "--", *STDIO_ECHO], clean_env(),
                       tmp / "mcp-proxy.log", port)
    return Target("mcp-proxy 0.13 (Python, transparent, stdio upstream)", f"http://127.0.0.1:{port}/mcp", None,
                  proc.pid)


def prepare_portcullis(env: dict, upstream_url: str, stdio_echo: list[str]) -> tuple[str, str]:
    """Two servers under the same policy: `bench` (the HTTP echo) and `bench-stdio` (the stdio echo); one grant."""
    token = set_up_server(env, "bench", upstream_url, POLICY)
    manage(env, "register_server", "bench-stdio", "--stdio", " ".join(stdio_echo))
    manage(env, "refresh_tools", "bench-stdio")
    manage(env, "apply_policy", "bench-stdio", "-", stdin=json.dumps(POLICY))
    out = manage(env, "create_grant", "bench-agent-stdio", "--server", "bench-stdio")
    match = re.search(r"token \(shown once[^)]*\):\s*(\S+)", out)
    if match is None:
        raise BenchError(f"create_grant printed no token:\n{out[:500]}")
    return token, match.group(1)


def declare_dispatchers(env: dict, tmp: Path, counters: int) -> None:
    """Both servers' echo a dispatcher whose action is named by its text, with the one action the bench calls, and
    the bench's policy for that action (as an operator would: set_dispatcher, apply_policy)."""
    action_list = tmp / "echo-actions.json"
    action_list.write_text(json.dumps([{"name": ECHO_TEXT, "description": "the bench's echo, as an action",
                                        "inputSchema": {"type": "object"}}]))
    policy = bench_policy(ECHO_TEXT, counters)
    for slug in ("bench", "bench-stdio"):
        manage(env, "set_dispatcher", slug, TOOL, "--action", "/text", "--import", str(action_list))
        manage(env, "apply_policy", slug, "-", stdin=json.dumps(policy))


def bench_policy(tool: str, counters: int) -> dict:
    """The bench's policy for `tool`, with `counters` - 1 more counters for every tool (limits no run reaches)."""
    policy = {**POLICY, "tools": {tool: POLICY["tools"][TOOL]}}
    if counters > 1:
        policy["all_tools"] = {"limits": [{"counter": f"bench_all_{i}", "window": "day", "max": 1_000_000_000,
                                           "scope": "grant"} for i in range(1, counters)]}
    return policy


async def measure(target: Target, plan, era: str = "session", database: bool = False,
                  redis: bool = False) -> SideResult:
    pids = {"proxy": target.pid}
    if database:  # read around the same window: PostgreSQL's own CPU, apart from the gateway's
        await open_database_connections(target, era)  # their server processes exist when they are listed
        pids |= {f"postgres-{pid}": pid for pid in postgres_pids()}
    if redis and target.token is not None:  # Portcullis's rows only: the peers never talk to Redis
        pids |= {f"redis-{pid}": pid for pid in redis_pids()}
    say(f"  {target.label} ({era} era): {target.url}")
    return await measure_side(Endpoint(target.url, target.token, pids, era), plan)


async def open_database_connections(target: Target, era: str) -> None:
    """A burst of concurrent calls before PostgreSQL's processes are listed: the gateway opens its database
    connections when calls first need them, and a server process started after the listing would go uncounted."""
    conns = [McpConnection(target.url, target.token, era) for _ in range(CONCURRENCIES[-1])]
    await asyncio.gather(*(c.open() for c in conns))
    for _ in range(3):
        await asyncio.gather(*(call_echo(c) for c in conns))
    for conn in conns:
        await conn.close()


async def open_idle_sessions(targets: list[Target], count: int) -> int:
    """`count` session-era agent sessions on each target, initialized and left open (their connections closed)."""
    conns = [McpConnection(t.url, t.token) for t in targets for _ in range(count)]
    for start in range(0, len(conns), 20):
        await asyncio.gather(*(c.open() for c in conns[start:start + 20]))
    for conn in conns:
        await conn._disconnect()  # the session stays: no DELETE
    return len(conns)


def row(label: str, side: SideResult, direct: SideResult, database: bool = False, redis: bool = False) -> str:
    c16 = side.throughput[CONCURRENCIES[-1]]
    ratio = c16.rate / direct.throughput[CONCURRENCIES[-1]].rate
    added = side.percentile(50) - direct.percentile(50)
    cpu = c16.cpu_ms_per_call.get("proxy")
    cpu_text = f"{cpu:.2f} ms" if cpu is not None else "—"
    line = f"| {label} | {'+' if added >= 0 else ''}{added:.2f} ms | {ratio:.0%} | {cpu_text} |"
    if database:
        postgres = sum(v for k, v in c16.cpu_ms_per_call.items() if k.startswith("postgres-"))
        line += f" {postgres:.2f} ms |"
    if redis:
        own = [v for k, v in c16.cpu_ms_per_call.items() if k.startswith("redis-")]
        line += f" {sum(own):.2f} ms |" if own else " — |"
    return line


async def run(opts, procs: Processes, tmp: Path) -> list[str]:
    super_prefix, proxy_prefix = install_peers()
    stdio_echo = [*STDIO_ECHO, "--tools", str(opts.tools)]
    upstream_proc, upstream_url = start_upstream(procs, tmp, ["--tools", str(opts.tools)])
    if opts.db == "sqlite":
        database_url, scratch = f"sqlite:///{tmp / 'bench.sqlite3'}", contextlib.nullcontext()
    else:
        scratch = scratch_postgres(opts.postgres_url, BENCH_POSTGRES_DB)
        database_url = with_database(opts.postgres_url, BENCH_POSTGRES_DB)
    with scratch:
        return await _run(opts, procs, tmp, super_prefix, proxy_prefix, stdio_echo, upstream_proc, upstream_url,
                          database_url)


async def _run(opts, procs, tmp, super_prefix, proxy_prefix, stdio_echo, upstream_proc, upstream_url,
               database_url) -> list[str]:
    env = gateway_env(database_url, tmp / "state")
    if opts.redis:
        env["REDIS_URL"] = opts.redis
    say(f"Portcullis database: {opts.db}{'; Redis ' + opts.redis if opts.redis else ''}; preparing both servers "
        f"({opts.tools} tools upstream)")
    http_token, stdio_token = prepare_portcullis(env, upstream_url, stdio_echo)
    if opts.dispatcher:
        declare_dispatchers(env, tmp, opts.counters)
    elif opts.counters > 1:
        for slug in ("bench", "bench-stdio"):
            manage(env, "apply_policy", slug, "-", stdin=json.dumps(bench_policy(TOOL, opts.counters)))
    if opts.rows:
        say(f"putting {opts.rows} audit rows in the table")
        manage(env, "shell", "-c", PREFILL.format(rows=opts.rows))
    direct = Target("direct (HTTP echo)", upstream_url, None, upstream_proc.pid)
    ours = []
    for server in (("daphne", "uvicorn") if opts.server == "both" else (opts.server,)):
        gateway_proc, http_url = start_gateway(procs, {**env, "PORTCULLIS_SERVER": server},
                                               tmp / f"gateway-{server}.log")
        stdio_url = http_url.replace("/mcp/bench/", "/mcp/bench-stdio/")
        ours += [Target(f"Portcullis on {server}, stdio upstream, policy + counter + audit", stdio_url, stdio_token,
                        gateway_proc.pid),
                 Target(f"Portcullis on {server}, HTTP upstream, policy + counter + audit", http_url, http_token,
                        gateway_proc.pid)]
    if opts.sessions:
        say(f"opened {await open_idle_sessions(ours, opts.sessions)} idle agent sessions")
    runs: list[tuple[str, Target]] = []
    if opts.era in ("session", "both"):
        runs += [("session", direct), ("session", start_supergateway(procs, super_prefix, tmp)),
                 ("session", start_mcp_proxy(procs, proxy_prefix, tmp))] + [("session", t) for t in ours]
    if opts.era in ("stateless", "both"):
        runs += [("stateless", direct)] + [("stateless", t) for t in ours]
    results = {}
    database, redis = opts.db == "postgres", bool(opts.redis)
    for era, target in runs:
        results[era, target.label] = await measure(target, opts.plan, era, database, redis)
    lines = []
    for era in ("session", "stateless"):
        if (era, direct.label) not in results:
            continue
        base = results[era, direct.label]
        lines += [f"{era}-era agents. direct: p50 {base.percentile(50):.2f} ms at c=1, "
                  f"{base.throughput[CONCURRENCIES[-1]].rate:.0f} calls/s at c=16", "",
                  "| target | added p50 at c=1 | throughput at c=16 vs direct | proxy CPU per call (c=16) |"
                  + (" PostgreSQL's own CPU per call (c=16) |" if database else "")
                  + (" Redis's own CPU per call (c=16) |" if redis else ""),
                  "|---|---|---|---|" + ("---|" if database else "") + ("---|" if redis else "")]
        lines += [row(t.label, results[e, t.label], base, database, redis)
                  for e, t in runs if e == era and t is not direct]
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and 2 s runs")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--era", choices=("session", "stateless", "both"), default="both")
    parser.add_argument("--server", choices=("daphne", "uvicorn", "both"), default="both",
                        help="the HTTP server under the gateway (PORTCULLIS_SERVER)")
    parser.add_argument("--tools", type=int, default=1, help="tools the upstream lists (279: TrueNAS's catalogue)")
    parser.add_argument("--rows", type=int, default=0, help="audit rows already in the table")
    parser.add_argument("--sessions", type=int, default=0, help="idle agent sessions open on each server")
    parser.add_argument("--dispatcher", action="store_true",
                        help="echo declared a dispatcher: each call decided as a call of its action")
    parser.add_argument("--counters", type=int, default=1, help="counters reserved on every call (1 or more)")
    parser.add_argument("--redis", default="", metavar="URL",
                        help="REDIS_URL for Portcullis (a database number of its own), as a team's replicas run")
    opts = parser.parse_args(argv)
    if opts.counters < 1:
        parser.error("--counters must be 1 or more")
    opts.plan = QUICK_PLAN if opts.quick else FULL_PLAN
    procs = Processes()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="portcullis-peers-bench-") as tmp:
            lines = asyncio.run(run(opts, procs, Path(tmp)))
    except BenchError as exc:
        say(f"peers bench failed: {exc}")
        return 1
    finally:
        procs.stop_all()
    load = os.getloadavg()
    tool = f"tool {TOOL} declared a dispatcher, action {ECHO_TEXT}" if opts.dispatcher else f"tool {TOOL}"
    print(f"Portcullis beside the transparent proxies ({opts.db}; {tool} of {opts.tools}; {opts.counters} "
          f"counter{'s' * (opts.counters > 1)} per call; {'Redis; ' if opts.redis else ''}{opts.rows} audit rows "
          f"before; {opts.sessions} idle sessions per server; {time.time() - started:.0f} s; "
          f"load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f})")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
