"""Time from a person's Approve to the upstream receiving the held call, within one gateway process and across
two (issue 6, "Measure"; target: under 1 s p99 across processes).

Run: .venv/bin/python -m bench.approval_bench [--rounds N] [--db sqlite|postgres]

One run starts its own redis-server (the channel layer), one TrueNAS simulator over HTTP (shared by every
upstream session, so its own call log sees every call) and two gateways, A and B, on one scratch database.
Each round an agent session on A calls dataset_create with a new name and is held; once the approval is
pending, a signed-in staff session POSTs Approve to A's dashboard (within one process) or to B's (across two),
alternating. t0 is the bench's clock just before that POST; t1 is the simulator's own receive time for that
dataset name. Everything it starts is stopped, its temporary directory and scratch database removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx2

from bench.gateway_bench import McpConnection
from bench.harness import (
    PY,
    BenchError,
    Processes,
    free_port,
    gateway_env,
    load_text,
    manage,
    redacted,
    say,
    scratch_postgres,
    set_up_server,
    tail,
)

SLUG = "truenas"
TOOL = "dataset_create"
POLICY = {"version": "1", "default": "deny", "risk": {"read": {}}, "tools": {TOOL: {"action": "approve"}}}
HOLD_S = 50  # the gateway's hold window; every round decides long before it ends
OPERATOR, OPERATOR_PASSWORD = "bench-operator", "bench-operator-password-1"
DEFAULT_POSTGRES_URL = "postgres://portcullis:portcullis@127.0.0.1:5432/postgres"
BENCH_POSTGRES_DB = "portcullis_approval_bench"
CALLS_RESOURCE = "truenas://debug/calls"

TARGET_P99_ACROSS_S = 1.0
DEFAULT_ROUNDS = 40  # per mode
WARMUP_ROUNDS = 1  # per mode, not counted: the first session set-up and first queries on each side

PENDING_TIMEOUT_S = 20  # the held call's approval shows up as pending in the database
RESULT_TIMEOUT_S = 20  # after the decision, the held client gets its answer
UPSTREAM_LOG_TIMEOUT_S = 5  # after the answer, the simulator's log has the call (it logs before answering)
HTTP_TIMEOUT_S = 30

WITHIN, ACROSS = "within one process", "across two processes"


# --- the simulator's own view: which call arrived when ---

class SimulatorProbe(McpConnection):
    """A direct session-era MCP session to the simulator (not through the gateway) that reads its call log."""

    async def calls(self) -> list[dict]:
        _, message = await self._rpc("resources/read", {"uri": CALLS_RESOURCE})
        if "result" not in message:
            raise BenchError(f"resources/read {CALLS_RESOURCE}: JSON-RPC error {message.get('error')}")
        return json.loads(message["result"]["contents"][0]["text"])["recent"]


def parse_utc(stamp: str) -> float:
    """The simulator's ISO time ("…Z", from time.time()) as seconds since the epoch."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise BenchError(f"the simulator's call time {stamp!r} has no time zone")
    return moment.timestamp()


async def upstream_receive_time(probe: SimulatorProbe, dataset: str) -> float:
    """When the simulator ran dataset_create for `dataset`; exactly one successful run is expected."""
    deadline = time.monotonic() + UPSTREAM_LOG_TIMEOUT_S
    while True:
        runs = [entry for entry in await probe.calls() if entry["tool"] == TOOL
                and entry["arguments"].get("name") == dataset]
        if len(runs) > 1:
            raise BenchError(f"the simulator ran {TOOL} {dataset} {len(runs)} times: {runs}")
        if runs:
            if runs[0]["outcome"] != "ok":
                raise BenchError(f"the simulator ran {TOOL} {dataset} with outcome {runs[0]['outcome']!r}")
            return parse_utc(runs[0]["time"])
        if time.monotonic() > deadline:
            raise BenchError(f"the simulator's call log has no {TOOL} for {dataset} "
                             f"{UPSTREAM_LOG_TIMEOUT_S} s after the agent got its result")
        await asyncio.sleep(0.05)  # bounded by the deadline above


