"""A stateless-era agent's own multi round-trip calls through the gateway, to a stateless-era upstream.

A real gateway (daphne), a real stateless-only upstream (tests/peers/recording_stateless_server.py: the peer of
tests/e2e/test_gateway_input_required.py, recording what each tools/call carried) and the real SDK `Client` in its
default (modern) mode as the agent, which answers `input_required` rounds and retries the call itself; raw HTTP
POSTs where a test needs to forge or replay a requestState.

What must hold: the upstream is told exactly the capabilities the agent declared (sampling/elicitation/roots
only); the agent only ever sees the gateway's sealed requestState (gateway/calls/continuations.py) and the upstream only
its own; a call's later rounds are not counted against limits again but are evaluated and audited (one row per
upstream request, reason "continues call #<first id>"); a forged, tampered, expired, replayed or misapplied state
is refused with nothing forwarded.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from datetime import timedelta

import httpx2
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client

from gateway import policies
from gateway.calls import approvals, audit, continuations
from gateway.grants import create_grant
from gateway.models import Approval, Call, Counter
from tests.conftest import ROOT, http_peer, register_http_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POLICY = {"version": "1", "default": "allow", "tools": {
    "ask_two": {"limits": [{"counter": "ask_two_calls", "window": "day", "max": 1, "scope": "grant"}]}}}
VERSION_META = "io.modelcontextprotocol/protocolVersion"
CAPS_META = "io.modelcontextprotocol/clientCapabilities"


@pytest.fixture(scope="module")
def upstream():
    with http_peer([sys.executable, str(ROOT / "tests" / "peers" / "recording_stateless_server.py"), "{port}"]) as url:
        yield url


@pytest.fixture
def server(gateway, upstream):
    return register_http_server("stateless", upstream, POLICY, name="stateless only")


@pytest.fixture
def token(server):
    return create_grant("agent", [server], None).token


# --- the agent: the SDK client, modern era ---

def sdk_call(gateway, token, *calls: tuple[str, dict], elicit=None, progress: bool = False) -> list:
    """The SDK client in its default mode; it answers input_required rounds with `elicit` and retries itself."""
    asked: list[str] = []
    callbacks = {}
    if elicit is not None:
        async def on_elicit(ctx, params):
            asked.append(params.message)
            return types.ElicitResult(action="accept", content={"answer": elicit[params.message]})
        callbacks["elicitation_callback"] = on_elicit

    async def on_progress(progress_value, total, message):
        return None

    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with Client(streamable_http_client(gateway.url("stateless"), http_client=http), cache=None,
                          **callbacks) as client:
            assert client.protocol_version == "2026-07-28"  # the stateless era, not a fallback to sessions
            extra = {"progress_callback": on_progress} if progress else {}
            return [await client.call_tool(name, arguments, **extra) for name, arguments in calls]

    results = asyncio.run(asyncio.wait_for(go(), 60))
    return [*results, asked]


# --- the agent: raw HTTP, for what the SDK would never send ---

def rpc(gateway, token, name: str, arguments: dict, *, caps: dict | None = None, state=None, responses=None,
        progress: bool = False, rid: int = 7, whole: bool = False) -> dict:
    meta = {VERSION_META: "2026-07-28", CAPS_META: {"elicitation": {}} if caps is None else caps,
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}
    if progress:
        meta["progressToken"] = "p1"
    params = {"name": name, "arguments": arguments, "_meta": meta}
    if state is not None:
        params["requestState"] = state
    if responses is not None:
        params["inputResponses"] = responses
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Authorization": f"Bearer {token}", "Mcp-Method": "tools/call", "Mcp-Name": name,
               "MCP-Protocol-Version": "2026-07-28"}
    response = httpx2.post(gateway.url("stateless"), headers=headers, timeout=30,
                           content=json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                                               "params": params}).encode())
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        body = next(m for m in messages if m.get("id") == rid)
    else:
        body = response.json()
    if whole:
        return body
    assert "result" in body, body
    return body["result"]


def answer(result: dict, value: str) -> dict:
    """inputResponses for every elicitation question of an input_required result."""
    return {key: {"action": "accept", "content": {"answer": value}} for key in result["inputRequests"]}


def text(result) -> str:
    return result["content"][0]["text"] if isinstance(result, dict) else result.content[0].text


def upstream_calls(gateway, token) -> int:
    """How many tools/call requests the upstream has received (its own counter, the stats tool)."""
    return len(json.loads(text(rpc(gateway, token, "stats", {}))))


def last_row() -> Call:
    """The newest audit row of a call under test (the stats/envelopes probes are calls too)."""
    return Call.objects.exclude(tool_name__in=("stats", "envelopes")).order_by("-id").first()


def envelopes(gateway, token) -> list[dict]:
    return json.loads(text(rpc(gateway, token, "envelopes", {})))


# --- the round trip ---

def test_an_elicitation_round_trip_completes_and_is_audited_as_one_call_with_a_continuation(gateway, token):
    before = upstream_calls(gateway, token)
    result, asked = sdk_call(gateway, token, ("ask", {"question": "favourite colour?"}),
                             elicit={"favourite colour?": "blue"})
    assert not result.is_error and text(result) == "user said: blue"
    assert asked == ["favourite colour?"]
    assert upstream_calls(gateway, token) == before + 2  # the first request, then the retry with the answer
    first, second = Call.objects.filter(tool_name="ask").order_by("id")
    assert (first.decision, first.outcome, first.reason) == ("allow", "ok", "")
    assert (second.decision, second.outcome, second.counters) == ("allow", "ok", [])
    assert second.reason == f"continues call #{first.pk} (input round 1)"
    assert first.argument_hash == second.argument_hash


def test_the_agent_sees_only_the_gateway_seal_and_the_upstream_only_its_own_state(gateway, token):
    first = rpc(gateway, token, "ask_two", {})
    assert first["resultType"] == "input_required"
    sealed = first["requestState"]
    assert sealed.startswith("pcs1.")
    second = rpc(gateway, token, "ask_two", {}, state=sealed, responses=answer(first, "Ada"))
    assert second["resultType"] == "input_required" and second["requestState"] != sealed
    third = rpc(gateway, token, "ask_two", {}, state=second["requestState"], responses=answer(second, "Lovelace"))
    assert text(third) == "hello Ada Lovelace"
    states = [e["requestState"] for e in envelopes(gateway, token) if e["tool"] == "ask_two"]
    assert states[0] is None and len(states) == 3
    assert all(not s.startswith("pcs1.") for s in states[1:])  # the upstream's own states, never the seal
    rows = list(Call.objects.filter(tool_name="ask_two").order_by("id").values_list("reason", flat=True))
    first_id = Call.objects.filter(tool_name="ask_two").order_by("id").first().pk
    assert rows == ["", f"continues call #{first_id} (input round 1)", f"continues call #{first_id} (input round 2)"]


def test_a_two_round_call_counts_once_against_a_limit_of_one_and_the_next_call_is_refused(gateway, token):
    names = {"first name?": "Ada", "last name?": "Lovelace"}
    first, second, asked = sdk_call(gateway, token, ("ask_two", {}), ("ask_two", {}), elicit=names)
    assert not first.is_error and text(first) == "hello Ada Lovelace"
    assert asked == ["first name?", "last name?"]
    assert second.is_error and text(second).startswith("rate limit ask_two_calls exceeded: 1 per day")
    rows = list(Call.objects.filter(tool_name="ask_two").order_by("id")
                .values_list("decision", "outcome", "refusal", "counters"))
    counter = [key for key in rows[0][3]]
    assert len(counter) == 1 and "ask_two_calls" in counter[0]
    assert rows == [("allow", "ok", "", counter), ("allow", "ok", "", []), ("allow", "ok", "", []),
                    ("deny", "refused", "limit", counter)]
    assert Counter.objects.get(key=counter[0]).n == 1


# --- states that must not continue anything ---

def _first_round(gateway, token, arguments=None) -> tuple[dict, Call]:
    first = rpc(gateway, token, "ask", arguments or {"question": "colour?"})
    assert first["resultType"] == "input_required"
    return first, Call.objects.filter(tool_name="ask").order_by("-id").first()


def _tampered(state: str) -> str:
    prefix, body, mac = state.split(".")
    claims = json.loads(continuations._unb64(body))
    claims["t"] = "ok"
    return f"{prefix}.{continuations._b64(json.dumps(claims).encode())}.{mac}"


def _expired(row: Call, state: str) -> str:
    binding = continuations.Binding(row.grant_id, row.server_id, "ask", row.argument_hash)
    long_ago = timezone.now() - timedelta(seconds=settings.PORTCULLIS_CONTINUATION_TTL_S + 5)
    return continuations.seal(None, binding=binding, first_call_id=row.pk, round_no=1, now=long_ago)


CASES = {
    "forged": lambda gateway, server, token, first, row: (token, "ask", {"question": "colour?"}, "pcs1.e30.AAAA"),
    "upstream-style": lambda gateway, server, token, first, row: (token, "ask", {"question": "colour?"}, "anything"),
    "tampered": lambda gateway, server, token, first, row: (token, "ask", {"question": "colour?"},
                                                            _tampered(first["requestState"])),
    "expired": lambda gateway, server, token, first, row: (token, "ask", {"question": "colour?"},
                                                           _expired(row, first["requestState"])),
    "other-grant": lambda gateway, server, token, first, row: (create_grant("other", [server], None).token, "ask",
                                                               {"question": "colour?"}, first["requestState"]),
    "other-arguments": lambda gateway, server, token, first, row: (token, "ask", {"question": "salary?"},
                                                                   first["requestState"]),
    "other-tool": lambda gateway, server, token, first, row: (token, "ok", {"text": "x"}, first["requestState"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_state_the_gateway_did_not_issue_for_this_call_is_refused_and_nothing_is_forwarded(gateway, server, token,
                                                                                              case):
    first, row = _first_round(gateway, token)
    who, name, arguments, state = CASES[case](gateway, server, token, first, row)
    before = upstream_calls(gateway, token)
    refused = rpc(gateway, who, name, arguments, state=state, responses=answer(first, "blue"))
    assert refused["isError"] is True
    assert text(refused).startswith("requestState is not valid for this call")
    assert "call the tool again without requestState" in text(refused)
    assert upstream_calls(gateway, token) == before  # the upstream's own counter: nothing reached it
    last = last_row()
    assert (last.tool_name, last.decision, last.outcome, last.refusal) == (name, "deny", "refused", "continuation")
    # The genuine state still continues its own call afterwards.
    done = rpc(gateway, token, "ask", {"question": "colour?"}, state=first["requestState"],
               responses=answer(first, "blue"))
    assert text(done) == "user said: blue"


def test_a_state_is_used_once_so_a_finished_round_cannot_be_replayed_past_a_limit(gateway, token):
    first = rpc(gateway, token, "ask_two", {})
    second = rpc(gateway, token, "ask_two", {}, state=first["requestState"], responses=answer(first, "Ada"))
    assert second["resultType"] == "input_required"
    before = upstream_calls(gateway, token)
    replay = rpc(gateway, token, "ask_two", {}, state=first["requestState"], responses=answer(first, "Bob"))
    assert replay["isError"] is True and "already answered" in text(replay)
    assert upstream_calls(gateway, token) == before
    assert last_row().refusal == "continuation"


def test_a_policy_changed_to_deny_between_rounds_refuses_the_continuation(gateway, server, token):
    first, _ = _first_round(gateway, token)
    policies.apply(server, {**POLICY, "tools": {**POLICY["tools"], "ask": {"action": "deny",
                                                                          "reason": "no more asking"}}},
                   actor="test")
    before = upstream_calls(gateway, token)
    refused = rpc(gateway, token, "ask", {"question": "colour?"}, state=first["requestState"],
                  responses=answer(first, "blue"))
    assert refused["isError"] is True and "no more asking" in text(refused)
    assert upstream_calls(gateway, token) == before
    last = last_row()
    assert (last.decision, last.outcome, last.refusal) == ("deny", "refused", "policy")


def test_an_approval_given_for_the_first_round_does_not_hold_the_continuation(gateway, server, token):
    policies.apply(server, {**POLICY, "tools": {**POLICY["tools"], "ask": {"action": "approve"}}}, actor="test")
    operator = get_user_model().objects.create_user("alice", password="a-long-password-1", is_staff=True)
    call = {"question": "colour?"}
    box: list = []
    thread = threading.Thread(target=lambda: box.append(rpc(gateway, token, "ask", call)))
    thread.start()  # the first round is held until a person decides
    deadline = time.monotonic() + 20
    while not Approval.objects.filter(state="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded poll for the gateway process to create the approval
    approvals.decide(Approval.objects.get(state="pending"), user=operator, approve=True, now=timezone.now())
    thread.join(30)
    first = box[0]
    assert first["resultType"] == "input_required"
    done = rpc(gateway, token, "ask", call, state=first["requestState"], responses=answer(first, "blue"))
    assert text(done) == "user said: blue"
    assert list(Approval.objects.values_list("state", flat=True)) == ["used"]  # one approval, used once
    first_row, second_row = Call.objects.filter(tool_name="ask").order_by("id")
    assert (first_row.decision, second_row.decision) == ("approve", "allow")
    assert second_row.reason == f"continues call #{first_row.pk} (input round 1)"


# --- what the upstream is told ---

def test_the_upstream_is_told_the_agent_declared_capabilities_and_no_others(gateway, token):
    declared = {"elicitation": {"form": {}}, "roots": {"listChanged": True}, "experimental": {"x": {}},
                "tasks": {"requests": {}}, "unknown": {}, "sampling": "not an object"}
    rpc(gateway, token, "ok", {"text": "direct"}, caps=declared)  # no progress token: the direct HTTP path
    rpc(gateway, token, "ok", {"text": "sdk"}, caps=declared, progress=True)  # progress: the SDK link path
    rpc(gateway, token, "ok", {"text": "none"}, caps={})
    told = [e for e in envelopes(gateway, token) if e["tool"] == "ok"][-3:]
    expected = {"elicitation": {"form": {}}, "roots": {"listChanged": True}}
    assert [(e["capabilities"], e["progress"]) for e in told] == [(expected, False), (expected, True), ({}, False)]


def test_an_sdk_agent_declaring_elicitation_only_can_be_asked_and_not_sampled(gateway, token):
    result, asked = sdk_call(gateway, token, ("ask", {"question": "q?"}), elicit={"q?": "a"}, progress=True)
    assert text(result) == "user said: a" and asked == ["q?"]  # the round trip on the SDK link path too
    told = [e["capabilities"] for e in envelopes(gateway, token) if e["tool"] == "ask"]
    assert told and all(set(caps) == {"elicitation"} for caps in told)
    # The upstream refuses to sample an agent that declared elicitation only (it was not told otherwise).
    refused = rpc(gateway, token, "sample", {}, caps={"elicitation": {}}, whole=True)
    assert refused["error"]["code"] == -32021 and "sampling" in json.dumps(refused["error"])


def test_seal_binding_is_checked_without_the_network():
    """The seal alone (no gateway): a valid one opens for its own call only."""
    binding = continuations.Binding(1, 2, "ask", audit.argument_hash({"q": 1}))
    now = timezone.now()
    state = continuations.seal("upstream", binding=binding, first_call_id=9, round_no=1, now=now)
    opened = continuations.unseal(state, binding=binding, now=now)
    assert (opened.first_call_id, opened.round_no, opened.upstream_state) == (9, 1, "upstream")
    for other in (continuations.Binding(3, 2, "ask", binding.argument_hash),
                  continuations.Binding(1, 2, "ask", audit.argument_hash({"q": 2}))):
        with pytest.raises(continuations.Invalid, match="belongs to another call"):
            continuations.unseal(state, binding=other, now=now)
    with pytest.raises(continuations.Invalid, match="expired"):
        continuations.unseal(state, binding=binding,
                             now=now + timedelta(seconds=settings.PORTCULLIS_CONTINUATION_TTL_S + 1))
