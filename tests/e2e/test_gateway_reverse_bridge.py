"""A stateless-era agent asked mid-call by a session-era upstream, through the gateway (protocol/parked_calls.py).

A real gateway (daphne), a real session-era-only upstream (tests/peers/fault_server.py --session-only over HTTP:
its `ask` tool calls ctx.elicit, a server→client request inside the call) and the real SDK `Client` in its
default (modern) mode as the agent, which answers `input_required` and retries; raw HTTP where a test must forge a
state or walk away. What must hold: the question reaches the agent as `input_required` under the gateway's sealed
state, the answer reaches the waiting upstream call, the final result comes back; one audit row for the call
(counted once, settled with the final outcome) plus one row per continuation; a state that is not this call's is
refused with nothing delivered; a policy that now denies, or an agent that never comes back, cancels the upstream.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta

import httpx2
import pytest
from django.conf import settings
from django.utils import timezone
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.calls import continuations
from gateway.grants import create_grant
from gateway.models import Call, Counter
from tests.conftest import ROOT, http_peer, register_http_server, start_gateway, stop

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POLICY = {"version": "1", "default": "allow", "tools": {
    "ask": {"limits": [{"counter": "ask_calls", "window": "day", "max": 50, "scope": "grant"}]}}}
SHORT_TTL_S = 2


@pytest.fixture(scope="module")
def upstream():
    with http_peer([sys.executable, str(ROOT / "tests" / "peers" / "fault_server.py"), "--session-only", "--http",
                    "{port}"], quiet=True) as url:
        yield url


@pytest.fixture(scope="module")
def short_gateway(django_db_setup, django_db_blocker, tmp_path_factory):
    """A gateway whose parked calls are abandoned after SHORT_TTL_S and that parks at most 2 per grant."""
    gw = start_gateway(tmp_path_factory.mktemp("short"), {"PORTCULLIS_CONTINUATION_TTL_S": str(SHORT_TTL_S),
                                                          "PORTCULLIS_PARKED_CALLS_PER_GRANT": "2"})
    yield gw
    stop(gw.proc)


@pytest.fixture
def server(upstream):
    return register_http_server("sessions", upstream, POLICY, name="session era only")


@pytest.fixture
def token(server):
    return create_grant("agent", [server], None).token


def sdk_call(gw, token, name: str, arguments: dict, answers: dict | None, action: str = "accept"):
    """The SDK client in its default (stateless) mode declaring elicitation; returns (result, questions asked)."""
    asked: list[str] = []

    async def on_elicit(ctx, params):
        asked.append(params.message)
        if action != "accept":
            return types.ElicitResult(action=action)
        return types.ElicitResult(action="accept", content={"answer": answers[params.message]})

    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with Client(streamable_http_client(gw.url("sessions"), http_client=http), cache=None,
                          elicitation_callback=on_elicit) as client:
            assert client.protocol_version == "2026-07-28"
            return await client.call_tool(name, arguments)

    return asyncio.run(asyncio.wait_for(go(), 60)), asked


def rpc(gw, token, name: str, arguments: dict, *, caps: dict | None = None, state=None, responses=None,
        whole: bool = False) -> dict:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}} if caps is None else caps,
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}
    params = {"name": name, "arguments": arguments, "_meta": meta}
    if state is not None:
        params["requestState"] = state
    if responses is not None:
        params["inputResponses"] = responses
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Authorization": f"Bearer {token}", "Mcp-Method": "tools/call", "Mcp-Name": name,
               "MCP-Protocol-Version": "2026-07-28"}
    response = httpx2.post(gw.url("sessions"), headers=headers, timeout=30, content=json.dumps(
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params}).encode())
    if whole:
        return response.json()
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        body = next(m for m in messages if m.get("id") == 5)
    else:
        body = response.json()
    assert "result" in body, body
    return body["result"]


def text(result) -> str:
    return result["content"][0]["text"] if isinstance(result, dict) else result.content[0].text


def answer(result: dict, value: str) -> dict:
    return {key: {"action": "accept", "content": {"answer": value}} for key in result["inputRequests"]}


def cancelled(gw, token) -> int:
    """How many of the upstream's elicitations were cancelled (its own count, via the stats tool)."""
    return int(text(rpc(gw, token, "stats", {}, caps={})).split("cancelled=")[1])


