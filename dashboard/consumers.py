"""The live dashboard: one websocket per open tab (/ws/live/) that pushes server-rendered partials.

The consumer renders the same partials the pages use (a call log row, an approval card) and sends
{"html": …} for static/js/live.js to put in place by element id, plus {"pending": n} for the navigation
badge and the tab title. Origin is checked by the stack around it (config/asgi.py); the session here.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.http import HttpRequest
from django.middleware.csrf import CSRF_SECRET_LENGTH, get_token
from django.template.loader import render_to_string
from django.utils import timezone

from dashboard import queue
from dashboard.access import can_manage
from gateway.calls import approvals
from gateway.calls.approvals import APPROVALS_GROUP
from gateway.events import CALLS_GROUP
from gateway.models import Call

CALL_ROW = "dashboard/calls/_row.html"
APPROVAL_CARD = "dashboard/approvals/_card.html"


class LiveConsumer(AsyncJsonWebsocketConsumer):
    live_groups = (APPROVALS_GROUP, CALLS_GROUP)

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close()  # before accept(): the handshake is refused with 403
            return
        self.can_decide = can_manage(user)
        self.csrf_token = csrf_token_for(self.scope)
        for group in self.live_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        # The page's count may be stale by now (or this is a reconnect after missed events).
        await self.send_json({"pending": await self.pending_count()})

    async def disconnect(self, code):
        for group in self.live_groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def call_changed(self, event):
        html = await self.call_row(event["call_id"])
        if html:
            await self.send_json({"html": html})

    async def approval_changed(self, event):
        html, pending = await self.approval_card(event["approval_id"])
        await self.send_json({"html": html, "pending": pending} if html else {"pending": pending})

    @database_sync_to_async
    def call_row(self, call_id: int) -> str | None:
        call = Call.objects.filter(pk=call_id).first()
        return render_to_string(CALL_ROW, {"call": call}) if call else None

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
