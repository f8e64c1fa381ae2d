"""Slow-loris in the request head: connections that never finish their headers are closed after
PORTCULLIS_HEADER_DEADLINE_S, and one address holding PORTCULLIS_CONNECTIONS_PER_CLIENT connections gets no more,
while legitimate requests from elsewhere keep being answered. A real served gateway (config/serve.py), on daphne
and on uvicorn."""

from __future__ import annotations

import socket
import time

import httpx2
import pytest

from tests.conftest import start_gateway, stop

pytestmark = pytest.mark.slow

SLOW = 300  # connections from the slow client, past its cap of 50


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])  # PORTCULLIS_SERVER: both keep these limits
def guarded_gateway(request, django_db_setup, django_db_blocker, tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("slow"), {"PORTCULLIS_HEADER_DEADLINE_S": "2",
                                                         "PORTCULLIS_CONNECTIONS_PER_CLIENT": "50",
                                                         "PORTCULLIS_SERVER": request.param})
    yield gw
    stop(gw.proc)


def slow_connection(port: int) -> socket.socket:
    """From 127.0.0.2: a request head that starts and never ends."""
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind(("127.0.0.2", 0))
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
    return sock


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_slow_heads_are_cut_off_and_legitimate_requests_still_answered(guarded_gateway):
    port = guarded_gateway.port
    slow = []
    try:
        for _ in range(SLOW):
            try:
                slow.append(slow_connection(port))
            except OSError:
                pass
        answered = [httpx2.get(f"http://127.0.0.1:{port}/login/", timeout=10).status_code for _ in range(8)]
        assert answered == [200] * 8
        started = time.monotonic()
        assert all(closed(sock) for sock in slow)  # every slow one is closed, within the bounded wait of recv
        assert time.monotonic() - started < 15
    finally:
        for sock in slow:
            sock.close()


def test_a_request_whose_head_arrives_in_time_is_served_on_a_kept_alive_connection(guarded_gateway):
    with httpx2.Client(base_url=guarded_gateway.base, timeout=10) as client:
        assert client.get("/login/").status_code == 200
        time.sleep(1)  # within the deadline between two requests of one connection
        assert client.get("/login/").status_code == 200
