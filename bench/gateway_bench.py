"""What the gateway costs per tools/call: the same client against the same upstream, directly and through the
gateway (policy + counter + audit on), on SQLite and on PostgreSQL (issue 4, "Measure").

Run: .venv/bin/python -m bench [--quick] [--db sqlite|postgres|both] [--profile] [--postgres-url URL]

One run starts bench/echo_upstream.py (one tool, no I/O: whatever the gateway adds shows), then per
database prepares a scratch database with the management commands, starts the gateway the way `make serve`
does (`python -m config.serve`, access log included), and measures latency at concurrency 1 and throughput at
1, 4 and 16, direct and through the gateway, back to back. Everything it starts is stopped at the end, and
its scratch databases (a SQLite file in a temporary directory, `portcullis_bench` on PostgreSQL) are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.harness import (
    PY,
    ROOT,
    START_TIMEOUT_S,
    BenchError,
    Processes,
    clean_env,
    free_port,
    gateway_env,
    load_text,
    redacted,
    say,
    scratch_postgres,
    set_up_server,
    tail,
)

SLUG = "bench"
TOOL = "echo"
ECHO_TEXT = "portcullis-bench"
# A limit no run can reach, so the counter is reserved (and its row updated) on every single call.
POLICY = {"version": "1", "default": "deny", "tools": {TOOL: {"limits": [
    {"counter": "bench_echo", "window": "day", "max": 1_000_000_000, "scope": "grant"}]}}}
DEFAULT_POSTGRES_URL = "postgres://portcullis:portcullis@127.0.0.1:5432/portcullis"
BENCH_POSTGRES_DB = "portcullis_bench"
SQLITE_NOTE = "WAL with synchronous=NORMAL (config/env.py): a commit does not wait for the disk"

TARGET_ADDED_P50_MS = 2.0
TARGET_ADDED_P99_MS = 10.0
TARGET_RATIO_C16 = 0.5
CONCURRENCIES = (1, 4, 16)

CALL_TIMEOUT_S = 30  # one HTTP exchange; a gateway that stalls fails the run instead of hanging it
WARMUP_PER_CONNECTION = 20


@dataclass(frozen=True)
class Plan:
    latency_calls: int
    warmup_calls: int
    seconds: float


FULL_PLAN = Plan(latency_calls=2000, warmup_calls=300, seconds=10.0)
QUICK_PLAN = Plan(latency_calls=300, warmup_calls=50, seconds=2.0)


# --- the load client: raw asyncio HTTP/1.1, keep-alive, one session-era MCP session per connection ---

@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


STATELESS_VERSION = "2026-07-28"
STATELESS_META = {"io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
                  "io.modelcontextprotocol/clientInfo": {"name": "portcullis-bench", "version": "1"},
                  "io.modelcontextprotocol/clientCapabilities": {}}


class McpConnection:
    """One keep-alive connection carrying one session-era MCP session, or (era "stateless") self-contained
    2026-07-28 requests: each carries the `_meta` envelope and the routing headers, no session.

    Raw asyncio streams rather than an HTTP library: the client shares two cores with the upstream and the
    gateway, so every microsecond it spends is taken from what it measures, and it must cost the same for both.
    """

    def __init__(self, url: str, token: str | None = None, era: str = "session") -> None:
        self.era = era
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
        self.token = token
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.reconnects = 0
        self._next_id = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        await self._connect()
        if self.era == "stateless":
            self.protocol_version = STATELESS_VERSION
            return
        answer, message = await self._rpc("initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "portcullis-bench", "version": "1"}})
        self.session_id = answer.headers.get("mcp-session-id")
        if not self.session_id:
            raise BenchError(f"{self.path}: initialize answered without an Mcp-Session-Id")
        self.protocol_version = message["result"]["protocolVersion"]
        await self._exchange("POST", _json_bytes({"jsonrpc": "2.0", "method": "notifications/initialized"}))

    async def call_tool(self, name: str, arguments: dict) -> dict:
        params = {"name": name, "arguments": arguments}
        if self.era == "stateless":
            params["_meta"] = STATELESS_META
        _, message = await self._rpc("tools/call", params, name)
        if "result" not in message:
            raise BenchError(f"tools/call {name}: JSON-RPC error {message.get('error')}")
        return message["result"]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.session_id:
                await self._exchange("DELETE", b"")  # ends the session (and, at the gateway, its upstream link)
        await self._disconnect()

    async def _rpc(self, method: str, params: dict, name: str | None = None) -> tuple[HttpAnswer, dict]:
        self._next_id += 1
        request_id = self._next_id
        routing = (method, name) if self.era == "stateless" else None
        answer = await self._exchange("POST", _json_bytes(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}), routing)
        if answer.status != 200:
            raise BenchError(f"{method} to {self.path}: HTTP {answer.status}: {answer.body[:300]!r}")
        return answer, _answer_message(answer, request_id)

    async def _exchange(self, method: str, body: bytes, routing: tuple | None = None) -> HttpAnswer:
        if self._writer is None or self._writer.is_closing():
            self.reconnects += 1
            await self._connect()
        async with asyncio.timeout(CALL_TIMEOUT_S):
            self._writer.write(self._head(method, len(body), routing) + body)
            answer = await _read_answer(self._reader)
        if answer.headers.get("connection", "").lower() == "close":
            await self._disconnect()
        return answer

    def _head(self, method: str, length: int, routing: tuple | None = None) -> bytes:
        lines = [f"{method} {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "Accept: application/json, text/event-stream", "Content-Type: application/json",
                 f"Content-Length: {length}"]
        if routing is not None:
            lines.append(f"Mcp-Method: {routing[0]}")
            if routing[1] is not None:
                lines.append(f"Mcp-Name: {routing[1]}")
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        if self.session_id:
            lines.append(f"Mcp-Session-Id: {self.session_id}")
        if self.protocol_version:
            lines.append(f"MCP-Protocol-Version: {self.protocol_version}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _connect(self) -> None:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 2)
        self._reader = self._writer = None


def _json_bytes(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


async def _read_answer(reader: asyncio.StreamReader) -> HttpAnswer:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    elif status in (202, 204, 304):
        body = b""
    else:
        body = await reader.read()  # no framing: the body ends with the connection
        headers["connection"] = "close"
    return HttpAnswer(status, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the blank line
                pass
            return b"".join(chunks)
        chunks.append((await reader.readexactly(size + 2))[:-2])


def _answer_message(answer: HttpAnswer, request_id: int) -> dict:
    """The JSON-RPC answer to `request_id`, from a JSON body or an SSE stream (progress etc. may come first)."""
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        for message in _sse_messages(answer.body):
            if message.get("id") == request_id:
                return message
        raise BenchError(f"SSE answer without a message for id {request_id}: {answer.body[:300]!r}")
    return json.loads(answer.body)


def _sse_messages(body: bytes):
    for event in re.split(r"\r?\n\r?\n", body.decode()):
        data = [line[5:].removeprefix(" ") for line in event.splitlines() if line.startswith("data:")]
        if data:
            yield json.loads("\n".join(data))


# --- measurements ---

@dataclass
class Endpoint:
    """Where the client sends its calls, and which processes' CPU time to read around a run."""

    url: str
    token: str | None
    pids: dict[str, int]
    era: str = "session"  # or "stateless" (2026-07-28)


