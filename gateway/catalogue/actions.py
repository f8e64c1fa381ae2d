"""A dispatcher's actions as tools of the catalogue ("virtual tools"): rows of Tool with `via` set to the
dispatcher and the action's name, so that policy, limits, approvals, the builder and the call log treat each
action as a tool. Learnt from the dispatcher's schema (an `enum` of actions), from a list a person imports (the
project's own list of the 278 TrueNAS actions among them), or from calls (queued for a person's review).
The shape of a dispatcher (which argument names the action) is gateway/policy/dispatch.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from gateway import events
from gateway.models import Server, ServerChange, Tool
from gateway.policy.dispatch import ACTION_NAME, Shape, ShapeInvalid, listed_actions, parse_pointer
from gateway.tool_definitions import action_definition, fill_action, first_of_each
from gateway.upstream.connect import UpstreamError
from gateway.upstream.listing import call_tool_texts

TRUENAS_ACTIONS = Path(__file__).resolve().parent.parent / "seed" / "truenas-actions.json"

@dataclass
class ImportSummary:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{len(self.added)} added, {len(self.updated)} updated, {self.unchanged} unchanged"]
        out += [f"  ! skipped {entry}" for entry in self.skipped]
        return out


def shape_of(tool: Tool) -> Shape | None:
    """The dispatcher shape a person confirmed for this tool (None: it is governed as one tool)."""
    return Shape.from_json(tool.dispatch) if tool.dispatch else None


def _note(tool: Tool, lines: list[str], actor: str, user=None) -> None:
    ServerChange.objects.create(server=tool.server, slug=tool.server.slug, user=user, actor=actor[:200],
                                summary="; ".join(lines)[:500], details=lines)


@transaction.atomic
def declare(tool: Tool, shape: Shape, *, actor: str, user=None) -> ImportSummary:
    """A person says this tool is a dispatcher of this shape: from now on its calls are governed as calls of
    their actions. Actions its schema lists join the catalogue (a person confirmed them with the shape)."""
    if tool.via_id:
        raise ShapeInvalid(f"{tool.name} is an action of {tool.via.name}, not a tool the upstream lists")
    before = tool.dispatch
    tool.dispatch, tool.dispatch_suggested = shape.to_json(), None
    tool.save(update_fields=["dispatch", "dispatch_suggested"])
    summary = import_actions(tool, [{"name": name} for name in listed_actions(shape, tool.definition)])
    Tool.objects.filter(via=tool, gone_at__isnull=False).update(gone_at=None)  # declared again: actions return
    verb = "dispatcher changed" if before else "declared a dispatcher"
    _note(tool, [f"{tool.name}: {verb}: {shape.describe()}"
                 + ("; new actions may run where the policy's default allows" if shape.accept_new else "")],
          actor, user)
    return summary


@transaction.atomic
def undeclare(tool: Tool, *, actor: str, user=None) -> None:
    """Govern the tool as one tool again; its actions leave the catalogue (kept as gone, for the call log)."""
    if not tool.dispatch:
        return
    tool.dispatch = None
    tool.save(update_fields=["dispatch"])
    Tool.objects.filter(via=tool, gone_at__isnull=True).update(gone_at=timezone.now())
    _note(tool, [f"{tool.name}: no longer a dispatcher: its calls are governed as calls of {tool.name}"], actor, user)


def truenas_action_list() -> list[dict]:
    return json.loads(TRUENAS_ACTIONS.read_text())["actions"]


def _entry_problem(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return "an entry that is not an object"
    name = entry.get("name")
    if not isinstance(name, str) or not ACTION_NAME.fullmatch(name):
        return f"{str(name)[:80]!r}: not an action name"
    for key, kind in (("description", str), ("inputSchema", dict), ("annotations", dict), ("match", dict)):
        if key in entry and not isinstance(entry[key], kind):
            return f"{name}: {key} must be {'text' if kind is str else 'an object'}"
    return None


@transaction.atomic
def import_actions(dispatcher: Tool, entries: list, now: datetime | None = None) -> ImportSummary:
    """Add or update actions of a dispatcher from a list a person gave ({name, description?, inputSchema?,
    annotations?, match?}): each is classified and approved as given. A name the server already uses for another
    tool or another dispatcher's action is skipped, with why."""
    now = now or timezone.now()
    shape = shape_of(dispatcher)
    if shape is None:
        raise ShapeInvalid(f"{dispatcher.name} is not a dispatcher yet: declare its shape first")
    summary = ImportSummary()
    existing = {t.name: t for t in Tool.objects.select_for_update().filter(server=dispatcher.server)}
    next_position = Tool.objects.filter(via=dispatcher).count()
    for _, entry in first_of_each(entries, _entry_problem, summary.skipped):
        unknown = sorted(set(entry.get("match") or {}) - set(shape.match))
        if unknown:
            summary.skipped.append(f"{entry['name']}: match names {', '.join(unknown)}, which the dispatcher "
                                   "does not use")
            continue
        tool = existing.get(entry["name"])
        if tool is not None and tool.via_id != dispatcher.pk:
            owner = f"an action of {tool.via.name}" if tool.via_id else "a tool the server lists"
            summary.skipped.append(f"{entry['name']}: the name is already {owner}")
            continue
        definition = action_definition(dispatcher.name, entry)
        if tool is not None and tool.definition == definition and tool.gone_at is None and not tool.held_reason:
            summary.unchanged += 1
            continue
        position = None
        if tool is None:
            tool = Tool(server=dispatcher.server, name=entry["name"], via=dispatcher, first_seen_at=now)
            position, next_position = next_position, next_position + 1
            summary.added.append(entry["name"])
        else:
            summary.updated.append(entry["name"])
        fill_action(tool, definition, now, position)
        tool.approved_hash, tool.approved_definition, tool.held_reason = tool.definition_hash, definition, ""
        tool.save()
    return summary


