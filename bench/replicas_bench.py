"""What a team's gateway costs (issue 12, "Measure"): memory and processes per 100 agent sessions, and calls through
HAProxy with 1, 2 and 3 gateway processes.

    python -m bench.replicas_bench sessions [--root DIR] [--sessions 100]
    python -m bench.replicas_bench cluster [--seconds 8] [--postgres-url URL]

`sessions` starts one gateway (SQLite scratch database) in front of the stdio TrueNAS simulator, opens N
session-era sessions (initialize, tools/list, one call; never closed), then N stateless-era agents' calls, and prints
the simulator processes the gateway started and the memory (RSS) of the gateway and its children after each. With
`--root` it measures another checkout of Portcullis (e.g. a `git worktree` of an older commit) with this script.

`cluster` starts the echo upstream, a PostgreSQL scratch database (the `.ci/run --services-only` server by default) or
SQLite with `--sqlite`, a Redis of its own, and for k = 1, 2, 3 gateway processes behind HAProxy (the cluster's own
configuration): latency at concurrency 1 (p50, direct to one gateway and through HAProxy) and calls per second at
concurrency 16, with CPU per call of the gateways, HAProxy and PostgreSQL read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gateway_bench import (
    ECHO_TEXT,
    TOOL,
    McpConnection,
    call_echo,
    close_connections,
    cpu_seconds,
    start_upstream,
)
from bench.harness import (
    ROOT,
    BenchError,
    Processes,
    clean_env,
    free_port,
    gateway_env,
    postgres_pids,
    say,
    scratch_postgres,
    wait_for_port,
)

PY = sys.executable
SIM_POLICY = {"version": "1", "default": "deny", "tools": {"system_info": {}}}
ECHO_POLICY = {"version": "1", "default": "deny", "tools": {TOOL: {}}}


# --- processes and memory ---

def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def snapshot(gateway_pid: int) -> dict:
    kids = children(gateway_pid)
    sims = [k for k in kids if b"truenas_sim" in Path(f"/proc/{k}/cmdline").read_bytes()]
    return {"simulators": len(sims), "gateway_mib": rss_mib(gateway_pid),
            "children_mib": sum(rss_mib(k) for k in kids)}


def manage(root: Path, env: dict, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([PY, "manage.py", *args], cwd=root, env=env, input=stdin, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise BenchError(f"manage.py {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-2000:]}")
    return done.stdout


def set_up(root: Path, env: dict, slug: str, register: list[str], policy: dict) -> str:
    manage(root, env, "migrate", "--noinput")
    manage(root, env, "register_server", slug, *register)
    manage(root, env, "refresh_tools", slug)
    manage(root, env, "apply_policy", slug, "-", stdin=json.dumps(policy))
    out = manage(root, env, "create_grant", "bench-agent", "--server", slug)
    match = re.search(r"token \(shown once[^)]*\):\s*(\S+)", out)
    if match is None:
        raise BenchError(f"create_grant printed no token:\n{out[:500]}")
    return match.group(1)


async def stateless_call(url: str, token: str) -> None:
    """One stateless-era (2026-07-28) tools/call: no session."""
    import httpx2

    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Mcp-Method": "tools/call", "Mcp-Name": "system_info", "MCP-Protocol-Version": "2026-07-28"}
    async with httpx2.AsyncClient(timeout=60) as http:
        answer = await http.post(url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                            "params": {"name": "system_info", "arguments": {},
                                                                       "_meta": meta}})
    if answer.status_code != 200 or "isError\":true" in answer.text.replace(" ", ""):
        raise BenchError(f"stateless call failed: {answer.status_code} {answer.text[:300]}")


async def open_session(url: str, token: str) -> McpConnection:
    conn = McpConnection(url, token)
    await conn.open()
    await conn._rpc("tools/list", {})
    result = await conn.call_tool("system_info", {})
    if result.get("isError"):
        raise BenchError(f"system_info refused: {result}")
    return conn


def sessions(opts) -> None:
    root = Path(opts.root).resolve()
    procs, tmp = Processes(), Path(tempfile.mkdtemp(prefix="portcullis-sessions-bench-"))
    try:
        env = {**gateway_env(f"sqlite:///{tmp / 'db.sqlite3'}", tmp), "PORTCULLIS_CONNECTIONS_PER_CLIENT": "5000",
               "PORTCULLIS_SESSIONS_PER_GRANT": "10000", "PORTCULLIS_SESSIONS_MAX": "10000",
               "PYTHONPATH": str(root)}
        token = set_up(root, env, "nas", ["--stdio", f"{PY} -m truenas_sim"], SIM_POLICY)
        port = free_port()
        log = tmp / "gateway.log"
        with open(log, "w") as out:
            gateway = subprocess.Popen([PY, "-m", "config.serve", "-b", "127.0.0.1", "-p", str(port),
                                        "config.asgi:application"], cwd=root, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        procs.running.append(gateway)
        wait_for_port(port, gateway, log)
        url = f"http://127.0.0.1:{port}/mcp/nas/"
        idle = snapshot(gateway.pid)
        say(f"{root}: idle gateway {idle['gateway_mib']:.0f} MiB")

        async def run():
            conns = []
            started = time.perf_counter()
            for _ in range(opts.sessions):
                conns.append(await open_session(url, token))
            opened_s = time.perf_counter() - started
            await asyncio.sleep(2)
            after_sessions = snapshot(gateway.pid)
            started = time.perf_counter()
            for _ in range(opts.sessions):
                await stateless_call(url, token)
            stateless_s = time.perf_counter() - started
            after_stateless = snapshot(gateway.pid)
            await close_connections(conns)
            return opened_s, after_sessions, stateless_s, after_stateless

        opened_s, after_sessions, stateless_s, after_stateless = asyncio.run(run())
        total = after_sessions["gateway_mib"] + after_sessions["children_mib"]
        print(f"\n{opts.sessions} session-era sessions (initialize + tools/list + 1 call each, never closed), "
              f"stdio TrueNAS simulator, {root}")
        print(f"  opened in {opened_s:.1f} s; simulator processes: {after_sessions['simulators']}; "
              f"RSS gateway {after_sessions['gateway_mib']:.0f} MiB + children {after_sessions['children_mib']:.0f} MiB"
              f" = {total:.0f} MiB ({(total - idle['gateway_mib']) / opts.sessions:.2f} MiB per session over idle)")
        print(f"  then {opts.sessions} stateless-era calls in {stateless_s:.1f} s; simulator processes: "
              f"{after_stateless['simulators']}; RSS gateway {after_stateless['gateway_mib']:.0f} MiB + children "
              f"{after_stateless['children_mib']:.0f} MiB")
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


# --- the cluster ---

async def latency_p50(url: str, token: str, calls: int) -> float:
    conn = McpConnection(url, token)
    await conn.open()
    try:
        for _ in range(50):
            await call_echo(conn)
        samples = []
        for _ in range(calls):
            start = time.perf_counter_ns()
            await call_echo(conn)
            samples.append((time.perf_counter_ns() - start) / 1e6)
        return statistics.median(samples)
    finally:
        await close_connections([conn])


async def throughput(url: str, token: str, concurrency: int, seconds: float, pids: dict[str, list[int]]) -> tuple:
    conns = [McpConnection(url, token) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    try:
        for conn in conns:
            await call_echo(conn)
        before = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
        start = time.perf_counter()
        deadline = start + seconds

        async def until(conn):
            n = 0
            while time.perf_counter() < deadline:
                await call_echo(conn)
                n += 1
            return n

        calls = sum(await asyncio.gather(*(until(c) for c in conns)))
        elapsed = time.perf_counter() - start
        after = {name: sum(cpu_seconds(p) for p in group) for name, group in pids.items()}
    finally:
        await close_connections(conns)
    return calls / elapsed, {name: (after[name] - before[name]) * 1000 / calls for name in before}


def cluster(opts) -> None:
    from deploy.cluster import start_cluster

    procs, tmp = Processes(), Path(tempfile.mkdtemp(prefix="portcullis-cluster-bench-"))
    scratch = None
    try:
        _, upstream_url = start_upstream(procs, tmp)
        redis_port = free_port()
        procs.start(["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                     "--appendonly", "no"], clean_env(), tmp / "redis.log", redis_port)
        if opts.sqlite:
            database_url = f"sqlite:///{tmp / 'db.sqlite3'}"
        else:
            scratch = scratch_postgres(opts.postgres_url, "portcullis_cluster_bench")
            database_url = scratch.__enter__()
        env = {**gateway_env(database_url, tmp), "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
        token = set_up(ROOT, env, "bench", ["--http", upstream_url], ECHO_POLICY)
        rows = []
        for k in (1, 2, 3):
            state = tmp / f"cluster-{k}"
            running = start_cluster(k, free_port(), state, {key: env[key] for key in (
                "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "PORTCULLIS_SECRETS_KEY", "LOG_LEVEL")})
            try:
                direct = f"http://127.0.0.1:{next(iter(running.gateways))}/mcp/bench/"
                pids = {"gateways": [p.pid for p in running.gateways.values()], "haproxy": [running.haproxy.pid],
                        "postgres": [] if opts.sqlite else postgres_pids()}
                p50_direct = asyncio.run(latency_p50(direct, token, opts.latency_calls))
                p50_lb = asyncio.run(latency_p50(running.url("bench"), token, opts.latency_calls))
                rate, cpu = asyncio.run(throughput(running.url("bench"), token, 16, opts.seconds, pids))
                rows.append((k, p50_direct, p50_lb, rate, cpu))
                say(f"{k} process(es): {rate:.0f} calls/s")
            finally:
                running.stop()
        print(f"\necho upstream over HTTP, policy + audit row per call, {'SQLite' if opts.sqlite else 'PostgreSQL'}"
              f" + Redis, HAProxy round-robin; c=16 for {opts.seconds:g} s; {os.cpu_count()} cores shared by all")
        print("| gateway processes | p50 c=1 direct | p50 c=1 via HAProxy | calls/s c=16 | CPU/call gateways | "
              "HAProxy | PostgreSQL |")
        print("|---|---|---|---|---|---|---|")
        for k, p50_direct, p50_lb, rate, cpu in rows:
            print(f"| {k} | {p50_direct:.2f} ms | {p50_lb:.2f} ms | {rate:.0f} | {cpu['gateways']:.2f} ms | "
                  f"{cpu['haproxy']:.2f} ms | {cpu['postgres']:.2f} ms |")
    finally:
        procs.stop_all()
        if scratch is not None:
            scratch.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("sessions")
    one.add_argument("--root", default=str(ROOT), help="the Portcullis checkout to measure (default: this one)")
    one.add_argument("--sessions", type=int, default=100)
    many = sub.add_parser("cluster")
    many.add_argument("--seconds", type=float, default=8)
    many.add_argument("--latency-calls", type=int, default=500)
    many.add_argument("--sqlite", action="store_true")
    many.add_argument("--postgres-url", default="postgres://portcullis:portcullis@127.0.0.1:5432/portcullis")
    opts = parser.parse_args(argv)
    assert ECHO_TEXT  # the echo tool's answer is checked on every call
    sessions(opts) if opts.what == "sessions" else cluster(opts)


if __name__ == "__main__":
    main()
