"""A direct JSON-RPC POST to a stateless-era (2026-07-28) Streamable HTTP upstream, for the hot path.

The SDK client's stream and dispatcher plumbing cost more CPU per call than everything else the gateway does.
In the stateless era one request is one self-contained POST (no session), so a call that needs nothing
streamed back to the agent (no progress token) can be sent directly on the pooled HTTP client, with the
envelope and routing headers the SDK session stamps, on the gateway's own keep-alive client (`http1.py`).
Anything else goes through the SDK link.
"""

from __future__ import annotations

import asyncio
import itertools
import json

from django.conf import settings
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, REQUEST_TIMEOUT

from gateway.models import Server
from gateway.telemetry import tracing
from gateway.upstream.http1 import Pool
from gateway.upstream.rpc_result import result_of

_ids = itertools.count(1)
STREAM_TAIL_S = 0.2
_POOLS: dict[tuple, tuple[asyncio.AbstractEventLoop, Pool]] = {}


def available(server: Server) -> bool:
    return Pool.usable_for(server.url)


def _pool(server: Server) -> Pool:
    """One pool per upstream configuration and event loop (connections belong to the loop that opened them)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), server.url, server.headers_sealed)
    entry = _POOLS.get(key)
    if entry is None or entry[0] is not loop:
        for stale in [k for k, (owner, _) in _POOLS.items() if owner.is_closed()]:
            _POOLS.pop(stale)[1].close()
        entry = _POOLS[key] = (loop, Pool(server.url, server.headers))
    return entry[1]


async def post(server: Server, method: str, params: dict, headers: dict, timeout: float) -> dict:
    """Send one request and return its result; MCPError for a JSON-RPC error or a timeout."""
    if tracing.ENABLED:  # W3C trace context on the HTTP request too (gateway/telemetry/tracing.py)
        headers = {**headers, **tracing.carrier()}
    request_id = f"portcullis-fast-{next(_ids)}"
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params},
                      separators=(",", ":")).encode()
    limit = settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES
    try:
        async with asyncio.timeout(timeout), _pool(server).post(body, headers, limit) as response:
            if response.content_type == "text/event-stream":
                message = await _from_events(response, request_id)
            else:
                message = json.loads(await response.body())
            status = response.status
    except TimeoutError:
        # Stateless era: closing the request's stream (the pool closes an unfinished connection) is the
        # cancellation.
        raise MCPError(code=REQUEST_TIMEOUT, message=f"no answer within {timeout} s") from None
    return result_of(message, f" HTTP {status}")


async def _from_events(response, request_id: str) -> dict:
    """The response message among the stream's events (notifications before it are not relayed here)."""
    chunks = response.chunks()
    try:
        found = await _find_answer(chunks, request_id)
        # A server ends the stream right after the answer; reading that end lets the connection be reused. One
        # that keeps it open costs its connection, not the agent's time.
        try:
            async with asyncio.timeout(STREAM_TAIL_S):
                async for _ in chunks:
                    pass
        except TimeoutError:
            pass
    finally:
        await chunks.aclose()
    return found


async def _find_answer(chunks, request_id: str) -> dict:
    data: list[bytes] = []
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")  # Python SDK servers end lines with CRLF
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif not line and data:
                message = json.loads(b"\n".join(data))
                data = []
                if isinstance(message, dict) and message.get("id") == request_id:
                    return message
    raise MCPError(code=INTERNAL_ERROR, message="upstream stream ended without an answer")
