"""A tool's definition as the catalogue keeps it: its hash, its risk classification, and the definition of a
dispatcher's action (a virtual tool: gateway/catalogue/actions.py, gateway/calls/dispatched.py)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

from gateway.models import Tool
from gateway.policy.risk import Classification, classify, the_more_severe

# A dispatcher's actions list after the upstream's own tools, in the order they were learnt.
ACTION_POSITION_BASE = 1_000_000

# Tool.held_reason of a tool held for a person's review (refused at call time, left out of listings): its
# definition changed since a person approved it (the server holds changed tools), or it is new on an established
# server that holds new tools. Approving the definition lets it go.
CHANGED_HELD = "its definition changed since it was approved"
NEW_HELD = "it is new on this server"
REVIEW_HOLDS = (CHANGED_HELD, NEW_HELD)
# Texts in a definition that only describe: a change of their whitespace alone does not hold a tool.
_PROSE_KEYS = frozenset({"description", "title"})
_SPACE = re.compile(r"\s+")


def _behaviour(value: object, key: str = "") -> object:
    if isinstance(value, dict):
        return {k: _behaviour(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_behaviour(v) for v in value]
    if isinstance(value, str) and key in _PROSE_KEYS:
        return _SPACE.sub(" ", value).strip()
    return value


def same_behaviour(a: object, b: object) -> bool:
    """Do two definitions differ only where it cannot alter behaviour: key order (never part of a definition's
    hash) and whitespace in descriptions and titles? Every other string counts, enum values, defaults, patterns and
    nested descriptions' words included."""
    return a is not None and b is not None and _behaviour(a) == _behaviour(b)


def definition_hash(definition: dict) -> str:
    """sha256 of the canonical JSON of the whole definition (name, description, schemas, annotations, …)."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def classify_into(tool: Tool, floor: Classification | None = None) -> None:
    found = classify(tool.name, tool.description, tool.input_schema, tool.annotations)
    if floor is not None:
        found = the_more_severe(floor, found)
    tool.risk_category, tool.risk_level, tool.risk_reasons = found.category, found.level, list(found.reasons)


def first_of_each(entries: list, problem_of, skipped: list[str]):
    """(position, entry) for each usable entry of a listing, in order, each name once: an entry `problem_of` finds
    unusable, or a name listed again, is skipped and `skipped` says why."""
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        problem = problem_of(entry)
        if problem is None and entry["name"] in seen:
            problem = f"{entry['name']}: listed twice (the first one is kept)"
        if problem is not None:
            skipped.append(problem)
            continue
        seen.add(entry["name"])
        yield position, entry


def action_definition(via: str, entry: dict) -> dict:
    """The definition of action `entry["name"]` of dispatcher `via`: what its hash covers and a person reviews."""
    definition = {"name": entry["name"], "description": entry.get("description", ""),
                  "inputSchema": entry.get("inputSchema") or {"type": "object"}, "via": via}
    if entry.get("annotations"):
        definition["annotations"] = entry["annotations"]
    if entry.get("match"):
        definition["match"] = entry["match"]
    return definition


def fill_action(tool: Tool, definition: dict, now: datetime, position: int | None = None) -> None:
    """Set an action's fields from its definition, classified (unless a person overrode its risk)."""
    tool.description = definition["description"]
    tool.input_schema = definition["inputSchema"]
    tool.annotations = definition.get("annotations") or {}
    tool.match = definition.get("match") or {}
    tool.definition, tool.definition_hash = definition, definition_hash(definition)
    tool.last_seen_at, tool.gone_at = now, None
    if position is not None:
        tool.position = ACTION_POSITION_BASE + position
    if not tool.risk_overridden:
        classify_into(tool)
