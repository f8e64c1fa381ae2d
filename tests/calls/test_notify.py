"""Which channels hear of what (gateway/notify/outbox.py), what each kind is sent (messages.py), and the sender's
retries (sender.py), in-process; the dashboard's channel pages: secrets write-only and masked, clear errors, a
delete that asks first. The wire end to end: tests/browser/test_notifications.py."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from gateway import calls
from gateway.catalogue.sync import sync_tools
from gateway.grants import create_grant
from gateway.models import NotificationChannel, NotificationDelivery, Server
from gateway.notify import messages, outbox, sender
from gateway.protocol.hops import _record_upstream_problem
from tests.dashboard.approval_fixtures import make_nas
from tests.dashboard.fixtures import staff, staff_client  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def channel(name: str, kind: str = "webhook", events=("approval_pending",), servers=(), min_risk="",
            url: str = "http://127.0.0.1:9/hook", enabled: bool = True) -> NotificationChannel:
    made = NotificationChannel(name=name, kind=kind, events=list(events), min_risk=min_risk, enabled=enabled,
                               recipients="ops@example.org" if kind == "email" else "")
    if kind != "email":
        made.secrets = {"url": url, "signing_secret": "s" * 20}
    made.save()
    made.servers.set(servers)
    return made


@pytest.fixture
def nas(db):
    server, tool = make_nas()  # share_create: write · high, needs approval
    return server, tool, create_grant("agent-a", [server], None)


def held(nas, name="team"):
    server, _, grant = nas
    return calls.admit(grant.token, server, "share_create", {"name": name}, timezone.now())


def queued() -> list[str]:
    return sorted(NotificationDelivery.objects.values_list("channel__name", flat=True))


def test_a_new_pending_approval_is_queued_for_the_channels_that_want_it(nas):
    server = nas[0]
    other = Server.objects.create(slug="other", name="Other", transport="stdio", command=["x"])
    channel("all")
    channel("this-server", servers=[server])
    channel("other-server", servers=[other])
    channel("high-or-more", min_risk="high")
    channel("critical-only", min_risk="critical")
    channel("only-tools", events=["tool_held"])
    channel("off", enabled=False)
    assert held(nas).held is not None
    assert queued() == ["all", "high-or-more", "this-server"]
    held(nas)  # an identical call joins the same approval: nobody is told twice
    assert len(queued()) == 3
    delivery = NotificationDelivery.objects.get(channel__name="all")
    assert delivery.payload["tool"] == "share_create" and delivery.payload["risk"] == {"category": "write",
                                                                                       "level": "high"}
    assert "team" not in json.dumps(delivery.payload)  # no arguments


def test_a_tool_held_for_review_and_an_upstream_going_down_are_announced_once(nas):
    server = nas[0]
    server.on_definition_change = Server.OnChange.BLOCK
    server.save()
    channel("reviews", events=["tool_held", "upstream_down"])
    sync_tools(server, [{"name": "share_create", "description": "now different", "inputSchema": {"type": "object"}}],
               timezone.now())
    held_note = NotificationDelivery.objects.get(event="tool_held")
    assert held_note.payload["tools"] == ["share_create"] and held_note.link.endswith("/approvals/#tools-waiting")
    _record_upstream_problem(server, "connection refused")
    _record_upstream_problem(server, "connection refused again")  # the same outage: told once
    assert NotificationDelivery.objects.filter(event="upstream_down").count() == 1


def test_the_signed_webhook_message_verifies_with_the_secret():
    delivery = NotificationDelivery(id=7, subject="Approval needed: x", payload={"event": "approval.pending"})
    body, headers = messages.webhook(delivery, "a-secret-of-16-chars", now=1_800_000_000)
    assert headers["X-Portcullis-Timestamp"] == "1800000000"
    expected = hmac.new(b"a-secret-of-16-chars", b"1800000000." + body, hashlib.sha256).hexdigest()
    assert headers["X-Portcullis-Signature"] == f"sha256={expected}"
    assert json.loads(body)["delivery"] == 7


def test_a_failing_delivery_is_retried_with_backoff_then_given_up(nas, settings):
    settings.PORTCULLIS_NOTIFY_RETRY_S = [1, 2]
    channel("down", url="http://127.0.0.1:9/nothing-listens")
    held(nas)
    now = timezone.now()
    for attempt in range(1, sender.ATTEMPTS + 1):
        assert sender.deliver_one(now + timedelta(hours=attempt))
        delivery = NotificationDelivery.objects.get()
        assert delivery.attempts == attempt and delivery.last_error.startswith("ConnectError")
    assert delivery.state == "failed"
    assert not sender.deliver_one(now + timedelta(days=1))  # given up: never sent again


def test_email_goes_through_djangos_email_framework(nas):
    channel("mail", kind="email")
    held(nas)
    assert sender.deliver_one()
    assert NotificationDelivery.objects.get().state == "delivered"
    assert mail.outbox[0].to == ["ops@example.org"]
    assert mail.outbox[0].subject == "[Portcullis] Approval needed: share_create on nas (grant agent-a)"


def test_a_notification_never_fails_the_call(nas, monkeypatch):
    channel("all")

    def broken(*args):
        raise RuntimeError("database hiccup while queueing")

    monkeypatch.setattr(outbox, "_queue", broken)
    admission = held(nas)
    assert admission.held is not None and admission.call_id is not None


def test_the_dashboard_keeps_secrets_write_only_and_asks_before_deleting(staff_client):  # noqa: F811
    page = staff_client.post("/notifications/new/", {"name": "ops", "kind": "webhook", "events": ["approval_pending"],
                                                     "url": "https://hooks.example.org/T0/B0/secret-part-xyz",
                                                     "signing_secret": "short", "enabled": "on"})
    assert page.status_code == 400
    assert "at least 16 characters" in page.content.decode()
    page = staff_client.post("/notifications/new/", {"name": "ops", "kind": "webhook", "events": ["approval_pending"],
                                                     "url": "https://hooks.example.org/T0/B0/secret-part-xyz",
                                                     "signing_secret": "long-enough-secret-123", "enabled": "on"})
    assert page.status_code == 302
    stored = NotificationChannel.objects.get(name="ops")
    assert "secret-part-xyz" not in stored.secrets_sealed  # encrypted at rest
    listing = staff_client.get("/notifications/").content.decode()
    assert "https://hooks.example.org/•••" in listing and "secret-part-xyz" not in listing
    edit = staff_client.get("/notifications/ops/").content.decode()
    assert "secret-part-xyz" not in edit and "long-enough-secret-123" not in edit
    staff_client.post("/notifications/ops/", {"name": "ops", "kind": "webhook", "events": ["tool_held"],
                                              "enabled": "on"})  # empty secret fields keep the stored ones
    stored.refresh_from_db()
    assert stored.secrets["url"].endswith("secret-part-xyz") and stored.events == ["tool_held"]
    asked = staff_client.post("/notifications/ops/delete/")
    assert asked.status_code == 200 and "Delete the channel ops?" in asked.content.decode()
    assert NotificationChannel.objects.filter(name="ops").exists()
    staff_client.post("/notifications/ops/delete/", {"confirm": "1"})
    assert not NotificationChannel.objects.filter(name="ops").exists()
    email = staff_client.post("/notifications/new/", {"name": "mail", "kind": "email", "events": ["upstream_down"],
                                                      "recipients": "ops@example.org\nnot-an-address"})
    assert email.status_code == 400 and "not-an-address is not an email address" in email.content.decode()
