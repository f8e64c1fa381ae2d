"""OpenTelemetry traces from a real gateway process, exported by the SDK's OTLP/HTTP exporter to a real HTTP receiver in
this test (protobuf decoded with the OTLP protocol's own classes): one SERVER span per MCP request, parented on the
trace context the agent sent in `params._meta`; children for the policy, the audit write, the approval wait and the
upstream call (CLIENT); the context carried on to the HTTP upstream (header and `_meta`, read from the upstream's
own records); a context sent as the HTTP `traceparent` header is a parent too (a stdio upstream's call); no
argument, token or secret anywhere in the export."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
from django.core.management import call_command
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from gateway import policies
from gateway.grants import create_grant
from gateway.models import Server
from tests.conftest import ROOT, free_port, http_peer, register_http_server, start_gateway, stop
from tests.e2e.test_gateway_stateless_rounds import rpc, text

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

AGENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
AGENT_SPAN = "00f067aa0ba902b7"
SECRET_ARGUMENT = "argument-secret-value-7f3a9"
UPSTREAM_SECRET = "upstream-header-secret-51c2"


class Receiver:
    """An OTLP/HTTP trace receiver: what the exporter POSTs to /v1/traces, decoded."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        spans = self.raw
        port = self.port = free_port()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
                    spans.append(body)
                    answer = ExportTraceServiceResponse().SerializeToString()
                    self.send_response(200)
                else:
                    answer = b"not a trace export"
                    self.send_response(404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list:
        out = []
        for body in self.raw:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    out.extend(scope.spans)
        return out

    def wait_for(self, predicate, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if predicate(spans):
                return spans
            time.sleep(0.1)  # the exporter sends every 100 ms: bounded by the deadline
        raise AssertionError(f"the expected spans never arrived: {[s.name for s in self.spans()]}")


def attributes(span) -> dict:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = (value.string_value or value.int_value or value.bool_value
                       if value.WhichOneof("value") != "bool_value" else value.bool_value)
    return out


@pytest.fixture(scope="module")
def receiver():
    running = Receiver()
    yield running
    running.server.shutdown()


@pytest.fixture(scope="module")
def traced_gateway(django_db_setup, django_db_blocker, tmp_path_factory, receiver):
    gw = start_gateway(tmp_path_factory.mktemp("traced"), {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{receiver.port}/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "portcullis-under-test",
        "PORTCULLIS_APPROVAL_HOLD_S": "1"})
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def upstream():
    with http_peer([sys.executable, str(ROOT / "tests" / "peers" / "recording_stateless_server.py"), "{port}"]) as url:
        yield url


POLICY = {"version": "1", "default": "deny", "tools": {"ok": {}, "envelopes": {}, "sample": {"action": "approve"}}}


@pytest.fixture
def token(traced_gateway, upstream):
    server = register_http_server("stateless", upstream, POLICY)
    server.headers = {"X-Upstream-Key": UPSTREAM_SECRET}
    server.save()
    return create_grant("agent-traced", [server], None).token


def traced_rpc(gateway, token, name, arguments, slug="stateless") -> dict:
    """A stateless-era tools/call whose _meta carries the agent's own trace context."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
            "traceparent": f"00-{AGENT_TRACE}-{AGENT_SPAN}-01"}
    response = httpx2.post(gateway.url(slug), timeout=30, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
        "Mcp-Method": "tools/call", "Mcp-Name": name, "MCP-Protocol-Version": "2026-07-28"},
        json={"jsonrpc": "2.0", "id": 7, "method": "tools/call",
              "params": {"name": name, "arguments": arguments, "_meta": meta}})
    assert response.status_code == 200, response.text
    return response.json()["result"]


def test_a_call_is_one_server_span_with_its_children_parented_on_the_agents_context(traced_gateway, token,
                                                                                       receiver):
    result = traced_rpc(traced_gateway, token, "ok", {"text": SECRET_ARGUMENT})
    assert text(result) == f"ok: {SECRET_ARGUMENT}"
    trace_id = bytes.fromhex(AGENT_TRACE)

    def complete(spans):  # the SERVER span ends last, so it may come in a later export than its children
        ours = [s for s in spans if s.trace_id == trace_id]
        kinds = {s.kind for s in ours}
        return {"portcullis.policy", "portcullis.audit_write"} <= {s.name for s in ours} and {
            ours[0].SPAN_KIND_SERVER, ours[0].SPAN_KIND_CLIENT} <= kinds if ours else False

    spans = [s for s in receiver.wait_for(complete) if s.trace_id == trace_id]
    server_span = next(s for s in spans if s.kind == s.SPAN_KIND_SERVER)
    assert server_span.name == "tools/call ok" and server_span.parent_span_id == bytes.fromhex(AGENT_SPAN)
    attrs = attributes(server_span)
    assert attrs["mcp.method.name"] == "tools/call" and attrs["gen_ai.tool.name"] == "ok"
    assert attrs["gen_ai.operation.name"] == "execute_tool" and attrs["jsonrpc.request.id"] == "7"
    assert attrs["mcp.protocol.version"] == "2026-07-28"
    children = {s.name: s for s in spans if s.parent_span_id == server_span.span_id}
    assert {"portcullis.policy", "portcullis.audit_write"} <= children.keys()
    assert attributes(children["portcullis.policy"])["portcullis.decision"] == "allow"
    client = next(s for s in spans if s.kind == s.SPAN_KIND_CLIENT)
    assert client.parent_span_id == server_span.span_id and client.name == "tools/call ok"
    assert attributes(client)["server.address"] == "127.0.0.1"

    # The upstream saw the gateway's client span as the parent, in the header and in _meta.
    records = json.loads(text(rpc(traced_gateway, token, "envelopes", {})))
    seen = next(r for r in records if r["tool"] == "ok")["traceparent"]
    expected = f"00-{AGENT_TRACE}-{client.span_id.hex()}-01"
    assert seen == {"header": expected, "meta": expected}

    exported = b"".join(receiver.raw)
    for secret in (SECRET_ARGUMENT, UPSTREAM_SECRET, token, token[:12]):
        assert secret.encode() not in exported
    resource_names = set()
    for body in receiver.raw:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        resource_names |= {kv.value.string_value for rs in request.resource_spans for kv in rs.resource.attributes
                           if kv.key == "service.name"}
    assert resource_names == {"portcullis-under-test"}


def test_a_held_call_has_an_approval_wait_span_and_a_refusal_is_recorded(traced_gateway, token, receiver):
    result = traced_rpc(traced_gateway, token, "sample", {"prompt": SECRET_ARGUMENT})
    assert result["isError"] is True
    trace_id = bytes.fromhex(AGENT_TRACE)
    spans = receiver.wait_for(lambda spans: any(s.name == "portcullis.approval_wait" for s in spans) and any(
        s.name == "tools/call sample" and s.kind == s.SPAN_KIND_SERVER for s in spans))  # it ends last
    wait = next(s for s in spans if s.name == "portcullis.approval_wait")
    server_span = next(s for s in spans if s.span_id == wait.parent_span_id)
    assert wait.trace_id == trace_id and server_span.name == "tools/call sample"
    assert attributes(wait)["portcullis.approved"] is False
    assert attributes(server_span)["error.type"] == "tool_error"
    assert SECRET_ARGUMENT.encode() not in b"".join(receiver.raw)


def test_a_stdio_upstream_gets_the_context_in_meta(traced_gateway, receiver):
    server = Server.objects.create(slug="nas", name="nas", transport=Server.Transport.STDIO,
                                   command=[sys.executable, "-m", "truenas_sim"])
    call_command("refresh_tools", "nas", stdout=io.StringIO())
    policies.apply(server, {"version": "1", "default": "deny", "tools": {"system_info": {}}}, actor="test")
    token = create_grant("agent-nas", [server], None).token

    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "system_info", "arguments": {}, "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"}}}}
    response = httpx2.post(traced_gateway.url("nas"), json=body, timeout=30, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
        "Mcp-Method": "tools/call", "Mcp-Name": "system_info", "MCP-Protocol-Version": "2026-07-28",
        "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"})
    assert response.status_code == 200, response.text
    spans = receiver.wait_for(lambda spans: any(s.trace_id == bytes.fromhex("ab" * 16) and
                                                s.kind == s.SPAN_KIND_CLIENT for s in spans))  # all it reads
    client = next(s for s in spans if s.trace_id == bytes.fromhex("ab" * 16) and s.kind == s.SPAN_KIND_CLIENT)
    assert attributes(client)["network.transport"] == "pipe"  # the header was the parent: same trace
