"""The MCP endpoint's HTTP edge: auth, Host/Origin, sessions, bad input — refused clearly, nothing forwarded."""

from __future__ import annotations

import io
import json
import sys

import httpx2
import pytest
from django.core.management import call_command
from django.utils import timezone

from gateway import policies
from gateway.grants import create_grant, revoke
from gateway.models import Call, Server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientCapabilities": {}}


@pytest.fixture
def setup(gateway):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport=Server.Transport.STDIO,
                                   command=[sys.executable, "-m", "truenas_sim"])
    other = Server.objects.create(slug="other", name="Other", transport=Server.Transport.STDIO,
                                  command=[sys.executable, "-m", "truenas_sim"])
    call_command("refresh_tools", "truenas", stdout=io.StringIO())
    policies.apply(server, {"version": "1", "default": "deny", "risk": {"read": {}}}, actor="test")
    may = create_grant("may", [server], None).token
    elsewhere = create_grant("elsewhere", [other], None).token
    second = create_grant("second", [server], None).token
    revoked = create_grant("revoked", [server], None)
    revoke(revoked.grant, timezone.now())
    return {"may": may, "elsewhere": elsewhere, "second": second, "revoked": revoked.token}


def post(gateway, body, token=None, headers=None, raw=None, path="truenas"):
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx2.post(gateway.url(path), content=content, headers=h, timeout=30)


def initialize(gateway, token):
    response = post(gateway, INIT, token)
    assert response.status_code == 200, response.text
    return response.headers["mcp-session-id"]


def call(name="pool_list", args=None, rid=2, meta=None):
    params = {"name": name, "arguments": args if args is not None else {}}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


# --- authentication ---

@pytest.mark.parametrize(("who", "status"), [(None, 401), ("forged", 401), ("revoked", 401), ("elsewhere", 403)],
                         ids=["missing", "forged", "revoked", "other-server"])
def test_it_refuses_bad_tokens_before_anything_reaches_the_upstream(gateway, setup, who, status):
    token = {"forged": setup["may"][:-6] + "AAAAAA", None: None}.get(who, setup.get(who))
    response = post(gateway, INIT, token)
    assert response.status_code == status
    assert response.json()["error"]["message"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert not Call.objects.exists()


@pytest.mark.parametrize("session", ["none", "unknown", "real"])
@pytest.mark.parametrize("who", ["forged", "revoked", None])
def test_a_bad_token_gets_401_before_any_session_check(gateway, setup, session, who):
    """OAuth-capable clients re-authenticate on 401 only: a bad token must not read as a session problem."""
    token = {"forged": setup["may"][:-6] + "AAAAAA", "revoked": setup["revoked"], None: None}[who]
    sid = {"none": None, "unknown": "no-such-session", "real": None}[session]
    if session == "real":
        sid = initialize(gateway, setup["may"])
    headers = {"Mcp-Session-Id": sid} if sid else {}
    for body in (call(), {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {}}):
        response = post(gateway, body, token, headers)
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
    h = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}
    assert httpx2.delete(gateway.url("truenas"), headers=h, timeout=30).status_code == 401
    get = httpx2.get(gateway.url("truenas"), headers={**h, "Accept": "text/event-stream"}, timeout=30)
    assert get.status_code == 401
    assert not Call.objects.exists()