@dataclass
class Throughput:
    calls: int
    seconds: float
    cpu_ms_per_call: dict[str, float]  # process label → CPU ms per call, incl. "client"

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


@dataclass
class SideResult:
    latencies_ms: list[float]
    throughput: dict[int, Throughput] = field(default_factory=dict)
    reconnects: int = 0

    def percentile(self, q: int) -> float:
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


async def call_echo(conn: McpConnection) -> None:
    result = await conn.call_tool(TOOL, {"text": ECHO_TEXT})
    content = result.get("content") or [{}]
    if result.get("isError") or content[0].get("text") != ECHO_TEXT:
        raise BenchError(f"the call did not go through unchanged: {json.dumps(result)[:300]}")


async def open_connections(endpoint: Endpoint, count: int) -> list[McpConnection]:
    conns = [McpConnection(endpoint.url, endpoint.token, endpoint.era) for _ in range(count)]
    await asyncio.gather(*(conn.open() for conn in conns))
    return conns


async def close_connections(conns: list[McpConnection]) -> None:
    await asyncio.gather(*(conn.close() for conn in conns), return_exceptions=True)


async def measure_latency(endpoint: Endpoint, plan: Plan) -> tuple[list[float], int]:
    (conn,) = await open_connections(endpoint, 1)
    try:
        for _ in range(plan.warmup_calls):
            await call_echo(conn)
        latencies = []
        for _ in range(plan.latency_calls):
            start = time.perf_counter_ns()
            await call_echo(conn)
            latencies.append((time.perf_counter_ns() - start) / 1e6)
        return latencies, conn.reconnects
    finally:
        await close_connections([conn])


