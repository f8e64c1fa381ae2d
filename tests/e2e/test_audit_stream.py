"""Every audit row streamed from a real gateway process: to a syslog receiver over TCP (RFC 5424 messages, RFC 6587
octet counting) that restarts in the middle of a burst of calls, to one over UDP, and to an HTTP endpoint that
fails at first. Each receiver ends with every row of the audit table exactly once, with its chain digest; the calls
themselves were never refused or slowed for it."""

from __future__ import annotations

import asyncio
import json
import re
import select
import socket
import threading
import time
from collections import Counter as Tally
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.models import AuditStream, Call
from tests.conftest import free_port, start_gateway, stop
from tests.e2e.test_evidence import register_nas

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POLICY = {"version": "1", "default": "deny", "tools": {"system_info": {}, "pool_list": {}}}
HEADER = re.compile(rb'^<(\d+)>1 (\S+) (\S+) portcullis (\d+) call \[portcullis@32473 ([^\]]*)\] \xef\xbb\xbf')


class SyslogTcpReceiver:
    """A syslog receiver on TCP: octet-counted frames; it can restart as rsyslog does (stop accepting, read what it
    was sent, close, listen again on the same port)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[bytes] = []
        self.restarts = 0
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._restart = threading.Event()
        self._back = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self._listening.wait(5)

    def _listen(self) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen()
        return sock

    def _serve(self) -> None:
        listener, conns, buffers = self._listen(), [], {}
        self._listening.set()
        while not self._stop.is_set():
            if self._restart.is_set():
                listener.close()
                quiet_since = time.monotonic()
                while time.monotonic() - quiet_since < 0.3:  # read what was sent, then close
                    readable, _, _ = select.select(conns, [], [], 0.05)
                    for conn in readable:
                        if self._read(conn, buffers):
                            quiet_since = time.monotonic()
                for conn in conns:
                    conn.close()
                conns, buffers = [], {}
                self._back.wait(60)  # down until the test lets it come back: the gateway's sends fail meanwhile
                listener = self._listen()
                self.restarts += 1
                self._restart.clear()
            readable, _, _ = select.select([listener, *conns], [], [], 0.05)
            for sock in readable:
                if sock is listener:
                    conn, _ = listener.accept()
                    conns.append(conn)
                    buffers[conn] = b""
                elif not self._read(sock, buffers):
                    conns.remove(sock)
                    sock.close()
        listener.close()

    def _read(self, conn: socket.socket, buffers: dict) -> bool:
        try:
            data = conn.recv(65536)
        except OSError:
            return False
        if not data:
            return False
        buffer = buffers[conn] + data
        while b" " in buffer:
            length, _, rest = buffer.partition(b" ")
            if len(rest) < int(length):
                break
            self.messages.append(rest[:int(length)])
            buffer = rest[int(length):]
        buffers[conn] = buffer
        return True

    def restart(self) -> None:
        self._restart.set()

    def come_back(self) -> None:
        self._back.set()

    def close(self) -> None:
        self._stop.set()
        self._back.set()
        self.thread.join(5)


def decoded(message: bytes) -> tuple[dict, dict]:
    header = HEADER.match(message)
    assert header, message[:200]
    params = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', header.group(5).decode()))
    return params, json.loads(message[header.end():])


def register() -> str:
    return register_nas(POLICY)


async def burst(gateway, token: str, calls: int, halfway=None) -> int:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    ok = 0
    async with Client(streamable_http_client(gateway.url("nas"), http_client=http), mode="legacy", cache=None) as c:
        for n in range(calls):
            name = ("system_info", "pool_list", "dataset_delete")[n % 3]
            result = await c.call_tool(name, {})
            ok += not result.is_error
            if n == calls // 2 and halfway is not None:
                halfway()
            await asyncio.sleep(0.03)
    return ok


def wait_until(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)  # the stream sends every second: bounded by the deadline
    raise AssertionError("the stream did not deliver every row in time")


@pytest.fixture
def tcp_receiver():
    receiver = SyslogTcpReceiver()
    yield receiver
    receiver.close()


def test_a_syslog_receiver_that_restarts_mid_burst_gets_every_row_once(tcp_receiver, tmp_path_factory, db):
    token = register()
    gateway = start_gateway(tmp_path_factory.mktemp("stream-tcp"), {
        "PORTCULLIS_AUDIT_STREAM": f"syslog+tcp://127.0.0.1:{tcp_receiver.port}",
        "PORTCULLIS_AUDIT_STREAM_WAIT_S": "30"})
    try:
        first = asyncio.run(burst(gateway, token, 45))
        wait_until(lambda: len(tcp_receiver.messages) >= 20)  # the stream is flowing: now restart mid-burst
        ok = asyncio.run(burst(gateway, token, 45, halfway=tcp_receiver.restart))
        assert first + ok == 60  # two thirds allowed; the stream never refused or failed a call
        wait_until(lambda: AuditStream.objects.get().last_error.startswith("cannot connect"))
        tcp_receiver.come_back()  # it was down, and the rows waited for it
        wait_until(lambda: len({decoded(m)[1]["id"] for m in tcp_receiver.messages}) >= Call.objects.count())
    finally:
        stop(gateway.proc)
    assert tcp_receiver.restarts == 1
    ids = Tally(decoded(m)[1]["id"] for m in tcp_receiver.messages)
    rows = {c.pk: c for c in Call.objects.all()}
    assert len(rows) == 90 and set(ids) == set(rows)
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1]
    for message in tcp_receiver.messages:
        params, record = decoded(message)
        row = rows[record["id"]]
        assert params == {"id": str(row.pk), "chain": row.chain, "seq": str(row.seq), "digest": row.digest}
        assert record["outcome_digest"] == row.outcome_digest and record["tool_name"] == row.tool_name
        priority = int(HEADER.match(message).group(1))
        assert priority == 13 * 8 + (6 if row.outcome == "ok" else 5)
    stream = AuditStream.objects.get()
    assert stream.last_id == max(rows) and stream.delivered == 90


def test_a_udp_syslog_receiver_gets_every_row(tmp_path_factory, db):
    token = register()
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(0.2)
    gateway = start_gateway(tmp_path_factory.mktemp("stream-udp"), {
        "PORTCULLIS_AUDIT_STREAM": f"syslog+udp://127.0.0.1:{receiver.getsockname()[1]}"})
    received = []
    try:
        asyncio.run(burst(gateway, token, 12))

        def all_there() -> bool:
            try:
                while True:
                    received.append(receiver.recv(65536))
            except TimeoutError:
                pass
            return len(received) >= 12
        wait_until(all_there)
    finally:
        stop(gateway.proc)
        receiver.close()
    assert sorted(decoded(m)[1]["id"] for m in received) == sorted(Call.objects.values_list("id", flat=True))


def test_an_http_endpoint_that_fails_at_first_gets_every_row_once(tmp_path_factory, db):
    token = register()
    got, attempts = [], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            attempts.append(self.headers.get("Authorization"))
            if len(attempts) <= 2:
                self.send_response(503)
            else:
                got.extend(json.loads(line) for line in body.decode().splitlines())
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    gateway = start_gateway(tmp_path_factory.mktemp("stream-http"), {
        "PORTCULLIS_AUDIT_STREAM": f"http://127.0.0.1:{http.server_port}/ingest",
        "PORTCULLIS_AUDIT_STREAM_TOKEN": "siem-token-abc"})
    try:
        asyncio.run(burst(gateway, token, 12))
        wait_until(lambda: len(got) >= 12)
    finally:
        stop(gateway.proc)
        http.shutdown()
    assert len(attempts) >= 3 and set(attempts) == {"Bearer siem-token-abc"}
    assert sorted(r["id"] for r in got) == sorted(Call.objects.values_list("id", flat=True))
    stream = AuditStream.objects.get()
    assert stream.last_error == "HTTP 503" and stream.delivered == 12
