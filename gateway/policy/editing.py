"""Editing a policy document the way the dashboard's builder does: one tool, many tools, the default.

Pure (standard library + gateway.policy). Every edit takes a canonical document and returns a new one that has
been validated and re-exported, so the builder's draft is always exactly what export_policy would print. What a
tool's current action is comes from the engine itself (visibility + select_rule), never from a second reading of
the document.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.policy import (
    ACTIONS,
    NAMED_WINDOWS,
    Facts,
    Policy,
    PolicyInvalid,
    Problem,
    alias_counter,
    canonical_json,
    export_policy,
    is_glob,
    parse_policy,
    select_rule,
    visibility,
)

INHERIT = "inherit"  # builder choice: no exact rule for this tool, the risk rule or the default decides
TOOL_CHOICES = (INHERIT, *ACTIONS)
EMPTY_POLICY = {"version": "1", "default": "deny"}


def normalize(document: object) -> dict:
    """Validate and return the canonical document (raises PolicyInvalid)."""
    return export_policy(parse_policy(document))


def text(document: dict) -> str:
    """Exactly what export_policy prints for this document."""
    return canonical_json(normalize(document))


# ---------------------------------------------------------------- what each tool does now


@dataclass(frozen=True)
class ToolFacts:
    name: str
    category: str
    level: str
    via: str = ""  # the dispatcher, when the tool is one of its actions


@dataclass(frozen=True)
class Effective:
    action: str  # allow | deny | hide | approve | limited | error
    rule: str  # JSON Pointer of the deciding rule
    limits: tuple[str, ...] = ()  # "5 per minute per grant (counter x)"
    checks_arguments: bool = False
    reason: str = ""  # why the tool is refused, as agents read it after "denied by policy: " (deny, hide, error)

    @property
    def for_agents(self) -> tuple:
        """What an agent can observe: two rules that agree on this are the same to it."""
        return self.action, self.limits, self.checks_arguments, self.reason


def _limit_text(limit) -> str:
    window = {v: k for k, v in NAMED_WINDOWS.items()}.get(limit.window, f"{limit.window} s")
    return f"{limit.max} per {window} per {limit.scope} ({limit.counter})"


def effective_actions(policy: Policy | None, tools: Iterable[ToolFacts], server: str = "",
                      grant: str = "") -> dict[str, Effective]:
    """The action the engine takes for each tool before looking at arguments and counters."""
    if policy is None:
        return {t.name: Effective("deny", "", reason="no active policy for this server") for t in tools}
    # Listed or not is what `visibility` answers; the builder shows what a call gets, so denied stays denied.
    strict = dataclasses.replace(policy, show_denied=False)
    out = {}
    for tool in tools:
        facts = Facts(grant, server, tool.name, tool.category, tool.level, {}, via=tool.via)
        decision = visibility(facts, strict)
        if decision.action == "hide":
            out[tool.name] = Effective("hide", decision.rule, reason=decision.reason)
        elif decision.refusal == "error":
            out[tool.name] = Effective("error", decision.rule, reason=decision.reason)
        elif not decision.allowed:
            out[tool.name] = Effective("deny", decision.rule, reason=decision.reason)
        else:
            out[tool.name] = _allowed(select_rule(facts, policy), policy)
    return out


def _allowed(rule, policy: Policy) -> Effective:
    limits = tuple(_limit_text(lim) for lim in rule.limits + policy.all_limits)
    checks = bool(rule.arguments or rule.require or rule.deny_if)
    if rule.action == "approve":
        return Effective("approve", rule.pointer, limits, checks)
    return Effective("limited" if limits else "allow", rule.pointer, limits, checks)


# ---------------------------------------------------------------- edits


def set_default(document: dict, default: str) -> dict:
    doc = copy.deepcopy(document)
    doc["default"] = default
    return normalize(doc)


def set_tool_rule(document: dict, name: str, rule: dict | None) -> dict:
    """Replace the exact rule for `name` (None removes it: the tool inherits)."""
    doc = copy.deepcopy(document)
    tools = dict(doc.get("tools", {}))
    if rule is None:
        tools.pop(name, None)
    else:
        tools[name] = rule
    doc["tools"] = tools
    return normalize(doc)


def _with_action(rule: dict, action: str) -> dict:
    rule = dict(rule)
    if action == "allow":
        rule.pop("action", None)
    else:
        rule["action"] = action
    return rule


def set_actions(document: dict, names: Iterable[str], choice: str) -> dict:
    """Give every named tool the action `choice` (or `inherit`), keeping its limits and argument checks."""
    if choice not in TOOL_CHOICES:
        raise PolicyInvalid([Problem("action", f"choose one of: {', '.join(TOOL_CHOICES)}")])
    doc = copy.deepcopy(document)
    tools = dict(doc.get("tools", {}))
    for name in names:
        if choice == INHERIT:
            tools.pop(name, None)
        else:
            tools[name] = _with_action(tools.get(name, {}), choice)
    doc["tools"] = tools
    return normalize(doc)


def set_risk_action(document: dict, key: str, choice: str) -> dict:
    """The rule for a whole risk tier (category or level): an action, or `inherit` to remove the tier's rule."""
    if choice not in TOOL_CHOICES:
        raise PolicyInvalid([Problem("action", f"choose one of: {', '.join(TOOL_CHOICES)}")])
    doc = copy.deepcopy(document)
    risk = dict(doc.get("risk", {}))
    if choice == INHERIT:
        risk.pop(key, None)
    else:
        risk[key] = _with_action(risk.get(key, {}), choice)
    doc["risk"] = risk
    return normalize(doc)


