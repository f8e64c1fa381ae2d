"""List an upstream's tools over MCP (all pages), for refresh_tools and the dashboard's refresh button."""

from __future__ import annotations

import tempfile

import anyio
from mcp import Client, types

from gateway.models import Server
from gateway.redaction import redact_server_text
from gateway.upstream.connect import UpstreamError, open_transport

MAX_PAGES = 1000  # an upstream that keeps returning cursors is broken, not large
STDERR_TAIL_BYTES = 2000  # how much of a failing stdio server's stderr goes into the error


async def fetch_tool_definitions(server: Server) -> list[dict]:
    """Every tool definition the upstream lists, in its order, as JSON dicts exactly as sent."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        try:
            with anyio.fail_after(server.timeout_seconds):
                return await _list_all(server, errlog)
        except UpstreamError as exc:  # refused before or while listing (a program not on the host, too many pages)
            raise UpstreamError(_explain(server, str(exc), errlog)) from None
        except TimeoutError:
            raise UpstreamError(_explain(server, f"no answer within {server.timeout_seconds} s", errlog)) from None
        except Exception as exc:  # any transport, protocol or spawn failure: report it, redacted
            raise UpstreamError(_explain(server, _describe(exc), errlog)) from None


async def _refuse(*_args) -> types.ErrorData:
    return types.ErrorData(code=types.INVALID_REQUEST, message="the gateway is only listing tools; nobody can answer")


# Declared so that the listing is the upstream's whole catalogue: some upstreams offer tools only to clients
# that can sample, elicit or list roots (server-everything does), and agents that can will call them.
_EVERY_CAPABILITY = {"sampling_callback": _refuse, "elicitation_callback": _refuse, "list_roots_callback": _refuse}


async def _list_all(server: Server, errlog) -> list[dict]:
    async with Client(open_transport(server, errlog=errlog), mode="auto", cache=None,
                      **_EVERY_CAPABILITY) as client:
        definitions: list[dict] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            definitions.extend(t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                return definitions
        raise UpstreamError(f"server {server.slug!r} returned more than {MAX_PAGES} pages of tools")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def _explain(server: Server, what: str, errlog) -> str:
    message = f"could not list the tools of {server.slug!r} ({server.target_display()}): {what}"
    if server.transport == Server.Transport.STDIO:
        errlog.flush()
        errlog.seek(0)
        tail = errlog.read()[-STDERR_TAIL_BYTES:].strip()
        if tail:
            message += f"\nlast lines the server wrote to stderr:\n{tail}"
    return redact_server_text(server, message)


async def call_tool_texts(server: Server, name: str, calls: list[dict]) -> list[tuple[bool, str]]:
    """Call one tool of the upstream with each of `calls` (arguments), in one session: (is_error, text) each.
    For learning a dispatcher's actions from its own listing action (gateway/catalogue/actions.py); never an
    agent's call: nothing here is audited as one, so only listing requests a person asked for go this way."""
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        try:
            with anyio.fail_after(server.timeout_seconds * max(1, len(calls))):
                async with Client(open_transport(server, errlog=errlog), mode="auto", cache=None) as client:
                    out = []
                    for arguments in calls:
                        result = await client.call_tool(name, arguments)
                        text = "".join(getattr(block, "text", "") for block in result.content)
                        out.append((bool(result.is_error), text))
                    return out
        except UpstreamError as exc:
            raise UpstreamError(_explain(server, str(exc), errlog)) from None
        except TimeoutError:
            raise UpstreamError(_explain(server, f"no answer within {server.timeout_seconds} s", errlog)) from None
        except Exception as exc:
            raise UpstreamError(_explain(server, _describe(exc), errlog)) from None
