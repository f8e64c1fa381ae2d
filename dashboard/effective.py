"""What the engine does with each tool under a policy document, for the catalogue and the builder."""

from __future__ import annotations

from django.db.models import F

from gateway.models import Tool
from gateway.policy import PolicyInvalid, parse_policy
from gateway.policy.editing import Effective, ToolFacts, effective_actions

RISK_ORDER = ["financial", "destructive", "execute", "write", "read"]  # most dangerous first


def live_tools(server, *fields):
    """The server's tools now (those held for review too), a dispatcher's actions with them (`via_name`: their
    dispatcher); actions first seen in calls and waiting for a person's review are not tools yet."""
    qs = Tool.objects.filter(server=server, gone_at__isnull=True).exclude(via__isnull=False, held_reason__gt="") \
        .order_by("position", "name")
    return qs.only("id", "name", "risk_category", "risk_level", "dispatch", *fields).annotate(via_name=F("via__name"))


def tool_facts(tool) -> ToolFacts:
    if hasattr(tool, "via_name"):  # loaded by live_tools
        via = tool.via_name or ""
    else:  # one tool loaded on its own (a tool's page, one builder row)
        via = tool.via.name if tool.via_id else ""
    return ToolFacts(tool.name, tool.risk_category, tool.risk_level, via)


def actions_for(document: dict | None, tools, server_slug: str, grant_name: str = "") -> dict[str, Effective]:
    try:
        policy = parse_policy(document) if document is not None else None
    except PolicyInvalid:
        policy = None  # a stored version is valid by construction; fail closed if not: every tool denied
    facts = [tool_facts(t) for t in tools]
    return effective_actions(policy, facts, server_slug, grant_name)


def filter_tools(tools, effective: dict[str, Effective], data: dict) -> list:
    """Apply the catalogue/builder filters (search, category, level, action, changed) to loaded tools."""
    q = (data.get("q") or "").strip().lower()
    out = []
    for tool in tools:
        if q and q not in tool.name.lower() and q not in (getattr(tool, "title", "") or "").lower():
            continue
        if data.get("category") and tool.risk_category != data["category"]:
            continue
        if data.get("level") and tool.risk_level != data["level"]:
            continue
        if data.get("action") and effective[tool.name].action != data["action"]:
            continue
        if data.get("changed") and not tool.changed_since_approved:
            continue
        out.append(tool)
    return out


def grouped(tools) -> list[tuple[str, list]]:
    groups: dict[str, list] = {c: [] for c in RISK_ORDER}
    for tool in tools:
        groups.setdefault(tool.risk_category, []).append(tool)
    return [(c, rows) for c, rows in groups.items() if rows]
