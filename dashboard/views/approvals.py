"""The approvals queue: held calls wait here for a person; staff approve or deny them; decided ones are history."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard import queue
from dashboard.access import can_manage, staff_required
from dashboard.forms import DecisionForm
from gateway.calls import approvals

CARD = "dashboard/approvals/_card.html"


def _page(request, errors: dict[str, str] | None = None, status: int = 200, confirming: str = ""):
    now, errors = timezone.now(), errors or {}
    context = {
        "waiting": [queue.card(a, now, errors.get(a.public_id, ""), confirm_always=a.public_id == confirming,
                               reason=request.POST.get("reason", "") if a.public_id == confirming else "")
                    for a in queue.waiting(now)],
        "history": [queue.card(a, now, errors.get(a.public_id, "")) for a in queue.history(now)],
        "can_decide": can_manage(request.user),
        "reviews": queue.tool_reviews(),
    }
    return render(request, "dashboard/approvals/queue.html", context, status=status)


@login_required
def approval_queue(request):
    return _page(request)


@staff_required
@require_POST
def decide(request, public_id):
    approval = get_object_or_404(queue.approvals(), public_id=public_id)
    form, error = DecisionForm(request.POST), ""
    if not form.is_valid():
        error = form.first_error()
    elif form.always and request.POST.get("confirm") != "1":
        # Always allowing outlives this call: say what it writes, and ask.
        if request.htmx:
            card = queue.card(approval, timezone.now(), confirm_always=True, reason=form.cleaned_data["reason"])
            return render(request, CARD, {"card": card, "can_decide": True})
        return _page(request, confirming=approval.public_id)
    else:
        try:
            approval = approvals.decide(approval, user=request.user, approve=form.approve, always=form.always,
                                        minutes=form.cleaned_data["minutes"] if form.approve else None,
                                        reason=form.cleaned_data["reason"], now=timezone.now())
        except approvals.ApprovalError as exc:
            error = str(exc)
            approval.refresh_from_db()  # someone else decided, or it expired: show it as it is now
    if request.htmx:  # the card answers in place (htmx swaps only 2xx); live.js moves it to the history
        context = {"card": queue.card(approval, timezone.now(), error), "can_decide": True}
        return render(request, CARD, context)
    if error:
        return _page(request, {approval.public_id: error}, status=400)
    messages.success(request, f"{queue.STATE_TEXT[approval.state]}: {approval.tool_name} for {approval.grant.name}")
    return redirect("dashboard:approvals")
