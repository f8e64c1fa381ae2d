"""Servers: the list with health and client configurations, register, edit, disable, refresh tools."""

from __future__ import annotations

import asyncio

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, F, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard.access import can_change_commands, staff_required
from dashboard.confirmations import Question, ask_first
from dashboard.forms import ServerForm
from dashboard.wording import counted
from gateway import policies, server_changes
from gateway.calls import processes, session_records
from gateway.catalogue.refresh import RefreshFailed, refresh
from gateway.catalogue.review import apply_change_setting
from gateway.clientconfig import client_configs, gateway_url
from gateway.models import McpSession, Server, ServerChange, Tool
from gateway.redaction import redact_server_text
from gateway.upstream.connect import UpstreamError
from gateway.upstream.listing import fetch_tool_definitions
from gateway.vault import VaultError, masked

CATEGORIES = [c for c, _ in Tool.Category.choices]
HISTORY_SHOWN = 50  # the newest changes on a server's page


def _with_counts(qs):
    live = Q(tools__gone_at__isnull=True)
    return qs.annotate(tool_count=Count("tools", filter=live),
                       changed_count=Count("tools", filter=live & ~Q(tools__approved_hash="")
                                           & ~Q(tools__approved_hash=F("tools__definition_hash"))),
                       **{f"n_{c}": Count("tools", filter=live & Q(tools__risk_category=c)) for c in CATEGORIES})


def _configs(slug: str) -> list[tuple[str, str, str]]:
    return [(f"cfg-{slug}-{i}", title, text) for i, (title, text) in enumerate(client_configs(slug).items())]


@login_required
def server_list(request):
    servers = list(_with_counts(Server.objects.all()).order_by("slug"))
    for server in servers:
        server.by_risk = [(c, getattr(server, f"n_{c}")) for c in CATEGORIES if getattr(server, f"n_{c}")]
        server.gateway_url = gateway_url(server.slug)
        server.configs = _configs(server.slug)
    return render(request, "dashboard/servers/list.html", {"servers": servers})


def _secrets(server: Server) -> tuple[dict, str]:
    try:
        return {**masked(server.env), **masked(server.headers)}, ""
    except VaultError as exc:
        return {}, str(exc)


@login_required
def server_detail(request, slug):
    server = get_object_or_404(_with_counts(Server.objects.all()), slug=slug)
    server.by_risk = [(c, getattr(server, f"n_{c}")) for c in CATEGORIES if getattr(server, f"n_{c}")]
    secrets, vault_error = _secrets(server)
    allowed = server.allowed_client_capabilities()
    server.allowed_questions = [q for q in ("sampling", "elicitation", "roots") if q in allowed]
    open_sessions = McpSession.objects.filter(server=server, ended_at__isnull=True,
                                              last_seen_at__gte=session_records.idle_cutoff(timezone.now()))
    serving = processes.serving(timezone.now())
    return render(request, "dashboard/servers/detail.html", {
        "sessions_open": open_sessions.count(), "sessions_private": open_sessions.filter(private=True).count(),
        "processes": serving, "upstream_connections": sum(p.upstreams.get(slug, 0) for p in serving),
        "server": server, "secrets": secrets, "vault_error": vault_error, "gateway_url": gateway_url(slug),
        "changes": ServerChange.objects.filter(server=server).select_related("user")[:HISTORY_SHOWN],
        "may_change_commands": can_change_commands(request.user),
        "configs": _configs(slug), "active": policies.active_version(server),
        "refreshed": request.session.pop(f"refresh:{server.pk}", None)})


@staff_required
def server_new(request):
    may = can_change_commands(request.user)
    form = ServerForm(request.POST or None, may_change_commands=may,
                      initial={"transport": Server.Transport.STDIO if may else Server.Transport.HTTP})
    if request.method == "POST" and form.is_valid():
        if "test" in request.POST:
            return render(request, "dashboard/servers/form.html",
                          {"form": form, "server": None, "tested": _test_connection(form.build())})
        server = form.save()
        server_changes.record(server, {}, actor=request.user.get_username(), user=request.user)
        try:  # list its tools at once: a registration that cannot connect says so now, not at the first call
            summary = refresh(server)
        except RefreshFailed as exc:
            messages.warning(request, f"registered {server.slug}, but its tools could not be listed: {exc} — "
                                      "fix its settings (Edit), then press Refresh tools")
        else:
            messages.success(request, f"registered {server.slug} and listed its {summary.listed} tools: next, "
                                      "write its policy (every call is refused until there is one)")
        return redirect("dashboard:server", slug=server.slug)
    return render(request, "dashboard/servers/form.html", {"form": form, "server": None})


