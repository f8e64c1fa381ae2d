"""Human-readable differences between two canonical policy documents.

Pure standard library.  Inputs are documents as export_policy() prints them;
anything else is tolerated (treated as missing) so a summary never crashes an apply.
"""

from __future__ import annotations

import json
from typing import Any

MAX_ONE_LINE = 200
RULE_FIELDS = ("action", "on_deny", "require", "deny_if", "arguments", "limits")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _scalar_lines(old: dict, new: dict, fresh: bool) -> list[str]:
    lines = []
    for name, implicit in (("version", None), ("default", None), ("show_denied", False), ("on_deny", None)):
        before, after = old.get(name, implicit), new.get(name, implicit)
        if before == after and type(before) is type(after):
            continue
        if fresh:  # a new policy: say what it is, there is no "before"
            if after != implicit:
                lines.append(f"{name}: {_text(after)}")
        elif name == "on_deny" and before is not None and after is not None:
            lines.append("on_deny: changed")
        else:
            lines.append(f"{name}: {_text(before)} → {_text(after)}")
    return lines


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _hide_line(old: dict, new: dict) -> list[str]:
    before, after = _as_list(old.get("hide")), _as_list(new.get("hide"))
    if before == after:
        return []
    changes = [f"+ {x}" for x in after if x not in before] + [f"- {x}" for x in before if x not in after]
    return [f"~ hide: {', '.join(changes) if changes else 'order changed'}"]


def _limits_line(old: dict, new: dict) -> list[str]:
    before = _as_list(_as_dict(old.get("all_tools")).get("limits"))
    after = _as_list(_as_dict(new.get("all_tools")).get("limits"))
    return [] if before == after else ["~ all_tools: limits changed"]


def _rule_change(before: dict, after: dict) -> str:
    parts = []
    for name in RULE_FIELDS:
        if before.get(name) == after.get(name):
            continue
        if name == "action":
            parts.append(f"action {before.get('action', 'allow')} → {after.get('action', 'allow')}")
        else:
            parts.append(f"{name} changed")
    return ", ".join(parts)


def _rule_lines(old: dict, new: dict, section: str) -> list[str]:
    before, after = _as_dict(old.get(section)), _as_dict(new.get(section))
    lines = []
    for key, rule in after.items():
        action = _as_dict(rule).get("action", "allow")
        if key not in before:
            lines.append(f"+ {section}/{key}" + ("" if action == "allow" else f" ({action})"))
        elif before[key] != rule:
            change = _rule_change(_as_dict(before[key]), _as_dict(rule)) or "changed"
            lines.append(f"~ {section}/{key}: {change}")
    lines += [f"- {section}/{key}" for key in before if key not in after]
    return lines


def summarize(old: dict | None, new: dict) -> list[str]:
    """Lines describing how `new` differs from `old` ([] when equal)."""
    fresh = old is None
    before, after = _as_dict(old), _as_dict(new)
    lines = _scalar_lines(before, after, fresh) + _hide_line(before, after) + _limits_line(before, after)
    for section in ("risk", "tools", "resources", "prompts"):
        lines += _rule_lines(before, after, section)
    return ["new policy", *lines] if fresh else lines


def one_line(lines: list[str]) -> str:
    """A short summary (at most 200 characters) for a version's summary column."""
    if not lines:
        return "no changes"
    text = "; ".join(lines)
    if len(text) <= MAX_ONE_LINE:
        return text
    kept: list[str] = []
    for i, line in enumerate(lines):
        more = f"; … +{len(lines) - i} more"
        if len("; ".join(kept + [line])) + len(more) > MAX_ONE_LINE:
            break
        kept.append(line)
    if not kept:  # even the first line is too long: cut it
        return lines[0][: MAX_ONE_LINE - 1] + "…"
    return "; ".join(kept) + f"; … +{len(lines) - len(kept)} more"
