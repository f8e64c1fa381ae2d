"""A stdio upstream's pipes, shared by the SDK client and the hot path's direct requests.

The SDK's stdio transport turns every line into a pydantic message and passes it through two memory streams and
its dispatcher before a caller sees it; on the hot path that costs more CPU than everything else the gateway does
for a call. Here the gateway owns the pipes: a request that needs nothing streamed back (no progress token, no
server→client request to relay) is written as one JSON line on the server's stdin, and the reader hands the line
whose id matches straight to the waiting caller. Every other line (notifications, the server's own requests, the
answers to the SDK's requests) goes to the SDK client as its transport would have delivered it, so listing,
handshakes, progress and sampling work exactly as before.

The process is started and stopped by the SDK's own stdio helpers (its own process group; stdin closed, then
TERM, then KILL on the whole tree).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from contextlib import asynccontextmanager, suppress
from typing import IO

import anyio
import anyio.lowlevel
import mcp_types as types
from mcp.client import stdio as sdk_stdio
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, INTERNAL_ERROR

from gateway.upstream.rpc_result import result_of

log = logging.getLogger("portcullis.upstream")

_ids = itertools.count(1)
ID_PREFIX = "portcullis-pipe-"
_MARK = b'"' + ID_PREFIX.encode()  # a line that can be an answer to a direct request contains its id
_ID_IN_HEAD = re.compile(rb'"id"\s*:\s*"(' + re.escape(ID_PREFIX.encode()) + rb'\d+)"')
HEAD_BYTES = 512  # what is kept of a line over the limit: enough to find its id


class StdioPipe:
    """The stdin/stdout of one upstream process: direct requests and their answers."""

    def __init__(self, process, limit: int) -> None:
        self._process = process
        self._limit = limit
        self._writer = _asyncio_writer(process.stdin)
        self._pending: dict[str, asyncio.Future] = {}
        self.closed = False

    async def request(self, method: str, params: dict, timeout: float, on_abandon) -> dict:
        """Write one request and wait for its answer: the raw result, or MCPError (a JSON-RPC error, a timeout,
        the connection gone). `on_abandon(request_id, reason)` tells the server the gateway stopped waiting."""
        if self.closed:
            raise MCPError(code=CONNECTION_CLOSED, message="connection closed")
        request_id = f"{ID_PREFIX}{next(_ids)}"
        line = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params},
                          separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        answer = self._pending[request_id] = asyncio.get_running_loop().create_future()
        try:
            try:
                await self._send(line)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                raise MCPError(code=CONNECTION_CLOSED, message="connection closed") from None
            try:
                async with asyncio.timeout(timeout):
                    message = await answer
            except TimeoutError:
                await _abandon(on_abandon, request_id, f"no answer within {timeout} s")
                raise MCPError(code=types.REQUEST_TIMEOUT, message=f"no answer within {timeout} s") from None
            except asyncio.CancelledError:
                await _abandon(on_abandon, request_id, "the agent's request was cancelled")
                raise
        finally:
            self._pending.pop(request_id, None)
        return result_of(message)

    async def _send(self, line: bytes) -> None:
        """The line on the server's stdin, whole (a write is never split between writers). On asyncio's own writer:
        anyio's send() also yields to the event loop after every write, one more loop iteration per call; drain()
        waits only while the pipe is full."""
        writer = self._writer
        if writer is None:
            await self._process.stdin.send(line)
            return
        if writer.is_closing():
            raise anyio.ClosedResourceError
        try:
            writer.write(line)
        except RuntimeError as exc:  # uvloop: the pipe's handle is closed
            raise anyio.BrokenResourceError from exc
        await writer.drain()

    def take(self, line: bytes) -> SessionMessage | Exception | None:
        """One line from stdout: None when it answered a direct request (handed over here), else what the SDK
        client reads."""
        if self._pending and _MARK in line:
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict) and "method" not in message:
                answer = self._pending.get(message.get("id"))  # type: ignore[arg-type]
                if answer is not None:
                    if not answer.done():
                        answer.set_result(message)
                    return None
        try:
            return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
        except ValueError as exc:
            log.warning("upstream wrote a line that is not a JSON-RPC message: %s", str(exc)[:200])
            return exc

    def close(self) -> None:
        """The pipes are gone: every waiting direct request fails as a lost connection."""
        self.closed = True
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(MCPError(code=CONNECTION_CLOSED, message="connection closed"))

    async def read(self, deliver) -> None:
        """Read stdout to its end, a line at a time; `deliver` gets what is the SDK's. A line over the limit is
        discarded as it arrives (memory stays bounded); the direct request it answered is told how big it was."""
        stdout, limit = self._process.stdout, self._limit
        pending = b""
        skipping: list | None = None  # [first bytes, size so far] of a line over the limit
        while True:
            try:
                chunk = await stdout.receive()
            except anyio.EndOfStream:
                return
            while chunk:
                end = chunk.find(b"\n")
                if skipping is not None:
                    skipping[1] += len(chunk) if end < 0 else end
                    if end >= 0:
                        self._too_large(*skipping)
                        skipping = None
                    chunk = b"" if end < 0 else chunk[end + 1:]
                    continue
                if end < 0:
                    pending += chunk
                    chunk = b""
                    if len(pending) > limit:
                        skipping, pending = [pending[:HEAD_BYTES], len(pending)], b""
                    continue
                line, pending, chunk = pending + chunk[:end], b"", chunk[end + 1:]
                if len(line) > limit:
                    self._too_large(line[:HEAD_BYTES], len(line))
                elif line.strip():
                    message = self.take(line)
                    if message is not None:
                        await deliver(message)

    def _too_large(self, head: bytes, size: int) -> None:
        found = _ID_IN_HEAD.search(head)
        answer = self._pending.get(found.group(1).decode()) if found else None
        if answer is not None and not answer.done():
            answer.set_exception(AnswerTooLarge(size, self._limit))
        else:
            log.warning("upstream wrote a message of %d bytes, over the %d-byte limit; it was discarded", size,
                        self._limit)


def _asyncio_writer(stdin) -> asyncio.StreamWriter | None:
    """asyncio's StreamWriter under anyio's stdin stream of the process (anyio 4 keeps it as `_stream`); None when
    it is not there, and requests go through anyio's send()."""
    writer = getattr(stdin, "_stream", None)
    return writer if isinstance(writer, asyncio.StreamWriter) else None


