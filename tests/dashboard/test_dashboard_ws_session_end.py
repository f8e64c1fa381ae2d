"""A dashboard websocket (/ws/live/) ends with the access it was opened with: logging out closes the sockets of that
session; deactivating or deleting the user closes every socket of theirs; and a socket whose session or user is gone
without an event (a lost event, a change made straight in the database) is closed by the consumer's own re-check
before its next push. After the close nothing more is pushed. Driven through config/asgi.py's whole websocket stack
with WebsocketCommunicator, as tests/dashboard/test_dashboard_live.py does."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.sessions.models import Session
from django.test import Client

from dashboard.consumers import LiveConsumer
from gateway.events import CALLS_GROUP
from gateway.models import Call
from tests.dashboard.test_dashboard_live import WAIT_S, headers, open_socket

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def empty_channel_layer():
    layer = get_channel_layer()
    if hasattr(layer, "flush"):
        async_to_sync(layer.flush)()


def browser(user) -> Client:
    """A signed-in browser that has loaded a page (session and CSRF cookies), posting like a form would."""
    client = Client()
    client.force_login(user)
    assert client.get("/approvals/").status_code == 200
    return client


async def live_socket(client: Client):
    communicator, connected = await open_socket(headers(client))
    assert connected
    assert await communicator.receive_json_from(timeout=WAIT_S) == {"pending": 0, "review": 0}
    return communicator


async def a_call(nas) -> Call:
    return await database_sync_to_async(Call.objects.create)(
        server=nas["server"], server_slug="nas", grant_name="agent-a", tool_name="share_create",
        decision="allow", outcome="pending", arguments={"name": "media"})


async def push(call: Call) -> None:
    await get_channel_layer().group_send(CALLS_GROUP, {"type": "calls.changed", "calls": [[call.pk, "nas", "opened"]]})


async def assert_closed(communicator) -> None:
    message = await communicator.receive_output(timeout=WAIT_S)
    assert message["type"] == "websocket.close", message


async def assert_open_and_pushed(communicator, call: Call) -> None:
    await push(call)
    pushed = await communicator.receive_json_from(timeout=WAIT_S)
    assert f'<tr id="call-{call.pk}"' in pushed["html"]


@pytest.fixture
def recheck_every_push(monkeypatch):
    """The consumer re-reads its session at most every LiveConsumer.recheck_s seconds; here before every push."""
    monkeypatch.setattr(LiveConsumer, "recheck_s", 0.0)


async def test_logging_out_closes_that_sessions_socket_and_nothing_more_is_pushed(staff, nas):
    client = await sync_to_async(browser)(staff)
    communicator = await live_socket(client)
    response = await sync_to_async(client.post)("/logout/")
    assert response.status_code == 302
    await assert_closed(communicator)
    await push(await a_call(nas))
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_logging_out_leaves_the_same_users_other_signed_in_browser_open(staff, nas):
    leaving = await sync_to_async(browser)(staff)
    staying = await sync_to_async(browser)(staff)
    leaving_socket = await live_socket(leaving)
    staying_socket = await live_socket(staying)
    await sync_to_async(leaving.post)("/logout/")
    await assert_closed(leaving_socket)
    await assert_open_and_pushed(staying_socket, await a_call(nas))
    await leaving_socket.disconnect()
    await staying_socket.disconnect()


async def test_deactivating_a_user_closes_every_socket_of_theirs_and_no_one_elses(staff, reader, nas):
    first = await live_socket(await sync_to_async(browser)(staff))
    second = await live_socket(await sync_to_async(browser)(staff))
    others = await live_socket(await sync_to_async(browser)(reader))
    staff.is_active = False
    await database_sync_to_async(staff.save)()
    await assert_closed(first)
    await assert_closed(second)
    call = await a_call(nas)
    await push(call)
    assert await first.receive_nothing(timeout=0.3) and await second.receive_nothing(timeout=0.1)
    assert f'<tr id="call-{call.pk}"' in (await others.receive_json_from(timeout=WAIT_S))["html"]
    for communicator in (first, second, others):
        await communicator.disconnect()


async def test_deleting_a_user_closes_their_socket(reader, nas):
    communicator = await live_socket(await sync_to_async(browser)(reader))
    await database_sync_to_async(reader.delete)()
    await assert_closed(communicator)
    await push(await a_call(nas))
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_a_session_deleted_without_an_event_closes_the_socket_before_the_next_push(
        reader, nas, recheck_every_push):
    communicator = await live_socket(await sync_to_async(browser)(reader))
    await database_sync_to_async(Session.objects.all().delete)()  # no logout signal: as if the event were lost
    await push(await a_call(nas))
    await assert_closed(communicator)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_a_user_deactivated_straight_in_the_database_is_closed_before_the_next_push(
        reader, django_user_model, nas, recheck_every_push):
    communicator = await live_socket(await sync_to_async(browser)(reader))
    await database_sync_to_async(django_user_model.objects.filter(pk=reader.pk).update)(is_active=False)
    await push(await a_call(nas))
    await assert_closed(communicator)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_a_password_change_ends_the_other_sessions_sockets(reader, nas, recheck_every_push):
    communicator = await live_socket(await sync_to_async(browser)(reader))

    def change_password():
        reader.set_password("another-long-password-2")
        reader.save()

    await database_sync_to_async(change_password)()
    await assert_closed(communicator)  # the save asks the user's sockets to re-check at once
    await communicator.disconnect()


async def test_a_socket_whose_session_is_still_valid_keeps_receiving_after_its_re_check(
        staff, reader, nas, recheck_every_push):
    communicator = await live_socket(await sync_to_async(browser)(reader))
    call = await a_call(nas)
    await assert_open_and_pushed(communicator, call)
    staff.first_name = "Alice"  # another user's save asks only that user's sockets to re-check
    await database_sync_to_async(staff.save)()
    await assert_open_and_pushed(communicator, call)
    await communicator.disconnect()