# --- the database: when is the round's approval pending ---

class ApprovalWatch:
    """Reads the gateway's Approval table directly (SQLite file or PostgreSQL), autocommit, one connection."""

    QUERY = ("SELECT public_id, arguments FROM gateway_approval "
             "WHERE tool_name = %s AND state = 'pending' ORDER BY id DESC LIMIT 20")

    def __init__(self, database_url: str) -> None:
        if database_url.startswith("sqlite:///"):
            self.conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None, timeout=10)
            self.query = self.QUERY.replace("%s", "?")
        else:
            import psycopg

            self.conn = psycopg.connect(database_url, autocommit=True, connect_timeout=10)
            self.query = self.QUERY

    def pending_id(self, dataset: str) -> str | None:
        for public_id, arguments in self.conn.execute(self.query, [TOOL]).fetchall():
            if isinstance(arguments, str):
                arguments = json.loads(arguments)
            if isinstance(arguments, dict) and arguments.get("name") == dataset:
                return public_id
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


async def wait_for_pending(watch: ApprovalWatch, dataset: str, held: asyncio.Task) -> str:
    deadline = time.monotonic() + PENDING_TIMEOUT_S
    while time.monotonic() < deadline:
        if held.done():  # answered without being held: the policy or the gateway is not what the bench expects
            result = held.result()
            raise BenchError(f"{TOOL} {dataset} was answered without waiting for approval: "
                             f"{json.dumps(result)[:300]}")
        public_id = watch.pending_id(dataset)
        if public_id:
            return public_id
        await asyncio.sleep(0.02)  # bounded by the deadline above
    raise BenchError(f"no pending approval for {TOOL} {dataset} within {PENDING_TIMEOUT_S} s")


# --- the person: a signed-in staff session on one gateway's dashboard ---

class Operator:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx2.AsyncClient(base_url=base, timeout=HTTP_TIMEOUT_S)  # one cookie jar per gateway

    async def sign_in(self) -> None:
        page = await self.http.get("/login/")
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if page.status_code != 200 or match is None:
            raise BenchError(f"GET {self.base}/login/: HTTP {page.status_code}, no CSRF token in the form")
        answer = await self.http.post("/login/", data={
            "username": OPERATOR, "password": OPERATOR_PASSWORD, "csrfmiddlewaretoken": match.group(1)})
        if answer.status_code != 302 or "sessionid" not in self.http.cookies:
            raise BenchError(f"signing in at {self.base}/login/ failed: HTTP {answer.status_code}")

    async def approve(self, public_id: str) -> None:
        """What the Approve button sends (htmx POST, CSRF token, the session cookie)."""
        answer = await self.http.post(
            f"/approvals/{public_id}/decide/", data={"decision": "approve", "reason": ""},
            headers={"X-CSRFToken": self.http.cookies["csrftoken"], "HX-Request": "true"})
        if answer.status_code != 200 or 'role="alert"' in answer.text:
            error = re.search(r'role="alert">([^<]*)<', answer.text)
            raise BenchError(f"Approve of {public_id} at {self.base}: HTTP {answer.status_code}"
                             f"{': ' + error.group(1) if error else ''}")

    async def close(self) -> None:
        await self.http.aclose()


# --- one round ---

@dataclass
class Round:
    mode: str
    dataset: str
    latency_s: float  # t1 (simulator received) - t0 (just before the Approve POST)
    post_s: float  # the Approve POST's own round trip


@dataclass
class Results:
    rounds: list[Round] = field(default_factory=list)

    def of(self, mode: str) -> list[float]:
        return [r.latency_s for r in self.rounds if r.mode == mode]

    def posts(self, mode: str) -> list[float]:
        return [r.post_s for r in self.rounds if r.mode == mode]