async def measure_throughput(endpoint: Endpoint, concurrency: int, seconds: float,
                             around=contextlib.nullcontext) -> tuple[Throughput, int]:
    """Calls per second over `seconds`; `around()` wraps the timed window only (after warm-up, before close)."""
    conns = await open_connections(endpoint, concurrency)
    try:
        await asyncio.gather(*(_calls(conn, WARMUP_PER_CONNECTION) for conn in conns))
        with around():
            cpu_before = _cpu_snapshot(endpoint.pids)
            start = time.perf_counter()
            deadline = start + seconds
            counts = await asyncio.gather(*(_calls_until(conn, deadline) for conn in conns))
            elapsed = time.perf_counter() - start
            cpu_after = _cpu_snapshot(endpoint.pids)
    finally:
        await close_connections(conns)
    calls = sum(counts)
    cpu = {name: (cpu_after[name] - cpu_before[name]) * 1000 / calls for name in cpu_before
           if cpu_before[name] is not None and cpu_after[name] is not None}
    return Throughput(calls, elapsed, cpu), sum(conn.reconnects for conn in conns)


async def _calls(conn: McpConnection, count: int) -> None:
    for _ in range(count):
        await call_echo(conn)


async def _calls_until(conn: McpConnection, deadline: float) -> int:
    done = 0
    while time.perf_counter() < deadline:
        await call_echo(conn)
        done += 1
    return done


async def measure_side(endpoint: Endpoint, plan: Plan) -> SideResult:
    latencies, reconnects = await measure_latency(endpoint, plan)
    side = SideResult(latencies, reconnects=reconnects)
    for concurrency in CONCURRENCIES:
        side.throughput[concurrency], extra = await measure_throughput(endpoint, concurrency, plan.seconds)
        side.reconnects += extra
    return side


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (the steadier figure on a shared machine)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_snapshot(pids: dict[str, int]) -> dict[str, float | None]:
    snapshot = {name: _cpu_or_none(pid) for name, pid in pids.items()}
    snapshot["client"] = time.process_time()
    return snapshot


def _cpu_or_none(pid: int) -> float | None:
    try:
        return cpu_seconds(pid)
    except FileNotFoundError:  # a process that ended (a PostgreSQL worker between two snapshots): not counted
        return None


# --- processes: the upstream and the gateway ---

