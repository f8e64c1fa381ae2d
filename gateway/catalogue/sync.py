"""The tool catalogue: what each upstream lists, with a hash of every definition and a risk classification."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction

from gateway import events
from gateway.models import Server, Tool
from gateway.notify import outbox
from gateway.policy.dispatch import detect
from gateway.policy.risk import Classification, classify
from gateway.tool_definitions import (
    CHANGED_HELD,
    NEW_HELD,
    classify_into,
    definition_hash,
    first_of_each,
    same_behaviour,
)


@dataclass
class RefreshSummary:
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # malformed or duplicate entries, with why

    @property
    def listed(self) -> int:
        """How many tools the listing had (new, changed and unchanged)."""
        return len(self.new) + len(self.changed) + self.unchanged

    def lines(self) -> list[str]:
        out = [f"{len(self.new)} new, {len(self.changed)} changed, {len(self.gone)} gone, {self.unchanged} unchanged"]
        out += [f"  + {name}" for name in self.new]
        out += [f"  ~ {name} (definition changed: review it before approving)" for name in self.changed]
        out += [f"  - {name}" for name in self.gone]
        out += [f"  ! skipped {entry}" for entry in self.skipped]
        return out


def _valid(definition: object) -> str | None:
    if not isinstance(definition, dict):
        return "not an object"
    name = definition.get("name")
    if not isinstance(name, str) or not name or len(name) > 255:
        return "no usable name"
    if not isinstance(definition.get("inputSchema", {}), dict):
        return f"{name}: inputSchema is not an object"
    return None


def _fields(definition: dict) -> dict:
    annotations = definition.get("annotations") or {}
    return {
        "title": str(definition.get("title") or annotations.get("title") or "")[:500],
        "description": str(definition.get("description") or ""),
        "input_schema": definition.get("inputSchema") or {},
        "output_schema": definition.get("outputSchema"),
        "annotations": annotations if isinstance(annotations, dict) else {},
        "definition": definition,
    }


def classify_now(tool: Tool) -> None:
    """Classify the tool's current definition, with the approved definition's classification as the floor while a
    change is unreviewed (what sync_tools does on a change)."""
    unreviewed = tool.approved_hash and tool.definition_hash != tool.approved_hash
    classify_into(tool, _approved_classification(tool) if unreviewed else None)


def reclassify_approved(tool: Tool) -> None:
    """A person approved the tool's current definition: it is classified from that alone (unless overridden)."""
    if not tool.risk_overridden:
        classify_into(tool)


def _approved_classification(tool: Tool) -> Classification:
    """How the approved definition is classified (the tool's stored classification where the catalogue predates
    kept approved definitions)."""
    approved = tool.approved_definition
    if not isinstance(approved, dict):
        return Classification(tool.risk_category, tool.risk_level, tuple(tool.risk_reasons or ()))
    fields = _fields(approved)
    return classify(tool.name, fields["description"], fields["input_schema"], fields["annotations"])