def limit_tools(document: dict, names: Iterable[str], maximum: int, window: str | int, scope: str,
                counter: str = "") -> dict:
    """Allow every named tool with one limit each: its own counter, or one shared `counter` for all of them."""
    doc = copy.deepcopy(document)
    tools = dict(doc.get("tools", {}))
    for name in names:
        rule = dict(tools.get(name, {}))
        if rule.get("action") != "approve":  # a limited tool is allowed; one held for approval stays held
            rule.pop("action", None)
        limit = {"counter": counter or alias_counter(name), "window": window, "max": maximum, "scope": scope}
        rule["limits"] = [lim for lim in rule.get("limits", []) if lim.get("counter") != limit["counter"]] + [limit]
        tools[name] = rule
    doc["tools"] = tools
    return normalize(doc)


# ---------------------------------------------------------------- bulk changes, planned before they are made


@dataclass(frozen=True)
class ToolChange:
    name: str
    before: Effective
    after: Effective


@dataclass(frozen=True)
class BulkPlan:
    """What a bulk action would do: the new document and, per tool, what an agent would notice."""

    document: dict
    changed: tuple[ToolChange, ...]  # tools whose action, limits, checks or refusal text change for agents
    unchanged: tuple[str, ...]  # tools for which nothing changes for agents
    rules_written: int  # exact rules added or changed
    rules_removed: int

    def groups(self) -> list[tuple[str, str, list[str]]]:
        """(before, after, tools) per kind of change, largest first: "allow → deny: 10 tools"."""
        out: dict[tuple[str, str], list[str]] = {}
        for change in self.changed:
            out.setdefault((change.before.action, change.after.action), []).append(change.name)
        return sorted(((b, a, names) for (b, a), names in out.items()), key=lambda g: (-len(g[2]), g[0], g[1]))


_TRIVIAL_RULE = {"action", "on_deny"}  # an exact rule that holds nothing else can give way to the tier's rule


def _already(effective: Effective, choice: str) -> bool:
    return effective.action == choice or (choice == "allow" and effective.action == "limited")


