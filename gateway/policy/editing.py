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
import json
import re
from collections.abc import Iterable, Mapping, Sequence
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
    parse_policy,
    pointer_join,
    select_rule,
    visibility,
)
from gateway.policy import (
    is_glob as engine_is_glob,
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


@dataclass(frozen=True)
class Effective:
    action: str  # allow | deny | hide | approve | limited | error
    rule: str  # JSON Pointer of the deciding rule
    limits: tuple[str, ...] = ()  # "5 per minute per grant (counter x)"
    checks_arguments: bool = False


def _limit_text(limit) -> str:
    window = {v: k for k, v in NAMED_WINDOWS.items()}.get(limit.window, f"{limit.window} s")
    return f"{limit.max} per {window} per {limit.scope} ({limit.counter})"


def effective_actions(policy: Policy | None, tools: Iterable[ToolFacts], server: str = "",
                      grant: str = "") -> dict[str, Effective]:
    """The action the engine takes for each tool before looking at arguments and counters."""
    if policy is None:
        return {t.name: Effective("deny", "") for t in tools}
    # Listed or not is what `visibility` answers; the builder shows what a call gets, so denied stays denied.
    strict = dataclasses.replace(policy, show_denied=False)
    out = {}
    for tool in tools:
        facts = Facts(grant, server, tool.name, tool.category, tool.level, {})
        decision = visibility(facts, strict)
        if decision.action == "hide":
            out[tool.name] = Effective("hide", decision.rule)
        elif decision.refusal == "error":
            out[tool.name] = Effective("error", decision.rule)
        elif not decision.allowed:
            out[tool.name] = Effective("deny", decision.rule)
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


# ---------------------------------------------------------------- the per-tool editor


@dataclass(frozen=True)
class SchemaProperty:
    index: int
    name: str
    type: str  # string | number | integer | boolean | object | array | "" (unknown)
    enum: tuple[Any, ...] = ()
    description: str = ""


def schema_properties(input_schema: object) -> list[SchemaProperty]:
    """The top-level properties of a tool's input schema, in schema order, as the editor offers them."""
    props = input_schema.get("properties") if isinstance(input_schema, dict) else None
    if not isinstance(props, dict):
        return []
    out = []
    for i, (name, raw) in enumerate(props.items()):
        raw = raw if isinstance(raw, dict) else {}
        kind = raw.get("type") if isinstance(raw.get("type"), str) else ""
        enum = tuple(raw["enum"]) if isinstance(raw.get("enum"), list) else ()
        out.append(SchemaProperty(i, str(name), kind, enum, str(raw.get("description") or "")[:300]))
    return out


def _one(data: Mapping[str, list[str]], key: str) -> str:
    values = data.get(key) or [""]
    return values[-1].strip()


def _number(raw: str, field: str, problems: list[Problem]) -> int | float | None:
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        problems.append(Problem(field, f"{raw!r} is not a number"))
        return None
    return int(value) if value.is_integer() and re.fullmatch(r"-?\d+", raw) else value


def _window(raw: str) -> str | int:
    return int(raw) if raw.isdigit() else raw


def _limits_from(data: Mapping[str, list[str]], problems: list[Problem], default_counter: str) -> list[dict]:
    return [limit for _, limit in _limit_rows_from(data, problems, default_counter)]


def _limit_rows_from(data: Mapping[str, list[str]], problems: list[Problem],
                     default_counter: str) -> list[tuple[int, dict]]:
    """The limits typed into `limit-<i>-*` rows, each with its row number (empty rows add nothing)."""
    limits = []
    for i in range(_count(data, "limit")):
        counter, window, maximum = (_one(data, f"limit-{i}-{f}") for f in ("counter", "window", "max"))
        if not maximum:
            if counter and counter != default_counter:
                problems.append(Problem(f"limit-{i}-max", "give the most calls per window, or clear the counter"))
            continue  # an empty row adds nothing
        counter = counter or default_counter  # the rule's own counter unless a shared one is named
        scope = _one(data, f"limit-{i}-scope") or "grant"
        parsed_max = _number(maximum, f"limit-{i}-max", problems)
        limits.append((i, {"counter": counter, "window": _window(window or "minute"),
                           "max": parsed_max if parsed_max is not None else maximum, "scope": scope}))
    return limits


def _count(data: Mapping[str, list[str]], prefix: str) -> int:
    indexes = [int(m.group(1)) for key in data if (m := re.fullmatch(prefix + r"-(\d+)-\w+", key))]
    return max(indexes, default=-1) + 1


def _property_from(prop: SchemaProperty, data: Mapping[str, list[str]],
                   problems: list[Problem]) -> dict:
    key = f"arg-{prop.index}"
    out: dict[str, Any] = {}
    allowed = [v for v in (data.get(f"{key}-enum") or []) if v != ""]
    if allowed and prop.enum:
        by_text = {json.dumps(v) if not isinstance(v, str) else v: v for v in prop.enum}
        out["enum"] = [by_text[v] for v in allowed if v in by_text]
    values = _one(data, f"{key}-values")
    if values:
        out["enum"] = [v.strip() for v in values.split(",") if v.strip()]
    pattern = _one(data, f"{key}-pattern")
    if pattern:
        out["pattern"] = pattern
    for name in ("minimum", "maximum"):
        number = _number(_one(data, f"{key}-{name}"), f"{key}-{name}", problems)
        if number is not None:
            out[name] = number
    const = _one(data, f"{key}-const")
    if const in ("true", "false"):
        out["const"] = const == "true"
    max_length = _number(_one(data, f"{key}-maxLength"), f"{key}-maxLength", problems)
    if max_length is not None:
        out["maxLength"] = max_length
    return out


def rule_from_form(data: Mapping[str, list[str]], props: list[SchemaProperty], existing: dict | None,
                   tool: str = "") -> tuple[dict | None, list[Problem]]:
    """The exact rule for one tool from the editor's fields (None = inherit). Problems name form fields.

    Argument properties that the tool's schema does not list are kept from `existing`; the form cannot show them.
    """
    problems: list[Problem] = []
    action = _one(data, "action") or INHERIT
    if action not in TOOL_CHOICES:
        problems.append(Problem("action", f"choose one of: {', '.join(TOOL_CHOICES)}"))
    if action == INHERIT:
        return None, problems
    rule: dict[str, Any] = {} if action == "allow" else {"action": action}
    if reason := _one(data, "on_deny"):
        rule["on_deny"] = reason
    properties: dict[str, dict] = {}
    required, forbidden = [], []
    known = {p.name for p in props}
    old_args = (existing or {}).get("arguments", {})
    for name, schema in old_args.get("properties", {}).items():
        if name not in known:
            properties[name] = schema
    for prop in props:
        if constraint := _property_from(prop, data, problems):
            properties[prop.name] = constraint
        presence = _one(data, f"arg-{prop.index}-presence")
        (required if presence == "required" else forbidden if presence == "forbidden" else []).append(prop.name)
    required += [n for n in old_args.get("required", []) if n not in known]
    forbidden += [n for n in old_args.get("forbidden", []) if n not in known]
    arguments = {k: v for k, v in (("properties", properties), ("required", required),
                                   ("forbidden", forbidden)) if v}
    if arguments:
        rule["arguments"] = arguments
    conditions = _conditions(_one(data, "conditions"), problems)
    rule.update(conditions)
    if limits := _limits_from(data, problems, alias_counter(tool)):
        rule["limits"] = limits
    return rule, problems


def _conditions(raw: str, problems: list[Problem]) -> dict:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as err:
        problems.append(Problem("conditions", f"not JSON: {err}"))
        return {}
    if not isinstance(value, dict) or set(value) - {"require", "deny_if"}:
        problems.append(Problem("conditions", 'write an object with "require" and/or "deny_if" lists'))
        return {}
    return value


def form_initial(rule: dict | None, props: list[SchemaProperty]) -> dict[str, Any]:
    """The editor's field values for an existing exact rule (the inverse of rule_from_form)."""
    action = INHERIT if rule is None else rule.get("action", "allow")
    rule = rule or {}
    initial: dict[str, Any] = {"action": action, "on_deny": rule.get("on_deny", "")}
    args = rule.get("arguments", {})
    for prop in props:
        key = f"arg-{prop.index}"
        schema = args.get("properties", {}).get(prop.name, {})
        presence = ("required" if prop.name in args.get("required", []) else
                    "forbidden" if prop.name in args.get("forbidden", []) else "")
        initial[f"{key}-presence"] = presence
        enum = schema.get("enum")
        if prop.enum:
            initial[f"{key}-enum"] = [json.dumps(v) if not isinstance(v, str) else v for v in enum or []]
        elif enum:
            initial[f"{key}-values"] = ", ".join(str(v) for v in enum)
        for name in ("pattern", "minimum", "maximum", "maxLength"):
            initial[f"{key}-{name}"] = "" if schema.get(name) is None else str(schema[name])
        initial[f"{key}-const"] = {True: "true", False: "false"}.get(schema.get("const"), "")
    conditions = {k: rule[k] for k in ("require", "deny_if") if k in rule}
    initial["conditions"] = json.dumps(conditions, indent=2, ensure_ascii=False) if conditions else ""
    initial["limits"] = [dict(lim) for lim in rule.get("limits", [])]
    return initial


def field_for_pointer(pointer: str, tool: str, props: list[SchemaProperty]) -> str:
    """Which editor field a PolicyInvalid pointer under /tools/<tool> belongs to ("" = the whole rule)."""
    base = pointer_join("/tools", tool)
    if not pointer.startswith(base + "/"):
        return ""
    parts = pointer[len(base) + 1:].split("/")
    by_name = {pointer_join("", p.name)[1:]: p.index for p in props}
    if parts[0] in ("action", "on_deny", "reason"):
        return "on_deny" if parts[0] == "reason" else parts[0]
    if parts[0] in ("require", "deny_if"):
        return "conditions"
    if parts[0] == "limits" and len(parts) >= 3:
        return f"limit-{parts[1]}-{parts[2]}"
    if parts[0] == "limits" and len(parts) == 2:
        return f"limit-{parts[1]}-counter"
    if parts[:2] == ["arguments", "properties"] and len(parts) >= 3 and parts[2] in by_name:
        keyword = parts[3] if len(parts) > 3 else "pattern"
        return f"arg-{by_name[parts[2]]}-{'values' if keyword == 'enum' else keyword}"
    return ""


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


def is_glob(key: str) -> bool:
    """Whether the engine reads this `tools` key as a glob (else an exact tool name)."""
    return engine_is_glob(key)


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


def glob_rule_from_form(data: Mapping[str, list[str]], props: list[SchemaProperty], existing: dict | None,
                        key: str) -> tuple[dict | None, list[Problem]]:
    """A glob rule from the editor's fields: like a tool's rule, but it always does something (delete removes it)."""
    rule, problems = rule_from_form(data, props, existing, key)
    if rule is None and not problems:
        problems.append(Problem("action", f"choose one of: {', '.join(ACTIONS)} (Delete removes the rule)"))
    return rule, problems


def common_properties(schemas: Sequence[object]) -> list[SchemaProperty]:
    """Argument properties that every schema has: what a glob rule can constrain for all the tools it matches.

    A property whose type differs between the tools is offered as "mixed" (presence only), and an enum only when
    every tool lists the same values.
    """
    lists = [schema_properties(s) for s in schemas]
    if not lists:
        return []
    others = [{p.name: p for p in props} for props in lists[1:]]
    out: list[SchemaProperty] = []
    for prop in lists[0]:
        same = [o.get(prop.name) for o in others]
        if any(p is None for p in same):
            continue
        kind = prop.type if all(p.type == prop.type for p in same) else "mixed"
        enum = prop.enum if all(p.enum == prop.enum for p in same) else ()
        out.append(SchemaProperty(len(out), prop.name, kind, enum, prop.description))
    return out


# ---------------------------------------------------------------- policy-wide fields

DEFAULT_ALL_TOOLS_COUNTER = "all_calls"


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


def top_level_from_form(data: Mapping[str, list[str]]) -> tuple[TopLevel, list[Problem]]:
    """The policy-wide fields from the builder's form: hide-<i> rows, limit-<i>-* rows, show_denied, on_deny."""
    problems: list[Problem] = []
    hide_rows = sorted(int(m.group(1)) for key in data if (m := re.fullmatch(r"hide-(\d+)", key)))
    hide = [(i, _one(data, f"hide-{i}")) for i in hide_rows]
    hide = [(i, entry) for i, entry in hide if entry]
    limits = _limit_rows_from(data, problems, DEFAULT_ALL_TOOLS_COUNTER)
    show_denied = _one(data, "show_denied") in ("on", "true", "1")
    return TopLevel(show_denied, _one(data, "on_deny"), tuple(e for _, e in hide), tuple(lim for _, lim in limits),
                    tuple(i for i, _ in hide), tuple(i for i, _ in limits)), problems


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


def top_level_field(pointer: str, fields: TopLevel) -> str:
    """Which field of the policy-wide form a PolicyInvalid pointer belongs to ("" = none of them)."""
    parts = pointer.split("/")[1:] if pointer.startswith("/") else []
    if parts in (["show_denied"], ["on_deny"], ["hide"]):
        return parts[0]
    if len(parts) == 2 and parts[0] == "hide" and parts[1].isdigit() and int(parts[1]) < len(fields.hide_rows):
        return f"hide-{fields.hide_rows[int(parts[1])]}"
    if parts[:2] == ["all_tools", "limits"] and len(parts) >= 3 and parts[2].isdigit():
        index = int(parts[2])
        if index < len(fields.limit_rows):
            return f"limit-{fields.limit_rows[index]}-{parts[3] if len(parts) > 3 else 'counter'}"
    return ""


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
