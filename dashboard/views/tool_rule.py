"""The builder's per-tool editor: action, reason, limits, argument constraints generated from the input schema."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render

from dashboard import drafts
from dashboard.access import can_manage
from dashboard.effective import actions_for
from dashboard.views.builder import Owner
from gateway import policy_edit
from gateway.models import Tool
from gateway.policy import NAMED_WINDOWS, SCOPES, PolicyInvalid, Problem, alias_counter

EMPTY_LIMIT_ROWS = 1  # blank limit rows offered below the existing ones


def _limit_rows(values: list[dict], errors: dict, tool: str) -> list[dict]:
    rows = []
    for i, lim in enumerate(values + [{}] * EMPTY_LIMIT_ROWS):
        window = lim.get("window", "minute")
        rows.append({"i": i, "counter": lim.get("counter", ""), "placeholder": alias_counter(tool),
                     "window": str(window),
                     "max": "" if lim.get("max") is None else str(lim["max"]), "scope": lim.get("scope", "grant"),
                     "errors": {f: errors.get(f"limit-{i}-{f}", []) for f in ("counter", "window", "max", "scope")}})
    return rows


def _limits_posted(data) -> list[dict]:
    out, i = [], 0
    while f"limit-{i}-counter" in data:
        out.append({f: data.get(f"limit-{i}-{f}", [""])[-1] for f in ("counter", "window", "max", "scope")})
        i += 1
    return [row for row in out if row["counter"] or row["max"]]


def _arg_rows(props, values: dict, errors: dict) -> list[dict]:
    rows = []
    for prop in props:
        key = f"arg-{prop.index}"
        enum_texts = [(json.dumps(v) if not isinstance(v, str) else v) for v in prop.enum]
        chosen = values.get(f"{key}-enum") or []
        rows.append({
            "prop": prop, "presence": values.get(f"{key}-presence", ""),
            "enum": [(t, t in chosen) for t in enum_texts],
            **{name: values.get(f"{key}-{name}", "") for name in
               ("values", "pattern", "minimum", "maximum", "const", "maxLength")},
            "errors": [e for name in ("enum", "values", "pattern", "minimum", "maximum", "const", "maxLength",
                                      "presence", "type") for e in errors.get(f"{key}-{name}", [])],
        })
    return rows


def _render(request, owner, tool, props, values, errors, status=200, effective=None):
    rule_now = values.get("_rule")
    return render(request, "dashboard/builder/tool.html", {
        "owner": owner, "server": owner.server, "grant": owner.grant, "tool": tool, "props": props,
        "values": values, "errors": errors, "args": _arg_rows(props, values, errors),
        "limits": _limit_rows(values.get("limits", []), errors, tool.name),
        "choices": policy_edit.TOOL_CHOICES, "windows": list(NAMED_WINDOWS), "scopes": SCOPES,
        "effective": effective, "rule_json": json.dumps(rule_now, indent=2, ensure_ascii=False)
        if rule_now is not None else None,
    }, status=status)


@login_required
def tool_rule(request, slug, name):
    owner = Owner(request, slug)
    tool = get_object_or_404(Tool, server=owner.server, name=name)
    props = policy_edit.schema_properties(tool.input_schema)
    draft = drafts.load(request.session, owner.server, owner.grant)
    existing = draft.document.get("tools", {}).get(tool.name)
    if request.method == "POST":
        if not can_manage(request.user):
            raise PermissionDenied("only staff users can change policies")
        return _save(request, owner, tool, props, draft, existing)
    values = policy_edit.form_initial(existing, props)
    values["_rule"] = existing
    effective = actions_for(draft.document, [tool], owner.server.slug)[tool.name]
    return _render(request, owner, tool, props, values, {}, effective=effective)


def _save(request, owner, tool, props, draft, existing):
    data = {k: request.POST.getlist(k) for k in request.POST}
    rule, problems = policy_edit.rule_from_form(data, props, existing, tool.name)
    if not problems:
        try:
            document = policy_edit.set_tool_rule(draft.document, tool.name, rule)
        except PolicyInvalid as exc:
            problems = exc.problems
    if problems:
        errors: dict[str, list[str]] = {}
        for problem in problems:
            field = _field(problem, tool.name, props)
            errors.setdefault(field or "rule", []).append(
                problem.message if field else f"{problem.pointer}: {problem.message}")
        values = {k: (v if k.endswith("-enum") else v[-1]) for k, v in data.items()}
        values["limits"] = _limits_posted(data)
        values["_rule"] = rule
        return _render(request, owner, tool, props, values, errors, status=400)
    drafts.store(request.session, owner.server, owner.grant, draft, document)
    messages.success(request, f"{tool.name}: rule updated in the draft (not active until you save the policy)")
    return redirect(owner.url("builder") + ("&" if owner.query else "?") + f"q={tool.name}")


def _field(problem: Problem, tool: str, props) -> str:
    if not problem.pointer.startswith("/"):
        return problem.pointer  # rule_from_form names form fields directly
    return policy_edit.field_for_pointer(problem.pointer, tool, props)
