"""The result of a JSON-RPC answer read on one of the gateway's direct paths (`fastpath.py`, `stdio_pipe.py`)."""

from __future__ import annotations

from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR


def result_of(message: object, how: str = "") -> dict:
    """The answer's result, or MCPError: the upstream's JSON-RPC error as it sent it, or an answer that is not one
    (`how` says how it came, e.g. " HTTP 200")."""
    if not isinstance(message, dict):
        raise MCPError(code=INTERNAL_ERROR, message=f"upstream answered{how} without a JSON-RPC message")
    if "error" in message:
        error = message["error"] if isinstance(message["error"], dict) else {}
        raise MCPError(code=int(error.get("code", INTERNAL_ERROR)), message=str(error.get("message", "error")),
                       data=error.get("data"))
    result = message.get("result")
    if not isinstance(result, dict):
        raise MCPError(code=INTERNAL_ERROR, message=f"upstream answered{how} without a result")
    return result
