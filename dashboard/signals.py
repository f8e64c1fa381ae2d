"""Dashboard websockets end with the access they were opened with (dashboard/consumers.py).

- Logging out closes the sockets of that session (the user's other signed-in browsers stay open).
- Deactivating or deleting a user closes every socket of theirs.
- Any other save of a user makes their sockets re-read their session and user at once (a changed password ends the
  other sessions' sockets; a staff flag removed takes the approve buttons off pushed cards).

The events go through the channel layer (Redis across processes). When one cannot be sent (Redis down), the save or
logout still succeeds and the consumers' own re-check before a push (LiveConsumer.recheck_s) closes the socket.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_save, pre_delete

from dashboard.consumers import LiveConsumer, session_group, user_group

logger = logging.getLogger(__name__)
_tasks: set[asyncio.Task] = set()  # sends scheduled from a running event loop, referenced until they finish


def send(group: str, event_type: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": event_type}
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:  # called from async code: async_to_sync cannot run here
        task = loop.create_task(layer.group_send(group, message))
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # noqa: BLE001 - the channel layer is down: the consumers' re-check closes the sockets
        logger.warning("could not send %s to dashboard websockets; they re-check within %s s", event_type,
                       LiveConsumer.recheck_s, exc_info=True)


def session_logged_out(sender, request, user, **kwargs) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        send(session_group(session_key), "live.close")


def user_saved(sender, instance, created, update_fields=None, **kwargs) -> None:
    if created or (update_fields is not None and set(update_fields) == {"last_login"}):
        return  # a new user has no sockets; a sign-in only stamps last_login
    event_type = "live.recheck" if instance.is_active else "live.close"
    group = user_group(instance.pk)
    transaction.on_commit(lambda: send(group, event_type))


def user_deleted(sender, instance, **kwargs) -> None:
    group = user_group(instance.pk)
    transaction.on_commit(lambda: send(group, "live.close"))


def connect() -> None:
    user_model = get_user_model()
    user_logged_out.connect(session_logged_out, dispatch_uid="dashboard.live.logged_out")
    post_save.connect(user_saved, sender=user_model, dispatch_uid="dashboard.live.user_saved")
    pre_delete.connect(user_deleted, sender=user_model, dispatch_uid="dashboard.live.user_deleted")