def plan_actions(document: dict, tools: Sequence[ToolFacts], names: Iterable[str], choice: str,
                 reason: str = "") -> BulkPlan:
    """Give the named tools the action `choice` (or `inherit`) with the fewest rules.

    A tool that already does `choice` is left alone (its refusal text included). Otherwise a rule that holds only
    an action (and a refusal text) is removed when what remains of the policy already does `choice` with the same
    text; only where it does not is an exact rule written. `reason` is the text agents read when a denied tool is
    called (kept from the tool's own rule when empty)."""
    if choice not in TOOL_CHOICES:
        raise PolicyInvalid([Problem("action", f"choose one of: {', '.join(TOOL_CHOICES)}")])
    names = list(dict.fromkeys(names))
    wanted = set(names)
    facts = [t for t in tools if t.name in wanted]
    exact = dict(document.get("tools", {}))
    before = effective_actions(parse_policy(document), facts)
    # What each tool would do with its own action-only rule gone: one parse for all of them.
    loose = {n for n in names if n in exact and set(exact[n]) <= _TRIVIAL_RULE}
    without = dict(document, tools={k: v for k, v in exact.items() if k not in loose})
    inherited = effective_actions(parse_policy(normalize(without)), facts) if loose else before
    tools_out = dict(exact)
    for name in names:
        if name not in before:
            continue
        if choice == INHERIT:
            tools_out.pop(name, None)
            continue
        if _already(before[name], choice) and not (choice == "deny" and reason and
                                                    before[name].reason != reason):
            continue
        if name in loose and _already(inherited[name], choice) and (
                choice != "deny" or not reason or inherited[name].reason == reason):
            tools_out.pop(name)
            continue
        rule = _with_action(tools_out.get(name, {}), choice)
        if choice == "deny" and reason:
            rule["on_deny"] = reason
        if choice != "deny" and set(rule) <= _TRIVIAL_RULE:
            rule.pop("on_deny", None)  # a refusal text only a denying rule would show
        tools_out[name] = rule
    doc = copy.deepcopy(document)
    doc["tools"] = tools_out
    return _plan(document, normalize(doc), facts, before)


def plan_limits(document: dict, tools: Sequence[ToolFacts], names: Iterable[str], maximum: int,
                window: str | int, scope: str, counter: str = "") -> BulkPlan:
    names = list(dict.fromkeys(names))
    wanted = set(names)
    facts = [t for t in tools if t.name in wanted]
    before = effective_actions(parse_policy(document), facts)
    return _plan(document, limit_tools(document, [n for n in names if n in before], maximum, window, scope,
                                       counter), facts, before)


def _plan(old: dict, new: dict, facts: Sequence[ToolFacts], before: dict[str, Effective]) -> BulkPlan:
    after = effective_actions(parse_policy(new), facts)
    changed, unchanged = [], []
    for tool in facts:
        if before[tool.name].for_agents == after[tool.name].for_agents:
            unchanged.append(tool.name)
        else:
            changed.append(ToolChange(tool.name, before[tool.name], after[tool.name]))
    old_rules, new_rules = old.get("tools", {}), new.get("tools", {})
    return BulkPlan(new, tuple(changed), tuple(unchanged),
                    sum(1 for k in new_rules if k not in old_rules or new_rules[k] != old_rules[k]),
                    sum(1 for k in old_rules if k not in new_rules))


# ---------------------------------------------------------------- the per-tool editor


# ---------------------------------------------------------------- glob rules


def _probe(tools: dict | None = None, hide: list[str] | None = None, default: str = "deny") -> Policy:
    """A one-rule policy: lets the engine itself say what a single `tools` key or `hide` entry matches."""
    doc: dict[str, Any] = {"version": "1", "default": default}
    if tools:
        doc["tools"] = tools
    if hide:
        doc["hide"] = hide
    return parse_policy(doc)


def _facts(tool: ToolFacts) -> Facts:
    return Facts("", "", tool.name, tool.category, tool.level, {})


def tools_matched(key: str, tools: Sequence[ToolFacts]) -> list[str]:
    """The tools a `tools` key selects when no other rule competes, by the engine's own select_rule."""
    probe = _probe(tools={key: {}})
    return [t.name for t in tools if select_rule(_facts(t), probe).key == key]


def tools_hidden_by(entry: str, tools: Sequence[ToolFacts]) -> list[str]:
    """The tools one `hide` entry hides on its own, by the engine's own visibility()."""
    probe = _probe(hide=[entry], default="allow")
    return [t.name for t in tools if visibility(_facts(t), probe).action == "hide"]


@dataclass(frozen=True)
class GlobReach:
    key: str
    action: str  # the rule's action (allow | deny | hide | approve)
    limits: tuple[str, ...]  # the rule's own limits, as text
    checks_arguments: bool
    matches: tuple[str, ...]  # tools whose name the pattern matches, catalogue order
    decides: tuple[str, ...]  # of those, the ones this rule decides under the whole policy
    elsewhere: tuple[tuple[str, str], ...]  # (tool, the pointer that decides it instead)