def start_upstream(procs: Processes, tmp: Path, extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = procs.start([PY, "-m", "bench.echo_upstream", "--port", str(port), *extra], clean_env(),
                       tmp / "upstream.log", port)
    return proc, f"http://127.0.0.1:{port}/mcp"


def upstream_posts(upstream_url: str) -> dict[str, int]:
    stats_url = upstream_url.rsplit("/", 1)[0] + "/stats"
    with urllib.request.urlopen(stats_url, timeout=5) as answer:  # noqa: S310 - our own local upstream
        return json.load(answer)["posts_by_protocol_version"]


PROFILED_LAUNCHER = ("import sys; from bench.gateway_bench import serve_profiled; "
                     "serve_profiled(sys.argv[1], sys.argv[2:])")


def start_gateway(procs: Processes, env: dict, log_path: Path, profile_to: Path | None = None) -> tuple:
    port = free_port()
    serve_args = ["-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
    if profile_to is None:
        argv = [PY, "-m", "config.serve", *serve_args]
    else:
        argv = [PY, "-c", PROFILED_LAUNCHER, str(profile_to), *serve_args]
    proc = procs.start(argv, env, log_path, port)
    return proc, f"http://127.0.0.1:{port}/mcp/{SLUG}/"


# --- scratch databases ---

def prepare_database(env: dict, upstream_url: str) -> str:
    """The upstream, its catalogue, the policy (allow + a limit) and a grant; returns the grant token."""
    return set_up_server(env, SLUG, upstream_url, POLICY)


def durable_commit_note(url: str, rounds: int = 50) -> str:
    """What one committed write costs on this PostgreSQL (the gateway commits several per call)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        setting = conn.execute("SHOW synchronous_commit").fetchone()[0]
        conn.execute("CREATE TABLE bench_commit_probe (n integer)")
        start = time.perf_counter()
        for n in range(rounds):
            conn.execute("INSERT INTO bench_commit_probe VALUES (%s)", [n])
        ms = (time.perf_counter() - start) * 1000 / rounds
        conn.execute("DROP TABLE bench_commit_probe")
    return f"one INSERT + COMMIT costs {ms:.2f} ms on this PostgreSQL (synchronous_commit={setting})"


# --- one database: prepare, start the gateway, measure direct and through it ---

@dataclass
class DbResult:
    label: str
    direct: SideResult
    gateway: SideResult
    upstream_posts: dict[str, int]
    note: str = ""
    profile: str = ""


async def bench_database(label: str, database_url: str, note: str, upstream: tuple, opts, procs: Processes,
                         tmp: Path) -> DbResult:
    upstream_proc, upstream_url = upstream
    state_dir = tmp / f"state-{label.lower()}"
    env = gateway_env(database_url, state_dir)
    say(f"[{label}] scratch database {redacted(database_url)}: migrate, register, refresh, policy, grant")
    token = prepare_database(env, upstream_url)  # blocking is fine: nothing else runs yet
    gateway_proc, gateway_url = start_gateway(procs, env, tmp / f"gateway-{label.lower()}.log")
    pids = {"gateway": gateway_proc.pid, "upstream": upstream_proc.pid}
    say(f"[{label}] direct: {upstream_url}")
    direct = await measure_side(Endpoint(upstream_url, None, pids, opts.era), opts.plan)
    before = upstream_posts(upstream_url)
    say(f"[{label}] through the gateway: {gateway_url}")
    through = await measure_side(Endpoint(gateway_url, token, pids, opts.era), opts.plan)
    seen = _difference(upstream_posts(upstream_url), before)
    procs.stop(gateway_proc)
    result = DbResult(label, direct, through, seen, note)
    if opts.profile:
        cpu_ms = through.throughput[CONCURRENCIES[-1]].cpu_ms_per_call["gateway"]
        result.profile = await profile_gateway(label, env, token, opts.plan, cpu_ms, procs, tmp,
                                               opts.save_profile, opts.era)
    return result


def _difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n - before.get(k, 0)}


# --- profiling the gateway ---

def serve_profiled(out_path: str, serve_argv: list[str]) -> None:
    """Run config.serve with cProfile in every thread from SIGUSR1 to SIGUSR2, which writes the stats.

    Not `python -m cProfile`: it profiles the main thread only, from start-up on, while the database work runs
    in sync_to_async's worker thread, and start-up and session set-up are not what a call costs. The timer is
    each thread's CPU clock: wall time would charge the event loop's idle waits, and the waits of one thread
    for the GIL the other holds, as if they were work.
    """
    recorder = _ThreadProfiles()
    threading.setprofile(recorder.hook)
    signal.signal(signal.SIGUSR1, lambda *_: recorder.start())
    signal.signal(signal.SIGUSR2, lambda *_: recorder.dump(out_path))
    from config import serve

    serve.main(serve_argv)


class _ThreadProfiles:
    def __init__(self) -> None:
        self.started = False
        self.main = cProfile.Profile(time.thread_time)
        self.others: list[cProfile.Profile] = []

    def start(self) -> None:  # a signal handler: runs in the main thread
        self.started = True
        self.main.enable()

    def hook(self, *_args) -> None:
        """Every other thread's profile function until profiling starts; then it hands over to its own cProfile."""
        if self.started:
            sys.setprofile(None)
            profiler = cProfile.Profile(time.thread_time)
            self.others.append(profiler)
            profiler.enable()

    def dump(self, out_path: str) -> None:
        self.main.disable()
        stats = pstats.Stats(self.main)
        for profiler in self.others:
            stats.add(_Snapshot(profiler))
        stats.dump_stats(out_path + ".part")
        os.replace(out_path + ".part", out_path)  # the bench waits for the complete file


class _Snapshot:
    """A thread's profiler read from the main thread without disabling it (only its own thread can)."""

    def __init__(self, profiler: cProfile.Profile) -> None:
        profiler.snapshot_stats()
        self.stats = profiler.stats

    def create_stats(self) -> None:
        pass


@contextlib.contextmanager
def profiling(proc: subprocess.Popen, out: Path):
    os.kill(proc.pid, signal.SIGUSR1)
    time.sleep(0.2)  # the gateway's main thread runs the handler at its next wake-up
    yield
    os.kill(proc.pid, signal.SIGUSR2)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # writing the stats takes a moment; bounded by the deadline


async def profile_gateway(label: str, env: dict, token: str, plan: Plan, cpu_ms_per_call: float,
                          procs: Processes, tmp: Path, save_to: str | None = None, era: str = "session") -> str:
    out = tmp / f"gateway-{label.lower()}.prof"
    log_path = tmp / f"gateway-{label.lower()}-profiled.log"
    proc, url = start_gateway(procs, env, log_path, profile_to=out)
    concurrency = CONCURRENCIES[-1]
    say(f"[{label}] profiling the gateway: {plan.seconds:.0f} s at concurrency {concurrency}")
    run, _ = await measure_throughput(Endpoint(url, token, {"gateway": proc.pid}, era), concurrency,
                                      plan.seconds, around=lambda: profiling(proc, out))
    procs.stop(proc)
    if not out.exists():
        return f"(no profile written; gateway log:\n{tail(log_path)})"
    if save_to:
        shutil.copyfile(out, f"{save_to}-{label.lower()}.prof")
    return profile_report(pstats.Stats(str(out)), run.calls, cpu_ms_per_call)


# Where a function's own CPU time goes: first match on its file path (or a builtin's name) wins.
LAYERS = (
    ("SQL driver: sqlite3 / psycopg execute, fetch, commit", ("sqlite3.", "SQLiteCursorWrapper", "/psycopg/",
                                                              "psycopg_binary", "psycopg_c", "wait_c")),
    ("Django ORM: query building, model instances", ("/django/db/",)),
    ("Django other (utils, settings, signals)", ("/django/",)),
    ("thread hop: sync_to_async, futures, locks", ("/asgiref/", "/concurrent/futures/", "/threading.py",
                                                   "/queue.py", "'acquire' of '_thread", "_queue.SimpleQueue")),
    ("upstream client: mcp SDK, httpx2, anyio", ("/mcp/", "/mcp_types/", "/httpx2/", "/httpcore", "/anyio/",
                                                 "/h11/", "/sniffio/", "/httpx_sse/", "_ssl.")),
    ("pydantic (SDK models)", ("/pydantic", "pydantic_core")),
    ("daphne / Twisted / Channels: HTTP server", ("/daphne/", "/twisted/", "/channels/", "/autobahn/",
                                                  "/txaio/", "/zope/")),
    ("socket syscalls (send, recv)", ("of '_socket.socket' objects",)),
    ("asyncio event loop (incl. epoll)", ("/asyncio/", "/selectors.py", "_asyncio", "_contextvars",
                                          "'run' of 'Context'", "select.epoll")),
    ("gateway code: endpoint, relay, calls, policy", ("/gateway/", "/config/")),
    ("crypto: Fernet, HMAC, hashes", ("/cryptography/", "/hmac.py", "_hashlib", "/hashlib.py", "/base64.py",
                                      "binascii", "_hmac", "openssl")),
    ("JSON", ("/json/", "_json")),
    ("logging and access log", ("/logging/", "'write' of", "'flush' of")),
)
# The gateway's own steps (file suffix, function, what it is), by cumulative CPU time.
KEY_STEPS = (
    ("hops.py", "load_and_authorise", "hops.load_and_authorise: server + grant, every request (DB thread)"),
    ("admission.py", "admit", "calls.admit: auth, tool, policy, counter, audit row (DB thread)"),
    ("grants.py", "authenticate", "  grants.authenticate (in both of the above)"),
    ("models.py", "active_policy", "  Server.active_policy: which policy version applies"),
    ("ratelimit.py", "reserve", "  ratelimit.reserve: counter upsert + commit"),
    ("audit.py", "open_row", "  audit.open_row: audit insert + commit"),
    ("admission.py", "settle", "calls.settle: close the audit row + commit (DB thread)"),
    ("vault.py", "unseal", "vault.unseal: decrypt the server's env/headers (Fernet)"),
)


def layer_of(key: tuple) -> str:
    filename, _line, name = key
    where = name if filename == "~" else filename
    for layer, needles in LAYERS:
        if any(needle in where for needle in needles):
            return layer
    return "other"


def own_time_by_layer(stats: pstats.Stats) -> dict[str, float]:
    """Seconds of own CPU time per layer. A generic helper (builtins, copy, inspect, contextlib: whatever
    matches no layer) is charged to the layers of its callers, in proportion to the time each spent in it."""
    per_layer: dict[str, float] = {}
    for key, row in stats.stats.items():
        _charge(stats, key, row[2], per_layer, depth=0)
    return per_layer


def _charge(stats: pstats.Stats, key: tuple, seconds: float, per_layer: dict[str, float], depth: int) -> None:
    layer = layer_of(key)
    callers = stats.stats[key][4] if key in stats.stats else {}
    weights = {caller: edge[3] for caller, edge in callers.items()}
    total = sum(weights.values())
    if layer != "other" or depth == 3 or total <= 0:
        per_layer[layer] = per_layer.get(layer, 0.0) + seconds
        return
    for caller, weight in weights.items():
        _charge(stats, caller, seconds * weight / total, per_layer, depth + 1)


def profile_report(stats: pstats.Stats, calls: int, cpu_ms_per_call: float) -> str:
    lines = [f"profiled: {calls} calls at c={CONCURRENCIES[-1]}; CPU time (not wall time) of every thread of the "
             "gateway, from after the warm-up to the end of the run; cProfile slows the gateway several times, "
             "so read shares, not absolute times", "",
             "top 25 by cumulative CPU time (all threads merged):", _printed(stats, "cumulative", 25), "",
             "top 15 by own CPU time:", _printed(stats, "tottime", 15), "",
             f"where the gateway's CPU goes, per layer (own time; generic helpers charged to their callers; "
             f"ms = share × the {cpu_ms_per_call:.2f} ms of CPU per call measured without the profiler):"]
    lines += _layer_lines(own_time_by_layer(stats), cpu_ms_per_call)
    lines += ["", "the gateway's database-thread steps (cumulative CPU, same scale):"]
    lines += _step_lines(stats, calls, cpu_ms_per_call)
    return "\n".join(lines)


def _printed(stats: pstats.Stats, order: str, count: int) -> str:
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats(order).print_stats(count)
    text = out.getvalue().split("\n")
    start = next((i for i, line in enumerate(text) if "ncalls" in line), 0)
    trimmed = (line.replace(str(ROOT) + "/", "").replace(sys.prefix + "/lib/", "")
               .replace(sys.base_prefix + "/lib/", "") for line in text[start:] if line.strip())
    return "\n".join(trimmed)


def _layer_lines(per_layer: dict[str, float], cpu_ms_per_call: float) -> list[str]:
    total = sum(per_layer.values()) or 1.0
    return [f"  {t * 100 / total:5.1f} %  ≈{t / total * cpu_ms_per_call:5.2f} ms  {layer}"
            for layer, t in sorted(per_layer.items(), key=lambda item: -item[1])]


def _step_lines(stats: pstats.Stats, calls: int, cpu_ms_per_call: float) -> list[str]:
    total = sum(v[2] for v in stats.stats.values()) or 1.0
    lines = []
    for suffix, name, label in KEY_STEPS:
        rows = [v for (f, _l, n), v in stats.stats.items() if f.endswith(suffix) and n == name]
        if rows:
            share, count = sum(v[3] for v in rows) / total, sum(v[1] for v in rows)
            ms = share * cpu_ms_per_call
            lines.append(f"  {share * 100:5.1f} %  ≈{ms:5.2f} ms  {count / calls:4.1f}×/call  {label}")
    return lines


# --- the report ---

def print_report(results: list[DbResult], opts, upstream_url: str, load_before: tuple) -> None:
    print(f"\nPortcullis gateway bench: python -m bench {' '.join(opts.argv)}".rstrip())
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; load average "
          f"{load_text(load_before)} before the run, {load_text(os.getloadavg())} after (others' work skews latencies; "
          "CPU per call is the steadier figure)")
    print(f"upstream: bench/echo_upstream.py (mcp low-level Server on uvicorn, SSE answers) at {upstream_url}")
    print(f"client: raw asyncio HTTP/1.1 keep-alive, session era, one MCP session per connection; "
          f"latency {opts.plan.latency_calls} calls after {opts.plan.warmup_calls} warm-up, "
          f"throughput {opts.plan.seconds:.0f} s per concurrency")
    print("gateway: python -m config.serve (daphne, access log on), policy allows echo with a per-grant "
          "daily limit (counter reserved on every call) and audit row per call")
    for result in results:
        _print_db(result)
    _print_targets(results)
    for result in results:
        if result.profile:
            print(f"\n=== profile of the gateway on {result.label} ===\n{result.profile}")


def _print_db(result: DbResult) -> None:
    d, g = result.direct, result.gateway
    print(f"\n=== {result.label} ===")
    if result.note:
        print(result.note)
    print(f"{'metric':34} {'direct':>10} {'gateway':>10} {'added / ratio':>15}")
    for q in (50, 99):
        dq, gq = d.percentile(q), g.percentile(q)
        print(f"{f'tools/call p{q} at c=1 (ms)':34} {dq:10.2f} {gq:10.2f} {gq - dq:+14.2f}ms")
    added, cpu = g.percentile(50) - d.percentile(50), g.throughput[1].cpu_ms_per_call["gateway"]
    print(f"  of the added p50: ≈{cpu:.2f} ms is the gateway's CPU per call (c=1), ≈{added - cpu:.2f} ms is waiting "
          "(database round trips and commits, thread hops, the GIL)")
    for c in CONCURRENCIES:
        dr, gr = d.throughput[c].rate, g.throughput[c].rate
        print(f"{f'throughput at c={c} (calls/s)':34} {dr:10.0f} {gr:10.0f} {gr / dr:14.0%}")
    print("CPU per call (ms), during the throughput runs:")
    for c in CONCURRENCIES:
        dc, gc = d.throughput[c].cpu_ms_per_call, g.throughput[c].cpu_ms_per_call
        print(f"  c={c:<3} gateway {gc['gateway']:5.2f} | upstream {dc['upstream']:5.2f} direct, "
              f"{gc['upstream']:5.2f} via gateway | client {dc['client']:5.2f} direct, {gc['client']:5.2f} via gateway")
    era = ", ".join(f"{n} POSTs with MCP-Protocol-Version {v}" for v, n in result.upstream_posts.items())
    print(f"upstream saw, during the gateway runs: {era}")
    if d.reconnects or g.reconnects:
        print(f"note: the client had to reconnect {d.reconnects} (direct) / {g.reconnects} (gateway) times")


def _print_targets(results: list[DbResult]) -> None:
    print("\n=== targets (issue 4) ===")
    print(f"{'target':44}" + "".join(f" {r.label:>18}" for r in results))
    rows = (
        (f"gateway adds < {TARGET_ADDED_P50_MS:g} ms p50 at c=1", lambda r: _added(r, 50), TARGET_ADDED_P50_MS, "ms"),
        (f"gateway adds < {TARGET_ADDED_P99_MS:g} ms p99 at c=1", lambda r: _added(r, 99), TARGET_ADDED_P99_MS, "ms"),
        (f"keeps ≥ {TARGET_RATIO_C16:.0%} of direct throughput at c=16", _ratio_c16, TARGET_RATIO_C16, "%"),
    )
    missed = False
    for label, value_of, target, unit in rows:
        cells = []
        for result in results:
            value = value_of(result)
            ok = value >= target if unit == "%" else value < target
            missed |= not ok
            shown = f"{value:.0%}" if unit == "%" else f"+{value:.2f} ms"
            cells.append(f"{shown} {'PASS' if ok else 'MISS'}")
        print(f"{label:44}" + "".join(f" {cell:>18}" for cell in cells))
    if missed and not any(r.profile for r in results):
        print("a target is missed: run `python -m bench --profile` to see where the gateway's time goes")


def _added(result: DbResult, q: int) -> float:
    return result.gateway.percentile(q) - result.direct.percentile(q)


def _ratio_c16(result: DbResult) -> float:
    c = CONCURRENCIES[-1]
    return result.gateway.throughput[c].rate / result.direct.throughput[c].rate


# --- entry point ---

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and 2 s runs: a smoke run")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--save-profile", metavar="PREFIX",
                        help="with --profile: keep the raw cProfile stats as PREFIX-<database>.prof (for pstats)")
    parser.add_argument("--era", choices=("session", "stateless"), default="session",
                        help="the load client's protocol era (stateless: 2026-07-28 requests, no session)")
    parser.add_argument("--profile", action="store_true",
                        help="then run the gateway under cProfile (all threads) at c=16 and summarise per layer")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help=f"a PostgreSQL server and a role that may create databases (default "
                             f"{DEFAULT_POSTGRES_URL}); the bench creates and drops {BENCH_POSTGRES_DB} there")
    opts = parser.parse_args(argv)
    opts.argv = sys.argv[1:] if argv is None else argv
    opts.plan = QUICK_PLAN if opts.quick else FULL_PLAN
    return opts


