"""The live dashboard: one websocket per open tab (/ws/live/) that pushes server-rendered partials.

The consumer renders the same partials the pages use (a call log row, an approval card) and sends
{"html": …} for static/js/live.js to put in place by element id, plus {"pending": n} for the navigation
badge and the tab title. Origin is checked by the stack around it (config/asgi.py); the session here.

A socket lasts only as long as the access it was opened with: it joins its session's and its user's groups, and
dashboard/signals.py closes them on logout (that session) and when the user is deactivated or deleted (every
socket of theirs); a save of the user makes their sockets re-check at once (a changed password ends the other
sessions). In case such an event is lost, the consumer also re-reads its session and user before a push when the
last check is more than `recheck_s` seconds old. A closed socket leaves its groups at once and pushes nothing more.
"""

from __future__ import annotations

import hashlib
import time
from importlib import import_module

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest
from django.middleware.csrf import CSRF_SECRET_LENGTH, get_token
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from dashboard import queue
from dashboard.access import can_manage
from gateway.calls import approvals
from gateway.calls.approvals import APPROVALS_GROUP
from gateway.catalogue.review import held_for_review
from gateway.events import CALLS_GROUP, REVIEWS_GROUP
from gateway.models import Call

CALL_ROW = "dashboard/calls/_row.html"
APPROVAL_CARD = "dashboard/approvals/_card.html"
TOOL_REVIEWS = "dashboard/approvals/_reviews.html"
CLOSE_SESSION_ENDED = 4001  # the close code when the session or the user's access ended


def user_group(user_pk) -> str:
    return f"user-{user_pk}"


def session_group(session_key: str) -> str:
    """A session key is a credential: the group is named by its digest, never the key itself."""
    return "session-" + hashlib.sha256(session_key.encode()).hexdigest()[:40]


