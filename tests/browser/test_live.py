"""The live dashboard in chromium against a real daphne (Django's live_server has no websockets): a held call
appears on the approvals queue without reload, Approve moves it to the history, Deny needs a reason; the call log
takes a new call at the top and updates its row in place when the outcome arrives.

The test process and the daphne subprocess share the test database (transactional) and a Redis channel layer
(the in-memory layer does not cross processes). Playwright's sync API keeps an event loop in this thread, so
everything that publishes on the channel layer runs in a worker thread. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connections

from gateway.events import CALLS_GROUP
from gateway.models import Call
from tests.conftest import start_gateway, stop
from tests.dashboard.approval_fixtures import hold_call

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-password-1"
LIVE_MS = 5000  # a pushed change must show within this


@pytest.fixture
def redis_layer(settings, redis_url):  # noqa: F811 - the imported fixture
    """This process publishes through Redis too, so approvals.publish() reaches the daphne subprocess."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": [redis_url]}}}
    yield


@pytest.fixture(params=["daphne", "uvicorn"])  # PORTCULLIS_SERVER: the websockets work on both
def live_gateway(request, redis_layer, redis_url, tmp_path):  # noqa: F811
    gw = start_gateway(tmp_path, {"REDIS_URL": redis_url, "PORTCULLIS_SERVER": request.param})
    yield gw
    stop(gw.proc)


@pytest.fixture
def worker():
    """Run sync code that publishes (or touches the database) outside Playwright's event loop; bounded."""
    pool = ThreadPoolExecutor(max_workers=1)
    yield lambda fn: pool.submit(fn).result(timeout=10)
    pool.submit(connections.close_all).result(timeout=10)  # so the flush after the test is not blocked
    pool.shutdown()


def publish_call(call: Call, stage: str) -> None:
    """As gateway/events.py publishes a call's event (a batch of one)."""
    event = {"type": "calls.changed", "calls": [[call.pk, call.server_slug, stage]]}
    async_to_sync(get_channel_layer().group_send)(CALLS_GROUP, event)


def sign_in(page, base: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")


def open_live(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-live-state=open]", timeout=LIVE_MS)


def test_a_held_call_appears_live_and_a_click_decides_it(live_gateway, nas, worker, page, shoot,
                                                          django_user_model):
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True)
    base = live_gateway.base
    sign_in(page, base)
    open_live(page, f"{base}/approvals/")
    assert page.text_content("#approvals-pending").count("Nothing is waiting") == 1
    assert page.title() == "Approvals · Portcullis"

    approval = worker(lambda: hold_call(nas["server"], nas["tool"], nas["grant"],
                                        {"name": "media", "path": "/mnt/tank/media", "password": "[redacted]"}))
    card = f"#approvals-pending #approval-{approval.public_id}"
    page.wait_for_selector(card, timeout=LIVE_MS)
    assert page.is_hidden("#approvals-pending .live-empty")
    assert page.text_content("#pending-count") == "1" and page.title() == "(1) Approvals · Portcullis"
    assert re.fullmatch(r"(59|60):\d\d left", page.text_content(f"{card} .time-left"))
    assert "[redacted]" in page.text_content(f"{card} pre.args")
    shoot(page, "live-01-queue-pending")

    page.click(f"{card} button[value=approve]")
    decided = f"#approvals-history #approval-{approval.public_id}"
    page.wait_for_selector(decided, timeout=LIVE_MS)
    assert page.locator(f"#approval-{approval.public_id}").count() == 1
    assert "approved" in page.text_content(decided) and "by admin" in page.text_content(decided)
    assert page.locator(f"{decided} svg.icon-allow").count() == 1
    page.wait_for_function("() => document.title === 'Approvals · Portcullis'", timeout=LIVE_MS)
    assert page.is_hidden("#pending-count")
    shoot(page, "live-02-queue-approved")

    # Deny needs a reason: the error shows next to the card, then a reason denies it.
    other = worker(lambda: hold_call(nas["server"], nas["tool"], nas["grant"], {"name": "scratch"}))
    card = f"#approval-{other.public_id}"
    page.wait_for_selector(f"#approvals-pending {card}", timeout=LIVE_MS)
    page.click(f"{card} button[value=deny]")
    page.wait_for_selector(f"{card} .error", timeout=LIVE_MS)
    assert "say why the call is denied" in page.text_content(f"{card} .error")
    shoot(page, "live-03-queue-deny-needs-a-reason")
    page.fill(f"{card} input[name=reason]", "scratch shares are made by hand")
    page.click(f"{card} button[value=deny]")
    page.wait_for_selector(f"#approvals-history {card}.state-denied", timeout=LIVE_MS)
    assert "scratch shares are made by hand" in page.text_content(f"#approvals-history {card}")
    assert page.console_errors == []  # CSP-clean: no inline script or style was needed


