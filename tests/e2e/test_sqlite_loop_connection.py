"""A served gateway on an SQLite file runs each call's admission and settlement on its event loop's own connection
(gateway/calls/loop_database.py). Whatever database the suite runs on, this module gives the gateway an SQLite file
of its own, set up through the management commands as an operator would, and checks through real SDK clients and a
real stdio upstream that nothing changed for agents or for the audit log: every call answered and audited once,
limits exact under concurrency, the chain verifying, and a write lock held elsewhere neither stopping the event
loop nor losing the call that waited for it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import FAULT_SERVER, ROOT, start_gateway, stop

pytestmark = [pytest.mark.slow]

LIMITED = 5


def manage(env: dict, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, input=stdin, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def grant(env: dict, name: str, slug: str) -> str:
    out = manage(env, "create_grant", name, "--server", slug)
    return re.search(r"token \(shown once[^)]*\):\s*(\S+)", out).group(1)


@pytest.fixture(scope="module")
def on_sqlite(django_db_setup, tmp_path_factory):
    from django.conf import settings

    state = tmp_path_factory.mktemp("sqlite-gateway")
    path = state / "gateway.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{path}", "SECRET_KEY": settings.SECRET_KEY,
           "PORTCULLIS_SECRETS_KEY": settings.PORTCULLIS_SECRETS_KEY, "PORTCULLIS_STATE_DIR": str(state)}
    manage(env, "migrate", "--noinput")
    tokens = {}
    for slug, policy in (("open", {"version": "1", "default": "allow"}),
                         ("limited", {"version": "1", "default": "deny", "tools": {"ok": {"limits": [
                             {"counter": "ok", "window": "day", "max": LIMITED, "scope": "grant"}]}}})):
        manage(env, "register_server", slug, "--stdio", f"{sys.executable} {FAULT_SERVER}")
        manage(env, "refresh_tools", slug)
        manage(env, "apply_policy", slug, "-", stdin=json.dumps(policy))
        tokens[slug] = grant(env, f"agent-{slug}", slug)
    gw = start_gateway(state, {"DATABASE_URL": f"sqlite:///{path}"})
    yield gw, path, tokens, env
    stop(gw.proc)


def rows(path, slug: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT outcome, refusal FROM gateway_call WHERE server_slug = ? ORDER BY id",
                          [slug]).fetchall()


def calls(gw, token: str, slug: str, mode: str, texts: list[str]) -> list:
    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with Client(streamable_http_client(gw.url(slug), http_client=http), mode=mode, cache=None) as c:
            return await asyncio.gather(*(c.call_tool("ok", {"text": t}) for t in texts))

    return asyncio.run(asyncio.wait_for(go(), 60))


def test_concurrent_calls_of_both_eras_are_answered_and_audited_once_and_the_chain_verifies(on_sqlite):
    gw, path, tokens, env = on_sqlite
    for mode in ("legacy", "auto"):  # session era; stateless era (2026-07-28)
        texts = [f"{mode}-{i}" for i in range(40)]
        answers = calls(gw, tokens["open"], "open", mode, texts)
        assert [a.content[0].text for a in answers] == [f"ok: {t}" for t in texts]
    assert rows(path, "open") == [("ok", "")] * 80
    with sqlite3.connect(path) as db:
        pending = db.execute("SELECT count(*) FROM gateway_call WHERE outcome = 'pending'").fetchone()[0]
        stored = sorted(json.loads(a)["text"] for (a,) in db.execute(
            "SELECT arguments FROM gateway_call WHERE server_slug = 'open'"))
    assert pending == 0 and stored == sorted(f"{m}-{i}" for m in ("legacy", "auto") for i in range(40))
    assert "audit log verified" in manage(env, "verify_audit")


def test_a_limit_stays_exact_when_calls_race_for_it(on_sqlite):
    gw, path, tokens, _ = on_sqlite
    answers = calls(gw, tokens["limited"], "limited", "legacy", [f"n{i}" for i in range(3 * LIMITED)])
    passed = [a for a in answers if not a.is_error]
    refused = [a for a in answers if a.is_error]
    assert len(passed) == LIMITED and len(refused) == 2 * LIMITED
    assert all("limit" in a.content[0].text for a in refused)
    assert sorted(rows(path, "limited")) == sorted([("ok", "")] * LIMITED + [("refused", "limit")] * 2 * LIMITED)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT n FROM gateway_counter").fetchall() == [(LIMITED,)]


def test_a_write_lock_held_elsewhere_neither_stops_the_loop_nor_loses_the_waiting_call(on_sqlite):
    gw, path, tokens, _ = on_sqlite
    before = len(rows(path, "open"))
    calls(gw, tokens["open"], "open", "legacy", ["warm"])  # the loop's connection is open, its caches filled
    locked, release = threading.Event(), threading.Event()
    released_at: list[float] = []

    def hold_the_write_lock() -> None:  # a long write elsewhere (a command, an archive run) holds the lock
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(20)
        released_at.append(time.monotonic())
        other.execute("COMMIT")
        other.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    assert locked.wait(10)
    outcome: dict = {}

    def waiting_call() -> None:  # a stateless-era call: nothing but its admission touches the database
        body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "ok", "arguments": {"text": "waited"}, "_meta": STATELESS_META}}
        outcome["answer"] = httpx2.post(gw.url("open"), json=body, timeout=60, headers={
            "Authorization": f"Bearer {tokens['open']}", "Accept": "application/json, text/event-stream",
            "Mcp-Method": "tools/call", "Mcp-Name": "ok", "MCP-Protocol-Version": "2026-07-28"}).text
        outcome["at"] = time.monotonic()

    caller = threading.Thread(target=waiting_call)
    caller.start()
    try:
        time.sleep(0.5)  # lets the call reach its admission, which waits for the lock on a database thread
        answered = [httpx2.get(f"{gw.base}/healthz", timeout=5).status_code for _ in range(5)]
        # Were the loop to wait in SQLite's busy handler, none of these would be answered before the release.
        assert answered == [200] * 5 and caller.is_alive()  # the call still waits: the lock is held
    finally:
        release.set()
        holder.join(20)
        caller.join(60)
    assert "ok: waited" in outcome["answer"]
    assert outcome["at"] >= released_at[0]
    assert rows(path, "open")[before:] == [("ok", "")] * 2  # the waiting call audited once, settled


STATELESS_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientInfo": {"name": "loop-test", "version": "1"},
                  "io.modelcontextprotocol/clientCapabilities": {}}
