"""The stateless-only peer (tests/peers/stateless_server.py, same tools) that also records what each tools/call
carried: the client capabilities in its envelope, its requestState, and the W3C trace context (header and
`_meta.traceparent`). A real process, for
tests/e2e/test_gateway_stateless_rounds.py: what the upstream was told is read from the upstream itself.

Extra tool: `envelopes` returns the records (its own calls are not recorded).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import uvicorn
from mcp_types import CLIENT_CAPABILITIES_META_KEY

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stateless_server as base  # noqa: E402

ENVELOPES: list[dict] = []


@base.server.tool()
async def envelopes() -> str:
    """What each tools/call carried: tool name, declared client capabilities, requestState."""
    return json.dumps(ENVELOPES)


class Recording:
    def __init__(self) -> None:
        self.app = base.StatelessOnly()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            receive = await self._record(receive, headers.get("traceparent"))
        await self.app(scope, receive, send)

    async def _record(self, receive, traceparent: str | None):
        params, replay = await base.read_tools_call(receive)
        if params is not None and params.get("name") not in ("envelopes", "stats"):
            meta = params.get("_meta") or {}
            ENVELOPES.append({"tool": params.get("name"), "capabilities": meta.get(CLIENT_CAPABILITIES_META_KEY),
                              "requestState": params.get("requestState"), "progress": "progressToken" in meta,
                              "traceparent": {"header": traceparent, "meta": meta.get("traceparent")}})
        return replay


if __name__ == "__main__":
    uvicorn.run(Recording(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
