"""The tool catalogue of one server: search, filters, a tool's definition, approvals and overrides."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from dashboard import tool_page
from dashboard.access import staff_required
from dashboard.effective import actions_for, filter_tools, live_tools
from dashboard.forms import CatalogueFilter, OverrideForm
from dashboard.partials import wants_fragment
from gateway import policies
from gateway.catalogue.review import (
    ReviewError,
    approve_definition,
    approved_definition,
    clear_override,
    override_classification,
    side_by_side,
)
from gateway.models import Server, Tool


@login_required
def catalogue(request, slug):
    server = get_object_or_404(Server, slug=slug)
    filters = CatalogueFilter(request.GET)
    data = filters.cleaned_data if filters.is_valid() else {}
    tools = list(live_tools(server, "title", "description", "approved_hash", "definition_hash", "position"))
    active = policies.active_version(server)
    effective = actions_for(active.document if active else None, tools, server.slug)
    shown = filter_tools(tools, effective, data)
    for tool in shown:
        tool.effective = effective[tool.name]
    context = {"server": server, "filters": filters, "tools": shown, "total": len(tools), "active": active}
    template = "dashboard/tools/_rows.html" if wants_fragment(request) else "dashboard/tools/list.html"
    return render(request, template, context)


def _tool(slug, name) -> Tool:
    return get_object_or_404(Tool.objects.select_related("server"), server__slug=slug, name=name)


@login_required
def tool_detail(request, slug, name):
    tool = _tool(slug, name)
    old = approved_definition(tool)
    diff = None
    if tool.changed_since_approved and old is not None:
        diff = {"description": side_by_side(old.get("description", ""), tool.description),
                "schema": side_by_side(old.get("inputSchema", {}), tool.input_schema)}
        # The rest of the definition (title, output schema, annotations, anything else): instructions hide there too.
        rest_old, rest_new = _rest(old), _rest(tool.definition)
        if rest_old != rest_new:
            diff["rest"] = side_by_side(rest_old, rest_new)
    form = OverrideForm(initial={"category": tool.risk_category, "level": tool.risk_level,
                                 "reason": tool.risk_override_reason})
    return render(request, "dashboard/tools/detail.html", detail_context(tool, diff=diff, form=form))


def _rest(definition: object) -> dict:
    if not isinstance(definition, dict):
        return {}
    return {k: v for k, v in definition.items() if k not in ("name", "description", "inputSchema")}


def detail_context(tool: Tool, **context) -> dict:
    context.setdefault("form", OverrideForm(initial={"category": tool.risk_category, "level": tool.risk_level,
                                                     "reason": tool.risk_override_reason}))
    if tool.via_id is None:
        context.setdefault("dispatcher_form", tool_page.dispatcher_form(tool))
    return {"tool": tool, "server": tool.server, "parameters": tool_page.parameters(tool.input_schema),
            "in_force": tool_page.in_force(tool), "calls": tool_page.recent_calls(tool),
            "dispatcher": tool_page.dispatcher(tool), **context}


@require_POST
@staff_required
def tool_override(request, slug, name):
    tool = _tool(slug, name)
    form = OverrideForm(request.POST)
    if form.is_valid():
        try:
            override_classification(tool, form.cleaned_data["category"], form.cleaned_data["level"],
                                    form.cleaned_data["reason"])
        except ReviewError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"{tool.name} is now {tool.risk_category} · {tool.risk_level}")
            return redirect("dashboard:tool", slug=slug, name=name)
    return render(request, "dashboard/tools/detail.html", detail_context(tool, diff=None, form=form), status=400)


@require_POST
@staff_required
def tool_classifier(request, slug, name):
    """Drop a person's classification: the classifier's decision applies again (never below an approved
    definition's while a change is unreviewed)."""
    tool = _tool(slug, name)
    if tool.risk_overridden:
        clear_override(tool)
        messages.success(request, f"{tool.name} is classified by the classifier again: "
                                  f"{tool.risk_category} · {tool.risk_level}")
    return redirect("dashboard:tool", slug=slug, name=name)


@require_POST
@staff_required
def tool_approve(request, slug, name):
    tool = _tool(slug, name)
    if approve_definition(tool, request.POST.get("hash", ""), user=request.user):
        messages.success(request, f"approved the new definition of {tool.name}")
    else:
        messages.error(request, f"the definition of {tool.name} changed again while you read it: review it again")
    return redirect("dashboard:tool", slug=slug, name=name)
