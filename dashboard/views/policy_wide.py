"""The builder's policy-wide settings: hide, show_denied, on_deny and all_tools.limits, edited together."""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dashboard import drafts, policy_forms, top_level
from dashboard.access import staff_required
from dashboard.rule_form import errors_by_field
from dashboard.views.builder import Owner, _filters, _state, page_context
from gateway.policy import PolicyInvalid
from gateway.policy import editing as policy_edit


@require_POST
@staff_required
def top_level_fields(request, slug):
    owner = Owner(request, slug)
    draft = drafts.load(request.session, owner.server, owner.grant)
    data = {k: request.POST.getlist(k) for k in request.POST}
    fields, problems = policy_forms.top_level_from_form(data)
    if not problems:
        try:
            document = policy_edit.set_top_level(draft.document, fields)
        except PolicyInvalid as exc:
            problems = exc.problems
    if problems:
        errors = errors_by_field(problems, lambda p: policy_forms.top_level_field(p, fields))
        wide = top_level.context(owner.server, draft.document, top_level.posted(data), errors)
        return _refused(request, owner, wide)
    draft = drafts.store(request.session, owner.server, owner.grant, draft, document)
    if not request.htmx:
        messages.success(request, "policy-wide settings updated in the draft (not active until you save)")
        return redirect(owner.url("builder"))
    state = _state(request, owner, draft=draft, filters=_filters(request.POST))
    state.update(top_level.context(owner.server, draft.document, opened=True))
    response = render(request, "dashboard/builder/_top_level_and_groups.html", state)
    response["HX-Trigger"] = "draft-changed"
    return response


def _refused(request, owner, wide: dict):
    """The form again with each error next to its field (htmx swaps it in, so it answers 200 there)."""
    if request.htmx:
        return render(request, "dashboard/builder/_top_level.html",
                      {"owner": owner, "server": owner.server, "grant": owner.grant, **wide})
    state = _state(request, owner, filters={})
    return render(request, "dashboard/builder/page.html", page_context(owner, {**state, **wide}), status=400)
