"""A person's review of the catalogue: approve a changed tool definition, override a risk classification.

The side-by-side comparison needs the definition that was approved. The catalogue keeps it in
`Tool.approved_definition` when that field exists; older catalogues only kept its hash, and then the page says so.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from django.db import transaction

from gateway.catalogue.sync import classify_now, reclassify_approved
from gateway.models import Tool
from gateway.policy import RISK_CATEGORIES, RISK_LEVELS


class ReviewError(ValueError):
    pass


@transaction.atomic
def approve_definition(tool: Tool, seen_hash: str) -> bool:
    """Approve the definition the person looked at (`seen_hash`); False when it changed meanwhile."""
    fields = {"approved_hash": seen_hash}
    if hasattr(Tool, "approved_definition"):
        fields["approved_definition"] = tool.definition
    updated = Tool.objects.filter(pk=tool.pk, definition_hash=seen_hash).update(**fields)
    tool.refresh_from_db()
    if updated:
        # The classification kept from the earlier definition (gateway/catalogue/sync.py) gives way to the new one's.
        reclassify_approved(tool)
        tool.save(update_fields=["risk_category", "risk_level", "risk_reasons"])
    return bool(updated)


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