class LiveConsumer(AsyncJsonWebsocketConsumer):
    live_groups = (APPROVALS_GROUP, CALLS_GROUP, REVIEWS_GROUP)
    recheck_s = 30.0  # at most this long between re-reads of the session and user before a push
    ended = True  # until connect() accepts: nothing is pushed
    groups_joined: tuple[str, ...] = ()

    async def connect(self):
        user = self.scope.get("user")
        session = self.scope.get("session")
        session_key = getattr(session, "session_key", None)
        if user is None or not user.is_authenticated or not user.is_active or not session_key:
            await self.close()  # before accept(): the handshake is refused with 403
            return
        self.user_pk = user.pk
        self.session_key = session_key
        self.checked_at = time.monotonic()
        self.can_decide = can_manage(user)
        self.csrf_token = csrf_token_for(self.scope)
        self.groups_joined = (*self.live_groups, user_group(user.pk), session_group(session_key))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        self.ended = False
        await self.accept()
        # The page's count may be stale by now (or this is a reconnect after missed events).
        await self.send_json({"pending": await self.pending_count(), "review": await self.review_count()})

    async def disconnect(self, code):
        await self.leave_groups()

    async def leave_groups(self):
        groups, self.groups_joined = self.groups_joined, ()
        for group in groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def end(self):
        """Close now; leave the groups without waiting for the browser's answer, so nothing more is pushed."""
        if self.ended:
            return
        self.ended = True
        await self.leave_groups()
        await self.close(code=CLOSE_SESSION_ENDED)

    async def live_close(self, event):
        """dashboard/signals.py: this session logged out, or the user was deactivated or deleted."""
        await self.end()

    async def live_recheck(self, event):
        """dashboard/signals.py: the user was saved (password, staff flag, …): check now, not at the next interval."""
        self.checked_at = float("-inf")
        await self.may_push()

    async def may_push(self) -> bool:
        """False once the socket ended; re-reads the session and user first when the last check is too old."""
        if self.ended:
            return False
        now = time.monotonic()
        if now - self.checked_at >= self.recheck_s:
            self.checked_at = now
            can_decide = await self.session_access()
            if can_decide is None:
                await self.end()
                return False
            self.can_decide = can_decide
        return True

    @database_sync_to_async
    def session_access(self) -> bool | None:
        """None when the session no longer signs this user in (logged out, expired, password changed) or the user
        may no longer sign in (deactivated, deleted); otherwise whether the user may decide approvals.

        The session is only read: a mismatch closes this socket, and the browser's next request or reconnect goes
        through Django's own checks (which also handle SECRET_KEY_FALLBACKS)."""
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=self.session_key)
        if store.get(auth.SESSION_KEY) != str(self.user_pk):  # a deleted or expired session reads as empty
            return None
        backend_path = store.get(auth.BACKEND_SESSION_KEY)
        if backend_path not in settings.AUTHENTICATION_BACKENDS:
            return None
        user = auth.load_backend(backend_path).get_user(self.user_pk)
        if user is None or not user.is_active:
            return None
        stored_hash = store.get(auth.HASH_SESSION_KEY) or ""
        if not stored_hash or not constant_time_compare(stored_hash, user.get_session_auth_hash()):
            return None
        return can_manage(user)

    async def calls_changed(self, event):
        """Calls written or settled (gateway/events.py: the events of several calls in one message): each call's
        row as it is now, once, in the order the calls first changed."""
        if not await self.may_push():
            return
        for html in await self.call_rows(list(dict.fromkeys(call_id for call_id, _, _ in event["calls"]))):
            await self.send_json({"html": html})

    async def call_changed(self, event):
        """One call's event, as gateway processes of the version before this one send it (a rolling upgrade)."""
        await self.calls_changed({"calls": [(event["call_id"], event.get("server"), event.get("stage"))]})

    async def approval_changed(self, event):
        if not await self.may_push():
            return
        html, pending = await self.approval_card(event["approval_id"])
        await self.send_json({"html": html, "pending": pending} if html else {"pending": pending})

    @database_sync_to_async
    def call_rows(self, call_ids: list[int]) -> list[str]:
        """The rows of the calls still there, in the order given: one query for them all."""
        calls = Call.objects.in_bulk(call_ids)
        return [render_to_string(CALL_ROW, {"call": calls[pk]}) for pk in call_ids if pk in calls]

    @database_sync_to_async
    def approval_card(self, approval_id: int) -> tuple[str | None, int]:
        now = timezone.now()
        approval = queue.approvals().filter(pk=approval_id).first()
        html = None
        if approval is not None:
            context = {"card": queue.card(approval, now), "can_decide": self.can_decide,
                       "csrf_token": self.csrf_token}
            html = render_to_string(APPROVAL_CARD, context)
        return html, approvals.pending_count(now)

    @database_sync_to_async
    def pending_count(self) -> int:
        return approvals.pending_count(timezone.now())

    async def review_changed(self, event):
        """A tool was held for review or let go: the approvals page's list and the navigation's count."""
        if not await self.may_push():
            return
        html, count = await self.tool_reviews()
        await self.send_json({"html": html, "review": count})

    @database_sync_to_async
    def tool_reviews(self) -> tuple[str, int]:
        rows = queue.tool_reviews()
        return render_to_string(TOOL_REVIEWS, {"reviews": rows, "can_decide": self.can_decide}), len(rows)

    @database_sync_to_async
    def review_count(self) -> int:
        return held_for_review().count()


def csrf_token_for(scope) -> str:
    """A form token for this browser's CSRF cookie, so a pushed card's form posts like a first-paint one.

    Without a usable cookie it is '' (the form then relies on the X-CSRFToken header htmx sends from <body>):
    a token for a fresh secret would not match the cookie and Django reads the form field before the header.
    """
    secret = scope.get("cookies", {}).get(settings.CSRF_COOKIE_NAME, "")
    if len(secret) != CSRF_SECRET_LENGTH or not secret.isalnum():
        return ""
    request = HttpRequest()
    request.META["CSRF_COOKIE"] = secret
    return get_token(request)