def test_the_queue_catches_up_after_the_websocket_reconnects(live_gateway, nas, worker, page, django_user_model):
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True)
    sockets = []

    def route(ws) -> None:  # the first socket reaches no server: events published meanwhile are lost to it
        sockets.append(ws)
        if len(sockets) > 1:
            ws.connect_to_server()

    base = live_gateway.base
    sign_in(page, base)
    page.route_web_socket(re.compile(r"/ws/live/$"), route)
    open_live(page, f"{base}/approvals/")
    approval = worker(lambda: hold_call(nas["server"], nas["tool"], nas["grant"], {"name": "missed"}))
    assert page.locator(f"#approval-{approval.public_id}").count() == 0  # never told: the socket goes nowhere
    sockets[0].close()
    page.wait_for_selector(f"#approvals-pending #approval-{approval.public_id}", timeout=LIVE_MS)
    page.wait_for_function("() => document.title === '(1) Approvals · Portcullis'", timeout=LIVE_MS)
    assert len(sockets) == 2 and page.console_errors == []


def test_the_call_log_takes_new_calls_at_the_top_and_updates_rows_in_place(live_gateway, nas, worker, page, shoot,
                                                                            django_user_model):
    django_user_model.objects.create_user("admin", password=PASSWORD, is_staff=True)
    older = Call.objects.create(server=nas["server"], server_slug="nas", grant_name="agent-a", tool_name="share_list",
                                decision="allow", outcome="ok", latency_ms=4.0)
    base = live_gateway.base
    sign_in(page, base)
    open_live(page, f"{base}/calls/")

    def open_call() -> Call:
        call = Call.objects.create(server=nas["server"], server_slug="nas", grant_name="agent-a",
                                   tool_name="share_create", decision="allow", outcome="pending",
                                   arguments={"name": "media"})
        publish_call(call, "opened")
        return call

    started = time.monotonic()
    call = worker(open_call)
    row = f"#call-rows > tr#call-{call.pk}"
    page.wait_for_selector(f"{row}.outcome-pending", timeout=LIVE_MS)
    assert time.monotonic() - started < 1.0  # the bound: a call shows in the live log within a second
    assert page.get_attribute("#call-rows > tr:first-child", "id") == f"call-{call.pk}"
    assert page.get_attribute("#call-rows > tr:nth-child(2)", "id") == f"call-{older.pk}"

    def settle() -> None:
        Call.objects.filter(pk=call.pk).update(outcome="ok", latency_ms=37.0)
        publish_call(call, "settled")

    worker(settle)
    page.wait_for_selector(f"{row}.outcome-ok", timeout=LIVE_MS)
    assert page.locator(f"tr#call-{call.pk}").count() == 1 and "37 ms" in page.text_content(row)
    shoot(page, "live-04-call-log")

    # A filtered log does not take calls that may not match; rows already shown still update.
    denied = Call.objects.create(server=nas["server"], server_slug="nas", grant_name="agent-a",
                                 tool_name="share_delete", decision="deny", outcome="pending")
    page.goto(f"{base}/calls/?decision=deny")
    page.wait_for_selector("body[data-live-state=open]", timeout=LIVE_MS)
    unmatched = worker(open_call)

    def refuse() -> None:
        Call.objects.filter(pk=denied.pk).update(outcome="refused", reason="deletes are made by hand")
        publish_call(denied, "refused")

    worker(refuse)  # published after the unmatched call: once this row updates, that event was handled too
    page.wait_for_selector(f"tr#call-{denied.pk}.outcome-refused", timeout=LIVE_MS)
    assert page.locator(f"tr#call-{unmatched.pk}").count() == 0
    assert page.console_errors == []