def test_a_token_in_the_query_string_is_refused_and_not_logged(gateway, setup):
    response = httpx2.post(gateway.url("truenas") + f"?access_token={setup['may']}", content=json.dumps(INIT),
                           headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert setup["may"] not in gateway.log()


def test_another_grants_token_with_a_session_id_gets_404_like_an_unknown_session(gateway, setup):
    session = initialize(gateway, setup["may"])
    stolen = post(gateway, call(), setup["second"], {"Mcp-Session-Id": session})
    unknown = post(gateway, call(), setup["may"], {"Mcp-Session-Id": "no-such-session"})
    assert stolen.status_code == unknown.status_code == 404
    assert not Call.objects.exists()
    mine = post(gateway, call(), setup["may"], {"Mcp-Session-Id": session})
    assert mine.status_code == 200 and mine.json()["result"]["isError"] is False


def test_a_revoked_grant_stops_on_its_next_call_in_an_open_session(gateway, setup):
    session = initialize(gateway, setup["may"])
    assert post(gateway, call(), setup["may"], {"Mcp-Session-Id": session}).status_code == 200
    from gateway.models import Grant

    revoke(Grant.objects.get(name="may"), timezone.now())
    assert post(gateway, call(), setup["may"], {"Mcp-Session-Id": session}).status_code == 401


def test_delete_ends_a_session(gateway, setup):
    session = initialize(gateway, setup["may"])
    h = {"Authorization": f"Bearer {setup['may']}", "Mcp-Session-Id": session}
    assert httpx2.delete(gateway.url("truenas"), headers=h, timeout=30).status_code == 200
    assert post(gateway, call(), setup["may"], {"Mcp-Session-Id": session}).status_code == 404


def test_a_request_without_a_session_id_is_a_400(gateway, setup):
    assert post(gateway, call(), setup["may"]).status_code == 400


# --- Host and Origin ---

def test_a_foreign_origin_is_refused_with_403(gateway, setup):
    response = post(gateway, INIT, setup["may"], {"Origin": "http://evil.example"})
    assert response.status_code == 403


def test_an_allowed_origin_is_accepted(gateway, setup):
    response = post(gateway, INIT, setup["may"], {"Origin": gateway.base})
    assert response.status_code == 200


def test_an_unknown_host_is_refused_with_421(gateway, setup):
    response = post(gateway, INIT, setup["may"], {"Host": "attacker.example"})
    assert response.status_code == 421


# --- bad input ---

BAD = [
    ("malformed-json", {"raw": b'{"jsonrpc": "2.0", "id": 2,'}, 400, -32700),
    ("batch", {"body": [call()]}, 400, -32600),
    ("duplicate-keys", {"raw": b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"pool_list",'
                               b'"name":"dataset_delete","arguments":{}}}'}, 400, -32700),
    ("huge-nesting", {"raw": b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"pool_list",'
                             b'"arguments":{"a":' + b"[" * 500 + b"]" * 500 + b"}}}"}, 400, -32600),
    ("nan", {"raw": b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"pool_list",'
                    b'"arguments":{"n":NaN}}}'}, 400, -32700),
    ("lone-surrogate", {"raw": b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"pool_list",'
                               b'"arguments":{"s":"\\ud800"}}}'}, 400, -32700),
    ("invalid-utf8", {"raw": b'{"jsonrpc":"2.0","id":2,"method":"ping","x":"\xff"}'}, 400, -32700),
    ("unknown-method", {"body": {"jsonrpc": "2.0", "id": 2, "method": "tools/destroy_everything"}}, 404, -32601),
    ("non-object-arguments", {"body": call(args=["rm", "-rf"])}, 400, -32602),
    ("string-arguments", {"body": call(args="x")}, 400, -32602),
    ("bool-id", {"body": {**call(), "id": True}}, 400, -32600),
    ("no-jsonrpc", {"body": {"id": 2, "method": "ping"}}, 400, -32600),
]


@pytest.mark.parametrize(("case", "request_", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_error_and_nothing_is_forwarded(gateway, setup, case, request_, status, code):
    session = initialize(gateway, setup["may"])
    response = post(gateway, request_.get("body"), setup["may"], {"Mcp-Session-Id": session}, raw=request_.get("raw"))
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert not Call.objects.exists()


def test_wrong_content_type_and_accept_are_refused(gateway, setup):
    assert post(gateway, INIT, setup["may"], {"Content-Type": "text/plain"}).status_code == 415
    assert post(gateway, INIT, setup["may"], {"Accept": "text/html"}).status_code == 406


def test_an_oversized_body_is_refused_with_413(gateway, setup):
    big = json.dumps(call(args={"blob": "x" * (5 * 1024 * 1024)})).encode()
    response = post(gateway, None, setup["may"], raw=big)
    assert response.status_code == 413


def test_an_oversized_chunked_body_is_refused_with_413(gateway, setup):
    def chunks():
        yield b'{"jsonrpc":"2.0","id":2,"method":"ping","params":{"x":"'
        for _ in range(80):
            yield b"y" * 65536
        yield b'"}}'

    response = httpx2.post(gateway.url("truenas"), content=chunks(), timeout=60, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {setup['may']}"})
    assert response.status_code == 413


def test_an_mcp_name_header_that_disagrees_with_the_body_is_refused(gateway, setup):
    headers = {"Mcp-Method": "tools/call", "Mcp-Name": "pool_list", "MCP-Protocol-Version": "2026-07-28"}
    response = post(gateway, call("dataset_delete", meta=MODERN_META), setup["may"], headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == -32020
    assert not Call.objects.exists()


def test_an_unsupported_protocol_version_is_refused_with_the_supported_list(gateway, setup):
    meta = {**MODERN_META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    headers = {"Mcp-Method": "tools/call", "Mcp-Name": "pool_list", "MCP-Protocol-Version": "2099-01-01"}
    response = post(gateway, call(meta=meta), setup["may"], headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == -32022 and error["data"]["supported"] == ["2026-07-28"]


def test_a_modern_request_reaches_the_tool_without_a_session(gateway, setup):
    headers = {"Mcp-Method": "tools/call", "Mcp-Name": "pool_list", "MCP-Protocol-Version": "2026-07-28"}
    response = post(gateway, call(meta=MODERN_META), setup["may"], headers)
    assert response.status_code == 200
    assert response.json()["result"]["resultType"] == "complete"
    assert Call.objects.get().outcome == "ok"


def test_a_body_that_does_not_arrive_in_time_is_cut_off(setup, django_db_setup, tmp_path):
    import socket
    import time

    from tests.conftest import start_gateway, stop

    slow = start_gateway(tmp_path, {"PORTCULLIS_BODY_DEADLINE_S": "1"})
    try:
        with socket.create_connection(("127.0.0.1", slow.port), timeout=10) as sock:
            sock.sendall(b"POST /mcp/truenas/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"jsonrpc\":")
            started = time.monotonic()
            leftover = sock.recv(1024)  # blocks until the gateway closes the connection
            elapsed = time.monotonic() - started
    finally:
        stop(slow.proc)
    assert leftover == b"" and elapsed < 5


def test_a_gateway_sweeps_ended_counter_windows_and_overdue_approvals_on_start(setup, django_db_setup, tmp_path):
    import time
    from datetime import timedelta

    from gateway.models import Approval, Counter, Grant, Tool
    from tests.conftest import start_gateway, stop

    Counter.objects.create(key="ended", n=3, window_end=int(time.time()) - 10)
    Counter.objects.create(key="current", n=1, window_end=int(time.time()) + 3600)
    server = Server.objects.get(slug="truenas")
    overdue = Approval.objects.create(
        public_id="overdue0000000001", grant=Grant.objects.get(name="may"), server=server,
        tool=Tool.objects.filter(server=server).first(), tool_name="x", argument_hash="h", tool_hash="t",
        expires_at=timezone.now() - timedelta(seconds=1))
    fresh = start_gateway(tmp_path)
    try:
        assert post(fresh, INIT, setup["may"]).status_code == 200  # the first request starts the housekeeping
        deadline = time.monotonic() + 10
        while Counter.objects.filter(key="ended").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded poll: the sweep runs in the gateway process
    finally:
        stop(fresh.proc)
    assert list(Counter.objects.values_list("key", flat=True)) == ["current"]
    overdue.refresh_from_db()
    assert overdue.state == "expired"
