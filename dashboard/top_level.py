"""The builder's policy-wide settings (hide, show_denied, on_deny, all_tools.limits): what the form shows."""

from __future__ import annotations

from dashboard.effective import live_tools, tool_facts
from dashboard.policy_forms import DEFAULT_ALL_TOOLS_COUNTER
from dashboard.rule_form import limit_rows, limits_posted
from dashboard.wording import counted
from gateway.policy import NAMED_WINDOWS, SCOPES, PolicyInvalid
from gateway.policy import editing as policy_edit
from gateway.policy.editing import ToolFacts

EMPTY_HIDE_ROWS = 1  # blank hide rows offered below the existing entries


def _hidden(entry: str, facts: list[ToolFacts]) -> list[str]:
    try:
        return policy_edit.tools_hidden_by(entry, facts)
    except PolicyInvalid:
        return []  # not a valid entry (the error is shown next to it)


def _summary(document: dict) -> list[str]:
    parts = [f"default {document['default']}"]
    if hide := document.get("hide"):
        parts.append("everything hidden" if "*" in hide else f"{len(hide)} hide entr{'y' if len(hide) == 1 else 'ies'}")
    if document.get("show_denied"):
        parts.append("denied tools listed")
    if document.get("on_deny"):
        parts.append("own refusal message")
    if limits := document.get("all_tools", {}).get("limits"):
        parts.append(f"{counted(len(limits), 'limit')} on every call")
    return parts


def context(server, document: dict, values: dict | None = None, errors: dict | None = None,
            opened: bool = False) -> dict:
    """`values` are the form as typed (after an error); otherwise the draft's own fields."""
    errors = errors or {}
    if values is None:
        fields = policy_edit.top_level_of(document)
        values = {"show_denied": fields.show_denied, "on_deny": fields.on_deny,
                  "hide": list(fields.hide), "limits": [dict(lim) for lim in fields.all_limits]}
    facts = [tool_facts(t) for t in live_tools(server)]
    hide = []
    for i, entry in enumerate(values["hide"] + [""] * EMPTY_HIDE_ROWS):
        hide.append({"i": i, "entry": entry, "all": entry == "*", "errors": errors.get(f"hide-{i}", []),
                     "hidden": _hidden(entry, facts) if entry else []})
    return {"wide": {
        "values": values, "errors": errors, "hide": hide, "summary": _summary(document),
        "limits": limit_rows(values["limits"], errors, DEFAULT_ALL_TOOLS_COUNTER),
        "windows": list(NAMED_WINDOWS), "scopes": SCOPES, "open": opened or bool(errors),
        "hide_all": policy_edit.hides_everything(document), "total": len(facts)}}


def posted(data: dict[str, list[str]]) -> dict:
    """The policy-wide form as typed, row for row, to show it again next to its errors."""
    rows = sorted(int(k[5:]) for k in data if k.startswith("hide-") and k[5:].isdigit())
    hide = [(data[f"hide-{i}"] or [""])[-1] for i in rows]
    while hide and not hide[-1].strip():
        hide.pop()
    return {"show_denied": (data.get("show_denied") or [""])[-1] in ("on", "true", "1"),
            "on_deny": (data.get("on_deny") or [""])[-1], "hide": hide, "limits": limits_posted(data)}