async def one_round(agent: McpConnection, operator: Operator, mode: str, dataset: str, watch: ApprovalWatch,
                    probe: SimulatorProbe) -> Round:
    held = asyncio.create_task(agent.call_tool(TOOL, {"name": dataset}))
    try:
        public_id = await wait_for_pending(watch, dataset, held)
        t0 = time.time()
        await operator.approve(public_id)
        post_s = time.time() - t0
        try:
            result = await asyncio.wait_for(asyncio.shield(held), RESULT_TIMEOUT_S)
        except TimeoutError:
            raise BenchError(f"the held {TOOL} {dataset} got no answer within {RESULT_TIMEOUT_S} s "
                             f"of the Approve ({mode})") from None
    finally:
        if not held.done():
            held.cancel()
            with contextlib.suppress(BaseException):
                await held
    texts = " ".join(c.get("text", "") for c in result.get("content") or [])
    if result.get("isError") or dataset not in texts:
        raise BenchError(f"the held {TOOL} {dataset} did not get the real result after Approve: {texts[:300]}")
    t1 = await upstream_receive_time(probe, dataset)
    return Round(mode, dataset, t1 - t0, post_s)


# --- processes and the scratch database ---

def start_redis(procs: Processes, tmp: Path) -> str:
    port = free_port()
    procs.start(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
                {k: v for k, v in os.environ.items() if k != "REDIS_URL"}, tmp / "redis.log", port)
    return f"redis://127.0.0.1:{port}/0"


def start_simulator(procs: Processes, tmp: Path) -> str:
    port = free_port()
    procs.start([PY, "-m", "truenas_sim", "--http", "--port", str(port)], dict(os.environ),
                tmp / "simulator.log", port)
    return f"http://127.0.0.1:{port}/mcp"


