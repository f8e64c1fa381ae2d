"""The builder's per-tool editor: action, reason, limits, argument constraints generated from the input schema."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render

from dashboard import drafts, policy_forms
from dashboard.access import can_manage
from dashboard.effective import actions_for
from dashboard.rule_form import arg_rows, errors_by_field, limit_rows, posted_values
from dashboard.views.builder import Owner
from gateway.models import Tool
from gateway.policy import NAMED_WINDOWS, SCOPES, PolicyInvalid, alias_counter
from gateway.policy import editing as policy_edit


def rule_context(props, values: dict, errors: dict, key: str) -> dict:
    """What templates/dashboard/builder/_rule_fields.html renders from (tool and glob rules alike)."""
    rule_now = values.get("_rule")
    return {"props": props, "values": values, "errors": errors, "args": arg_rows(props, values, errors),
            "limits": limit_rows(values.get("limits", []), errors, alias_counter(key)),
            "windows": list(NAMED_WINDOWS), "scopes": SCOPES,
            "rule_json": json.dumps(rule_now, indent=2, ensure_ascii=False) if rule_now is not None else None}


def _render(request, owner, tool, props, values, errors, status=200, effective=None):
    return render(request, "dashboard/builder/tool.html", {
        "owner": owner, "server": owner.server, "grant": owner.grant, "tool": tool, "effective": effective,
        "choices": policy_edit.TOOL_CHOICES, **rule_context(props, values, errors, tool.name),
    }, status=status)


@login_required
def tool_rule(request, slug, name):
    owner = Owner(request, slug)
    tool = get_object_or_404(Tool, server=owner.server, name=name)
    props = policy_forms.schema_properties(tool.input_schema)
    draft = drafts.load(request.session, owner.server, owner.grant)
    existing = draft.document.get("tools", {}).get(tool.name)
    if request.method == "POST":
        if not can_manage(request.user):
            raise PermissionDenied("only staff users can change policies")
        return _save(request, owner, tool, props, draft, existing)
    values = policy_forms.form_initial(existing, props)
    values["_rule"] = existing
    effective = actions_for(draft.document, [tool], owner.server.slug)[tool.name]
    return _render(request, owner, tool, props, values, {}, effective=effective)


def _save(request, owner, tool, props, draft, existing):
    data = {k: request.POST.getlist(k) for k in request.POST}
    rule, problems = policy_forms.rule_from_form(data, props, existing, tool.name)
    if not problems:
        try:
            document = policy_edit.set_tool_rule(draft.document, tool.name, rule)
        except PolicyInvalid as exc:
            problems = exc.problems
    if problems:
        errors = errors_by_field(problems, lambda p: policy_forms.field_for_pointer(p, tool.name, props))
        values = posted_values(data)
        values["_rule"] = rule
        return _render(request, owner, tool, props, values, errors, status=400)
    drafts.store(request.session, owner.server, owner.grant, draft, document)
    messages.success(request, f"{tool.name}: rule updated in the draft (not active until you save the policy)")
    return redirect(owner.url("builder") + ("&" if owner.query else "?") + f"q={tool.name}")
