"""Upstream calls parked between two requests of a stateless-era agent (the reverse of input_bridge.py).

A session-era upstream asks its client mid-call with a server→client request (elicitation/create,
sampling/createMessage, roots/list) and waits for the answer inside the call. A stateless-era (2026-07-28) agent
has no channel for that: it is asked by an `input_required` result and answers by calling the tool again. So the
gateway gives each such call its own upstream link, declaring exactly the agent's capabilities (a shared session
could not tell which call a question belongs to), answers the agent's pending request with the question as
`input_required` under a sealed requestState naming this parked call (gateway/calls/continuations.py), and keeps the
upstream call waiting in its callback until the agent's retry brings the answer.

Everything here is in this process's memory: a retry that lands on another gateway process finds no parked call
and is refused (the agent starts the call afresh). A call the agent never resumes is cancelled when its state
expires (the upstream request is cancelled, which sends notifications/cancelled, and its link is closed) and its
audit row (its first round's, `ParkedCall.first`) is settled with the reason. Bounded per grant and per process:
each parked call holds a connection, and for a stdio upstream a process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field

from django.conf import settings

from gateway.models import Call
from gateway.protocol import peers
from gateway.protocol.forwarded_call import ForwardedCall
from gateway.upstream.link import UpstreamLink

log = logging.getLogger("portcullis.parked")


@dataclass
class Question:
    """A server→client request the upstream made mid-call; `answer` is resolved with the agent's raw reply."""

    method: str
    params: dict
    answer: asyncio.Future


@dataclass
class Final:
    """The upstream call ended: its raw result, or the exception it raised."""

    result: dict | None
    error: BaseException | None


@dataclass
class ParkedCall:
    grant_id: int
    first: ForwardedCall  # the first round's call: its row carries the decision and is settled when the call ends
    id: str = field(default_factory=lambda: peers.new_id(16))  # names this process (peers.py)
    link: UpstreamLink | None = None
    round_no: int = 0
    question_key: str = ""  # the key of the open question in the agent's inputRequests
    question: Question | None = None  # the question the agent was given and has not answered yet
    _events: asyncio.Queue = field(default_factory=asyncio.Queue)
    _task: asyncio.Task | None = None
    _timer: asyncio.TimerHandle | None = None
    ended: bool = False

    async def ask(self, method: str, params: dict, channel=None) -> dict:
        """The link's ask_agent: hand the question to whoever waits on next_event() and wait for the answer."""
        answer = asyncio.get_running_loop().create_future()
        await self._events.put(Question(method, params, answer))
        return await answer

    def start(self, call: Awaitable[dict]) -> None:
        async def run() -> None:
            try:
                result = await call
            except asyncio.CancelledError:
                await self._events.put(Final(None, asyncio.CancelledError()))
                raise
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request, which maps it
                await self._events.put(Final(None, exc))
            else:
                await self._events.put(Final(result, None))
        self._task = asyncio.create_task(run(), name=f"parked:{self.id}")

    async def next_event(self) -> Question | Final:
        event = await self._events.get()
        if isinstance(event, Question):
            self.question = event
        return event

    def answer(self, raw: dict) -> None:
        """The agent's reply to the open question (a raw JSON-RPC answer: {"result": ...} or {"error": ...})."""
        question, self.question = self.question, None
        if question is not None and not question.answer.done():
            question.answer.set_result(raw)


class Registry:
    """This process's parked calls, by id. Bounded per grant and in all."""

    def __init__(self) -> None:
        self.calls: dict[str, ParkedCall] = {}
        self._closing: set[asyncio.Task] = set()

    def room_for(self, grant_id: int) -> str | None:
        """None when a new bridged call may start, else the refusal text the agent reads."""
        per_grant = settings.PORTCULLIS_PARKED_CALLS_PER_GRANT
        if sum(1 for c in self.calls.values() if c.grant_id == grant_id) >= per_grant:
            return (f"this agent already has {per_grant} calls waiting for its answers to upstream questions "
                    "(the gateway's limit per grant); answer or abandon them (their requestState expires after "
                    f"{settings.PORTCULLIS_CONTINUATION_TTL_S} s), then call again")
        if len(self.calls) >= settings.PORTCULLIS_PARKED_CALLS_MAX:
            return ("the gateway holds too many calls waiting for agents' answers right now; call again later")
        return None

    def add(self, call: ParkedCall) -> None:
        self.calls[call.id] = call

    def claim(self, parked_id: str, grant_id: int) -> ParkedCall | None:
        """The parked call a verified state names, its abandonment timer stopped; None if it is not here."""
        call = self.calls.get(parked_id)
        if call is None or call.ended or call.grant_id != grant_id:
            return None
        if call._timer is not None:
            call._timer.cancel()
            call._timer = None
        return call

    def park(self, call: ParkedCall) -> None:
        """The agent was given a question: abandon the call if no retry claims it before its state expires."""
        loop = asyncio.get_running_loop()
        ttl = settings.PORTCULLIS_CONTINUATION_TTL_S
        reason = (f"abandoned: the agent did not answer the upstream's question within {ttl} s (its requestState "
                  "expired); the upstream call was cancelled and its outcome is unknown")
        call._timer = loop.call_later(ttl, lambda: self._spawn(self.abort(call, reason, settle=True)))

    async def abort(self, call: ParkedCall, reason: str, *, settle: bool) -> None:
        """Cancel the upstream call (the SDK sends notifications/cancelled) and close its link; with `settle`,
        the first round's audit row is settled with the reason (else the caller settles it)."""
        if call.ended:
            return
        call.ended = True
        if call._timer is not None:
            call._timer.cancel()
        # The upstream request first (notifications/cancelled), while its question is still unanswered: failing
        # the question first would let the upstream finish the call with an error instead.
        if call._task is not None and not call._task.done():
            call._task.cancel()
            await asyncio.wait({call._task}, timeout=5)
        if call.question is not None and not call.question.answer.done():
            call.question.answer.cancel()
        self.calls.pop(call.id, None)
        self._close_link(call)
        if settle:
            try:
                call.first.record(Call.Outcome.INTERRUPTED, reason)
                await call.first.settle()
            except Exception:  # the row stays pending; start-up marks it interrupted
                log.exception("settling abandoned parked call %s failed", call.id)

    def finish(self, call: ParkedCall) -> None:
        """The upstream call ended normally: forget it and close its link (in the background)."""
        call.ended = True
        if call._timer is not None:
            call._timer.cancel()
        self.calls.pop(call.id, None)
        self._close_link(call)

    def _close_link(self, call: ParkedCall) -> None:
        if call.link is not None:
            self._spawn(call.link.close())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


REGISTRY = Registry()