def start_gateway(procs: Processes, env: dict, port: int, log_path: Path) -> str:
    procs.start([PY, "-m", "config.serve", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
                env, log_path, port)
    return f"http://127.0.0.1:{port}"


def prepare_database(env: dict, simulator_url: str) -> str:
    """The simulator and its catalogue, the approve policy, a grant (its token) and a staff user."""
    token = set_up_server(env, SLUG, simulator_url, POLICY)
    manage({**env, "DJANGO_SUPERUSER_PASSWORD": OPERATOR_PASSWORD}, "createsuperuser", "--noinput",
           "--username", OPERATOR, "--email", "bench@example.invalid")
    return token


# --- the run ---

async def measure(opts, database_url: str, procs: Processes, tmp: Path) -> Results:
    redis_url = start_redis(procs, tmp)
    say(f"redis-server: {redis_url}")
    simulator_url = start_simulator(procs, tmp)
    say(f"simulator: {simulator_url}")
    port_a, port_b = free_port(), free_port()
    origins = ",".join(f"http://{host}:{port}" for port in (port_a, port_b) for host in ("127.0.0.1", "localhost"))
    env = {**gateway_env(database_url, tmp / "state"), "REDIS_URL": redis_url,
           "PORTCULLIS_APPROVAL_HOLD_S": str(HOLD_S), "PORTCULLIS_ALLOWED_ORIGINS": origins}
    say(f"scratch database {redacted(database_url)}: migrate, register, refresh, policy, grant, staff user")
    token = prepare_database(env, simulator_url)
    base_a = start_gateway(procs, env, port_a, tmp / "gateway-a.log")
    base_b = start_gateway(procs, env, port_b, tmp / "gateway-b.log")
    say(f"gateways: A {base_a} (the agent's), B {base_b}")

    agent = McpConnection(f"{base_a}/mcp/{SLUG}/", token)
    probe = SimulatorProbe(simulator_url)
    operators = {WITHIN: Operator(base_a), ACROSS: Operator(base_b)}
    watch = ApprovalWatch(database_url)
    results = Results()
    try:
        await _with_logs(_session_setup(agent, probe, operators), tmp)
        plan = [(i, mode) for i in range(WARMUP_ROUNDS + opts.rounds) for mode in (WITHIN, ACROSS)]
        run_id = os.urandom(3).hex()
        for n, (i, mode) in enumerate(plan):
            dataset = f"tank/bench-{run_id}-{n}"
            one = await _with_logs(one_round(agent, operators[mode], mode, dataset, watch, probe), tmp)
            if i >= WARMUP_ROUNDS:
                results.rounds.append(one)
            if (n + 1) % 20 == 0:
                say(f"  {n + 1}/{len(plan)} rounds")
    finally:
        watch.close()
        for operator in operators.values():
            await operator.close()
        await probe.close()
        await agent.close()
    return results


async def _session_setup(agent: McpConnection, probe: SimulatorProbe, operators: dict) -> None:
    await agent.open()
    await probe.open()
    for operator in operators.values():
        await operator.sign_in()


async def _with_logs(step, tmp: Path):
    """Run a step; if it fails, the error carries the end of both gateways' logs."""
    try:
        return await step
    except (BenchError, OSError, TimeoutError, httpx2.HTTPError) as exc:
        logs = "".join(f"\n--- end of {name} ---\n{tail(tmp / name, 1500)}"
                       for name in ("gateway-a.log", "gateway-b.log") if (tmp / name).exists())
        raise BenchError(f"{type(exc).__name__}: {exc}{logs}") from exc


def report(results: Results, opts, label: str, load_before: tuple) -> bool:
    print(f"\nPortcullis approval bench: python -m bench.approval_bench {' '.join(opts.argv)}".rstrip())
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; load average "
          f"{load_text(load_before)} before, {load_text(os.getloadavg())} after")
    print(f"database: {label}; channel layer: Redis (own redis-server); two gateways (python -m config.serve), "
          f"hold window {HOLD_S} s; upstream: one truenas_sim over HTTP")
    print("latency = the simulator's receive time of the held call - the bench's clock just before the Approve "
          "POST (same machine clock)")
    print(f"rounds: {opts.rounds} per mode, alternating, after {WARMUP_ROUNDS} warm-up round per mode; "
          "every held client got the real result\n")
    print(f"{'mode':24} {'n':>4} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'min ms':>9}   {'POST p50 ms':>11}")
    for mode in (WITHIN, ACROSS):
        values = [v * 1000 for v in results.of(mode)]
        posts = [v * 1000 for v in results.posts(mode)]
        print(f"{mode:24} {len(values):4} {_pct(values, 50):9.1f} {_pct(values, 99):9.1f} {max(values):9.1f} "
              f"{min(values):9.1f}   {_pct(posts, 50):11.1f}")
    p99 = _pct(results.of(ACROSS), 99)
    ok = p99 < TARGET_P99_ACROSS_S
    print(f"\ntarget (issue 6): across processes p99 < {TARGET_P99_ACROSS_S * 1000:.0f} ms: "
          f"{p99 * 1000:.1f} ms {'PASS' if ok else 'MISS'}")
    return ok


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def run(opts, procs: Processes, tmp: Path) -> bool:
    load_before = os.getloadavg()
    if opts.db == "sqlite":
        url = f"sqlite:///{tmp / 'approval-bench.sqlite3'}"
        return report(await measure(opts, url, procs, tmp), opts, "SQLite (scratch file, WAL)", load_before)
    with scratch_postgres(opts.postgres_url, BENCH_POSTGRES_DB) as url:
        try:
            results = await measure(opts, url, procs, tmp)
        finally:
            procs.stop_all()  # the gateways hold connections; stop them before the database is dropped
        return report(results, opts, f"PostgreSQL (scratch database {BENCH_POSTGRES_DB})", load_before)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.approval_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"measured rounds per mode (default {DEFAULT_ROUNDS})")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help=f"maintenance database of a server whose role may create databases (default "
                             f"{DEFAULT_POSTGRES_URL}); the bench creates and drops {BENCH_POSTGRES_DB} there")
    opts = parser.parse_args(argv)
    if opts.rounds < 1:
        parser.error("--rounds must be at least 1")
    opts.argv = sys.argv[1:] if argv is None else argv
    return opts


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # a TERM unwinds like Ctrl-C, so processes and databases get cleaned up


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="portcullis-approval-bench-") as tmp_name:
        try:
            ok = asyncio.run(run(opts, procs, Path(tmp_name)))
        except BenchError as exc:
            print(f"approval bench failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("approval bench interrupted: stopping what it started", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
