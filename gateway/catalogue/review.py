"""A person's review of the catalogue: approve a changed tool definition, override a risk classification.

The side-by-side comparison needs the definition that was approved. The catalogue keeps it in
`Tool.approved_definition` when that field exists; older catalogues only kept its hash, and then the page says so.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from gateway import events
from gateway.catalogue.sync import classify_now, hold_change, reclassify_approved
from gateway.models import Server, ServerChange, Tool
from gateway.policy import RISK_CATEGORIES, RISK_LEVELS
from gateway.tool_definitions import REVIEW_HOLDS


class ReviewError(ValueError):
    pass


@transaction.atomic
def approve_definition(tool: Tool, seen_hash: str, user=None, now=None) -> bool:
    """Approve the definition the person looked at (`seen_hash`); False when it changed meanwhile. A tool held for
    review (changed, or new on an established server) is let go: the policy decides its calls again."""
    fields = {"approved_hash": seen_hash, "approved_by": user, "approved_at": now or timezone.now()}
    if hasattr(Tool, "approved_definition"):
        fields["approved_definition"] = tool.definition
    held = tool.held_reason in REVIEW_HOLDS
    updated = Tool.objects.filter(pk=tool.pk, definition_hash=seen_hash).update(**fields)
    if updated and held:
        Tool.objects.filter(pk=tool.pk, held_reason__in=REVIEW_HOLDS).update(held_reason="")
    tool.refresh_from_db()
    if updated:
        # The classification kept from the earlier definition (gateway/catalogue/sync.py) gives way to the new one's.
        reclassify_approved(tool)
        tool.save(update_fields=["risk_category", "risk_level", "risk_reasons"])
        who = user.get_username() if user is not None else "cli"
        if held:
            events.reviews_changed()
        ServerChange.objects.create(server=tool.server, slug=tool.server.slug, user=user, actor=who[:200],
                                    summary=f"approved the new definition of {tool.name}"[:500],
                                    details=[f"approved the definition of {tool.name}" +
                                             ("; it was held, and may be called again" if held else "")])
    return bool(updated)


def apply_change_setting(server: Server) -> int:
    """The server's on_definition_change was set: hold its tools whose definition is not the approved one (block),
    or let them go (flag). Returns how many tools changed state."""
    changed = 0
    for tool in Tool.objects.filter(server=server, via__isnull=True, gone_at__isnull=True).exclude(approved_hash=""):
        before = tool.held_reason
        hold_change(tool, server)
        if tool.held_reason != before:
            tool.save(update_fields=["held_reason"])
            changed += 1
    if changed:
        events.reviews_changed()
    return changed


def held_for_review():
    """Tools refused until a person reviews them: changed or new definitions, and dispatcher actions first seen in
    calls; oldest change first."""
    return Tool.objects.filter(gone_at__isnull=True).exclude(held_reason="").select_related("server", "via") \
        .order_by("last_seen_at", "pk")


def override_classification(tool: Tool, category: str, level: str, reason: str) -> None:
    """A person's classification wins over the classifier's, also after later definition changes."""
    if category not in RISK_CATEGORIES:
        raise ReviewError(f"category must be one of: {', '.join(RISK_CATEGORIES)}")
    if level not in RISK_LEVELS:
        raise ReviewError(f"level must be one of: {', '.join(RISK_LEVELS)}")
    if not reason.strip():
        raise ReviewError("say why: the reason is kept next to the classification")
    tool.risk_category, tool.risk_level = category, level
    tool.risk_overridden, tool.risk_override_reason = True, reason.strip()[:2000]
    tool.save(update_fields=["risk_category", "risk_level", "risk_overridden", "risk_override_reason"])


def clear_override(tool: Tool) -> None:
    """The classifier decides again: from the current definition, but never below the approved one's while the
    change is unreviewed (as a refresh would have classified it)."""
    tool.risk_overridden, tool.risk_override_reason = False, ""
    classify_now(tool)
    tool.save(update_fields=["risk_category", "risk_level", "risk_reasons", "risk_overridden",
                             "risk_override_reason"])


def approved_definition(tool: Tool) -> dict | None:
    return getattr(tool, "approved_definition", None) or None


@dataclass(frozen=True)
class SideBySide:
    left: str
    right: str
    kind: str  # same | changed | added | removed


def _lines(value: object) -> list[str]:
    if isinstance(value, str):
        return value.splitlines() or [""]
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def side_by_side(old: object, new: object) -> list[SideBySide]:
    """Row-aligned comparison of two texts or JSON values (descriptions, schemas)."""
    a, b = _lines(old), _lines(new)
    rows: list[SideBySide] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            rows += [SideBySide(x, x, "same") for x in a[i1:i2]]
            continue
        left, right = a[i1:i2], b[j1:j2]
        for k in range(max(len(left), len(right))):
            lt = left[k] if k < len(left) else ""
            rt = right[k] if k < len(right) else ""
            kind = "changed" if k < len(left) and k < len(right) else ("removed" if k < len(left) else "added")
            rows.append(SideBySide(lt, rt, kind))
    return rows
