"""Rate limits across two real gateway processes sharing one database (SQLite or PostgreSQL).

Two daphne processes run on the same test database, each with its own upstream TrueNAS simulators (one per
agent session). Agents fire N = 5 × max concurrent tools/call requests split across both gateways: exactly
max pass in every trial, the rest are refused with the counter's text, the audit log agrees, and the
upstreams' own call counts (truenas://debug/calls, read through the gateway) prove that exactly max ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import sys
import time

import httpx2
import pytest
from django.core.management import call_command

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Call, Counter, Server
from tests.conftest import start_gateway, stop

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TOOL = "pool_list"  # cheap, read-only, no arguments: every admitted call succeeds upstream
SESSIONS_PER_GATEWAY = 2
CALL_TIMEOUT_S = 60
INIT_PARAMS = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "limits", "version": "1"}}


# The simulator counts the calls that reached it in a debug resource the tests read through the gateway.
DEBUG = {"truenas://debug/*": {}}


@pytest.fixture(scope="module")
def gateways(django_db_setup, django_db_blocker, tmp_path_factory):
    first = start_gateway(tmp_path_factory.mktemp("gateway-a"))
    try:
        second = start_gateway(tmp_path_factory.mktemp("gateway-b"))
    except BaseException:
        stop(first.proc)
        raise
    yield first, second
    stop(first.proc)
    stop(second.proc)


@pytest.fixture
def truenas(gateways):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport=Server.Transport.STDIO,
                                   command=[sys.executable, "-m", "truenas_sim"])
    call_command("refresh_tools", "truenas", stdout=io.StringIO())
    return server


def limit(counter: str, maximum: int) -> dict:
    return {"counter": counter, "window": "day", "max": maximum, "scope": "grant"}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


class Session:
    """One session-era agent session on one gateway, spoken to with raw JSON-RPC over httpx2."""

    def __init__(self, http: httpx2.AsyncClient, url: str, token: str, session_id: str | None = None) -> None:
        self.http, self.url, self.token = http, url, token
        self.session_id = session_id
        self._ids = itertools.count(1)

    def _headers(self) -> dict:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                   "Accept": "application/json, text/event-stream"}
        if self.session_id is not None:
            headers.update({"Mcp-Session-Id": self.session_id, "MCP-Protocol-Version": "2025-11-25"})
        return headers

    async def post(self, body: dict) -> httpx2.Response:
        return await self.http.post(self.url, content=json.dumps(body).encode(), headers=self._headers())

    async def open(self) -> Session:
        response = await self.post({"jsonrpc": "2.0", "id": next(self._ids), "method": "initialize",
                                    "params": INIT_PARAMS})
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        assert (await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202
        return self

    async def request(self, method: str, params: dict) -> dict:
        response = await self.post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})
        return response.json()

    async def call(self, name: str, arguments: dict | None = None, **extra) -> dict:
        return await self.request("tools/call", {"name": name, "arguments": arguments or {}, **extra})

    async def upstream_count(self, tool: str) -> int:
        """How many calls of `tool` this session's own upstream simulator says reached it."""
        reply = await self.request("resources/read", {"uri": "truenas://debug/calls"})
        return json.loads(reply["result"]["contents"][0]["text"])["counts"].get(tool, 0)

    async def close(self) -> None:
        await self.http.delete(self.url, headers=self._headers())


class SyncSession(Session):
    """The same, one request at a time, for tests that read the database between calls."""

    http: httpx2.Client

    def post(self, body: dict) -> httpx2.Response:  # type: ignore[override]
        return self.http.post(self.url, content=json.dumps(body).encode(), headers=self._headers())

    def open(self) -> SyncSession:  # type: ignore[override]
        response = self.post({"jsonrpc": "2.0", "id": next(self._ids), "method": "initialize", "params": INIT_PARAMS})
        assert response.status_code == 200, response.text
        self.session_id = response.headers["mcp-session-id"]
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
        return self

    def request(self, method: str, params: dict) -> dict:  # type: ignore[override]
        return self.post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}).json()

    def call(self, name: str, arguments: dict | None = None, **extra) -> dict:  # type: ignore[override]
        return self.request("tools/call", {"name": name, "arguments": arguments or {}, **extra})

    def upstream_count(self, tool: str) -> int:  # type: ignore[override]
        reply = self.request("resources/read", {"uri": "truenas://debug/calls"})
        return json.loads(reply["result"]["contents"][0]["text"])["counts"].get(tool, 0)

    def close(self) -> None:  # type: ignore[override]
        self.http.delete(self.url, headers=self._headers())


@contextlib.contextmanager
def one_session_on_each(gateways, token: str):
    with httpx2.Client(timeout=CALL_TIMEOUT_S) as http:
        sessions = [SyncSession(http, gw.url("truenas"), token).open() for gw in gateways]
        try:
            yield sessions
        finally:
            for session in sessions:
                session.close()


def http_client() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(timeout=CALL_TIMEOUT_S, limits=httpx2.Limits(max_connections=200))