def wait_for(predicate, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)  # bounded poll: another process settles the row
    return False


def first_round(gw, token, question: str = "colour?") -> tuple[dict, Call]:
    first = rpc(gw, token, "ask", {"question": question})
    assert first["resultType"] == "input_required", first
    (request,) = first["inputRequests"].values()
    assert request["method"] == "elicitation/create" and request["params"]["message"] == question
    return first, Call.objects.filter(tool_name="ask").order_by("id").first()


# --- the round trip ---

def test_an_elicitation_asked_mid_call_reaches_the_stateless_agent_and_its_answer_reaches_the_upstream(gateway,
                                                                                                      token):
    result, asked = sdk_call(gateway, token, "ask", {"question": "favourite colour?"}, {"favourite colour?": "blue"})
    assert not result.is_error and text(result) == "user said: blue"
    assert asked == ["favourite colour?"]
    first, second = Call.objects.filter(tool_name="ask").order_by("id")
    assert (first.decision, first.outcome, first.reason) == ("allow", "ok", "")
    assert len(first.counters) == 1 and "ask_calls" in first.counters[0]
    assert (second.decision, second.outcome, second.counters) == ("allow", "ok", [])
    assert second.reason == f"continues call #{first.pk} (input round 1)"
    assert first.argument_hash == second.argument_hash
    assert Counter.objects.get(key=first.counters[0]).n == 1  # counted once


def test_two_questions_in_one_call_are_two_rounds_of_one_call(gateway, token):
    result, asked = sdk_call(gateway, token, "ask_two", {}, {"first name?": "Ada", "last name?": "Lovelace"})
    assert text(result) == "hello Ada Lovelace" and asked == ["first name?", "last name?"]
    rows = list(Call.objects.filter(tool_name="ask_two").order_by("id").values_list("pk", "outcome", "reason"))
    first_id = rows[0][0]
    assert [r[1:] for r in rows] == [("ok", ""), ("ok", f"continues call #{first_id} (input round 1)"),
                                     ("ok", f"continues call #{first_id} (input round 2)")]


def test_a_declined_question_reaches_the_upstream_as_declined(gateway, token):
    result, asked = sdk_call(gateway, token, "ask", {"question": "salary?"}, None, action="decline")
    assert not result.is_error and text(result) == "user decline" and asked == ["salary?"]


def test_an_agent_declaring_nothing_is_not_bridged(gateway, token):
    refused = rpc(gateway, token, "ask", {"question": "q?"}, caps={}, whole=True)
    assert refused["error"]["message"] == "Elicitation not supported"  # the upstream's own refusal, relayed
    assert Call.objects.filter(tool_name="ask").count() == 1


# --- states that must not continue anything ---

def _tampered(state: str) -> str:
    prefix, body, mac = state.split(".")
    claims = json.loads(continuations._unb64(body))
    claims["p"] = "another-parked-call"
    return f"{prefix}.{continuations._b64(json.dumps(claims).encode())}.{mac}"


def _expired(row: Call, state: str) -> str:
    claims = json.loads(continuations._unb64(state.split(".")[1]))
    binding = continuations.Binding(row.grant_id, row.server_id, "ask", row.argument_hash)
    long_ago = timezone.now() - timedelta(seconds=settings.PORTCULLIS_CONTINUATION_TTL_S + 5)
    return continuations.seal(None, binding=binding, first_call_id=row.pk, round_no=1, now=long_ago,
                              parked_id=claims["p"])


