"""A direct JSON-RPC POST to a stateless-era (2026-07-28) Streamable HTTP upstream, for the hot path.

The SDK client's stream and dispatcher plumbing cost more CPU per call than everything else the gateway does.
In the stateless era one request is one self-contained POST (no session), so a call that needs nothing
streamed back to the agent (no progress token) can be sent directly on the pooled HTTP client, with the
envelope and routing headers the SDK session stamps. Anything else goes through the SDK link.
"""

from __future__ import annotations

import itertools
import json

import httpx2
from django.conf import settings
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, REQUEST_TIMEOUT

_ids = itertools.count(1)


async def post(client: httpx2.AsyncClient, url: str, method: str, params: dict, headers: dict,
               timeout: float) -> dict:
    """Send one request and return its result; MCPError for a JSON-RPC error or a timeout."""
    request_id = f"portcullis-fast-{next(_ids)}"
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    limit = settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES
    try:
        async with client.stream("POST", url, content=json.dumps(body, separators=(",", ":")), timeout=timeout,
                                 headers={**headers, "content-type": "application/json",
                                          "accept": "application/json, text/event-stream"}) as response:
            kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind == "text/event-stream":
                message = await _from_events(response, request_id, limit)
            else:
                message = json.loads(await _read_limited(response, limit))
    except httpx2.TimeoutException:
        # Stateless era: closing the request's stream is the cancellation.
        raise MCPError(code=REQUEST_TIMEOUT, message=f"no answer within {timeout} s") from None
    return _result(message, response.status_code)


async def _read_limited(response: httpx2.Response, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise MCPError(code=INTERNAL_ERROR, message=f"upstream answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _from_events(response: httpx2.Response, request_id: str, limit: int) -> dict:
    """The response message among the stream's events (notifications before it are not relayed here)."""
    data: list[str] = []
    size = 0
    async for line in response.aiter_lines():
        size += len(line)
        if size > limit:
            raise MCPError(code=INTERNAL_ERROR, message=f"upstream answer larger than {limit} bytes")
        if line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line == "" and data:
            message = json.loads("\n".join(data))
            data = []
            if isinstance(message, dict) and message.get("id") == request_id:
                return message
    raise MCPError(code=INTERNAL_ERROR, message="upstream stream ended without an answer")


def _result(message: object, status: int) -> dict:
    if not isinstance(message, dict):
        raise MCPError(code=INTERNAL_ERROR, message=f"upstream answered HTTP {status} without a JSON-RPC message")
    if "error" in message:
        error = message["error"] if isinstance(message["error"], dict) else {}
        raise MCPError(code=int(error.get("code", INTERNAL_ERROR)), message=str(error.get("message", "error")),
                       data=error.get("data"))
    result = message.get("result")
    if not isinstance(result, dict):
        raise MCPError(code=INTERNAL_ERROR, message=f"upstream answered HTTP {status} without a result")
    return result
