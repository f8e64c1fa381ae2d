"""Glob rules in the builder: which tools each pattern matches (asked of the engine), and the editor for one.

A glob rule is edited like a tool's own rule; its argument constraints are offered for the arguments that every
matched tool has. What a pattern matches and decides comes from gateway.policy_edit (the engine's select_rule).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse

from dashboard import drafts, policy_forms
from dashboard.access import can_manage
from dashboard.effective import live_tools, tool_facts
from dashboard.partials import wants_fragment
from dashboard.rule_form import errors_by_field, posted_values
from dashboard.views.builder import Owner
from dashboard.views.tool_rule import rule_context
from gateway.models import Tool
from gateway.policy import ACTIONS, PolicyInvalid, Problem
from gateway.policy import editing as policy_edit
from gateway.policy.editing import GlobReach, ToolFacts

MAX_KEY_LENGTH = 200  # a pattern longer than any tool name is a paste accident


def glob_url(owner: Owner, key: str | None = None) -> str:
    name, kwargs = ("glob_rule", {"key": key}) if key else ("glob_new", {})
    return reverse(f"dashboard:{name}", kwargs={"slug": owner.server.slug, **kwargs}) + owner.query


def _facts(owner: Owner) -> list[ToolFacts]:
    return [tool_facts(t) for t in live_tools(owner.server)]


def _reach(owner: Owner, document: dict, key: str, facts: list[ToolFacts]) -> GlobReach | None:
    """How far `key` reaches: the rule's own reach if the draft has it, else what the bare pattern matches."""
    if not key or len(key) > MAX_KEY_LENGTH or not policy_edit.is_glob(key):
        return None
    if key not in document.get("tools", {}):
        document = policy_edit.set_glob_rule(document, key, {})  # as it would be once added
    return next(reach for reach in policy_edit.glob_reach(document, facts) if reach.key == key)


@login_required
def glob_list(request, slug):
    """The builder's glob card: htmx reloads it whenever the draft changes; without htmx it is a page."""
    owner = Owner(request, slug)
    draft = drafts.load(request.session, owner.server, owner.grant)
    context = {"owner": owner, "server": owner.server, "grant": owner.grant,
               "globs": policy_edit.glob_reach(draft.document, _facts(owner))}
    template = "dashboard/builder/_globs.html" if wants_fragment(request) else "dashboard/builder/globs.html"
    return render(request, template, context)


@login_required
def glob_matches(request, slug):
    """What a pattern being typed matches (htmx, as you type)."""
    owner = Owner(request, slug)
    draft = drafts.load(request.session, owner.server, owner.grant)
    key = request.GET.get("key", "").strip()
    return render(request, "dashboard/builder/_glob_matches.html", {
        "owner": owner, "server": owner.server, "key": key,
        "reach": _reach(owner, draft.document, key, _facts(owner))})


def _props(owner: Owner, reach: GlobReach | None):
    if reach is None or not reach.matches:
        return []
    schemas = dict(Tool.objects.filter(server=owner.server, name__in=reach.matches, gone_at__isnull=True)
                   .values_list("name", "input_schema"))
    return policy_forms.common_properties([schemas[n] for n in reach.matches if n in schemas])


@login_required
def glob_rule(request, slug, key=None):
    owner = Owner(request, slug)
    draft = drafts.load(request.session, owner.server, owner.grant)
    tools = draft.document.get("tools", {})
    if key is not None and key not in tools:
        raise Http404(f"the draft has no rule {key!r}")
    facts = _facts(owner)
    if request.method == "POST":
        if not can_manage(request.user):
            raise PermissionDenied("only staff users can change policies")
        return _save(request, owner, draft, key, facts)
    shown = key or request.GET.get("key", "").strip()
    reach = _reach(owner, draft.document, shown, facts)
    props = _props(owner, reach)
    existing = tools.get(key) if key else None
    values = policy_forms.form_initial(existing, props)
    if existing is None:
        values["action"] = "allow"
    values.update(key=shown, props_key=shown, _rule=existing)
    return _render(request, owner, key, reach, props, values, {})


def _save(request, owner, draft, key, facts):
    data = {k: request.POST.getlist(k) for k in request.POST}
    if key is not None and "delete" in data:
        document = policy_edit.set_tool_rule(draft.document, key, None)
        drafts.store(request.session, owner.server, owner.grant, draft, document)
        messages.success(request, f"glob rule {key} removed from the draft (not active until you save the policy)")
        return redirect(owner.url("builder"))
    new_key = (data.get("key") or [""])[-1].strip()
    props_key = (data.get("props_key") or [""])[-1]  # the form's argument rows were made for this pattern
    props = _props(owner, _reach(owner, draft.document, props_key, facts))
    existing = draft.document.get("tools", {}).get(key) if key else None
    rule, problems = policy_forms.glob_rule_from_form(data, props, existing, new_key)
    if len(new_key) > MAX_KEY_LENGTH:
        problems.append(Problem("key", f"keep the pattern under {MAX_KEY_LENGTH} characters"))
    if not problems:
        try:
            document = policy_edit.set_glob_rule(draft.document, new_key, rule, old_key=key)
        except PolicyInvalid as exc:
            problems = exc.problems
    if problems:
        errors = errors_by_field(problems, lambda p: policy_forms.field_for_pointer(p, new_key, props))
        values = posted_values(data)
        values["_rule"] = rule
        reach = _reach(owner, draft.document, new_key, facts)
        return _render(request, owner, key, reach, props, values, errors, status=400)
    drafts.store(request.session, owner.server, owner.grant, draft, document)
    messages.success(request, f"glob rule {new_key}: updated in the draft (not active until you save the policy)")
    return redirect(owner.url("builder"))


def _render(request, owner, key, reach, props, values, errors, status=200):
    return render(request, "dashboard/builder/glob.html", {
        "owner": owner, "server": owner.server, "grant": owner.grant, "key": key, "reach": reach, "glob": True,
        "choices": ACTIONS, "action_url": glob_url(owner, key), **rule_context(props, values, errors,
                                                                               values.get("key") or "glob"),
    }, status=status)
