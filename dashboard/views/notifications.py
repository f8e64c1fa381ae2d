"""Notification channels: where people are told about pending approvals, tools held for review and upstreams down,
and the delivery log (each message, its attempts, its last error). Staff manage channels; secrets are write-only."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard.access import can_manage, staff_required
from dashboard.confirmations import Question, ask_first
from dashboard.forms import NotificationChannelForm
from gateway import vault
from gateway.models import NotificationChannel, NotificationDelivery
from gateway.notify import outbox

LOG_SIZE = 100


@login_required
def channel_list(request):
    channels = list(NotificationChannel.objects.prefetch_related("servers"))
    for channel in channels:
        try:
            url = channel.secrets.get("url", "")
            parts = urlsplit(url)
            channel.url_shown = f"{parts.scheme}://{parts.hostname}/{vault.MASK}" if url else ""
        except vault.VaultError:
            channel.url_shown = "cannot be decrypted: enter it again"
    deliveries = NotificationDelivery.objects.select_related("channel")[:LOG_SIZE]
    return render(request, "dashboard/notifications/list.html", {
        "channels": channels, "deliveries": deliveries, "can_manage": can_manage(request.user)})


def _form_page(request, form, channel=None, status=200):
    return render(request, "dashboard/notifications/form.html", {"form": form, "channel": channel}, status=status)


def _save(form, channel: NotificationChannel, user) -> NotificationChannel:
    data = form.cleaned_data
    channel.name, channel.kind, channel.recipients = data["name"], data["kind"], data.get("recipients", "")
    channel.events, channel.min_risk, channel.enabled = list(data["events"]), data["min_risk"], data["enabled"]
    channel.secrets = data["secrets"]
    if channel.pk is None:
        channel.created_by = user
    channel.save()
    channel.servers.set(data["servers"])
    return channel


@staff_required
def channel_new(request):
    form = NotificationChannelForm(request.POST or None, initial={"events": ["approval_pending"], "enabled": True})
    if request.method == "POST" and form.is_valid():
        channel = _save(form, NotificationChannel(), request.user)
        messages.success(request, f"channel {channel.name} added: send a test to check it")
        return redirect("dashboard:notifications")
    return _form_page(request, form, status=400 if request.method == "POST" else 200)


@staff_required
def channel_edit(request, name):
    channel = get_object_or_404(NotificationChannel, name=name)
    initial = {"name": channel.name, "kind": channel.kind, "recipients": channel.recipients, "events": channel.events,
               "servers": channel.servers.all(), "min_risk": channel.min_risk, "enabled": channel.enabled}
    form = NotificationChannelForm(request.POST or None, initial=initial, channel=channel)
    if request.method == "POST" and form.is_valid():
        _save(form, channel, request.user)
        messages.success(request, f"channel {channel.name} saved")
        return redirect("dashboard:notifications")
    return _form_page(request, form, channel, status=400 if request.method == "POST" else 200)


@staff_required
@require_POST
def channel_test(request, name):
    channel = get_object_or_404(NotificationChannel, name=name)
    path = reverse("dashboard:notifications")
    NotificationDelivery.objects.create(
        channel=channel, event="test", subject=f"Test message from Portcullis to {channel.name}",
        link=outbox.link(path), payload={"event": "test", "channel": channel.name, "url": outbox.link(path),
                                         "why": f"{request.user.get_username()} sent a test from the dashboard"})
    outbox.queued.set()
    messages.success(request, f"test message queued for {channel.name}: its delivery shows below within seconds")
    return redirect("dashboard:notifications")


@staff_required
@require_POST
def channel_delete(request, name):
    channel = get_object_or_404(NotificationChannel, name=name)
    question = Question(f"Delete the channel {channel.name}?",
                        [f"Nobody is told through {channel.name} any more ({channel.get_kind_display()}).",
                         "Its delivery log goes with it."],
                        f"Delete {channel.name}", reverse("dashboard:notifications"),
                        undo="To be told again, add a channel (its URL or secret must be entered again).")
    if (answer := ask_first(request, question)) is not None:
        return answer
    channel.delete()
    messages.success(request, f"channel {name} deleted")
    return redirect("dashboard:notifications")