@transaction.atomic
def sync_tools(server: Server, definitions: list, now: datetime, *, complete: bool = True,
               mark_gone: bool | None = None) -> RefreshSummary:
    """Bring the catalogue in line with a listing. New tools are classified; changed ones flagged.

    Only a complete listing (every page) can say a tool is gone or give positions; one page of a paginated
    tools/list relayed to an agent (complete=False) only adds and updates. mark_gone=False: a complete listing
    that still cannot say a tool is gone (it was made declaring fewer client capabilities than the gateway can)."""
    summary = RefreshSummary()
    # What a change does is read now: a gateway process keeps its Server for as long as its link lives, and a
    # person may have changed the setting since, on any process.
    server.on_definition_change, server.hold_new_tools = Server.objects.filter(pk=server.pk).values_list(
        "on_definition_change", "hold_new_tools").get()
    existing = {tool.name: tool for tool in Tool.objects.select_for_update().filter(server=server)}
    held_before = {name for name, tool in existing.items() if tool.held_reason}
    established = any(t.via_id is None for t in existing.values())  # not its first listing
    seen: set[str] = set()
    for position, definition in first_of_each(definitions, _valid, summary.skipped):
        seen.add(definition["name"])
        taken = existing.get(definition["name"])
        if taken is not None and taken.via_id is not None:
            summary.skipped.append(f"{definition['name']}: the name is an action of dispatcher {taken.via.name}; "
                                   "the listed tool is not used until one of them is renamed")
            continue
        _upsert(server, existing.get(definition["name"]), definition, position, now, summary, complete,
                established)
    held_now = set(Tool.objects.filter(server=server).exclude(held_reason="").values_list("name", flat=True))
    if held_now != held_before:
        events.reviews_changed()
    if held_now - held_before:  # people who are not looking are told
        outbox.after_commit(outbox.tool_held, server, sorted(held_now - held_before))
    if not complete or mark_gone is False:
        return summary
    for name, tool in existing.items():
        if name not in seen and tool.gone_at is None and tool.via_id is None:
            tool.gone_at = now
            tool.save(update_fields=["gone_at"])
            summary.gone.append(name)
    return summary


def hold_change(tool: Tool, server: Server) -> None:
    """Hold a tool whose definition is not the approved one when the server holds changed tools; let it go when it
    is the approved one again or the server only flags changes. A tool held as new stays held until approved."""
    unapproved = bool(tool.approved_hash) and tool.definition_hash != tool.approved_hash
    if unapproved and server.on_definition_change == Server.OnChange.BLOCK:
        tool.held_reason = CHANGED_HELD
    elif tool.held_reason == CHANGED_HELD:
        tool.held_reason = ""


def _upsert(server: Server, tool: Tool | None, definition: dict, position: int, now: datetime,
            summary: RefreshSummary, complete: bool = True, established: bool = True) -> None:
    digest = definition_hash(definition)
    if tool is None:
        # Trust on first use: the first definition seen is the baseline that later changes are compared to.
        held = server.hold_new_tools and established
        tool = Tool(server=server, name=definition["name"], first_seen_at=now, approved_hash="" if held else digest,
                    approved_definition=None if held else definition, held_reason=NEW_HELD if held else "",
                    definition_hash=digest, position=position, last_seen_at=now, **_fields(definition))
        classify_into(tool)
        _suggest_dispatcher(tool)
        tool.save()
        summary.new.append(tool.name)
        return
    changed = tool.definition_hash != digest
    returned = tool.gone_at is not None
    # Never lowered by a change nobody reviewed: the approved definition's classification is the floor.
    floor = _approved_classification(tool) if changed and tool.approved_hash and digest != tool.approved_hash \
        else None
    for key, value in _fields(definition).items():
        setattr(tool, key, value)
    tool.definition_hash, tool.last_seen_at, tool.gone_at = digest, now, None
    if complete:
        tool.position = position
    if changed and tool.approved_hash and digest != tool.approved_hash and \
            same_behaviour(definition, tool.approved_definition):
        # Whitespace in a description, nothing else: the approved definition stands, in its new spelling.
        tool.approved_hash, tool.approved_definition, floor = digest, definition, None
    if changed and not tool.risk_overridden:
        classify_into(tool, floor)
    hold_change(tool, server)
    if changed:
        _suggest_dispatcher(tool)
    tool.save()
    if changed:
        summary.changed.append(tool.name)
    elif returned:
        summary.new.append(tool.name)
    else:
        summary.unchanged += 1


def _suggest_dispatcher(tool: Tool) -> None:
    """A tool shaped like a dispatcher (gateway/policy/dispatch.py) is suggested as one; a person confirms."""
    if not tool.dispatch:
        found = detect(tool.definition)
        tool.dispatch_suggested = found.to_json() if found is not None else None
