"""config/serve_uvicorn.py writes a fixed-length response in one send: uvicorn's own protocol (GuardedHttpTools)
driven in-process with a transport that records its writes, and a plain ASGI application."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn
from uvicorn.server import ServerState

from config.serve_uvicorn import GuardedHttpTools


class Recorded(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def fixed(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def streamed(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def broken(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    raise RuntimeError("the application failed after the head")


def served(app, request: bytes) -> Recorded:
    async def scenario() -> Recorded:
        config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False, http=GuardedHttpTools)
        config.load()
        protocol = GuardedHttpTools(config, ServerState(), {})
        transport = Recorded()
        protocol.connection_made(transport)
        protocol.data_received(request)
        for _ in range(50):
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport

    return asyncio.run(scenario())


GET = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def test_a_fixed_length_response_is_one_write():
    transport = served(fixed, GET)
    assert len(transport.writes) == 1, transport.writes
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 2" in head and body == b"{}"


def test_a_streamed_response_sends_its_head_at_once():
    transport = served(streamed, GET)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK") and transport.writes[0].endswith(b"\r\n\r\n")
    assert b"data: 1" in transport.writes[1]


def test_a_head_request_gets_its_head_without_waiting_for_a_body():
    transport = served(fixed, b"HEAD /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"\r\n\r\n")


@pytest.mark.filterwarnings("ignore")
def test_a_head_held_when_the_application_fails_is_sent_before_the_connection_closes():
    transport = served(broken, GET)
    assert transport.closed and transport.writes and transport.writes[0].startswith(b"HTTP/1.1 200 OK")
