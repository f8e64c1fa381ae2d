"""OpenTelemetry traces, off by default: on when an OTLP endpoint is configured the standard way
(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; OTEL_SDK_DISABLED=true or
OTEL_TRACES_EXPORTER=none turn it off), exported over OTLP/HTTP by the SDK's batch processor on its own thread,
so a slow or absent collector never delays a call.

One span per MCP request the gateway answers (kind SERVER, named `{mcp.method.name} {target}` as the semantic
conventions for MCP say), with child spans for the policy, the audit write, the approval wait and the upstream
call (kind CLIENT). A trace context an agent sends (W3C `traceparent` in the request's `params._meta`, as the MCP
conventions propagate it, or as an HTTP header) is the parent; the upstream call carries its own context on in
`params._meta` (every transport) and, on the direct HTTP path, as the `traceparent` header.

Attributes name methods, tools, servers, decisions and outcomes, never arguments, results, tokens, session ids
(a digest stands in) or error texts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os

log = logging.getLogger("portcullis.tracing")

ENABLED = False
_tracer = None
_propagator = None
_NOTHING = contextlib.nullcontext()


def configure() -> bool:
    """Start exporting when an endpoint is configured; called once per gateway process."""
    global ENABLED, _tracer, _propagator
    if ENABLED:
        return True
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if (not endpoint or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
            or os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none"):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    service = os.environ.get("OTEL_SERVICE_NAME", "portcullis")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))  # flushed at exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = provider.get_tracer("portcullis")
    _propagator = TraceContextTextMapPropagator()
    ENABLED = True
    log.info("exporting traces over OTLP/HTTP")
    return True


def _target(method: str, params: dict) -> str:
    if method in ("tools/call", "prompts/get"):
        name = params.get("name")
        return name if isinstance(name, str) else ""
    return ""


def request_span(headers: dict, method: str | None, params: dict, request_id: object, session: str | None,
                 protocol_version: str | None):
    """The span of one MCP request from an agent (a context manager; nothing when tracing is off)."""
    if not ENABLED or method is None:
        return _NOTHING
    from opentelemetry.trace import SpanKind

    carrier = {}
    meta = params.get("_meta") if isinstance(params, dict) else None
    for key in ("traceparent", "tracestate"):
        value = meta.get(key) if isinstance(meta, dict) else None
        if not isinstance(value, str):
            value = headers.get(key)
        if isinstance(value, str):
            carrier[key] = value
    target = _target(method, params)
    attributes = {"mcp.method.name": method, "network.transport": "tcp", "network.protocol.name": "http"}
    if request_id is not None:
        attributes["jsonrpc.request.id"] = str(request_id)
    if protocol_version:
        attributes["mcp.protocol.version"] = protocol_version
    if session:
        attributes["mcp.session.id"] = hashlib.sha256(session.encode()).hexdigest()[:16]
    if method == "tools/call" and target:
        attributes["gen_ai.tool.name"] = target
        attributes["gen_ai.operation.name"] = "execute_tool"
    elif method == "prompts/get" and target:
        attributes["gen_ai.prompt.name"] = target
    return _tracer.start_as_current_span(f"{method} {target}".strip(), context=_propagator.extract(carrier),
                                         kind=SpanKind.SERVER, attributes=attributes)


def span(name: str, **attributes):
    """A child span of the current one (policy, audit write, approval wait); nothing when tracing is off."""
    if not ENABLED:
        return _NOTHING
    return _tracer.start_as_current_span(name, attributes={k: v for k, v in attributes.items() if v is not None})


def upstream_span(server_slug: str, method: str, name: str, url: str | None):
    if not ENABLED:
        return _NOTHING
    from urllib.parse import urlsplit

    from opentelemetry.trace import SpanKind

    attributes = {"mcp.method.name": method, "portcullis.server": server_slug}
    if name:
        attributes["gen_ai.tool.name"] = name
    if url:
        parts = urlsplit(url)
        attributes["server.address"] = parts.hostname or ""
        if parts.port:
            attributes["server.port"] = parts.port
        attributes["network.transport"] = "tcp"
    else:
        attributes["network.transport"] = "pipe"
    return _tracer.start_as_current_span(f"{method} {name}".strip(), kind=SpanKind.CLIENT, attributes=attributes)


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (empty when tracing is off or no span is current)."""
    if not ENABLED:
        return {}
    out: dict[str, str] = {}
    _propagator.inject(out)
    return out


def with_context(params: dict) -> dict:
    """The upstream request's params with the current trace context in `_meta` (a copy; the same when off)."""
    context = carrier()
    if not context:
        return params
    meta = params.get("_meta")
    return {**params, "_meta": {**(meta if isinstance(meta, dict) else {}), **context}}


def note(**attributes) -> None:
    """Attributes on the current span (a decision, an outcome)."""
    if not ENABLED:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None and value != "":
            current.set_attribute(key, value)


def failed(error_type: str, status_code: str | None = None) -> None:
    """The current span's request ended in an error (a JSON-RPC error code, or `tool_error`)."""
    if not ENABLED:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    current = trace.get_current_span()
    current.set_attribute("error.type", error_type)
    if status_code is not None:
        current.set_attribute("rpc.response.status_code", status_code)
    current.set_status(Status(StatusCode.ERROR))
