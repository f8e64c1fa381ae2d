"""How to reach a registered upstream with the `mcp` SDK client, per transport (stdio, Streamable HTTP, SSE).

Only the server's own configured env and headers go upstream: never the agent's token, the gateway's
secrets or its environment beyond an allow-list.
"""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import asynccontextmanager
from typing import IO

import httpx2
from django.conf import settings
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from gateway.models import Server
from gateway.stdio_rules import LaunchRefused, check_launch, missing_program, resolve_program
from gateway.upstream.stdio_pipe import open_stdio
from gateway.upstream_addresses import AddressRefused, check_url_before_connecting


class UpstreamError(RuntimeError):
    """The upstream could not be reached or answered badly; the message is redacted and says what to check."""


_POOLS: dict[tuple, tuple[asyncio.AbstractEventLoop, httpx2.AsyncClient]] = {}
POOL_LIMITS = httpx2.Limits(max_connections=100, max_keepalive_connections=20)  # per upstream configuration


def pooled_client(server: Server, timeout: float) -> httpx2.AsyncClient:
    """One client per upstream configuration and event loop (a client cannot outlive its loop: commands
    run a loop per call, the server one for its life)."""
    loop = asyncio.get_running_loop()
    for key in [k for k, (owner, _) in _POOLS.items() if owner.is_closed()]:
        del _POOLS[key]
    key = (id(loop), server.url, server.headers_sealed, timeout)
    entry = _POOLS.get(key)
    if entry is None or entry[1].is_closed:
        entry = _POOLS[key] = (loop, httpx2.AsyncClient(headers=server.headers, timeout=httpx2.Timeout(timeout),
                                                        limits=POOL_LIMITS))
    return entry[1]


def stdio_environment(server: Server) -> dict[str, str]:
    inherited = {k: os.environ[k] for k in settings.PORTCULLIS_STDIO_ENV_ALLOW if k in os.environ}
    return inherited | server.env


def stdio_parameters(server: Server) -> StdioServerParameters:
    if not server.command:
        raise UpstreamError(f"server {server.slug!r} has no command to start")
    try:  # saved rows were checked already; a row written some other way is checked here, before anything runs
        check_launch(server.command, server.env)
    except LaunchRefused as exc:
        raise UpstreamError(f"server {server.slug!r} was not started: {exc}") from None
    program = resolve_program(server.command[0])
    if program is None:
        raise UpstreamError(f"server {server.slug!r} was not started: {missing_program(server.command)}")
    return StdioServerParameters(command=program, args=list(server.command[1:]), env=stdio_environment(server))


@asynccontextmanager
async def open_transport(server: Server, errlog: IO[str] | None = None, timeout: float | None = None, on_pipe=None):
    """Yield the SDK transport streams for one upstream connection. A stdio server's pipes are the gateway's own
    (`stdio_pipe.py`): `on_pipe` gets them, for the hot path's direct requests."""
    timeout = timeout or server.timeout_seconds
    if server.transport in (Server.Transport.HTTP, Server.Transport.SSE):
        try:  # checked again at every connection, so a DNS change since registration is caught too
            await check_url_before_connecting(server.url)
        except AddressRefused as exc:
            raise UpstreamError(f"server {server.slug!r} was not contacted: {exc}") from None
    if server.transport == Server.Transport.STDIO:
        params = stdio_parameters(server)
        async with open_stdio(params, errlog if errlog is not None else sys.stderr,
                              settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES, on_pipe) as streams:
            yield streams
    elif server.transport == Server.Transport.HTTP:
        # One pooled HTTP client per upstream configuration, shared by every link to it (the SDK leaves a
        # client it was given open).
        client = pooled_client(server, timeout)
        async with streamable_http_client(server.url, http_client=client,
                                          max_sse_event_size=settings.PORTCULLIS_MAX_UPSTREAM_MESSAGE_BYTES) as streams:
            yield streams
    elif server.transport == Server.Transport.SSE:
        async with sse_client(server.url, headers=server.headers, timeout=timeout) as streams:
            yield streams
    else:
        raise UpstreamError(f"server {server.slug!r} has an unknown transport {server.transport!r}")
