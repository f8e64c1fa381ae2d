"""Grants: an agent's credential. Created here with the token shown once; revoked; per-server overrides."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from dashboard.access import staff_required
from dashboard.confirmations import Question, ask_first
from dashboard.forms import GrantForm
from dashboard.wording import counted
from gateway import policies, vault
from gateway.clientconfig import client_configs
from gateway.grants import GrantError, create_grant, revoke
from gateway.models import Grant


@login_required
def grant_list(request):
    grants = Grant.objects.prefetch_related("servers").order_by("name")
    return render(request, "dashboard/grants/list.html", {"grants": grants, "now": timezone.now(),
                                                           "form": GrantForm()})


TOKEN_ONCE = "grant-token:{}"  # noqa: S105 - a session key of a new grant's token, sealed, until the page that shows it is read


@staff_required
def grant_new(request):
    """Post/redirect/get: the token goes to the next page once (sealed in the session meanwhile), so reloading that
    page never submits the form again."""
    form = GrantForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        expires_at = timezone.now() + data["expires"] if data["expires"] else None
        try:
            new = create_grant(data["name"], list(data["servers"]), expires_at, created_by=request.user)
        except GrantError as exc:
            form.add_error("name", str(exc))
        else:
            request.session[TOKEN_ONCE.format(new.grant.pk)] = vault.seal({"token": new.token})
            return redirect("dashboard:grant_created", name=new.grant.name)
    return render(request, "dashboard/grants/form.html", {"form": form}, status=400 if form.errors else 200)


@never_cache  # the response carries a token that must not sit in any cache
@staff_required
def grant_created(request, name):
    grant = get_object_or_404(Grant.objects.prefetch_related("servers"), name=name)
    sealed = request.session.pop(TOKEN_ONCE.format(grant.pk), None)
    if sealed is None:
        messages.info(request, f"The token of {grant.name} was shown once, when it was created; Portcullis keeps "
                               "only a hash. If it is lost, revoke this grant and create another.")
        return redirect("dashboard:grant", name=grant.name)
    token = vault.unseal(sealed)["token"]
    servers = list(grant.servers.all())
    configs = [(s, [(f"cfg-{s.slug}-{i}", title, text) for i, (title, text)
                    in enumerate(client_configs(s.slug, token).items())]) for s in servers]
    return render(request, "dashboard/grants/created.html", {"grant": grant, "token": token, "configs": configs})


@login_required
def grant_detail(request, name):
    grant = get_object_or_404(Grant.objects.prefetch_related("servers"), name=name)
    servers = [(s, policies.active_version(s, grant), policies.active_version(s)) for s in grant.servers.all()]
    return render(request, "dashboard/grants/detail.html", {"grant": grant, "servers": servers,
                                                             "now": timezone.now()})


@require_POST
@staff_required
def grant_revoke(request, name):
    grant = get_object_or_404(Grant, name=name)
    if not grant.revoked_at:
        sessions = grant.sessions.filter(ended_at__isnull=True).count()
        servers = ", ".join(grant.servers.order_by("slug").values_list("slug", flat=True)) or "no server"
        used = grant.last_used_at.strftime("%Y-%m-%d %H:%M") if grant.last_used_at else "never"
        question = Question(
            f"Revoke grant {grant.name}?",
            [f"Its token stops working at once: every call it makes to {servers} is refused.",
             f"Its {counted(sessions, 'open agent session')} end{'s' if sessions == 1 else ''} "
             "with its next request.",
             f"It was last used: {used}.",
             "To let the agent in again, create a new grant and put its new token in the agent's configuration."],
            f"Revoke {grant.name}", reverse("dashboard:grant", kwargs={"name": grant.name}),
            type_to_confirm=grant.name)
        if (answer := ask_first(request, question)) is not None:
            return answer
    if revoke(grant, timezone.now()):
        messages.success(request, f"revoked {grant.name}: its next call is refused")
    else:
        messages.info(request, f"{grant.name} was already revoked")
    return redirect("dashboard:grant", name=name)
