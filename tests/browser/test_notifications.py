"""Approvals that reach people who are not looking (issue 16), end to end on a real gateway process with the TrueNAS
simulator and the SDK client: a held call is announced to a JSON webhook (a real HTTP receiver in this test that
checks the HMAC-SHA256 signature over timestamp and body), to a receiver that fails twice and is retried, to a
Slack-style incoming webhook, and by email through a real SMTP server (aiosmtpd); the agent's call is neither
delayed nor failed by any of it. In chromium, a person who opted in on the approvals page gets a browser
notification for the next held call, and reads the delivery log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
from aiosmtpd.controller import Controller
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.models import NotificationChannel, NotificationDelivery
from tests.browser.test_approval_e2e import prepare_truenas, sign_in
from tests.browser.test_phone_layout import OVERFLOW
from tests.conftest import free_port, start_gateway, stop

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOLD_S = 4
SECRET = "webhook-signing-secret-0123456789"
POLICY = {"version": "1", "default": "deny", "tools": {"dataset_create": {"action": "approve"}}}


class Receiver:
    """An HTTP receiver: records each POST (headers, body, when); fails the first `failures` with 500."""

    def __init__(self, failures: int = 0) -> None:
        self.posts: list[tuple[dict, bytes, float]] = []
        self.failures, self.attempts = failures, 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.attempts <= receiver.failures:
                    self.send_response(500)
                else:
                    receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body, time.time()))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's handler API
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def receivers():
    made = {"signed": Receiver(), "flaky": Receiver(failures=2), "slack": Receiver()}
    yield made
    for receiver in made.values():
        receiver.close()


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, mailbox
    controller.stop()


@pytest.fixture
def gateway(tmp_path, smtp):
    controller, _ = smtp
    running = start_gateway(tmp_path, {"PORTCULLIS_APPROVAL_HOLD_S": str(HOLD_S), "PORTCULLIS_NOTIFY_RETRY_S": "1",
                                       "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(controller.port),
                                       "DEFAULT_FROM_EMAIL": "portcullis@example.org"})
    yield running
    stop(running.proc)


@pytest.fixture
def token(gateway, receivers, worker, django_user_model):
    token = prepare_truenas(worker, django_user_model, POLICY)

    def channels():
        events = ["approval_pending"]
        for name, kind, receiver in (("signed", "webhook", receivers["signed"]),
                                     ("flaky", "webhook", receivers["flaky"]), ("ops-slack", "slack",
                                                                                receivers["slack"])):
            channel = NotificationChannel(name=name, kind=kind, events=events)
            channel.secrets = {"url": receiver.url, "signing_secret": SECRET if kind == "webhook" else ""}
            channel.save()
        NotificationChannel.objects.create(name="on-call", kind="email", events=events,
                                           recipients="oncall@example.org\nlead@example.org")

    worker.submit(channels).result(timeout=60)
    return token


def held_call(gateway, token: str, name: str) -> tuple[object, float]:
    async def go():
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        async with Client(streamable_http_client(gateway.url("truenas"), http_client=http), mode="legacy",
                          cache=None) as c:
            started = time.monotonic()
            result = await c.call_tool("dataset_create", {"name": name, "comments": "s3cr3t-argument"})
            return result, time.monotonic() - started

    return asyncio.run(asyncio.wait_for(go(), 60))


def wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)  # the sender polls every 0.5 s and retries after 1 s here: bounded by the deadline
    raise AssertionError("not delivered in time")


def test_a_held_call_is_announced_on_every_channel_and_the_call_is_unaffected(gateway, token, receivers, smtp,
                                                                               worker, page, shoot):
    _, mailbox = smtp
    result, took = worker.submit(held_call, gateway, token, "tank/announced").result(timeout=60)
    assert result.is_error and result.content[0].text.startswith("approval pending (id ")
    assert took < HOLD_S + 3  # a failing receiver never held the call up
    wait_for(lambda: receivers["signed"].posts and receivers["slack"].posts and len(mailbox.messages) == 1
             and receivers["flaky"].posts)

    headers, body, _ = receivers["signed"].posts[0]
    stamp = headers["x-portcullis-timestamp"]
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["x-portcullis-signature"] == f"sha256={expected}"
    assert abs(int(stamp) - time.time()) < 60
    payload = json.loads(body)
    assert payload["event"] == "approval.pending" and payload["tool"] == "dataset_create"
    assert payload["server"] == "truenas" and payload["grant"] == "agent"
    assert payload["url"] == f"{gateway.base}/approvals/#approval-{payload['approval']}"
    assert b"s3cr3t-argument" not in body  # arguments are never sent out

    assert receivers["flaky"].attempts == 3 and len(receivers["flaky"].posts) == 1  # retried until it took it
    flaky = worker.submit(lambda: NotificationDelivery.objects.get(channel__name="flaky")).result(timeout=10)
    assert (flaky.state, flaky.attempts, flaky.last_error) == ("delivered", 3, "HTTP 500 from the receiver")

    slack = json.loads(receivers["slack"].posts[0][1])
    assert "Approval needed: dataset_create on truenas (grant agent)" in slack["text"]
    assert f"<{payload['url']}|Open in Portcullis>" in slack["text"]

    recipients, email = mailbox.messages[0]
    assert sorted(recipients) == ["lead@example.org", "oncall@example.org"]
    assert email["Subject"] == "[Portcullis] Approval needed: dataset_create on truenas (grant agent)"
    assert email["From"] == "portcullis@example.org"
    text = email.get_payload(decode=True).decode()
    assert payload["url"] in text and "s3cr3t-argument" not in text

    # The person reads the delivery log.
    sign_in(page, gateway.base)
    page.goto(f"{gateway.base}/notifications/")
    log = page.text_content("table.deliveries")
    assert "HTTP 500 from the receiver" in log and "Delivered" in log
    assert receivers["signed"].url not in page.content()  # the URL is write-only: masked
    shoot(page, "16-notifications-01-log", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{gateway.base}/notifications/")
    found = page.evaluate(OVERFLOW)
    shoot(page, "16-notifications-03-phone", full_page=True)
    assert found["scroll"] <= found["width"] and not found["wide"], found  # on a phone nothing runs off sideways


def test_a_person_who_opted_in_gets_a_browser_notification(gateway, token, page, shoot):
    page.context.grant_permissions(["notifications"], origin=gateway.base)
    page.add_init_script("""
      window.__shown = [];
      const Real = window.Notification;
      window.Notification = function (title, options) {
        window.__shown.push({title: title, body: (options || {}).body});
        return new Real(title, options);
      };
      window.Notification.permission = Real.permission;
      window.Notification.requestPermission = Real.requestPermission.bind(Real);
    """)
    sign_in(page, gateway.base)
    page.click("#notify-toggle")
    page.wait_for_selector("#notify-toggle:has-text('Stop notifying this browser')")
    shoot(page, "16-notifications-02-opted-in")
    page.goto(f"{gateway.base}/calls/")  # any dashboard page: the notification does not need the queue open
    page.wait_for_selector("body[data-live-state=open]")
    thread = threading.Thread(target=held_call, args=(gateway, token, "tank/browser"))
    thread.start()
    deadline = time.monotonic() + 15
    while not (shown := page.evaluate("window.__shown")) and time.monotonic() < deadline:
        page.wait_for_timeout(100)  # the dashboard's CSP forbids wait_for_function's string evaluation
    assert shown[0]["title"] == "Approval needed: dataset_create on truenas"
    assert "grant agent" in shown[0]["body"]
    thread.join(HOLD_S + 30)