CASES = {
    "tampered": lambda server, token, first, row: (token, _tampered(first["requestState"])),
    "expired": lambda server, token, first, row: (token, _expired(row, first["requestState"])),
    "other-grant": lambda server, token, first, row: (create_grant("other", [server], None).token,
                                                      first["requestState"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_state_not_issued_for_this_call_is_refused_and_nothing_is_delivered(gateway, server, token, case):
    first, row = first_round(gateway, token)
    who, state = CASES[case](server, token, first, row)
    refused = rpc(gateway, who, "ask", {"question": "colour?"}, state=state, responses=answer(first, "red"))
    assert refused["isError"] is True and text(refused).startswith("requestState is not valid for this call")
    last = Call.objects.order_by("-id").first()
    assert (last.decision, last.outcome, last.refusal) == ("deny", "refused", "continuation")
    row.refresh_from_db()
    assert row.outcome == "pending"  # the parked call still waits, untouched
    # The genuine state still continues it, with the genuine answer (the refused "red" never reached it).
    done = rpc(gateway, token, "ask", {"question": "colour?"}, state=first["requestState"],
               responses=answer(first, "blue"))
    assert text(done) == "user said: blue"
    assert wait_for(lambda: Call.objects.get(pk=row.pk).outcome == "ok")


def test_a_policy_changed_to_deny_between_rounds_refuses_and_cancels_the_parked_call(gateway, server, token):
    before = cancelled(gateway, token)
    first, row = first_round(gateway, token)
    policies.apply(server, {**POLICY, "tools": {"ask": {"action": "deny", "reason": "no more asking"}}},
                   actor="test")
    refused = rpc(gateway, token, "ask", {"question": "colour?"}, state=first["requestState"],
                  responses=answer(first, "blue"))
    assert refused["isError"] is True and "no more asking" in text(refused)
    assert wait_for(lambda: Call.objects.get(pk=row.pk).outcome == "interrupted")
    row.refresh_from_db()
    assert "policy refused its continuation" in row.error
    assert wait_for(lambda: cancelled(gateway, token) == before + 1)  # the upstream's elicitation was cancelled
    last = Call.objects.exclude(tool_name="stats").order_by("-id").first()
    assert (last.decision, last.outcome, last.refusal) == ("deny", "refused", "policy")


# --- calls nobody comes back for ---

def test_an_abandoned_parked_call_is_cancelled_and_settled_after_the_ttl(short_gateway, token):
    before = cancelled(short_gateway, token)
    first, row = first_round(short_gateway, token)
    assert wait_for(lambda: Call.objects.get(pk=row.pk).outcome == "interrupted", SHORT_TTL_S + 10)
    row.refresh_from_db()
    assert "abandoned" in row.error and "cancelled" in row.error
    assert wait_for(lambda: cancelled(short_gateway, token) == before + 1)
    late = rpc(short_gateway, token, "ask", {"question": "colour?"}, state=first["requestState"],
               responses=answer(first, "blue"))
    assert late["isError"] is True and "expired" in text(late)


def test_parked_calls_per_grant_are_bounded(short_gateway, server, token):
    rpc(short_gateway, token, "ask", {"question": "one?"})
    rpc(short_gateway, token, "ask", {"question": "two?"})
    third = rpc(short_gateway, token, "ask", {"question": "three?"})
    assert third["isError"] is True and "already has 2 calls waiting" in text(third)
    other = rpc(short_gateway, create_grant("other", [server], None).token, "ask", {"question": "four?"})
    assert other["resultType"] == "input_required"  # the bound is per grant
    refused_row = Call.objects.filter(tool_name="ask").order_by("id")[2]
    assert wait_for(lambda: Call.objects.get(pk=refused_row.pk).outcome == "protocol_error")
    assert wait_for(lambda: not Call.objects.filter(outcome="pending").exists(), SHORT_TTL_S + 10)