async def run(opts, procs: Processes, tmp: Path) -> None:
    load_before = os.getloadavg()
    upstream = start_upstream(procs, tmp)
    say(f"upstream: bench/echo_upstream.py at {upstream[1]} (pid {upstream[0].pid})")
    results: list[DbResult] = []
    try:
        if opts.db in ("sqlite", "both"):
            url = f"sqlite:///{tmp / 'bench.sqlite3'}"
            results.append(await bench_database("SQLite", url, SQLITE_NOTE, upstream, opts, procs, tmp))
        if opts.db in ("postgres", "both"):
            with scratch_postgres(opts.postgres_url, BENCH_POSTGRES_DB) as url:
                note = durable_commit_note(url)
                results.append(await bench_database("PostgreSQL", url, note, upstream, opts, procs, tmp))
    finally:
        if results:  # what was measured is shown even when a later part fails
            print_report(results, opts, upstream[1], load_before)


def _interrupt(signum, frame) -> None:
    # A TERM (CI timeout, kill) unwinds like Ctrl-C, so the processes and databases get cleaned up.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="portcullis-bench-") as tmp_name:
        try:
            asyncio.run(run(opts, procs, Path(tmp_name)))
        except BenchError as exc:
            print(f"bench failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("bench interrupted: stopping what it started", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
