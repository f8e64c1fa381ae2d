"""The stateless era's multi round-trip requests bridged to session-era agents.

A real gateway (daphne), a real upstream that speaks only the stateless era (tests/peers/stateless_server.py, the
SDK's MCPServer behind its stateless-era HTTP entry) and the real SDK client as a session-era agent: the upstream's
`input_required` questions reach the agent as elicitation/sampling/roots requests on its POST's stream, and the
gateway repeats the upstream call with the answers, within one audited call.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client

from gateway.grants import create_grant
from gateway.models import Call
from gateway.protocol.input_bridge import MAX_ROUNDS
from tests.conftest import ROOT, http_peer, register_http_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POLICY = {"version": "1", "default": "allow", "tools": {
    "ask_two": {"limits": [{"counter": "ask_two_calls", "window": "day", "max": 1, "scope": "grant"}]}}}


@pytest.fixture(scope="module")
def upstream():
    """The stateless-only upstream, one process for the module."""
    with http_peer([sys.executable, str(ROOT / "tests" / "peers" / "stateless_server.py"), "{port}"]) as url:
        yield url


@pytest.fixture
def token(gateway, upstream):
    server = register_http_server("stateless", upstream, POLICY, name="stateless only")
    return create_grant("agent", [server], None).token


class Agent:
    """A session-era agent (the SDK client in legacy mode) that records what it was asked."""

    def __init__(self, gateway, token, *, elicit=None, sample=None, roots=None) -> None:
        self.asked: list[tuple[str, object]] = []
        callbacks = {}
        if elicit is not None:
            async def on_elicit(ctx, params):
                self.asked.append(("elicitation", params.message))
                return elicit(params.message)
            callbacks["elicitation_callback"] = on_elicit
        if sample is not None:
            async def on_sample(ctx, params):
                self.asked.append(("sampling", params.messages[0].content.text))
                return sample
            callbacks["sampling_callback"] = on_sample
        if roots is not None:
            async def on_roots(ctx):
                self.asked.append(("roots", None))
                return roots
            callbacks["list_roots_callback"] = on_roots
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.client = Client(streamable_http_client(gateway.url("stateless"), http_client=http), mode="legacy",
                             cache=None, **callbacks)

    def call(self, *calls: tuple[str, dict]) -> list[types.CallToolResult]:
        async def go():
            async with self.client as c:
                return [await c.call_tool(name, arguments) for name, arguments in calls]

        return asyncio.run(asyncio.wait_for(go(), 60))


def accept(answer: str):
    return lambda message: types.ElicitResult(action="accept", content={"answer": answer})


def text(result) -> str:
    return result.content[0].text


def upstream_rounds(gateway, token) -> list[list[str]]:
    """Each tools/call the upstream received (stats excluded): the inputResponses keys it carried."""
    return json.loads(text(Agent(gateway, token).call(("stats", {}))[0]))


def test_an_accepted_elicitation_reaches_the_stateless_upstream_and_its_result_the_agent(gateway, token):
    before = len(upstream_rounds(gateway, token))
    agent = Agent(gateway, token, elicit=accept("blue"))
    [result] = agent.call(("ask", {"question": "favourite colour?"}))
    assert not result.is_error and text(result) == "user said: blue"
    assert agent.asked == [("elicitation", "favourite colour?")]
    rounds = upstream_rounds(gateway, token)[before:]
    assert len(rounds) == 2 and rounds[0] == [] and len(rounds[1]) == 1  # the first call, then the retry
    row = Call.objects.get(tool_name="ask")  # one audited call for both upstream rounds
    assert (row.decision, row.outcome, row.error) == ("allow", "ok", "")


def test_a_declined_elicitation_is_passed_on_and_the_upstream_decides(gateway, token):
    agent = Agent(gateway, token, elicit=lambda message: types.ElicitResult(action="decline"))
    [result] = agent.call(("ask", {"question": "may I?"}))
    assert not result.is_error and text(result) == "user decline"
    assert Call.objects.get(tool_name="ask").outcome == "ok"


def test_two_rounds_carry_the_upstream_state_and_count_once_against_a_limit(gateway, token):
    answers = {"first name?": "Ada", "last name?": "Lovelace"}
    agent = Agent(gateway, token,
                  elicit=lambda message: types.ElicitResult(action="accept", content={"answer": answers[message]}))
    first, second = agent.call(("ask_two", {}), ("ask_two", {}))
    assert text(first) == "hello Ada Lovelace" and not first.is_error
    assert [message for _, message in agent.asked] == ["first name?", "last name?"]
    # Three upstream requests were one call: the limit of one call a day refuses only the second call.
    assert second.is_error and text(second).startswith("rate limit ask_two_calls exceeded: 1 per day")
    rows = list(Call.objects.filter(tool_name="ask_two").order_by("id").values_list("outcome", "refusal"))
    assert rows == [("ok", ""), ("refused", "limit")]


def test_sampling_and_roots_questions_are_bridged_too(gateway, token):
    said = types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="red"),
                                     model="test-model")
    listed = types.ListRootsResult(roots=[types.Root(uri="file:///srv/project", name="project")])
    agent = Agent(gateway, token, sample=said, roots=listed)
    sampled, rooted = agent.call(("sample", {}), ("roots", {}))
    assert text(sampled) == "model said: red" and text(rooted) == "roots: file:///srv/project"
    assert agent.asked == [("sampling", "pick a colour"), ("roots", None)]
    assert set(Call.objects.values_list("tool_name", "outcome")) == {("sample", "ok"), ("roots", "ok")}


def test_an_agent_without_the_capability_gets_a_result_naming_it(gateway, token):
    [result] = Agent(gateway, token).call(("ask", {"question": "favourite colour?"}))
    assert result.is_error
    assert "needs to ask the client (elicitation)" in text(result) and "did not declare" in text(result)
    row = Call.objects.get(tool_name="ask")  # the upstream refused before the tool ran: reservation given back
    assert row.outcome == "protocol_error" and "-32021" in row.error


def test_a_question_for_an_undeclared_capability_is_never_put_to_the_agent(gateway, token):
    agent = Agent(gateway, token, elicit=accept("unused"))
    [result] = agent.call(("rude", {}))  # the upstream asks for sampling although only elicitation was declared
    assert result.is_error and "needs the client's sampling (sampling/createMessage" in text(result)
    assert agent.asked == []
    row = Call.objects.get(tool_name="rude")
    assert row.outcome == "tool_error" and "sampling" in row.error and "did not declare" in row.error


def test_an_agent_that_refuses_a_question_ends_the_call_with_its_reason(gateway, token):
    agent = Agent(gateway, token,
                  elicit=lambda message: types.ErrorData(code=types.INTERNAL_ERROR, message="nobody at the keyboard"))
    [result] = agent.call(("ask", {"question": "anyone?"}))
    assert result.is_error and "refused the upstream's elicitation/create" in text(result)
    assert "nobody at the keyboard" in text(result)
    assert Call.objects.get(tool_name="ask").outcome == "tool_error"


def test_an_upstream_that_never_stops_asking_is_stopped_after_the_round_limit(gateway, token):
    before = len(upstream_rounds(gateway, token))
    agent = Agent(gateway, token, elicit=accept("yes"))
    [result] = agent.call(("nag", {}))
    assert result.is_error and f"still asked for input after {MAX_ROUNDS} answered rounds" in text(result)
    assert len(agent.asked) == MAX_ROUNDS
    assert len(upstream_rounds(gateway, token)[before:]) == MAX_ROUNDS + 1
    row = Call.objects.get(tool_name="nag")
    assert row.outcome == "tool_error" and "input_required not completed" in row.error


def test_a_plain_call_on_the_same_session_is_unaffected(gateway, token):
    agent = Agent(gateway, token, elicit=accept("blue"))
    ok, asked = agent.call(("ok", {"text": "first"}), ("ask", {"question": "colour?"}))
    assert text(ok) == "ok: first" and text(asked) == "user said: blue"
    assert Call.objects.filter(outcome="ok").count() == 2