async def open_sessions(http: httpx2.AsyncClient, gateways, token: str, per_gateway: int) -> list[Session]:
    """`per_gateway` sessions on each gateway, interleaved (a, b, a, b, ...), all opened at once."""
    sessions = [Session(http, gw.url("truenas"), token) for _ in range(per_gateway) for gw in gateways]
    await asyncio.gather(*(s.open() for s in sessions))
    return sessions


def text(reply: dict) -> str:
    return reply["result"]["content"][0]["text"]


def is_error(reply: dict) -> bool:
    return bool(reply["result"].get("isError"))


def counter_value(name: str) -> int | None:
    row = Counter.objects.filter(key__startswith=f"{name}|").first()
    return None if row is None else row.n


# --- N = 5 × max concurrent callers across two processes ---

TRIALS = 10


@pytest.mark.parametrize("maximum", [3, 7, 10], ids=["max-3", "max-7", "max-10"])
def test_it_admits_exactly_max_of_five_times_max_concurrent_calls_across_two_gateway_processes(
        gateways, truenas, maximum):
    token = create_grant(f"racer-{maximum}", [truenas], None).token
    policies.apply(truenas, {"version": "1", "default": "deny", "resources": DEBUG}, actor="test")
    opened = run(_open(gateways, token))  # [(url, session id)]: the sessions (and their upstreams) last all trials
    try:
        ran_before = sum(run(_upstream_counts(token, opened)))
        done, counters = 0, (f"{TOOL}_t{i}" for i in itertools.count())
        while done < TRIALS:
            ran_before, counted = _one_trial(truenas, token, opened, maximum, next(counters), ran_before)
            done += counted
    finally:
        run(_close(token, opened))


def _one_trial(server: Server, token: str, opened: list, maximum: int, counter: str,
               ran_before: int) -> tuple[int, bool]:
    # A fresh counter per trial, so each trial starts from zero.
    policies.apply(server, {"version": "1", "default": "deny", "tools": {TOOL: {"limits": [limit(counter, maximum)]}},
                    "resources": DEBUG},
                   actor="test")
    last_row = Call.objects.order_by("-id").values_list("id", flat=True).first() or 0
    n = 5 * maximum
    day = int(time.time()) // 86400
    replies = run(_fire(token, opened, n))
    ran = sum(run(_upstream_counts(token, opened)))
    if int(time.time()) // 86400 != day:
        return ran, False  # the daily window turned over (00:00 UTC) during the trial: it proves nothing; again

    admitted = [r for r in replies if not is_error(r)]
    refused = [r for r in replies if is_error(r)]
    assert len(admitted) == maximum, (counter, [text(r)[:80] for r in replies])
    prefix = f"rate limit {counter} exceeded: {maximum} per day, retry in "
    assert len(refused) == n - maximum and all(text(r).startswith(prefix) for r in refused), {text(r) for r in refused}
    # The upstreams' own count: exactly max more calls reached a simulator (each gateway process has one).
    assert ran - ran_before == maximum, (counter, ran_before, ran)
    rows = Call.objects.filter(id__gt=last_row, tool_name=TOOL)
    assert rows.count() == n
    assert rows.filter(decision="allow", outcome="ok").count() == maximum
    assert rows.filter(decision="deny", refusal="limit", outcome="refused").count() == n - maximum
    assert counter_value(counter) == maximum
    return ran, True


async def _open(gateways, token: str) -> list[tuple[str, str]]:
    async with http_client() as http:
        sessions = await open_sessions(http, gateways, token, SESSIONS_PER_GATEWAY)
    return [(s.url, s.session_id) for s in sessions]


async def _fire(token: str, opened: list, n: int) -> list[dict]:
    """n tools/call at once, dealt round-robin over the sessions (so alternately to each gateway)."""
    async with http_client() as http:
        sessions = [Session(http, url, token, sid) for url, sid in opened]
        return await asyncio.gather(*(sessions[i % len(sessions)].call(TOOL) for i in range(n)))


async def _upstream_counts(token: str, opened: list) -> list[int]:
    """Each gateway process's simulator's count: the sessions of one process share its one upstream session, so
    one session per process reads it."""
    one_per_process = dict(reversed(opened))  # url → a session id on that process
    async with http_client() as http:
        return await asyncio.gather(*(Session(http, url, token, sid).upstream_count(TOOL)
                                      for url, sid in one_per_process.items()))


async def _close(token: str, opened: list) -> None:
    async with http_client() as http:
        await asyncio.gather(*(Session(http, url, token, sid).close() for url, sid in opened))


# --- several counters: all or nothing ---