def accept(tool: Tool, *, actor: str, user=None) -> None:
    """A person accepts an action first seen in a call: from now on the policy decides its calls."""
    if not tool.held_reason:
        return
    Tool.objects.filter(pk=tool.pk).update(held_reason="", approved_hash=tool.definition_hash,
                                           approved_definition=tool.definition)
    tool.held_reason = ""
    events.reviews_changed()
    _note(tool.via, [f"{tool.via.name}: action {tool.name} accepted"], actor, user)


def reject(tool: Tool, *, actor: str, user=None) -> None:
    """A person refuses an action first seen in a call: it stays refused, and leaves the review queue."""
    if not tool.held_reason:
        return
    Tool.objects.filter(pk=tool.pk).update(held_reason="rejected by a person: calls of it are refused",
                                           gone_at=timezone.now())
    events.reviews_changed()
    _note(tool.via, [f"{tool.via.name}: action {tool.name} rejected"], actor, user)


def dispatchers_of(server: Server) -> list[Tool]:
    return list(Tool.objects.filter(server=server, via__isnull=True, dispatch__isnull=False, gone_at__isnull=True))


# The listing action of a TrueNAS-style dispatcher: called with no arguments it answers JSON naming its categories
# ({"categories": [{"name": …}]}); called with a category alone, JSON listing that category's actions
# ({"actions": [{"action": …, "description": …, "params": {schema}}]}).
MAX_LISTED_CATEGORIES = 100


def _json_answer(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def learn_by_listing(dispatcher: Tool) -> ImportSummary:
    """Ask the upstream's dispatcher for its own list of actions (its listing action, TrueNAS-style) and add them,
    as a person's import: what it says about each action (description, parameters) is reviewed on the action's
    page like any definition. Raises LearnFailed with what went wrong."""
    import asyncio

    shape = shape_of(dispatcher)
    if shape is None or not shape.match:
        raise LearnFailed("the dispatcher needs an argument that groups its actions (like /category) to be asked")
    group = parse_pointer(shape.match[0])
    if len(group) != 1:
        raise LearnFailed("only a top-level grouping argument can be asked for (like /category)")
    server = dispatcher.server
    try:
        [(error, text)] = asyncio.run(call_tool_texts(server, dispatcher.name, [{}]))
        index = _json_answer(text)
        names = [c.get("name") for c in (index or {}).get("categories", []) if isinstance(c, dict)] \
            if isinstance(index, dict) else []
        names = [n for n in names if isinstance(n, str)][:MAX_LISTED_CATEGORIES]
        if error or not names:
            raise LearnFailed(f"{dispatcher.name} did not list its categories when called with no arguments")
        answers = asyncio.run(call_tool_texts(server, dispatcher.name, [{group[0]: name} for name in names]))
    except UpstreamError as exc:
        raise LearnFailed(str(exc)) from None
    entries = []
    for name, (error, text) in zip(names, answers, strict=True):
        listed = _json_answer(text)
        for item in (listed or {}).get("actions", []) if isinstance(listed, dict) and not error else []:
            if isinstance(item, dict) and isinstance(item.get("action"), str):
                entry = {"name": item["action"], "match": {shape.match[0]: name}}
                if isinstance(item.get("description"), str):
                    entry["description"] = item["description"]
                if isinstance(item.get("params"), dict):
                    entry["inputSchema"] = item["params"]
                entries.append(entry)
    if not entries:
        raise LearnFailed(f"{dispatcher.name} listed no actions in its {len(names)} categories")
    return import_actions(dispatcher, entries)


class LearnFailed(Exception):
    """The dispatcher could not be asked for its actions; the message says why."""
