"""A stateless-era tools/call uses this process's recent copy of the server (gateway/protocol/relay.py), and every
call that admission writes confirms that copy is still the registration (its updated_at, read in the same query).
So while calls keep coming the server is not loaded again: before, the copy lapsed every second and each request in
flight at that moment loaded the server again (a database thread, the ORM and Fernet per request). An idle copy
still lapses, and a changed registration is still loaded at once (tests/e2e/test_stateless_recent_server.py).

In-process: the relay, a real stdio upstream (tests/peers/fault_server.py) and the test database; the load is
counted by wrapping the relay's real `authorise`, which still runs."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async

from gateway.models import Call
from tests.conftest import register_fault_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
WINDOW_S = 0.3


@pytest_asyncio.fixture
async def relay_with_counted_loads(monkeypatch):
    from gateway.protocol import relay
    from gateway.protocol.sessions import REGISTRY

    server, token = await sync_to_async(register_fault_server)()
    loads: list[str] = []
    real = relay.authorise

    async def counted(slug: str, token: str):
        loads.append(slug)
        return await real(slug, token)

    monkeypatch.setattr(relay, "authorise", counted)
    monkeypatch.setattr(relay, "RECENT_SERVER_S", WINDOW_S)
    relay._RECENT_SERVERS.pop(server.slug, None)
    try:
        yield relay, server, token, loads
    finally:
        relay._RECENT_SERVERS.pop(server.slug, None)
        link = REGISTRY.shared.pop(server.pk, None)
        if link is not None:
            await link.close()


async def send(relay, slug: str, token: str, text: str):
    from gateway.protocol import jsonrpc
    from gateway.protocol.exchange import Request

    headers = {"mcp-method": "tools/call", "mcp-name": "ok", "mcp-protocol-version": "2026-07-28"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "ok", "arguments": {"text": text}, "_meta": META}}
    return await relay.handle(Request(slug=slug, token=token, headers=headers), jsonrpc.parse(jsonrpc.dumps(body)))


async def call(relay, slug: str, token: str, text: str) -> str:
    reply = await send(relay, slug, token, text)
    assert reply.status == 200, reply.body
    result = reply.body["result"]
    assert not result.get("isError"), result
    return result["content"][0]["text"]


async def test_calls_that_keep_coming_do_not_load_the_server_again(relay_with_counted_loads):
    relay, server, token, loads = relay_with_counted_loads
    for i in range(8):  # 8 × 0.1 s: more than twice the window
        assert await call(relay, server.slug, token, f"n{i}") == f"ok: n{i}"
        await asyncio.sleep(0.1)
    assert loads == [server.slug]
    assert await sync_to_async(Call.objects.filter(outcome="ok").count)() == 8


async def test_a_copy_no_call_confirmed_within_the_window_is_loaded_again(relay_with_counted_loads):
    relay, server, token, loads = relay_with_counted_loads
    assert await call(relay, server.slug, token, "a") == "ok: a"
    await asyncio.sleep(WINDOW_S + 0.2)
    assert await call(relay, server.slug, token, "b") == "ok: b"
    assert loads == [server.slug, server.slug]


async def test_a_refused_token_confirms_nothing(relay_with_counted_loads):
    """A request that admission did not write (an unknown token) does not keep the copy: only a call it wrote
    says the copy was the registration when it was read."""
    relay, server, token, loads = relay_with_counted_loads
    assert await call(relay, server.slug, token, "a") == "ok: a"
    for _ in range(4):
        await asyncio.sleep(0.1)
        refused = await send(relay, server.slug, token[:-4] + "zzzz", "x")
        assert refused.status == 401 and refused.body["error"]["message"] == "unknown token"
    assert await call(relay, server.slug, token, "b") == "ok: b"
    assert loads[0] == server.slug and len(loads) >= 2  # the copy lapsed: loaded again for a later request