def _test_connection(server: Server) -> dict:
    """Connect and list the tools of a server as the form describes it, saving nothing."""
    try:
        definitions = asyncio.run(fetch_tool_definitions(server))
    except UpstreamError as exc:
        return {"ok": False, "text": f"could not connect: {redact_server_text(server, str(exc))}"}
    names = [str(d.get("name", "")) for d in definitions if isinstance(d, dict)]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return {"ok": True, "text": f"connected: it lists {counted(len(names), 'tool')}"
                                + (f" ({shown})" if names else "")}


@staff_required
def server_edit(request, slug):
    server = get_object_or_404(Server, slug=slug)
    before = server_changes.snapshot(server)
    form = ServerForm(request.POST or None, instance=server, may_change_commands=can_change_commands(request.user))
    if request.method == "POST" and form.is_valid() and "test" in request.POST:
        tested = _test_connection(form.build())
        server.refresh_from_db()  # build() changed the instance in memory only
        secrets, vault_error = _secrets(server)
        return render(request, "dashboard/servers/form.html", {"form": form, "server": server, "secrets": secrets,
                                                               "vault_error": vault_error, "tested": tested})
    if request.method == "POST" and form.is_valid():
        form.save()
        server_changes.record(server, before, actor=request.user.get_username(), user=request.user)
        messages.success(request, f"saved {server.slug}")
        if before.get("on_change") != server.on_definition_change:
            moved = apply_change_setting(server)
            if moved:
                held = server.on_definition_change == Server.OnChange.BLOCK
                messages.warning(request, f"{moved} changed tool{'s' if moved != 1 else ''} "
                                          f"{'now held until you approve them' if held else 'callable again'}")
        if form.secrets_cleared:
            messages.warning(request, "the destination changed, so the stored environment and headers were "
                                      "removed: enter them again if the new destination should get them")
        return redirect("dashboard:server", slug=server.slug)
    secrets, vault_error = _secrets(server)
    return render(request, "dashboard/servers/form.html",
                  {"form": form, "server": server, "secrets": secrets, "vault_error": vault_error})


@require_POST
@staff_required
def server_toggle(request, slug):
    server = get_object_or_404(Server, slug=slug)
    enable = request.POST.get("enabled") == "1"
    if server.enabled and not enable:
        grants = server.grants.filter(revoked_at__isnull=True).count()
        sessions = server.sessions.filter(ended_at__isnull=True).count()
        question = Question(
            f"Disable {server.slug}?",
            [f"Every call to its tools is refused from now on, for all {counted(grants, 'grant')} "
             "that cover it, with a reason agents can read.",
             f"Its {counted(sessions, 'open agent session')} stay open, but get refusals.",
             "Its policy, catalogue, grants and call log stay as they are."],
            f"Disable {server.slug}", reverse("dashboard:server", kwargs={"slug": server.slug}),
            undo="Undo: enable it again on the server's page; calls go through again at once.",
            hidden={"enabled": "0"})
        if (answer := ask_first(request, question)) is not None:
            return answer
    before = server_changes.snapshot(server)
    server.enabled = enable
    server.save(update_fields=["enabled", "updated_at"])
    server_changes.record(server, before, actor=request.user.get_username(), user=request.user)
    messages.success(request, f"{server.slug} is {'enabled' if server.enabled else 'disabled: every call is refused'}")
    return redirect("dashboard:server", slug=slug)


@require_POST
@staff_required
def server_refresh(request, slug):
    server = get_object_or_404(Server, slug=slug)
    try:
        summary = refresh(server)
    except RefreshFailed as exc:
        messages.error(request, f"refresh failed, nothing changed: {exc}")
        return redirect("dashboard:server", slug=slug)
    request.session[f"refresh:{server.pk}"] = {
        "counts": summary.lines()[0], "new": summary.new, "changed": summary.changed, "gone": summary.gone,
        "skipped": summary.skipped}
    return redirect("dashboard:server", slug=slug)
