"""A dispatcher tool on its page (docs/POLICY.md, "Dispatcher tools"): declare its shape (the one the gateway
detected, or a person's), import actions, govern it as one tool again; accept or reject an action first seen in a
call. Every change is recorded in the server's history."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard.access import staff_required
from dashboard.confirmations import Question, ask_first
from dashboard.forms import DispatcherForm
from dashboard.views.tools import detail_context
from gateway.catalogue import actions
from gateway.models import Tool
from gateway.policy.dispatch import Shape, ShapeInvalid


def _listed_tool(slug: str, name: str) -> Tool:
    return get_object_or_404(Tool.objects.select_related("server"), server__slug=slug, name=name, via__isnull=True)


@require_POST
@staff_required
def tool_dispatcher(request, slug, name):
    tool = _listed_tool(slug, name)
    page = reverse("dashboard:tool", args=[slug, name])
    if request.POST.get("op") == "off":
        question = Question(
            f"Govern {tool.name} as one tool again?",
            [f"Calls of {tool.name} will be decided as calls of {tool.name} itself, whatever action they name: "
             f"the rules written for its {tool.actions.filter(gone_at__isnull=True).count()} actions stop applying.",
             "Its actions leave the catalogue and the builder (their calls stay in the call log)."],
            f"Govern {tool.name} as one tool", page, hidden={"op": "off"},
            undo="Declare it a dispatcher again on this page: its actions come back as they were.")
        if (answer := ask_first(request, question)) is not None:
            return answer
        actions.undeclare(tool, actor=request.user.get_username(), user=request.user)
        messages.success(request, f"{tool.name} is governed as one tool again")
        return redirect(page)
    form = DispatcherForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            shape = Shape(data["action"], tuple(data["match"]), data["params"], data["accept_new"])
            summary = actions.declare(tool, shape, actor=request.user.get_username(), user=request.user)
            entries = actions.truenas_action_list() if data["source"] == "truenas" else data["actions"]
            if entries:
                tool.refresh_from_db()
                summary = actions.import_actions(tool, entries)
            if data["source"] == "listing":
                tool.refresh_from_db()
                summary = actions.learn_by_listing(tool)
        except (ShapeInvalid, actions.LearnFailed) as exc:
            form.add_error(None, str(exc))
        else:
            count = tool.actions.filter(gone_at__isnull=True, held_reason="").count()
            messages.success(request, f"{tool.name} is governed by action: {count} actions in the catalogue "
                                      f"({summary.lines()[0]}); the policy decides each by its name")
            for line in summary.lines()[1:6]:
                messages.warning(request, line.strip())
            return redirect(page)
    return render(request, "dashboard/tools/detail.html", detail_context(tool, dispatcher_form=form), status=400)


@require_POST
@staff_required
def action_review(request, slug, name):
    """Accept or reject an action first seen in a call."""
    tool = get_object_or_404(Tool.objects.select_related("server", "via"), server__slug=slug, name=name,
                             via__isnull=False)
    who = {"actor": request.user.get_username(), "user": request.user}
    if request.POST.get("op") == "accept":
        actions.accept(tool, **who)
        messages.success(request, f"accepted {tool.name}: the policy now decides its calls")
    elif request.POST.get("op") == "reject":
        actions.reject(tool, **who)
        messages.success(request, f"rejected {tool.name}: its calls stay refused")
    return redirect("dashboard:tool", slug=slug, name=tool.via.name)