@pytest.mark.parametrize("full", ["tool-limit", "all-tools-limit"], ids=["tool-limit-full", "all-tools-limit-full"])
def test_a_call_refused_by_one_full_counter_consumes_none_of_its_other_counters(gateways, truenas, full):
    # pool_list counts against its own counter and against all_calls; system_info only against all_calls.
    tool_max, all_max = (2, 3) if full == "tool-limit" else (5, 2)
    policies.apply(truenas, {
        "version": "1", "default": "allow",
        "all_tools": {"limits": [limit("all_calls", all_max)]},
        "tools": {TOOL: {"limits": [limit("pool_list_daily", tool_max)]}},
    }, actor="test")
    new = create_grant("several-counters", [truenas], None)

    with one_session_on_each(gateways, new.token) as (a, b):
        if full == "tool-limit":
            assert not is_error(a.call(TOOL)) and not is_error(b.call(TOOL))  # pool_list_daily 2/2, all_calls 2/3
            refused = a.call(TOOL)
            assert text(refused).startswith("rate limit pool_list_daily exceeded: 2 per day, retry in ")
            assert (counter_value("pool_list_daily"), counter_value("all_calls")) == (2, 2)
            assert not is_error(b.call("system_info"))  # the refused call took no all_calls slot: one is left
            over = a.call("system_info")
            assert text(over).startswith("rate limit all_calls exceeded: 3 per day, retry in ")
            ran = 2
        else:
            assert not is_error(a.call("system_info")) and not is_error(b.call("system_info"))  # all_calls 2/2
            refused = b.call(TOOL)
            assert text(refused).startswith("rate limit all_calls exceeded: 2 per day, retry in ")
            # pool_list_daily is untouched: not counted, not even taken and rolled back into a row.
            assert (counter_value("pool_list_daily"), counter_value("all_calls")) == (None, 2)
            ran = 0
        assert a.upstream_count(TOOL) + b.upstream_count(TOOL) == ran
    refusals = Call.objects.filter(grant=new.grant, refusal="limit")
    assert refusals.count() == (2 if full == "tool-limit" else 1)


# --- giving a reservation back ---

def test_a_protocol_error_from_the_upstream_gives_the_reservation_back_and_a_tool_error_keeps_it(gateways, truenas):
    policies.apply(truenas, {"version": "1", "default": "deny", "resources": DEBUG,
                             "tools": {"pool_get": {"limits": [limit("pool_gets", 2)]}}}, actor="test")
    new = create_grant("give-back", [truenas], None)
    # The upstream's SDK validates a request before any tool runs: a log level it does not know, in a `_meta` key
    # the gateway relays as it is, is refused with -32602 Invalid params. A missing pool is the tool's own error
    # (isError: the tool ran).
    bad_params = {"_meta": {"io.modelcontextprotocol/logLevel": "loud"}}

    with one_session_on_each(gateways, new.token) as (a, b):
        tool_error = a.call("pool_get", {"id": 999})
        assert is_error(tool_error) and "404" in text(tool_error), tool_error
        assert counter_value("pool_gets") == 1  # the tool ran: the reservation is kept
        protocol_error = b.call("pool_get", {"id": 1}, **bad_params)
        assert protocol_error["error"]["code"] == -32602, protocol_error
        assert counter_value("pool_gets") == 1  # the tool did not run: the reservation came back
        assert not is_error(b.call("pool_get", {"id": 1}))
        over = a.call("pool_get", {"id": 1})
        assert text(over).startswith("rate limit pool_gets exceeded: 2 per day, retry in ")
        # The tool error and the success ran upstream; the protocol error never did.
        assert [a.upstream_count("pool_get"), b.upstream_count("pool_get")] == [1, 1]
    rows = list(Call.objects.filter(grant=new.grant, tool_name="pool_get").order_by("id")
                .values_list("outcome", "refusal"))
    assert rows == [("tool_error", ""), ("protocol_error", ""), ("ok", ""), ("refused", "limit")]
    assert counter_value("pool_gets") == 2


# --- found while writing these tests: a `_meta` that is not an object ---

@pytest.mark.parametrize("meta", [5, [], None, "x"], ids=["number", "array", "null", "string"])
def test_a_call_whose_meta_is_not_an_object_is_refused_as_invalid_params_and_consumes_nothing(gateways, truenas, meta):
    # Today it passes admission (audit row, counter reserved), then the upstream link cannot stamp its envelope
    # into the _meta, the agent gets a 500 internal error, the row says `ok` and the slot stays used.
    policies.apply(truenas, {"version": "1", "default": "deny", "resources": DEBUG,
                             "tools": {"pool_get": {"limits": [limit("pool_gets", 1)]}}}, actor="test")
    new = create_grant("bad-meta", [truenas], None)
    with one_session_on_each(gateways, new.token) as (a, b):
        reply = a.post({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                        "params": {"name": "pool_get", "arguments": {"id": 1}, "_meta": meta}})
        assert reply.json().get("error", {}).get("code") == -32602, (reply.status_code, reply.text)
        assert a.upstream_count("pool_get") == 0
        assert not is_error(b.call("pool_get", {"id": 1}))  # the one slot is still free
    assert list(Call.objects.filter(grant=new.grant, tool_name="pool_get").values_list("outcome", flat=True)) == ["ok"]