class AnswerTooLarge(MCPError):
    """The upstream's answer was over PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES: discarded unread; the tool ran."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(code=INTERNAL_ERROR, message=f"upstream answer of {size} bytes is over the {limit}-byte limit")
        self.size = size


async def _abandon(on_abandon, request_id: str, reason: str) -> None:
    with suppress(Exception), anyio.CancelScope(shield=True), anyio.move_on_after(1):
        await on_abandon(request_id, reason)


@asynccontextmanager
async def open_stdio(params: sdk_stdio.StdioServerParameters, errlog: IO[str], limit: int, on_pipe=None):
    """Start the server and yield the SDK client's transport streams; `on_pipe(pipe)` gets the direct side."""
    command = await sdk_stdio._get_executable_command(params.command)
    process = await sdk_stdio._create_platform_compatible_process(
        command=command, args=params.args, env=sdk_stdio.get_default_environment() | (params.env or {}),
        errlog=errlog, cwd=params.cwd)
    # No awaits from here until the task group is entered: a cancellation in the gap would leak the process.
    pipe = StdioPipe(process, limit)
    to_client, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, from_client = anyio.create_memory_object_stream[SessionMessage](0)
    stopping = False
    writer_done = anyio.Event()

    async def reader() -> None:
        try:
            async with to_client:
                try:
                    await pipe.read(to_client.send)
                finally:
                    pipe.close()
                    await sdk_stdio._drain_stdout(process)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, ConnectionError, MCPError) as exc:
            if not stopping:
                log.warning("reading the upstream's stdout failed: %s", exc)

    async def writer() -> None:
        try:
            async with from_client:
                async for item in from_client:
                    data = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                    await process.stdin.send(data.encode() + b"\n")
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await to_client.aclose()  # the client sees the connection end instead of a request hanging
        finally:
            writer_done.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(reader)
        tasks.start_soon(writer)
        if on_pipe is not None:
            on_pipe(pipe)
        try:
            yield read_stream, write_stream
        finally:
            stopping = True
            pipe.close()
            with anyio.CancelScope(shield=True):
                read_stream.close()
                write_stream.close()
                with anyio.move_on_after(0.5):  # what the client already handed over reaches the server first
                    await writer_done.wait()
                await sdk_stdio._stop_server_process(process)
                for stream in (read_stream, write_stream, to_client, from_client):
                    await stream.aclose()
                await anyio.lowlevel.checkpoint()
            tasks.cancel_scope.cancel()
