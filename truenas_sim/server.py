"""MCP wiring: a low-level SDK ``Server`` over the Dispatcher, served on stdio or Streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from . import __version__
from .catalogue import describe, umbrella_description
from .errors import ApiError
from .handlers import Dispatcher
from .state import RESOURCES, State

logger = logging.getLogger(__name__)
SERVER_NAME = "truenas-sim"
URI_PREFIX = "truenas://"
RESOURCE_NOT_FOUND = -32002
INSTRUCTIONS = (
    "A simulated TrueNAS SCALE 25.10 host for testing. Every change stays in this process's memory. "
    "Long operations return a job id; read truenas://jobs/{id} (or GET /core/get_jobs via truenas_api_call) "
    "to follow it."
)


class Simulator:
    """One simulated host served over MCP: state, dispatcher, SDK server and the job timer."""

    def __init__(self, state: State | None = None, *, umbrella: bool = False) -> None:
        self.state = state or State()
        self.dispatcher = Dispatcher(self.state, umbrella=umbrella)
        self._tools = self._build_tools()
        self._timer: asyncio.TimerHandle | None = None
        self.server: Server[Any] = Server(
            SERVER_NAME,
            version=__version__,
            instructions=INSTRUCTIONS,
            get_tool_input_schema=self.dispatcher.input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
        )

    def _build_tools(self) -> list[types.Tool]:
        if self.dispatcher.umbrella:
            spec = self.dispatcher.catalogue.umbrella
            return [types.Tool(name=spec.name, description=umbrella_description(self.dispatcher.catalogue),
                               input_schema=spec.schema)]
        return [types.Tool(name=s.name, description=describe(s), input_schema=s.schema)
                for s in self.dispatcher.listed_specs()]

    # -- handlers -----------------------------------------------------------------------------

    async def _list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self._tools)

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        outcome = self.dispatcher.call(params.name, params.arguments)
        self._arm_timer()
        return types.CallToolResult(content=[types.TextContent(type="text", text=outcome.text)],
                                    is_error=outcome.is_error)

    async def _list_resources(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[
            types.Resource(uri=f"{URI_PREFIX}{name}", name=name, title=title, description=text,
                           mime_type="application/json")
            for name, (title, text) in RESOURCES.items()])

    async def _list_resource_templates(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[types.ResourceTemplate(
            uri_template=f"{URI_PREFIX}jobs/{{id}}", name="job", title="One job",
            description="One background job by id, with state and progress.", mime_type="application/json")])

    async def _read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        if not uri.startswith(URI_PREFIX):
            raise MCPError(RESOURCE_NOT_FOUND, f"Resource not found: {uri}")
        try:
            value = self.state.resource(uri[len(URI_PREFIX):])
        except ApiError as exc:
            raise MCPError(RESOURCE_NOT_FOUND, f"Resource not found: {uri} ({exc.message})") from None
        self._arm_timer()
        return types.ReadResourceResult(contents=[types.TextResourceContents(
            uri=uri, mime_type="application/json", text=json.dumps(value, indent=2, default=str))])

    # -- job timer ----------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        """Wake up when the next job changes state, so effects happen even if nobody asks."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on asyncio: jobs still advance whenever the state is read
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.state.jobs.next_deadline()
        if deadline is not None:
            delay = max(0.0, deadline - self.state.clock()) + 0.01
            self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.state.tick()
        except Exception:
            logger.exception("job tick failed")
        self._arm_timer()

    # -- transports ---------------------------------------------------------------------------

    async def serve_stdio(self) -> None:
        async with stdio_server() as (read_stream, write_stream):
            await self.server.run(read_stream, write_stream, self.server.create_initialization_options())

    async def serve_http(self, port: int, host: str = "127.0.0.1") -> None:
        import uvicorn

        app = self.server.streamable_http_app(streamable_http_path="/mcp", host=host)
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        print(f"truenas-sim listening on http://{host}:{port}/mcp", file=sys.stderr, flush=True)
        await uvicorn.Server(config).serve()
