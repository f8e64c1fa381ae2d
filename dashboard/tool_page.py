"""What a tool's page shows besides its definition: its parameters as a table, what the policies in force do with
it (the server's, and each grant's with rules of its own) and which rule decides, and its latest calls."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db.models import Q

from dashboard import grant_rules
from dashboard.effective import actions_for
from dashboard.forms import DispatcherForm
from dashboard.rule_links import rule_link
from gateway import policies
from gateway.models import Call, Tool
from gateway.policy.dispatch import Shape
from gateway.policy.editing import Effective

RECENT = 10


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    required: bool
    description: str
    allowed: str  # enum values, format, bounds, default: what constrains it, as text


@dataclass(frozen=True)
class InForce:
    who: str  # "every grant (the server's policy v5)" / "grant ux-agent (its own rules, v3)"
    effective: Effective
    link: str  # the rule's editor


def parameters(input_schema: object) -> list[Parameter]:
    schema = input_schema if isinstance(input_schema, dict) else {}
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = set(schema.get("required") or []) if isinstance(schema.get("required"), list) else set()
    out = []
    for name, raw in props.items():
        raw = raw if isinstance(raw, dict) else {}
        kind = raw.get("type")
        kind = " or ".join(map(str, kind)) if isinstance(kind, list) else str(kind or "any")
        if kind == "array" and isinstance(raw.get("items"), dict) and raw["items"].get("type"):
            kind = f"array of {raw['items']['type']}"
        notes = []
        if isinstance(raw.get("enum"), list):
            notes.append("one of " + ", ".join(json.dumps(v) for v in raw["enum"][:20]))
        for key, text in (("format", "format"), ("pattern", "pattern"), ("minimum", "≥"), ("maximum", "≤"),
                          ("minLength", "length ≥"), ("maxLength", "length ≤"), ("default", "default")):
            if key in raw:
                notes.append(f"{text} {json.dumps(raw[key])}")
        out.append(Parameter(str(name), kind, name in required, str(raw.get("description") or ""),
                             "; ".join(notes)))
    return out


def in_force(tool: Tool) -> list[InForce]:
    server = tool.server
    active = policies.active_version(server)
    effective = actions_for(active.document if active else None, [tool], server.slug)[tool.name]
    out = [InForce(f"every grant (the server's policy v{active.number})" if active else
                   "every grant: no active policy", effective, rule_link(effective.rule, server.slug))]
    for own in grant_rules.on_server(server):
        effective = actions_for(own.version.document, [tool], server.slug, own.grant.name)[tool.name]
        kind = "its own complete copy" if own.copy else "its own rules on the server's"
        link = rule_link(effective.rule, server.slug)
        out.append(InForce(f"grant {own.grant.name} ({kind}, v{own.version.number})", effective,
                           f"{link}?grant={own.grant.name}" if link else ""))
    return out


@dataclass(frozen=True)
class Dispatcher:
    """What the page says about dispatching: the tool is a dispatcher (declared or suggested), or an action."""

    role: str  # "dispatcher" | "suggested" | "action" | ""
    shape: Shape | None = None
    actions: int = 0  # a dispatcher's actions in the catalogue
    held: tuple[Tool, ...] = ()  # its actions first seen in calls, waiting for a person
    how: str = ""  # an action: how an agent calls it


def dispatcher(tool: Tool) -> Dispatcher:
    if tool.via_id is not None:
        via = tool.via
        shape = Shape.from_json(via.dispatch) if via.dispatch else None
        if shape is None:
            return Dispatcher("action", how=f"{via.name} is no longer a dispatcher: this action is not used")
        args = {shape.action: tool.name, **{p: v for p, v in (tool.match or {}).items()}}
        how = f"{via.name} with " + ", ".join(f"{p} = {json.dumps(v)}" for p, v in args.items())
        return Dispatcher("action", shape, how=how + (f" and its arguments in {shape.params}" if shape.params else ""))
    if tool.dispatch:
        live = tool.actions.filter(gone_at__isnull=True)
        return Dispatcher("dispatcher", Shape.from_json(tool.dispatch), live.filter(held_reason="").count(),
                          tuple(live.exclude(held_reason="").order_by("first_seen_at")[:50]))
    if tool.dispatch_suggested:
        return Dispatcher("suggested", Shape.from_json(tool.dispatch_suggested))
    return Dispatcher("")


def dispatcher_form(tool: Tool) -> DispatcherForm:
    """The dispatcher form as the page first shows it: the declared shape, else the detected one."""
    raw = tool.dispatch or tool.dispatch_suggested or {}
    return DispatcherForm(initial={
        "action": raw.get("action", ""), "match": ", ".join(raw.get("match", [])), "params": raw.get("params", ""),
        "accept_new": raw.get("accept_new", False),
        "source": "truenas" if tool.name == "truenas" and not tool.dispatch else ""})


def recent_calls(tool: Tool) -> list[Call]:
    named = Q(tool_name=tool.name, via="") if tool.via_id is None else Q(tool_name=tool.name, via=tool.via.name)
    if tool.dispatch:
        named |= Q(via=tool.name)  # a dispatcher's calls are recorded as calls of their actions
    return list(Call.objects.filter(named, server_slug=tool.server.slug).order_by("-created_at", "-id")[:RECENT])
