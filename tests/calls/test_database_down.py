"""A tools/call while the database (the audit log) fails: refused with a reason the agent can act on, never
forwarded."""

from __future__ import annotations

import asyncio

import pytest


@pytest.mark.django_db(transaction=True)
def test_a_call_while_the_database_fails_is_refused_with_a_reason_and_not_forwarded(server, grant_that_may):
    """No audit row can be written, so nothing is forwarded; the agent reads why and what to do."""
    from gateway.models import Grant
    from gateway.protocol import tools_call
    from tests.conftest import unreachable_table

    with unreachable_table(Grant):
        admission = asyncio.run(tools_call.admit(grant_that_may.token, server, "read_file", {}, None))
    assert not admission.forward and admission.call_id is None
    assert admission.message.startswith("audit log unavailable (")
    assert "not forwarded; try again shortly" in admission.message


@pytest.fixture
def unreachable_grants(db):
    """The grants table is gone: every authorisation fails with a database error, as in an outage."""
    from gateway.models import Grant
    from tests.conftest import unreachable_table

    with unreachable_table(Grant):
        yield


@pytest.mark.parametrize("body", [
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25",
                                                                   "capabilities": {}}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}},
], ids=["initialize", "stateless-tools-list"])
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_request_while_the_database_fails_gets_503_with_the_reason_not_an_internal_error(
        server, grant_that_may, unreachable_grants, body):
    from gateway.protocol import jsonrpc, relay
    from gateway.protocol.exchange import Request

    headers = {"mcp-method": "tools/list", "mcp-protocol-version": "2026-07-28"}
    req = Request(slug="files", token=grant_that_may.token, headers=headers)
    reply = await relay.handle(req, jsonrpc.parse(jsonrpc.dumps(body)))
    assert reply.status == 503 and ("retry-after", "5") in reply.headers
    error = reply.body["error"]
    assert error["code"] == jsonrpc.GATEWAY_UNAVAILABLE and error["message"].startswith("gateway database unavailable")
    assert "nothing was forwarded; try again shortly" in error["message"]
