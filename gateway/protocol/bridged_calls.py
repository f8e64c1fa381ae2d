"""A stateless-era agent's tools/call on a session-era upstream that may ask questions mid-call.

The first round starts the upstream call on a link of its own, declaring exactly the agent's capabilities
(gateway/protocol/parked_calls.py); a continuation hands the agent's answer to the parked call's waiting
question. Either way the request then waits for the call's next event: a question (answered to the agent as
`input_required` with a sealed state naming the parked call; the call stays parked) or the final result.

Rows: the first round's carries the decision and counters and is settled when the call ends, with the final
outcome; each continuation has its own row, settled with what its request returned.
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.calls import continuations
from gateway.models import Call, Server
from gateway.protocol import jsonrpc, parked_calls
from gateway.protocol.era import Era, declared_capabilities, upstream_params
from gateway.protocol.exchange import Reply
from gateway.protocol.forwarded_call import ForwardedCall, cancel_reason
from gateway.upstream.connect import UpstreamError
from gateway.upstream.link import UpstreamLink, declarable

NOT_WAITING = ("the call this requestState continues is not waiting in this gateway process (it ended, was "
               "abandoned, or its upstream call is held by another gateway process); " + continuations.START_AGAIN)


def needs_own_link(link: UpstreamLink, params: dict) -> bool:
    """A stateless-era agent that can be asked, on an upstream reached in the session era: the shared link
    declared nothing, so such calls (and listings) need a link that declares what this agent declared."""
    return bool(declarable(declared_capabilities(params, Era.STATELESS))) and \
        link.protocol_version not in MODERN_PROTOCOL_VERSIONS


async def abort_parked(parked_id: str, grant_id: int | None, reason: str) -> None:
    parked = parked_calls.REGISTRY.claim(parked_id, grant_id) if grant_id is not None else None
    if parked is not None:
        await parked_calls.REGISTRY.abort(parked, reason, settle=True)


async def bridged_call(msg: jsonrpc.Message, server: Server, call: ForwardedCall, name: str, arguments: dict,
                       parked_id: str | None) -> Reply:
    parked: parked_calls.ParkedCall | None = None
    async with call:
        try:
            if parked_id is None:
                refusal = parked_calls.REGISTRY.room_for(call.admission.grant_id)
                if refusal is not None:  # nothing was started upstream: the reservation is given back
                    return call.refused(Call.Outcome.PROTOCOL_ERROR, refusal)
                parked = await _start(msg, server, call)
            else:
                parked = parked_calls.REGISTRY.claim(parked_id, call.admission.grant_id)
                if parked is None:
                    return call.refused(Call.Outcome.REFUSED, NOT_WAITING)
                _answer(parked, msg)
            event = await parked.next_event()
            if isinstance(event, parked_calls.Question):
                return _ask(parked, event, call, name, arguments)
            parked_calls.REGISTRY.finish(parked)
            reply = _final(event, call)
        except MCPError as exc:
            reply = call.failed(exc)
        except UpstreamError as exc:
            reply = call.unreachable(exc)
        except asyncio.CancelledError as exc:  # the agent closed its stream: in this era, a cancellation
            call.record(Call.Outcome.INTERRUPTED, cancel_reason(exc))
            if parked is not None and not parked.ended:
                await parked_calls.REGISTRY.abort(parked, call.error, settle=False)
            await _ended(parked, call)
            raise
        await _ended(parked, call)
        return reply


async def _start(msg: jsonrpc.Message, server: Server, call: ForwardedCall) -> parked_calls.ParkedCall:
    parked = parked_calls.ParkedCall(call.admission.grant_id, first=call)
    parked.link = UpstreamLink(server, ask_agent=parked.ask,
                               agent_capabilities=declarable(declared_capabilities(msg.params, Era.STATELESS)))
    parked_calls.REGISTRY.add(parked)
    try:
        await parked.link.start()
    except UpstreamError:
        parked_calls.REGISTRY.finish(parked)
        raise
    params = {k: v for k, v in upstream_params(msg.params).items() if k not in ("inputResponses", "requestState")}
    # The call may wait for the agent in every round: the server's timeout plus each round's TTL.
    budget = server.timeout_seconds + settings.PORTCULLIS_CONTINUATION_TTL_S * (continuations.MAX_ROUNDS + 1)
    parked.start(parked.link.request("tools/call", params, timeout=budget))
    return parked


def _answer(parked: parked_calls.ParkedCall, msg: jsonrpc.Message) -> None:
    responses = msg.params.get("inputResponses")
    answer = responses.get(parked.question_key) if isinstance(responses, dict) else None
    parked.answer({"result": answer} if isinstance(answer, dict) else {"error": {
        "code": jsonrpc.INVALID_PARAMS, "message": f"the agent sent no answer for {parked.question_key!r}"}})


def _ask(parked: parked_calls.ParkedCall, question: parked_calls.Question, call: ForwardedCall, name: str,
         arguments: dict) -> Reply:
    """The upstream asked: the agent gets the question as input_required, and the call stays parked."""
    parked.round_no += 1
    parked.question_key = f"portcullis-{parked.round_no}"
    result = call.sealed({"resultType": "input_required",
                          "inputRequests": {parked.question_key: {"method": question.method,
                                                                  "params": question.params}}},
                         name, arguments, upstream_state=None, parked_id=parked.id, round_no=parked.round_no)
    parked_calls.REGISTRY.park(parked)
    if parked.first is call:
        call.keep_open()  # the first round's row waits for the call's end
    return call.answered(result)


def _final(event: parked_calls.Final, call: ForwardedCall) -> Reply:
    if isinstance(event.error, asyncio.CancelledError):
        return call.refused(Call.Outcome.INTERRUPTED, "the upstream call was cancelled; its outcome is unknown")
    if event.error is not None:
        raise event.error
    return call.answered(event.result)


async def _ended(parked: parked_calls.ParkedCall | None, call: ForwardedCall) -> None:
    """The call ended in a continuation round: the first round's row gets how it ended."""
    if parked is None or not parked.ended or parked.first is call:
        return
    parked.first.record(call.outcome, call.error, call.size)
    await parked.first.settle()
