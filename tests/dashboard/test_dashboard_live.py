"""The live websocket (/ws/live/): refused without a signed-in session or from a foreign Origin; a signed-in tab
gets the call log's own row partial on calls.changed and the queue's own card partial (with the pending count) on
approval.changed. Driven through the whole websocket stack of config/asgi.py with WebsocketCommunicator."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.template.loader import render_to_string
from django.test import Client

from gateway.calls.approvals import APPROVALS_GROUP
from gateway.events import CALLS_GROUP
from gateway.models import Call

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

WAIT_S = 5  # every receive is bounded
ORIGIN = settings.PORTCULLIS_ALLOWED_ORIGINS[0]


@pytest.fixture(autouse=True)
def empty_channel_layer():
    layer = get_channel_layer()
    if hasattr(layer, "flush"):
        async_to_sync(layer.flush)()


def browser_of(user) -> Client:
    """A signed-in browser that has loaded a page, so it holds a session and a CSRF cookie."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/approvals/")
    return client


def headers(client: Client | None = None, origin: str | None = ORIGIN) -> list[tuple[bytes, bytes]]:
    out = [] if origin is None else [(b"origin", origin.encode())]
    if client is not None:
        cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
        out.append((b"cookie", cookie.encode()))
    return out


async def open_socket(hdrs):
    from config.asgi import application

    communicator = WebsocketCommunicator(application, "/ws/live/", headers=hdrs)
    connected, _ = await communicator.connect(timeout=WAIT_S)
    return communicator, connected


async def signed_in(user):
    client = await sync_to_async(browser_of)(user)
    communicator, connected = await open_socket(headers(client))
    assert connected
    # sent on every (re)connect
    assert await communicator.receive_json_from(timeout=WAIT_S) == {"pending": 0, "review": 0}
    return communicator, client


async def test_an_anonymous_visitor_is_refused():
    communicator, connected = await open_socket(headers())
    assert not connected
    await communicator.disconnect()


async def test_a_signed_in_user_from_a_foreign_origin_is_refused(staff):
    client = await sync_to_async(browser_of)(staff)
    for origin in ("http://evil.example", "http://127.0.0.1:9999", None):
        communicator, connected = await open_socket(headers(client, origin))
        assert not connected, origin
        await communicator.disconnect()


async def test_an_inactive_users_session_is_refused(staff):
    client = await sync_to_async(browser_of)(staff)
    staff.is_active = False
    await database_sync_to_async(staff.save)()
    communicator, connected = await open_socket(headers(client))
    assert not connected
    await communicator.disconnect()


async def test_a_signed_in_user_receives_the_call_logs_own_row_when_a_call_changes(reader, nas):
    communicator, _ = await signed_in(reader)
    call = await database_sync_to_async(Call.objects.create)(
        server=nas["server"], server_slug="nas", grant_name="agent-a", tool_name="share_create",
        decision="allow", outcome="pending", arguments={"name": "media"})
    await get_channel_layer().group_send(CALLS_GROUP, {"type": "calls.changed", "calls": [[call.pk, "nas", "opened"]]})
    pushed = await communicator.receive_json_from(timeout=WAIT_S)
    expected = await sync_to_async(render_to_string)("dashboard/calls/_row.html", {"call": call})
    assert pushed == {"html": expected}  # one partial: the page's first paint and the push are the same markup
    assert f'<tr id="call-{call.pk}"' in expected and 'data-into="call-rows"' in expected

    await database_sync_to_async(Call.objects.filter(pk=call.pk).update)(outcome="ok", latency_ms=12.0)
    await get_channel_layer().group_send(CALLS_GROUP, {"type": "calls.changed", "calls": [[call.pk, "nas", "settled"]]})
    settled = (await communicator.receive_json_from(timeout=WAIT_S))["html"]
    assert f'<tr id="call-{call.pk}"' in settled and "outcome-ok" in settled and "12 ms" in settled
    await communicator.disconnect()


