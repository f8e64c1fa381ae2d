"""What a policy change does, in behaviour rather than JSON pointers: for every tool of the catalogue, what a call
gets before and after ("cloud_backup_run: limited 10 per minute per grant → limited 5 per minute per grant"),
tools that change the same way grouped ("43 destructive tools: deny → hide"). Pure: the engine's own effective
actions (gateway/policy/editing.py) decide both sides."""

from __future__ import annotations

from collections import defaultdict

from gateway.policy.document import Policy
from gateway.policy.editing import Effective, ToolFacts, effective_actions

NAMES_SHOWN = 4


def describe(effective: Effective) -> str:
    """What a call of the tool gets, in words (before arguments and counters)."""
    text = {"limited": "limited", "approve": "needs approval", "allow": "allow", "deny": "deny", "hide": "hide",
            "error": "error"}.get(effective.action, effective.action)
    if effective.limits:
        limits = "; ".join(limit.rsplit(" (", 1)[0] for limit in effective.limits)  # the counter's name aside
        text = f"{text} {limits}" if effective.action == "limited" else f"{text}, limited {limits}"
    if effective.checks_arguments:
        text += ", arguments checked"
    return text


def behaviour_changes(before: Policy | None, after: Policy | None, tools: list[ToolFacts], server: str = "",
                      grant: str = "") -> list[str]:
    """One line per way calls change, the widest first; [] when no tool's calls change."""
    was = effective_actions(before, tools, server, grant)
    will = effective_actions(after, tools, server, grant)
    groups: dict[tuple[str, str], list[ToolFacts]] = defaultdict(list)
    for tool in tools:
        old, new = describe(was[tool.name]), describe(will[tool.name])
        if old != new or was[tool.name].reason != will[tool.name].reason:
            groups[(old, new)].append(tool)
    lines = []
    for (old, new), members in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        if old == new:
            new = f"{new} (the reason agents read changes)"
        if len(members) == 1:
            lines.append(f"{members[0].name}: {old} → {new}")
            continue
        categories = {m.category for m in members}
        names = ", ".join(m.name for m in members[:NAMES_SHOWN]) + (", …" if len(members) > NAMES_SHOWN else "")
        what = f"{len(members)} {categories.pop()} tools" if len(categories) == 1 else f"{len(members)} tools"
        lines.append(f"{what}: {old} → {new} ({names})")
    return lines
