"""An MCP server that speaks only the stateless era (2026-07-28), over Streamable HTTP, for the gateway's
input_required tests (a real process, not a mock).

It has no back-channel: a tool that needs the client asks with an `input_required` result and continues when the
client retries with `inputResponses` (and the sealed `requestState` the SDK's MCPServer hands out). Every request
goes to the SDK's stateless-era HTTP entry, so an `initialize` (or anything without the stateless envelope) is
refused the way a stateless-only server refuses it.

Tools: `ask` asks the user one question (form elicitation, via the SDK's resolvers); `ask_two` asks two questions
in two rounds, carrying the first answer in its own request state; `sample` asks the client's model; `roots`
asks for the client's roots; `nag` asks again on every round, forever; `rude` asks the client's model whether or
not the client declared sampling (a misbehaving upstream); `ok` answers at once; `stats` reports how many
tools/call requests arrived, and with what inputResponses keys. For the cacheable methods: one resource
(`peer://motd`), one resource template (`peer://notes/{name}`) and one prompt (`greet`).
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Annotated

import uvicorn
from mcp.server._streamable_http_modern import handle_modern_request
from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Elicit, ListRoots, Resolve, Sample
from mcp_types import (
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    InputRequiredResult,
    ListRootsResult,
    SamplingMessage,
    TextContent,
)
from pydantic import BaseModel

server = MCPServer("stateless-only")
SEEN: list[list[str]] = []  # per tools/call round: the inputResponses keys it carried


class Answer(BaseModel):
    answer: str


def ask_user(question: str) -> Elicit[Answer]:
    return Elicit(question, Answer)


@server.tool()
async def ask(question: str, reply: Annotated[ElicitationResult[Answer], Resolve(ask_user)]) -> str:
    """Asks the user one question (elicitation)."""
    return f"user said: {reply.data.answer}" if reply.action == "accept" else f"user {reply.action}"


def _form(message: str) -> ElicitRequest:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


@server.tool()
async def ask_two(ctx: Context) -> str | InputRequiredResult:
    """Asks two questions, one per round; the first answer rides the request state."""
    responses = ctx.input_responses or {}
    state = json.loads(ctx.request_state) if ctx.request_state else {}
    if "first" in responses:
        state["first"] = responses["first"].content["answer"]
    if "first" not in state:
        return InputRequiredResult(input_requests={"first": _form("first name?")}, request_state=json.dumps(state))
    if "last" not in responses:
        return InputRequiredResult(input_requests={"last": _form("last name?")}, request_state=json.dumps(state))
    return f"hello {state['first']} {responses['last'].content['answer']}"


def ask_model() -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text="pick a colour"))],
                  max_tokens=20)


@server.tool()
async def sample(said: Annotated[CreateMessageResult, Resolve(ask_model)]) -> str:
    """Asks the client's model (sampling)."""
    return f"model said: {said.content.text}"


def client_roots() -> ListRoots:
    return ListRoots()


@server.tool()
async def roots(listed: Annotated[ListRootsResult, Resolve(client_roots)]) -> str:
    """Asks the client for its roots."""
    return "roots: " + ", ".join(str(r.uri) for r in listed.roots)


@server.tool()
async def nag(ctx: Context) -> InputRequiredResult:
    """Never satisfied: asks again on every round."""
    return InputRequiredResult(input_requests={f"again{len(SEEN)}": _form("again?")}, request_state="nag")


@server.tool()
async def rude(ctx: Context) -> str | InputRequiredResult:
    """Asks the client's model without checking that the client declared sampling."""
    if ctx.input_responses:
        return "rude got an answer"
    request = CreateMessageRequest(params=CreateMessageRequestParams(
        messages=[SamplingMessage(role="user", content=TextContent(type="text", text="hi"))], max_tokens=5))
    return InputRequiredResult(input_requests={"llm": request})


@server.tool()
async def ok(text: str = "fine") -> str:
    return f"ok: {text}"


@server.tool()
async def stats() -> str:
    return json.dumps(SEEN)


@server.resource("peer://motd", name="motd", mime_type="text/plain")
def motd() -> str:
    return "message of the day"


@server.resource("peer://notes/{name}", name="note", mime_type="text/plain")
def note(name: str) -> str:
    return f"note {name}"


@server.prompt()
def greet(who: str = "you") -> str:
    return f"Say hello to {who}."


async def read_tools_call(receive):
    """Reads a request body whole: (the params of a tools/call in it, or None; a receive that replays the body
    unchanged to the app)."""
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    params = None
    if isinstance(decoded, dict) and decoded.get("method") == "tools/call":
        params = decoded.get("params") if isinstance(decoded.get("params"), dict) else {}
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return params, replay


class StatelessOnly:
    """ASGI app: every request takes the SDK's stateless-era entry (no sessions, no legacy handshake)."""

    def __init__(self) -> None:
        self.lowlevel = server._lowlevel_server
        self.state = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            receive = await self._note_call(receive)
        await handle_modern_request(self.lowlevel, None, True, self.state, scope, receive, send)

    async def _note_call(self, receive):
        """Records each tools/call's inputResponses keys (for the tests), replaying the body unchanged."""
        params, replay = await read_tools_call(receive)
        if params is not None and params.get("name") != "stats":
            SEEN.append(sorted((params.get("inputResponses") or {}).keys()))
        return replay

    async def _lifespan(self, receive, send) -> None:
        async with contextlib.AsyncExitStack() as stack:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.state = await stack.enter_async_context(self.lowlevel.lifespan(self.lowlevel))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return


if __name__ == "__main__":
    uvicorn.run(StatelessOnly(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