async def test_one_calls_event_from_a_process_of_the_version_before_is_still_shown(reader, nas):
    """During a rolling upgrade a gateway process of the version before sends one message per event."""
    communicator, _ = await signed_in(reader)
    call = await database_sync_to_async(Call.objects.create)(
        server=nas["server"], server_slug="nas", grant_name="agent-a", tool_name="share_create",
        decision="allow", outcome="pending", arguments={"name": "media"})
    await get_channel_layer().group_send(CALLS_GROUP, {"type": "call.changed", "call_id": call.pk,
                                                       "server": "nas", "stage": "opened"})
    pushed = await communicator.receive_json_from(timeout=WAIT_S)
    assert pushed == {"html": await sync_to_async(render_to_string)("dashboard/calls/_row.html", {"call": call})}
    await communicator.disconnect()


async def test_the_events_of_several_calls_push_each_calls_row_once_as_it_is_now(reader, nas):
    """gateway/events.py sends the events of calls written together in one message: each call's row is pushed
    once, in the order the calls first changed, read as it is now; a call that is gone is left out."""
    communicator, _ = await signed_in(reader)

    def two_calls():
        return [Call.objects.create(server=nas["server"], server_slug="nas", grant_name="agent-a", tool_name=name,
                                    decision="allow", outcome="ok", latency_ms=3.0, arguments={})
                for name in ("share_create", "pool_list")]

    first, second = await database_sync_to_async(two_calls)()
    await get_channel_layer().group_send(CALLS_GROUP, {"type": "calls.changed", "calls": [
        [first.pk, "nas", "opened"], [second.pk, "nas", "opened"], [999999, "nas", "refused"],
        [first.pk, "nas", "settled"], [second.pk, "nas", "settled"]]})
    pushed = [(await communicator.receive_json_from(timeout=WAIT_S))["html"] for _ in range(2)]
    assert await communicator.receive_nothing(timeout=0.3)
    for html, call in zip(pushed, (first, second), strict=True):
        assert html == await sync_to_async(render_to_string)("dashboard/calls/_row.html", {"call": call})
        assert "outcome-ok" in html
    await communicator.disconnect()


async def test_a_call_that_is_gone_pushes_nothing(reader):
    communicator, _ = await signed_in(reader)
    await get_channel_layer().group_send(CALLS_GROUP, {"type": "calls.changed", "calls": [[999999, "nas", "opened"]]})
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_a_held_call_pushes_its_card_and_the_new_count_to_staff(staff, hold):
    communicator, client = await signed_in(staff)
    approval = await database_sync_to_async(hold)()  # publishes approval.changed, as the gateway does
    pushed = await communicator.receive_json_from(timeout=WAIT_S)
    assert pushed["pending"] == 1
    card = pushed["html"]
    assert card.strip().startswith(f'<article id="approval-{approval.public_id}"')
    assert 'data-into="approvals-pending"' in card and "share_create" in card and ">Approve<" in card

    # The pushed form carries a token for this browser's CSRF cookie: it posts like a first-paint form.
    token = card.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    response = await sync_to_async(client.post)(f"/approvals/{approval.public_id}/decide/",
                                                {"decision": "approve", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    decided = await communicator.receive_json_from(timeout=WAIT_S)
    assert decided["pending"] == 0 and 'data-into="approvals-history"' in decided["html"]
    assert "</svg>approved" in decided["html"] and "by alice" in decided["html"]
    await communicator.disconnect()


async def test_a_read_only_user_gets_the_card_without_buttons(reader, hold):
    communicator, _ = await signed_in(reader)
    await database_sync_to_async(hold)()
    pushed = await communicator.receive_json_from(timeout=WAIT_S)
    assert "share_create" in pushed["html"] and "<form" not in pushed["html"] and ">Approve<" not in pushed["html"]
    await communicator.disconnect()


async def test_an_event_for_an_approval_that_is_gone_still_updates_the_count(reader):
    communicator, _ = await signed_in(reader)
    await get_channel_layer().group_send(APPROVALS_GROUP, {"type": "approval.changed", "approval_id": 999999,
                                                           "public_id": "gone", "state": "expired"})
    assert await communicator.receive_json_from(timeout=WAIT_S) == {"pending": 0}
    await communicator.disconnect()


async def test_a_closed_tab_leaves_both_groups(reader):
    communicator, _ = await signed_in(reader)
    await communicator.disconnect()
    layer = get_channel_layer()
    if hasattr(layer, "groups"):  # the in-memory layer shows its groups; Redis expires them on its own
        assert not layer.groups.get(CALLS_GROUP) and not layer.groups.get(APPROVALS_GROUP)
