"""One agent request and the gateway's reply to it, as the protocol layer passes them around.

The edge builds a `Request` from the HTTP request (slug, bearer token, headers, session, the SSE channel the
answer may stream on) and sends the `Reply` back; in between, the reply's JSON-RPC body is shaped for the
agent's era (gateway/protocol/era.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.protocol import jsonrpc
from gateway.protocol.era import Era, shape_result
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.streams import Channel


@dataclass
class Request:
    slug: str
    token: str
    headers: dict[str, str]
    session_id: str | None = None
    channel: Channel | None = None  # set when the agent accepts an SSE answer to this POST
    # Legacy HTTP+SSE transport: the stream's id becomes the session id and its channel the session's stream.
    sse_stream: tuple[str, Channel] | None = None
    # The server came from this process's recent copy, not from this request's own load: admission checks that it
    # is still the registration as it is (gateway/protocol/relay.py, "stateless era").
    recent_server: bool = False
    # When admission wrote this call, having read that the recent copy is still the registration: the copy is
    # recent from then on (gateway/protocol/relay.py).
    server_confirmed_at: float | None = None


@dataclass
class Reply:
    status: int = 200
    body: dict | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def error_reply(err: RpcError, extra_headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(err.http_status, err.body(), extra_headers or [])


def ok_reply(msg: jsonrpc.Message, result: dict, era: Era) -> Reply:
    return Reply(200, jsonrpc.result(msg.id, shape_result(result, era, msg.method)))


def refusal_reply(msg: jsonrpc.Message, text: str, era: Era) -> Reply:
    """A tool call the gateway refused or could not complete: an isError result whose text a model can act on."""
    return ok_reply(msg, {"content": [{"type": "text", "text": text}], "isError": True}, era)


def progress_relay(req: Request, msg: jsonrpc.Message):
    """An on_progress callback that forwards upstream progress under the agent's own progress token; None when
    the agent gave none or cannot be streamed to."""
    meta = msg.params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    if token is None or req.channel is None:
        return None
    channel = req.channel

    async def forward(progress: float, total: float | None, message: str | None) -> None:
        params = {"progressToken": token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await channel.put({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})

    return forward