def glob_reach(document: dict, tools: Sequence[ToolFacts]) -> list[GlobReach]:
    """Each glob rule of the document (in document order) with the tools it matches and the ones it decides."""
    policy = parse_policy(document)
    globs = {rule.key: rule for _, rule in policy.index.globs}
    effective = effective_actions(policy, tools)
    out = []
    for key in document.get("tools", {}):
        rule = globs.get(key)
        if rule is None:
            continue
        matches = tools_matched(key, tools)
        decides = tuple(n for n in matches if effective[n].rule == rule.pointer)
        elsewhere = tuple((n, effective[n].rule) for n in matches if effective[n].rule != rule.pointer)
        out.append(GlobReach(key, rule.action, tuple(_limit_text(lim) for lim in rule.limits),
                             bool(rule.arguments or rule.require or rule.deny_if), tuple(matches), decides,
                             elsewhere))
    return out


def set_glob_rule(document: dict, key: str, rule: dict, old_key: str | None = None) -> dict:
    """Create a glob rule, or replace `old_key`'s rule (renaming it in place, so the document order stays)."""
    tools = dict(document.get("tools", {}))
    if not is_glob(key):
        raise PolicyInvalid([Problem("key", f"{key!r} has no *, ? or [...], so it names one tool: give that tool "
                                            "its own rule, or write a pattern such as dataset_*" if key else
                                            "write a pattern such as dataset_* (* any text, ? one character)")])
    if key != old_key and key in tools:
        raise PolicyInvalid([Problem("key", f"there is a rule for {key} already: edit that one")])
    if old_key in tools:
        tools = {(key if k == old_key else k): (rule if k == old_key else v) for k, v in tools.items()}
    else:
        tools[key] = rule
    doc = copy.deepcopy(document)
    doc["tools"] = tools
    return normalize(doc)


# ---------------------------------------------------------------- policy-wide fields


@dataclass(frozen=True)
class TopLevel:
    """The policy-wide fields the builder edits together (default has its own control)."""

    show_denied: bool = False
    on_deny: str = ""
    hide: tuple[str, ...] = ()
    all_limits: tuple[dict, ...] = ()
    hide_rows: tuple[int, ...] = ()  # the form row each hide entry came from
    limit_rows: tuple[int, ...] = ()  # the form row each all_tools limit came from


def top_level_of(document: dict) -> TopLevel:
    hide = tuple(document.get("hide", []))
    limits = tuple(dict(lim) for lim in document.get("all_tools", {}).get("limits", []))
    return TopLevel(bool(document.get("show_denied", False)), document.get("on_deny", ""), hide, limits,
                    tuple(range(len(hide))), tuple(range(len(limits))))


def set_top_level(document: dict, fields: TopLevel) -> dict:
    """Replace show_denied, on_deny, hide and all_tools.limits (empty values remove the field)."""
    doc = copy.deepcopy(document)
    for name in ("show_denied", "on_deny", "hide", "all_tools"):
        doc.pop(name, None)
    if fields.show_denied:
        doc["show_denied"] = True
    if fields.on_deny:
        doc["on_deny"] = fields.on_deny
    if fields.hide:
        doc["hide"] = list(fields.hide)
    if fields.all_limits:
        doc["all_tools"] = {"limits": [dict(lim) for lim in fields.all_limits]}
    return normalize(doc)


def hides_everything(document: dict) -> bool:
    """`"*"` in hide: agents see no tool at all and every call is refused as hidden, whatever the rules say."""
    return "*" in document.get("hide", [])


# ---------------------------------------------------------------- comparing documents


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "same" | "add" | "del" | "hunk"
    text: str


def text_diff(old: dict | None, new: dict | None, context: int = 3) -> list[DiffLine]:
    """Unified diff of the exported text of two documents (what export_policy prints)."""
    before = canonical_json(normalize(old)).splitlines() if old else []
    after = canonical_json(normalize(new)).splitlines() if new else []
    lines = []
    for line in list(difflib.unified_diff(before, after, lineterm="", n=context))[2:]:
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "same")
        lines.append(DiffLine(kind, line))
    return lines
