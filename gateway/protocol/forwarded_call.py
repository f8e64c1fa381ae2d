"""One admitted tools/call on its way upstream: it owns its audit row until the row is settled, exactly once.

Used as `async with ForwardedCall(...) as call:`. Inside, the code that talks to the upstream says what happened
(`answered`, `failed`, `unreachable`, `refused`) and gets the agent's reply for it; on the way out the row is
settled with that outcome and announced to the dashboard. Every path settles: a result, an upstream error, a
timeout, a lost connection, an unexpected exception (outcome `interrupted`: unknown until the upstream answered,
never `ok`) and a cancellation (the agent's `notifications/cancelled` or disconnect, or the gateway's own reason
given as the cancel message, e.g. an evicted session). The first round of a parked call
(gateway/protocol/bridged_calls.py) keeps its row open past its own request (`keep_open`) and settles it when
the call ends.

Outcomes of calls finishing together are written together (dbthreads.Batch: one commit for all).
"""

from __future__ import annotations

import asyncio
import time

from django.conf import settings
from django.utils import timezone
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from gateway import calls, events
from gateway.calls import audit, continuations, dbthreads, loop_database
from gateway.models import Call, Server
from gateway.protocol import input_bridge, jsonrpc
from gateway.protocol.era import Era
from gateway.protocol.exchange import Reply, error_reply, ok_reply, refusal_reply
from gateway.protocol.jsonrpc import RpcError
from gateway.upstream.stdio_pipe import AnswerTooLarge

CANCELLED = "cancelled by the agent or its disconnect"
OUTCOMES = dbthreads.Batch(lambda item: calls.settle(item[0], **item[1]), calls.settle_many, loop_database.run)


def cancel_reason(exc: BaseException | None) -> str:
    """The reason a cancellation carries (`task.cancel(msg)`), else the agent's own cancellation."""
    if exc is not None and exc.args and isinstance(exc.args[0], str) and exc.args[0]:
        return exc.args[0]
    return CANCELLED


class ForwardedCall:
    def __init__(self, admission: calls.Admission, server: Server, msg: jsonrpc.Message, era: Era) -> None:
        self.admission, self.server, self.msg, self.era = admission, server, msg, era
        self.started = time.perf_counter()
        self.outcome: str = Call.Outcome.INTERRUPTED
        self.error = "gateway error before the upstream answered"
        self.size: int | None = None
        self.settled = False
        self.kept_open = False

    @property
    def call_id(self) -> int | None:
        return self.admission.call_id

    def record(self, outcome: str, error: str = "", size: int | None = None) -> None:
        self.outcome, self.error, self.size = outcome, error, size

    # --- what happened, and the agent's reply for it ---

    def answered(self, result: dict) -> Reply:
        """The upstream's result: passed on unless it is larger than the gateway passes (the tool ran, so its
        reservation is kept, but the answer is withheld and the row says why)."""
        size = len(jsonrpc.dumps(result))
        if size > settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES:
            return self.too_large(size)
        self.record(Call.Outcome.TOOL_ERROR if result.get("isError") else Call.Outcome.OK, "", size)
        return ok_reply(self.msg, result, self.era)

    def too_large(self, size: int) -> Reply:
        limit = settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES
        text = f"upstream answer of {size} bytes exceeds the gateway's limit of {limit} bytes; it was not passed on"
        self.record(Call.Outcome.TOOL_ERROR, text, size)
        return refusal_reply(self.msg, text, self.era)

    def failed(self, exc: MCPError) -> Reply:
        """The upstream answered the request with a JSON-RPC error (or the SDK ended it: timeout, lost link)."""
        if isinstance(exc, AnswerTooLarge):  # the direct stdio path discards it unread (upstream/stdio_pipe.py)
            return self.too_large(exc.size)
        server = self.server
        if exc.code == REQUEST_TIMEOUT:
            return self.refused(Call.Outcome.TIMEOUT,
                                f"upstream timeout: {server.slug} did not answer within {server.timeout_seconds} s; "
                                "the call was cancelled upstream and its outcome is unknown")
        if exc.code == CONNECTION_CLOSED:
            return self.refused(Call.Outcome.INTERRUPTED,
                                f"upstream connection lost during the call; its outcome is unknown ({exc.message})")
        self.record(Call.Outcome.PROTOCOL_ERROR, f"{exc.code}: {exc.message}")
        if self.era is Era.SESSION and (text := input_bridge.missing_capability_text(exc.code, exc.error.data)):
            # A session-era agent has no such error code; the tool did not run, so this is still a protocol error.
            return refusal_reply(self.msg, text, self.era)
        return error_reply(RpcError(exc.code, exc.message, exc.error.data, self.msg.id))

    def unreachable(self, exc: Exception) -> Reply:
        self.record(Call.Outcome.INTERRUPTED, str(exc))
        return refusal_reply(self.msg, f"upstream unavailable: {exc}; the call's outcome is unknown", self.era)

    def refused(self, outcome: str, text: str) -> Reply:
        self.record(outcome, text)
        return refusal_reply(self.msg, text, self.era)

    def sealed(self, result: dict, name: str, arguments: dict, *, upstream_state: str | None,
               parked_id: str | None = None, round_no: int | None = None) -> dict:
        """An input_required result for a stateless-era agent, its requestState replaced by the gateway's seal:
        the agent's retry is then recognised as this call's next round (bound to grant, server, tool, arguments)."""
        admission, continuation = self.admission, self.admission.continuation
        binding = continuations.Binding(admission.grant_id, self.server.pk, name, audit.argument_hash(arguments))
        if round_no is None:
            round_no = continuation.round_no + 1 if continuation is not None else 1
        first_call_id = continuation.first_call_id if continuation is not None else admission.call_id
        state = continuations.seal(upstream_state, binding=binding, now=timezone.now(), first_call_id=first_call_id,
                                   round_no=round_no, parked_id=parked_id)
        return {**result, "requestState": state}

    # --- the row ---

    def keep_open(self) -> None:
        """This request ends but the call goes on (a parked call's first round): the row is settled later."""
        self.kept_open = True

    async def settle(self) -> None:
        if self.settled:
            return
        self.settled = True
        await OUTCOMES.submit((self.admission, {
            "outcome": self.outcome, "latency_ms": (time.perf_counter() - self.started) * 1000,
            "result_size": self.size, "error": self.error, "now": timezone.now()}))
        events.call_changed(self.call_id, self.server.slug, "settled")

    async def __aenter__(self) -> ForwardedCall:
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self.record(Call.Outcome.INTERRUPTED, cancel_reason(exc))
        if not self.kept_open:
            await self.settle()
        return False
