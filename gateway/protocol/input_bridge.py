"""The stateless era's multi round-trip requests, answered by a session-era agent.

A stateless-era (2026-07-28) upstream cannot ask its client anything mid-call: it ends the call with an
`input_required` result (its questions in `inputRequests`, its own memory in an opaque `requestState`) and
expects the same call again with `inputResponses`. A session-era agent knows nothing of that: it answers
server→client requests (elicitation/create, sampling/createMessage, roots/list) on the stream of its POST. So the
gateway asks the agent each question that way and repeats the upstream call itself: the agent sees one
tools/call and one answer, and the audit log one call, because it is one call.

A question needing a capability the agent did not declare is never put to it (it could not answer): the call
ends with a tool error naming the capability. The spec forbids an upstream to rely on an undeclared capability
and `inputResponses` has no way to refuse a single question, so there is nothing better to tell the upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mcp import types
from mcp_types import MISSING_REQUIRED_CLIENT_CAPABILITY
from pydantic import ValidationError

MAX_ROUNDS = 8  # an upstream still asking after this many answered rounds is not converging
IDLE_RETRY_S = (0.05, 0.1, 0.2, 0.25)  # pause before retrying a round that carried state but no questions

# What each question needs from the agent, and the result types its answer may take.
QUESTIONS = {
    "elicitation/create": ("elicitation", (types.ElicitResult,)),
    "sampling/createMessage": ("sampling", (types.CreateMessageResult, types.CreateMessageResultWithTools)),
    "roots/list": ("roots", (types.ListRootsResult,)),
}

# (method, params) → the agent's raw JSON-RPC answer message; see UpstreamLink.ask_agent.
Asker = Callable[[str, dict], Awaitable[dict]]
# (inputResponses or None, requestState or None) → the upstream's next raw result.
Resender = Callable[[dict | None, str | None], Awaitable[dict]]


class BridgeFailure(Exception):
    """The call cannot be completed through the agent; the message is the reason the agent (a model) reads."""


def is_input_required(result: object) -> bool:
    return isinstance(result, dict) and result.get("resultType") == "input_required"


def missing_capability_text(code: int, data: object) -> str | None:
    """A tool-error text for an upstream that refused a call (-32021) because the agent lacks a capability."""
    required = data.get("requiredCapabilities") if isinstance(data, dict) else None
    if code != MISSING_REQUIRED_CLIENT_CAPABILITY or not isinstance(required, dict) or not required:
        return None
    names = ", ".join(sorted(required))
    return (f"this tool needs to ask the client ({names}), which this agent did not declare when it "
            f"initialized; reconnect declaring the {names} capability to use it")


async def complete(first: dict, *, ask: Asker | None, capabilities: dict, resend: Resender,
                   max_rounds: int = MAX_ROUNDS) -> dict:
    """Answer the upstream's questions through the agent until it gives a final result, and return that.

    Raises BridgeFailure when the agent cannot or does not answer, or the upstream does not converge.
    """
    result, rounds, idle = first, 0, 0
    while is_input_required(result):
        rounds += 1
        if rounds > max_rounds:
            raise BridgeFailure(f"the upstream still asked for input after {max_rounds} answered rounds; the "
                                "gateway stopped the call (the tool may have done part of its work)")
        questions, state = _parse(result)
        if questions:
            idle = 0
            responses = await _answers(questions, ask, capabilities)
        else:  # state only: the upstream is busy and asks to be asked again
            await asyncio.sleep(IDLE_RETRY_S[min(idle, len(IDLE_RETRY_S) - 1)])
            idle += 1
            responses = None
        result = await resend(responses, state)
    return result


def _parse(result: dict) -> tuple[dict, str | None]:
    questions = result.get("inputRequests") or {}
    state = result.get("requestState")
    if not isinstance(questions, dict) or (state is not None and not isinstance(state, str)):
        raise BridgeFailure("the upstream answered with a malformed input_required result")
    if not questions and state is None:
        raise BridgeFailure("the upstream asked for input without saying what it needs")
    for key, question in questions.items():
        method = question.get("method") if isinstance(question, dict) else None
        if method not in QUESTIONS or not isinstance(question.get("params", {}), dict):
            raise BridgeFailure(f"the upstream asked an unknown kind of question ({key!r}: {method!r})")
    return questions, state


async def _answers(questions: dict, ask: Asker | None, capabilities: dict) -> dict:
    # Everything is checked before the agent (perhaps a person) is asked anything the call could not use.
    for key, question in questions.items():
        capability = QUESTIONS[question["method"]][0]
        if capability not in capabilities:
            raise BridgeFailure(
                f"the upstream tool needs the client's {capability} ({question['method']}, input {key!r}), which "
                f"this agent did not declare when it initialized; reconnect declaring {capability} to use it")
    if ask is None:
        raise BridgeFailure("the upstream asked for input and this connection cannot relay questions to the agent")
    try:
        async with asyncio.TaskGroup() as group:
            tasks = {key: group.create_task(_answer(key, q["method"], q.get("params") or {}, ask))
                     for key, q in questions.items()}
    except BaseExceptionGroup as failed:  # the first failure cancels the other questions
        first = next((e for e in failed.exceptions if isinstance(e, BridgeFailure)), None)
        if first is None:
            raise
        raise first from None
    return {key: task.result() for key, task in tasks.items()}


async def _answer(key: str, method: str, params: dict, ask: Asker) -> dict:
    try:
        answer = await ask(method, params)
    except TimeoutError:
        raise BridgeFailure(f"the agent did not answer the upstream's {method} (input {key!r}) in time") from None
    except Exception as exc:
        raise BridgeFailure(f"the gateway could not ask the agent the upstream's {method} (input {key!r}): "
                            f"{exc}") from None
    if "error" in answer:
        error = answer["error"] if isinstance(answer["error"], dict) else {}
        raise BridgeFailure(f"the agent refused the upstream's {method} (input {key!r}): "
                            f"{error.get('message', 'no reason given')}")
    problem = "no result"
    for result_type in QUESTIONS[method][1]:  # sampling: single content first, then content with tool use
        try:
            model = result_type.model_validate(answer.get("result") or {}, by_name=False)
        except ValidationError as exc:
            problem = f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}"
            continue
        return model.model_dump(by_alias=True, exclude_none=True, mode="json")
    raise BridgeFailure(f"the agent answered the upstream's {method} (input {key!r}) with something that is not a "
                        f"valid result ({problem})")
