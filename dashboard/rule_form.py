"""The rows of the rule editor (limits, argument constraints) and its field errors, shared by the tool editor,
the glob editor and the policy-wide limits."""

from __future__ import annotations

import json

from gateway.policy import Problem

EMPTY_LIMIT_ROWS = 1  # blank limit rows offered below the existing ones
LIMIT_FIELDS = ("counter", "window", "max", "scope")
ARG_FIELDS = ("enum", "values", "pattern", "minimum", "maximum", "const", "maxLength", "presence", "type")


def limit_rows(values: list[dict], errors: dict, placeholder: str) -> list[dict]:
    """One row per limit plus a blank one; `placeholder` is the counter an empty counter field stands for."""
    rows = []
    for i, lim in enumerate(values + [{}] * EMPTY_LIMIT_ROWS):
        rows.append({"i": i, "counter": lim.get("counter", ""), "placeholder": placeholder,
                     "window": str(lim.get("window", "minute")),
                     "max": "" if lim.get("max") is None else str(lim["max"]), "scope": lim.get("scope", "grant"),
                     "errors": {f: errors.get(f"limit-{i}-{f}", []) for f in LIMIT_FIELDS}})
    return rows


def limits_posted(data: dict[str, list[str]]) -> list[dict]:
    """The limit rows as typed (kept in their rows, so an error stays next to its field)."""
    out, i = [], 0
    while f"limit-{i}-counter" in data:
        out.append({f: data.get(f"limit-{i}-{f}", [""])[-1] for f in LIMIT_FIELDS})
        i += 1
    while out and not (out[-1]["counter"] or out[-1]["max"]):
        out.pop()  # trailing blank rows: the template adds its own
    return out


def arg_rows(props, values: dict, errors: dict) -> list[dict]:
    rows = []
    for prop in props:
        key = f"arg-{prop.index}"
        enum_texts = [(json.dumps(v) if not isinstance(v, str) else v) for v in prop.enum]
        chosen = values.get(f"{key}-enum") or []
        rows.append({
            "prop": prop, "presence": values.get(f"{key}-presence", ""),
            "enum": [(t, t in chosen) for t in enum_texts],
            **{name: values.get(f"{key}-{name}", "") for name in
               ("values", "pattern", "minimum", "maximum", "const", "maxLength")},
            "errors": [e for name in ARG_FIELDS for e in errors.get(f"{key}-{name}", [])],
        })
    return rows


def errors_by_field(problems: list[Problem], field_of) -> dict[str, list[str]]:
    """Each problem under the form field it belongs to; the rest under "rule", with their pointer."""
    errors: dict[str, list[str]] = {}
    for problem in problems:
        field = problem.pointer if not problem.pointer.startswith("/") else field_of(problem.pointer)
        errors.setdefault(field or "rule", []).append(
            problem.message if field else f"{problem.pointer or '(document)'}: {problem.message}")
    return errors


def posted_values(data: dict[str, list[str]]) -> dict:
    """The form as typed, to show it again with its errors."""
    values = {k: (v if k.endswith("-enum") else v[-1]) for k, v in data.items()}
    values["limits"] = limits_posted(data)
    return values
