"""The builder's forms read into policy rules, and rules written back into the forms' fields.

The policy side of an edit (validate, re-export, what a rule matches) is gateway/policy/editing.py; this module
knows the field names the builder's templates use (`action`, `arg-<i>-pattern`, `limit-<i>-max`, `hide-<i>`, ...),
reads them from a submitted form into a rule or the policy-wide fields with problems named by field, gives the
initial values of the fields for an existing rule, and says which field a validation error belongs to.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.policy import ACTIONS, Problem, alias_counter, pointer_join
from gateway.policy.editing import INHERIT, TOOL_CHOICES, TopLevel


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



DEFAULT_ALL_TOOLS_COUNTER = "all_calls"



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
