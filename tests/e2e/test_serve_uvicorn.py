"""PORTCULLIS_SERVER=uvicorn (config/serve_uvicorn.py): the same application served by uvicorn must keep every
guarantee daphne's config/serve.py gives — agents of both eras through the SDK client, body limits as the body
streams in (MCP endpoint and dashboard), slow bodies cut off, no query string in the access log, Origin checked on
websockets, SIGTERM draining calls in flight. A real served gateway, a real stdio upstream, real clients. (The
slow-head and per-address limits: tests/e2e/test_serve_slow_clients.py runs on both servers; the live dashboard:
tests/browser/test_live.py runs on both.)"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import httpx2
import pytest
import websockets
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.models import Call
from tests.conftest import register_fault_server, start_gateway, stop

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LIMIT = 200_000


@pytest.fixture(scope="module")
def fast(django_db_setup, django_db_blocker, tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("uvicorn"), {
        "PORTCULLIS_SERVER": "uvicorn", "PORTCULLIS_MAX_BODY_BYTES": str(LIMIT), "PORTCULLIS_BODY_DEADLINE_S": "2"})
    yield gw
    stop(gw.proc)


@pytest.fixture
def token(fast):
    return register_fault_server()[1]


def client(gateway, token, mode: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return Client(streamable_http_client(gateway.url("faulty"), http_client=http), mode=mode, cache=None)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_it_is_uvicorn_that_answers(fast):
    # daphne names itself in a Server header; this server sends none (server_header=False).
    response = httpx2.get(f"{fast.base}/login/", timeout=10)
    assert response.status_code == 200 and "server" not in response.headers
    assert "daphne" not in fast.log().lower() and "uvicorn" in fast.log().lower()


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # session era; stateless era (2026-07-28)
def test_agents_of_both_eras_call_through_it_and_every_call_is_audited(fast, token, mode):
    async def go():
        async with client(fast, token, mode) as c:
            results = await asyncio.gather(*(c.call_tool("ok", {"text": f"n{i}"}) for i in range(12)))
            return [r.content[0].text for r in results]

    assert run(go()) == [f"ok: n{i}" for i in range(12)]
    rows = list(Call.objects.filter(tool_name="ok").values_list("outcome", flat=True))
    assert rows == ["ok"] * 12


def test_an_mcp_body_over_the_limit_is_refused_as_it_streams_in(fast, token):
    def chunks():
        yield b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "ok", "arguments": {"text": "'
        for _ in range(LIMIT // 10_000 + 5):
            yield b"x" * 10_000
        yield b'"}}}'

    response = httpx2.post(fast.url("faulty"), content=chunks(), timeout=30, headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {token}"})
    assert response.status_code == 413
    assert not Call.objects.exists()


def test_a_dashboard_body_over_the_limit_is_refused_before_django_reads_it(fast):
    declared = httpx2.post(f"{fast.base}/login/", content=b"u=" + b"x" * (LIMIT + 10), timeout=30,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert declared.status_code == 413

    def chunks():
        for _ in range(LIMIT // 10_000 + 5):
            yield b"x" * 10_000

    chunked = httpx2.post(f"{fast.base}/login/", content=chunks(), timeout=30,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 413
    assert httpx2.get(f"{fast.base}/login/", timeout=10).status_code == 200


def test_a_body_that_does_not_arrive_in_time_is_cut_off(fast):
    with socket.create_connection(("127.0.0.1", fast.port), timeout=10) as sock:
        sock.sendall(b"POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded"
                     b"\r\nContent-Length: 1000\r\n\r\nusername=a")
        started = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 8


def test_a_token_in_the_query_string_is_refused_and_kept_out_of_the_access_log(fast, token):
    response = httpx2.post(fast.url("faulty") + f"?access_token={token}", timeout=30, content=json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).encode(),
        headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    httpx2.get(f"{fast.base}/login/?next=/secret-place", timeout=10)
    for _ in range(50):
        if "/login/?[query omitted]" in fast.log():
            break
        time.sleep(0.1)
    log = fast.log()
    assert token not in log and "secret-place" not in log
    assert "/login/?[query omitted]" in log and "/mcp/faulty/?[query omitted]" in log


def test_the_live_websocket_opens_for_a_signed_in_person_and_never_from_another_origin(fast, django_user_model):
    from django.test import Client as DjangoClient

    person = DjangoClient()
    person.force_login(django_user_model.objects.create_user("operator", password="pw-long-enough-1", is_staff=True))
    cookie = f"sessionid={person.cookies['sessionid'].value}"

    async def connect(origin: str, headers: dict):
        try:
            async with websockets.connect(f"ws://127.0.0.1:{fast.port}/ws/live/", origin=origin, open_timeout=10,
                                          additional_headers=headers) as ws:
                await ws.close()
                return "open"
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    assert run(connect(fast.base, {"Cookie": cookie})) == "open"
    assert run(connect("http://evil.example", {"Cookie": cookie})) == 403
    assert run(connect(fast.base, {})) == 403  # nobody signed in


def test_sigterm_lets_a_call_in_flight_finish_and_refuses_new_ones(django_db_setup, tmp_path):
    gw = start_gateway(tmp_path, {"PORTCULLIS_SERVER": "uvicorn", "PORTCULLIS_DRAIN_S": "10"})
    try:
        _, token = register_fault_server(timeout=20)

        async def go():
            async with client(gw, token, "auto") as c:
                await c.call_tool("ok", {})
                slow = asyncio.create_task(c.call_tool("sleep", {"seconds": 2}))
                await asyncio.sleep(0.5)
                gw.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                ready = await asyncio.to_thread(httpx2.get, f"{gw.base}/readyz", timeout=5)
                return (await slow).content[0].text, ready.status_code

        finished, ready = run(go())
        assert finished == "slept 2.0" and ready == 503
        assert gw.proc.wait(timeout=20) is not None
        assert list(Call.objects.filter(tool_name="sleep").values_list("outcome", flat=True)) == ["ok"]
    finally:
        if gw.proc.poll() is None:
            stop(gw.proc)
