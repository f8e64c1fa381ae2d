"""Delivering queued notifications, on a thread of its own in every gateway process: a delivery is claimed with a
conditional update (one process sends it), sent, and marked delivered. A failure is retried with backoff
(PORTCULLIS_NOTIFY_RETRY_S: 5 s, 30 s, 2 min, 10 min, 30 min) and given up after the sixth attempt, the last error
kept for the delivery log. Nothing here runs on a call's path."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from gateway.models import NotificationChannel, NotificationDelivery
from gateway.notify import messages, outbox

log = logging.getLogger("portcullis.notify")

ATTEMPTS = 6
CLAIM_S = 60
POLL_S = 0.5


class NotDelivered(Exception):
    pass


def _post(url: str, *, json_body: dict | None = None, content: bytes | None = None, headers: dict | None = None):
    import httpx2

    try:
        response = httpx2.post(url, json=json_body, content=content, headers=headers or {}, timeout=10)
    except Exception as exc:  # noqa: BLE001 - any transport failure: tried again later
        raise NotDelivered(f"{type(exc).__name__}: could not reach the receiver") from None
    if not 200 <= response.status_code < 300:
        raise NotDelivered(f"HTTP {response.status_code} from the receiver")


def send(delivery: NotificationDelivery) -> None:
    channel = delivery.channel
    secrets = channel.secrets
    if channel.kind == NotificationChannel.Kind.EMAIL:
        recipients = [r.strip() for r in channel.recipients.split() if r.strip()]
        subject, body = messages.email(delivery)
        try:
            send_mail(subject, body, None, recipients, fail_silently=False)
        except Exception as exc:  # noqa: BLE001 - SMTP refused or unreachable: tried again later
            raise NotDelivered(f"{type(exc).__name__}: the mail server did not take it") from None
        return
    url = secrets.get("url", "")
    if not url:
        raise NotDelivered("the channel has no webhook URL: enter it again in the dashboard")
    if channel.kind == NotificationChannel.Kind.SLACK:
        _post(url, json_body=messages.slack(delivery))
    elif channel.kind == NotificationChannel.Kind.TEAMS:
        _post(url, json_body=messages.teams(delivery))
    else:
        body, headers = messages.webhook(delivery, secrets.get("signing_secret", ""))
        _post(url, content=body, headers=headers)


def _backoff(attempts: int) -> int:
    steps = settings.PORTCULLIS_NOTIFY_RETRY_S
    return steps[min(attempts, len(steps)) - 1]


def claim_due(now) -> NotificationDelivery | None:
    due = NotificationDelivery.objects.filter(
        Q(state=NotificationDelivery.State.PENDING, next_attempt_at__lte=now)
        | Q(state=NotificationDelivery.State.SENDING, claimed_until__lt=now)).order_by("next_attempt_at", "id")
    for candidate in due.values_list("id", flat=True)[:10]:
        if NotificationDelivery.objects.filter(Q(state=NotificationDelivery.State.PENDING) | Q(
                state=NotificationDelivery.State.SENDING, claimed_until__lt=now), id=candidate).update(
                state=NotificationDelivery.State.SENDING, claimed_until=now + timedelta(seconds=CLAIM_S)):
            return NotificationDelivery.objects.select_related("channel").get(id=candidate)
    return None


def deliver_one(now=None) -> bool:
    """Send one due delivery; False when none is due."""
    now = now or timezone.now()
    delivery = claim_due(now)
    if delivery is None:
        return False
    attempts = delivery.attempts + 1
    try:
        send(delivery)
    except Exception as exc:  # noqa: BLE001 - recorded on the delivery, retried
        error = str(exc) if isinstance(exc, NotDelivered) else f"{type(exc).__name__}"
        failed = attempts >= ATTEMPTS
        NotificationDelivery.objects.filter(id=delivery.id).update(
            attempts=attempts, last_error=error[:500], claimed_until=None,
            state=NotificationDelivery.State.FAILED if failed else NotificationDelivery.State.PENDING,
            next_attempt_at=timezone.now() + timedelta(seconds=_backoff(attempts)))
        log.warning("notification %s to %s not delivered (attempt %d): %s", delivery.id, delivery.channel.name,
                    attempts, error)
        return True
    NotificationDelivery.objects.filter(id=delivery.id).update(
        attempts=attempts, state=NotificationDelivery.State.DELIVERED, delivered_at=timezone.now(),
        claimed_until=None)
    return True


class Sender(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="portcullis-notify", daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                close_old_connections()
                if deliver_one():
                    continue
            except Exception:  # noqa: BLE001 - the database, most likely: try again shortly
                log.exception("notification round failed")
                connection.close()
            outbox.queued.wait(POLL_S)
            outbox.queued.clear()


_sender: Sender | None = None


def start() -> None:
    global _sender
    if _sender is None:
        _sender = Sender()
        _sender.start()
