"""The policy document: load, validate and export the policy JSON (PolicyLayer's shape plus our fields).

Pure like gateway/policy/engine.py, which evaluates what this module parses: standard library only, no I/O.
parse_policy() collects ALL problems so an operator can fix a policy in one go. docs/POLICY.md is the
reference for the format.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ACTIONS = ("allow", "deny", "hide", "approve")
DEFAULTS = ("allow", "deny")
RISK_LEVELS = ("low", "medium", "high", "critical")
RISK_CATEGORIES = ("read", "write", "execute", "destructive", "financial")
RISK_KEYS = RISK_LEVELS + RISK_CATEGORIES
SCOPES = ("grant", "server", "global", "session")
OPS = ("eq", "neq", "in", "not_in", "lt", "lte", "gt", "gte", "regex", "contains", "exists")
TYPES = ("string", "number", "integer", "boolean", "object", "array")
NAMED_WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}
WINDOW_NAMES = {seconds: name for name, seconds in NAMED_WINDOWS.items()}
MAX_WINDOW = 2678400  # 31 days: long enough for "monthly", short enough to stay sane
COUNTER_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")

TOP_FIELDS = ("version", "default", "show_denied", "on_deny", "hide", "all_tools", "risk", "tools", "resources",
              "prompts")
# `resources` (keys: URIs or URI globs) and `prompts` (keys: names or globs): resources/read, prompts/get and the
# completion/complete for them. Such reads run or not: no limits, arguments or approvals.
READ_KINDS = ("resources", "prompts")
READ_ACTIONS = ("allow", "deny")
READ_RULE_FIELDS = ("action", "on_deny")
RULE_FIELDS = ("action", "on_deny", "require", "deny_if", "arguments", "limits", "approvers")
MAX_APPROVERS = 3
RULE_ALIASES = ("reason", "rate_limit")
LIMIT_FIELDS = ("counter", "window", "max", "scope", "on_exceed")
ON_EXCEED = ("deny", "approve")
PREDICATE_FIELDS = ("path", "op", "value")
ARGUMENTS_FIELDS = ("properties", "required", "forbidden")
PROPERTY_FIELDS = ("type", "enum", "const", "pattern", "minimum", "maximum", "maxLength")

_NUMBER_OPS = ("lt", "lte", "gt", "gte")
_GLOB_CHARS = frozenset("*?[")


class _Missing:
    """Marker for 'no such field / path' (None is a legitimate JSON value)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


# ---------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    pointer: str  # RFC 6901 pointer, or "line L column C" for JSON syntax errors
    message: str

    def __str__(self) -> str:
        # One problem is one line: control characters from the document (a key with a newline) are escaped.
        return _one_line(f"{self.pointer or '(document)'}: {self.message}")


def _one_line(text: str) -> str:
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class PolicyInvalid(Exception):
    """Raised with every problem found, so the author can fix them all at once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class _Problems:
    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, pointer: str, message: str) -> None:
        self.items.append(Problem(pointer, message))

    def mark(self) -> int:
        return len(self.items)

    def since(self, mark: int) -> bool:
        return len(self.items) > mark


def pointer_join(base: str, *parts: object) -> str:
    """Append reference tokens to a JSON Pointer, escaping '~' and '/' (RFC 6901)."""
    for part in parts:
        base += "/" + str(part).replace("~", "~0").replace("/", "~1")
    return base


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class Limit:
    counter: str
    window: int  # seconds
    max: int
    scope: str
    pointer: str  # canonical pointer, e.g. "/tools/x/limits/0"
    on_exceed: str = "deny"  # "approve": a call past the limit waits for a person instead of being refused


@dataclass(frozen=True)
class Predicate:
    path: str
    op: str
    value_json: str  # canonical text of the value: keeps the dataclass hashable
    pointer: str
    steps: tuple = field(init=False, compare=False, repr=False)
    value: Any = field(init=False, compare=False, repr=False)
    regex: Any = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Pre-compute everything evaluate() needs so a call does no parsing.
        object.__setattr__(self, "steps", _path_steps(self.path))
        object.__setattr__(self, "value", json.loads(self.value_json))
        regex = re.compile(self.value) if self.op == "regex" else None
        object.__setattr__(self, "regex", regex)


@dataclass(frozen=True)
class PropertySchema:
    name: str
    pointer: str  # ".../arguments/properties/<name>"
    type: str | None = None
    enum_json: str | None = None
    const_json: str | None = None
    pattern: str | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    max_length: int | None = None
    enum: Any = field(init=False, compare=False, repr=False)
    const: Any = field(init=False, compare=False, repr=False)
    regex: Any = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        enum = None if self.enum_json is None else json.loads(self.enum_json)
        const = MISSING if self.const_json is None else json.loads(self.const_json)
        regex = None if self.pattern is None else re.compile(self.pattern)
        object.__setattr__(self, "enum", enum)
        object.__setattr__(self, "const", const)
        object.__setattr__(self, "regex", regex)


@dataclass(frozen=True)
class ArgSchema:
    pointer: str
    properties: tuple[PropertySchema, ...] = ()
    required: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    key: str | None  # None for the synthetic "/default" rule
    pointer: str
    action: str = "allow"
    on_deny: str | None = None
    require: tuple[Predicate, ...] = ()
    deny_if: tuple[Predicate, ...] = ()
    arguments: ArgSchema | None = None
    limits: tuple[Limit, ...] = ()
    approvers: int = 1  # different people who must approve a call this rule holds (or a limit escalates)


@dataclass(frozen=True)
class ReadRule:
    """A `resources` or `prompts` rule: whether the URI or prompt name it matches may be read."""

    key: str
    pointer: str
    action: str = "allow"
    on_deny: str | None = None


class _ReadIndex:
    """One kind's read rules: the exact key first, else the most specific glob (longest, then lexicographic)."""

    __slots__ = ("exact", "globs")

    def __init__(self, rules: tuple[ReadRule, ...]) -> None:
        self.exact = {r.key: r for r in rules if not is_glob(r.key)}
        self.globs = tuple((_glob_matcher(r.key), r) for r in sorted((r for r in rules if is_glob(r.key)),
                                                                     key=lambda r: (-len(r.key), r.key)))

    def find(self, name: str) -> ReadRule | None:
        rule = self.exact.get(name)
        if rule is None:
            rule = next((r for match, r in self.globs if match(name)), None)
        return rule


class _Index:
    """Lookup tables built once per policy so evaluate() stays O(rules)."""

    __slots__ = ("exact", "globs", "categories", "levels", "hide_exact", "hide_globs", "default_rule", "reads")

    def __init__(self, policy: Policy) -> None:
        self.exact = {r.key: r for r in policy.tools if not is_glob(r.key)}
        globs = [r for r in policy.tools if is_glob(r.key)]
        # Most specific glob first: longest pattern, then lexicographic for ties.
        globs.sort(key=lambda r: (-len(r.key), r.key))
        self.globs = tuple((_glob_matcher(r.key), r) for r in globs)
        # Separate tables so a category only ever matches a category key (and a level a level key).
        self.categories = {r.key: r for r in policy.risk if r.key in RISK_CATEGORIES}
        self.levels = {r.key: r for r in policy.risk if r.key in RISK_LEVELS}
        self.hide_exact: dict[str, int] = {}
        hide_globs = []
        for i, entry in enumerate(policy.hide):
            if is_glob(entry):
                hide_globs.append((i, _glob_matcher(entry)))
            else:
                self.hide_exact.setdefault(entry, i)
        self.hide_globs = tuple(hide_globs)
        self.default_rule = Rule(None, "/default", policy.default, policy.on_deny)
        self.reads = {"resources": _ReadIndex(policy.resources), "prompts": _ReadIndex(policy.prompts)}


@dataclass(frozen=True)
class Policy:
    default: str
    show_denied: bool = False
    on_deny: str | None = None
    hide: tuple[str, ...] = ()
    all_limits: tuple[Limit, ...] = ()
    risk: tuple[Rule, ...] = ()
    tools: tuple[Rule, ...] = ()
    version: str = "1"
    resources: tuple[ReadRule, ...] = ()
    prompts: tuple[ReadRule, ...] = ()
    index: _Index = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _Index(self))

    def limits(self) -> tuple[Limit, ...]:
        """Every limit in the policy, in document order (all_tools, risk, tools)."""
        rules = self.risk + self.tools
        return self.all_limits + tuple(lim for r in rules for lim in r.limits)

    def counter_names(self) -> tuple[str, ...]:
        return tuple(sorted({lim.counter for lim in self.limits()}))


def is_glob(key: str | None) -> bool:
    """Whether a `tools` key is a glob pattern (else an exact tool name): the one rule, for the engine and the
    builder alike."""
    return key is not None and not _GLOB_CHARS.isdisjoint(key)


def _glob_matcher(pattern: str) -> Callable[[str], Any]:
    # Same semantics as fnmatch.fnmatchcase (case-sensitive), compiled once.
    return re.compile(fnmatch.translate(pattern)).match


def _path_steps(path: str) -> tuple[tuple[str, int | None], ...]:
    # "args.items.0.name" -> (("items", None), ("0", 0), ("name", None))
    segments = path.split(".")[1:]
    return tuple((s, int(s) if s.isascii() and s.isdigit() else None) for s in segments)


# ---------------------------------------------------------------- loading text


class _DupDict(dict):
    """A JSON object that had duplicate keys (found again by _scan_loaded)."""

    duplicates: list[str]


class _NonFinite:
    def __init__(self, text: str) -> None:
        self.text = text


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict:
    result: dict[str, Any] = {}
    duplicates = []
    for key, value in pairs:
        if key in result:
            duplicates.append(key)
        result[key] = value
    if not duplicates:
        return result
    marked = _DupDict(result)
    marked.duplicates = duplicates
    return marked


def _scan_loaded(value: Any, pointer: str, problems: _Problems) -> None:
    """Report duplicate keys and NaN/Infinity with their pointers."""
    if isinstance(value, _NonFinite):
        problems.add(pointer, f"{value.text} is not allowed: numbers must be finite")
    elif isinstance(value, float) and not math.isfinite(value):
        problems.add(pointer, "number is out of range: numbers must be finite")
    elif isinstance(value, dict):
        for key in getattr(value, "duplicates", ()):
            problems.add(pointer_join(pointer, key), f"duplicate key {_quote(key)}")
        for key, item in value.items():
            _scan_loaded(item, pointer_join(pointer, key), problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _scan_loaded(item, pointer_join(pointer, i), problems)


def load_policy_text(text: str) -> dict:
    """Parse policy JSON text strictly; raise PolicyInvalid with positions."""
    if not isinstance(text, str):
        raise PolicyInvalid([Problem("", "policy text must be a string")])
    try:
        doc = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_NonFinite)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise PolicyInvalid([Problem(where, err.msg)]) from None
    except RecursionError:
        raise PolicyInvalid([Problem("", "document is nested too deeply")]) from None
    problems = _Problems()
    try:
        _scan_loaded(doc, "", problems)
    except RecursionError:
        problems.add("", "document is nested too deeply")
    if not isinstance(doc, dict):
        problems.add("", "policy must be a JSON object")
    if problems.items:
        raise PolicyInvalid(problems.items)
    return doc


# ---------------------------------------------------------------- validation helpers


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _json_problem(value: Any) -> str | None:
    """Why `value` is not plain, finite JSON (or None if it is)."""
    if value is None or isinstance(value, (bool, str, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "numbers must be finite (no NaN/Infinity)"
    if isinstance(value, list):
        return next(filter(None, map(_json_problem, value)), None)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "object keys must be strings"
        return next(filter(None, map(_json_problem, value.values())), None)
    return f"a {type(value).__name__} is not a JSON value"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # bool is excluded (true is not 1 here) and NaN/Infinity never count as numbers:
    # NaN compares false to everything, which would silently disable a deny_if.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _unknown_fields(raw: dict, pointer: str, allowed: tuple[str, ...], problems: _Problems) -> None:
    for key in raw:
        if key not in allowed:
            expected = ", ".join(allowed)
            problems.add(pointer_join(pointer, key), f"unknown field {_quote(key)} (expected one of: {expected})")


def _string_list(raw: Any, pointer: str, what: str, problems: _Problems) -> tuple[str, ...]:
    """A list of unique non-empty strings (hide, required, forbidden)."""
    if not isinstance(raw, list):
        problems.add(pointer, f"{what} must be a list of strings")
        return ()
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not _is_text(item):
            problems.add(pointer_join(pointer, i), f"{what} entries must be non-empty strings")
        elif item in seen:
            problems.add(pointer_join(pointer, i), f"duplicate entry {_quote(item)}")
        else:
            seen.add(item)
    return tuple(x for x in raw if isinstance(x, str))


def _check_text(raw: dict, name: str, pointer: str, problems: _Problems) -> str | None:
    value = raw[name]
    if not _is_text(value):
        problems.add(pointer_join(pointer, name), f"{name} must be a non-empty string")
        return None
    return value


# ---------------------------------------------------------------- parse: limits


def _parse_window(value: Any, pointer: str, problems: _Problems) -> int | None:
    if isinstance(value, str) and value in NAMED_WINDOWS:
        return NAMED_WINDOWS[value]
    if _is_int(value) and 1 <= value <= MAX_WINDOW:
        return value
    problems.add(pointer, f'window must be "minute", "hour", "day" or a whole number of seconds from 1 to {MAX_WINDOW}')
    return None


def _parse_max(value: Any, pointer: str, problems: _Problems) -> int | None:
    if _is_int(value) and value >= 1:
        return value
    problems.add(pointer, "max must be an integer of at least 1")
    return None


class _CounterWindows:
    """Remembers each counter's window: one counter name must keep one window."""

    def __init__(self) -> None:
        self.first: dict[str, tuple[int, str]] = {}

    def check(self, limit: Limit, pointer: str, problems: _Problems) -> None:
        window, where = self.first.setdefault(limit.counter, (limit.window, pointer))
        if window != limit.window:
            problems.add(
                pointer,
                f"counter {_quote(limit.counter)} is already used with window {_window_text(window)} "
                f"at {where}; a counter must always use the same window",
            )


def _parse_limit(
    raw: Any, pointer: str, canonical: str, problems: _Problems, windows: _CounterWindows,
    default_counter: str | None = None,
) -> Limit | None:
    if not isinstance(raw, dict):
        problems.add(pointer, "a limit must be an object with counter, window, max and scope")
        return None
    mark = problems.mark()
    _unknown_fields(raw, pointer, LIMIT_FIELDS, problems)
    counter = raw.get("counter", default_counter or MISSING)
    if counter is MISSING:
        problems.add(pointer_join(pointer, "counter"), "required field 'counter' is missing")
    elif not (isinstance(counter, str) and COUNTER_RE.match(counter)):
        problems.add(pointer_join(pointer, "counter"), "counter must be 1-64 characters from A-Z a-z 0-9 _ . : -")
    window = _required(raw, "window", pointer, problems, _parse_window)
    maximum = _required(raw, "max", pointer, problems, _parse_max)
    scope = raw.get("scope", "grant")
    if scope not in SCOPES:
        problems.add(pointer_join(pointer, "scope"), 'scope must be "grant", "server", "global" or "session"')
    on_exceed = raw.get("on_exceed", "deny")
    if on_exceed not in ON_EXCEED:
        problems.add(pointer_join(pointer, "on_exceed"),
                     'on_exceed must be "deny" (refuse the call) or "approve" (hold it for a person)')
    if problems.since(mark):
        return None
    limit = Limit(counter, window, maximum, scope, canonical, on_exceed)
    windows.check(limit, pointer, problems)
    return limit


def _required(raw: dict, name: str, pointer: str, problems: _Problems, parse: Callable) -> Any:
    if name not in raw:
        problems.add(pointer_join(pointer, name), f"required field {_quote(name)} is missing")
        return None
    return parse(raw[name], pointer_join(pointer, name), problems)


def _parse_limit_list(raw: Any, pointer: str, problems: _Problems, windows: _CounterWindows) -> list[Limit]:
    if not isinstance(raw, list):
        problems.add(pointer, "limits must be a list")
        return []
    limits = []
    for i, item in enumerate(raw):
        item_pointer = pointer_join(pointer, i)
        limit = _parse_limit(item, item_pointer, item_pointer, problems, windows)
        if limit is not None:
            limits.append(limit)
    return limits


def alias_counter(key: str) -> str:
    """Counter name for a `rate_limit` alias: '<rule key>_rate', made a valid counter."""
    # Glob and risk keys keep only [A-Za-z0-9_]; exact tool names keep the counter charset.
    pattern = r"[^A-Za-z0-9_]" if is_glob(key) or key in RISK_KEYS else r"[^A-Za-z0-9_.:-]"
    return re.sub(pattern, "_", key)[:59] + "_rate"


def _parse_rule_limits(
    raw: dict, pointer: str, key: str, problems: _Problems, windows: _CounterWindows
) -> list[Limit]:
    limits = []
    if "limits" in raw:
        limits = _parse_limit_list(raw["limits"], pointer_join(pointer, "limits"), problems, windows)
    if "rate_limit" in raw:
        # The alias becomes one more entry of `limits`; its canonical pointer says so.
        index = len(raw["limits"]) if isinstance(raw.get("limits"), list) else 0
        canonical = pointer_join(pointer, "limits", index)
        alias_pointer = pointer_join(pointer, "rate_limit")
        limit = _parse_limit(raw["rate_limit"], alias_pointer, canonical, problems, windows, alias_counter(key))
        if limit is not None:
            limits.append(limit)
    return limits


# ---------------------------------------------------------------- parse: predicates


def _parse_path(raw: dict, pointer: str, problems: _Problems) -> str | None:
    if "path" not in raw:
        problems.add(pointer_join(pointer, "path"), "required field 'path' is missing")
        return None
    path = raw["path"]
    segments = path.split(".") if isinstance(path, str) else []
    if not segments or segments[0] != "args" or "" in segments:
        problems.add(pointer_join(pointer, "path"), 'path must be "args" or "args." followed by dot-separated keys')
        return None
    return path


def _value_problem(op: str, value: Any) -> str | None:
    """Why `value` is unusable for `op` at parse time (None when fine)."""
    if value is MISSING:
        return f"op {op!r} needs a value"
    problem = _json_problem(value)
    if problem:
        return problem
    if op in ("in", "not_in") and not isinstance(value, list):
        return f"op {op!r} needs a list value"
    if op in _NUMBER_OPS and not _is_number(value):
        return f"op {op!r} needs a number value"
    if op == "exists" and not isinstance(value, bool):
        return "op 'exists' needs true or false"
    if op == "regex":
        return _regex_problem(value)
    return None


def _regex_problem(pattern: Any) -> str | None:
    if not isinstance(pattern, str):
        return "a regular expression must be a string"
    try:
        re.compile(pattern)
    except (re.error, ValueError, OverflowError, RecursionError) as err:
        return f"regular expression does not compile: {err}"
    return None


def _parse_predicate(raw: Any, pointer: str, problems: _Problems) -> Predicate | None:
    if not isinstance(raw, dict):
        problems.add(pointer, "a predicate must be an object with path, op and value")
        return None
    mark = problems.mark()
    _unknown_fields(raw, pointer, PREDICATE_FIELDS, problems)
    path = _parse_path(raw, pointer, problems)
    op = raw.get("op", MISSING)
    if op not in OPS:
        problems.add(pointer_join(pointer, "op"), f"op must be one of: {', '.join(OPS)}")
        return None
    value = raw.get("value", True if op == "exists" else MISSING)  # exists defaults to true
    problem = _value_problem(op, value)
    if problem:
        problems.add(pointer_join(pointer, "value"), problem)
    if problems.since(mark):
        return None
    return Predicate(path, op, _dump(value), pointer)


def _parse_predicates(raw: dict, name: str, pointer: str, problems: _Problems) -> tuple[Predicate, ...]:
    if name not in raw:
        return ()
    items, pointer = raw[name], pointer_join(pointer, name)
    if not isinstance(items, list):
        problems.add(pointer, f"{name} must be a list of predicates")
        return ()
    parsed = (_parse_predicate(item, pointer_join(pointer, i), problems) for i, item in enumerate(items))
    return tuple(p for p in parsed if p is not None)


# ---------------------------------------------------------------- parse: arguments schema


def _parse_keyword(name: str, value: Any) -> str | None:
    """Why a property keyword's value is invalid (None when fine)."""
    if name == "type":
        return None if value in TYPES else f"type must be one of: {', '.join(TYPES)}"
    if name == "enum":
        if not isinstance(value, list) or not value:
            return "enum must be a non-empty list"
        return _json_problem(value)
    if name == "const":
        return _json_problem(value)
    if name == "pattern":
        return _regex_problem(value)
    if name in ("minimum", "maximum"):
        return None if _is_number(value) else f"{name} must be a finite number"
    return None if _is_int(value) and value >= 0 else "maxLength must be an integer of at least 0"


def _parse_property(name: str, raw: Any, pointer: str, problems: _Problems) -> PropertySchema | None:
    if not isinstance(raw, dict):
        problems.add(pointer, "a property schema must be an object")
        return None
    mark = problems.mark()
    if name == "":
        problems.add(pointer, "property names must be non-empty")
    _unknown_fields(raw, pointer, PROPERTY_FIELDS, problems)
    for keyword in PROPERTY_FIELDS:
        if keyword in raw and (problem := _parse_keyword(keyword, raw[keyword])):
            problems.add(pointer_join(pointer, keyword), problem)
    low, high = raw.get("minimum"), raw.get("maximum")
    if _is_number(low) and _is_number(high) and low > high:
        problems.add(pointer_join(pointer, "minimum"), "minimum is greater than maximum: nothing could pass")
    if problems.since(mark) or not raw:  # an empty schema checks nothing: drop it
        return None
    return PropertySchema(
        name, pointer, raw.get("type"), _dump_opt(raw, "enum"), _dump_opt(raw, "const"),
        raw.get("pattern"), low, high, raw.get("maxLength"),
    )


def _parse_properties(raw: Any, pointer: str, problems: _Problems) -> tuple[PropertySchema, ...]:
    if not isinstance(raw, dict):
        problems.add(pointer, "properties must be an object")
        return ()
    parsed = (_parse_property(k, v, pointer_join(pointer, k), problems) for k, v in raw.items())
    return tuple(p for p in parsed if p is not None)


def _parse_arguments(raw: Any, pointer: str, problems: _Problems) -> ArgSchema | None:
    if not isinstance(raw, dict):
        problems.add(pointer, "arguments must be an object (properties, required, forbidden)")
        return None
    _unknown_fields(raw, pointer, ARGUMENTS_FIELDS, problems)
    props = _parse_properties(raw.get("properties", {}), pointer_join(pointer, "properties"), problems)
    required = _string_list(raw.get("required", []), pointer_join(pointer, "required"), "required", problems)
    forbidden = _string_list(raw.get("forbidden", []), pointer_join(pointer, "forbidden"), "forbidden", problems)
    for i, name in enumerate(forbidden):
        if name in required:
            problems.add(pointer_join(pointer, "forbidden", i), f"{_quote(name)} is both required and forbidden")
    if not (props or required or forbidden):
        return None  # an empty schema checks nothing; exported without it
    return ArgSchema(pointer, props, required, forbidden)


# ---------------------------------------------------------------- parse: rules and document


def _parse_rule_on_deny(raw: dict, pointer: str, problems: _Problems) -> str | None:
    if "on_deny" in raw and "reason" in raw:
        problems.add(pointer_join(pointer, "reason"), "'reason' is an alias of 'on_deny': give only one of them")
        return None
    name = "on_deny" if "on_deny" in raw else "reason" if "reason" in raw else None
    return _check_text(raw, name, pointer, problems) if name else None


def _parse_rule(raw: Any, pointer: str, key: str, problems: _Problems, windows: _CounterWindows) -> Rule | None:
    if not isinstance(raw, dict):
        problems.add(pointer, "a rule must be an object")
        return None
    mark = problems.mark()
    _unknown_fields(raw, pointer, RULE_FIELDS + RULE_ALIASES, problems)
    action = raw.get("action", "allow")
    if action not in ACTIONS:
        problems.add(pointer_join(pointer, "action"), f"action must be one of: {', '.join(ACTIONS)}")
    on_deny = _parse_rule_on_deny(raw, pointer, problems)
    require = _parse_predicates(raw, "require", pointer, problems)
    deny_if = _parse_predicates(raw, "deny_if", pointer, problems)
    arguments = None
    if "arguments" in raw:
        arguments = _parse_arguments(raw["arguments"], pointer_join(pointer, "arguments"), problems)
    limits = _parse_rule_limits(raw, pointer, key, problems, windows)
    approvers = raw.get("approvers", 1)
    if "approvers" in raw:
        if isinstance(approvers, bool) or not isinstance(approvers, int) or not 1 <= approvers <= MAX_APPROVERS:
            problems.add(pointer_join(pointer, "approvers"),
                         f"approvers must be a whole number from 1 to {MAX_APPROVERS} (different people)")
        elif approvers > 1 and action in ("deny", "hide"):
            problems.add(pointer_join(pointer, "approvers"),
                         "approvers applies to calls held for approval: an approve rule, or a limit with "
                         "on_exceed: approve")
    if problems.since(mark):
        return None
    return Rule(key, pointer, action, on_deny, require, deny_if, arguments, tuple(limits), approvers)


def _parse_rule_map(doc: dict, name: str, problems: _Problems, windows: _CounterWindows) -> tuple[Rule, ...]:
    raw = doc.get(name, {})
    if not isinstance(raw, dict):
        problems.add("/" + name, f"{name} must be an object")
        return ()
    rules = []
    for key, value in raw.items():
        pointer = pointer_join("/" + name, key)
        if name == "risk" and key not in RISK_KEYS:
            problems.add(pointer, f"unknown risk key {_quote(key)} (expected one of: {', '.join(RISK_KEYS)})")
        if name == "tools" and key == "":
            problems.add(pointer, "tool names must be non-empty")
        # Parse the rule even under a bad key, so all of its problems are reported too.
        rule = _parse_rule(value, pointer, str(key), problems, windows)
        if rule is not None:
            rules.append(rule)
    return tuple(rules)


def _parse_all_tools(doc: dict, problems: _Problems, windows: _CounterWindows) -> tuple[Limit, ...]:
    raw = doc.get("all_tools", {})
    if not isinstance(raw, dict):
        problems.add("/all_tools", "all_tools must be an object with only 'limits'")
        return ()
    _unknown_fields(raw, "/all_tools", ("limits",), problems)
    return tuple(_parse_limit_list(raw.get("limits", []), "/all_tools/limits", problems, windows))


def _parse_header(doc: dict, problems: _Problems) -> tuple[str, bool, str | None]:
    if doc.get("version", MISSING) is MISSING:
        problems.add("/version", "required field 'version' is missing")
    elif not (isinstance(doc["version"], str) and doc["version"] == "1"):
        problems.add("/version", 'unsupported version: only "1" is known')
    default = doc.get("default", MISSING)
    if default is MISSING:
        problems.add("/default", "required field 'default' is missing ('allow' or 'deny')")
    elif default not in DEFAULTS:
        problems.add("/default", "default must be 'allow' or 'deny'")
    show_denied = doc.get("show_denied", False)
    if not isinstance(show_denied, bool):
        problems.add("/show_denied", "show_denied must be true or false")
    on_deny = _check_text(doc, "on_deny", "", problems) if "on_deny" in doc else None
    return default, show_denied, on_deny


def _parse_document(doc: Any, problems: _Problems) -> Policy | None:
    if not isinstance(doc, dict):
        problems.add("", "policy must be a JSON object")
        return None
    _unknown_fields(doc, "", TOP_FIELDS, problems)
    default, show_denied, on_deny = _parse_header(doc, problems)
    hide = _string_list(doc.get("hide", []), "/hide", "hide", problems)
    windows = _CounterWindows()
    all_limits = _parse_all_tools(doc, problems, windows)
    risk = _parse_rule_map(doc, "risk", problems, windows)
    tools = _parse_rule_map(doc, "tools", problems, windows)
    resources, prompts = (_parse_read_rules(doc, kind, problems) for kind in READ_KINDS)
    if problems.items:
        return None
    return Policy(default, show_denied, on_deny, hide, all_limits, risk, tools, resources=resources, prompts=prompts)


def _parse_read_rules(doc: dict, kind: str, problems: _Problems) -> tuple[ReadRule, ...]:
    raw = doc.get(kind, {})
    if not isinstance(raw, dict):
        problems.add(f"/{kind}", f"{kind} must be an object of {'URI' if kind == 'resources' else 'name'} -> rule")
        return ()
    rules = []
    for key, value in raw.items():
        pointer = pointer_join(f"/{kind}", key)
        if not key:
            problems.add(pointer, "a key must not be empty")
            continue
        if not isinstance(value, dict):
            problems.add(pointer, 'a rule must be an object, e.g. {} to allow or {"action": "deny"}')
            continue
        _unknown_fields(value, pointer, READ_RULE_FIELDS, problems)
        action = value.get("action", "allow")
        if action not in READ_ACTIONS:
            problems.add(pointer_join(pointer, "action"), f"action must be one of: {', '.join(READ_ACTIONS)} "
                                                          "(reads are allowed or denied, never held)")
            continue
        on_deny = _check_text(value, "on_deny", pointer, problems) if "on_deny" in value else None
        rules.append(ReadRule(key, pointer, action, on_deny))
    return tuple(rules)


def parse_policy(doc: object) -> Policy:
    """Validate a policy document (aliases accepted) and compile it; raise PolicyInvalid."""
    problems = _Problems()
    try:
        policy = _parse_document(doc, problems)
    except RecursionError:
        problems.add("", "document is nested too deeply")
    if problems.items:
        raise PolicyInvalid(problems.items)
    assert policy is not None
    return policy


# ---------------------------------------------------------------- export


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _dump_opt(raw: dict, name: str) -> str | None:
    return _dump(raw[name]) if name in raw else None


def canonical_json(doc: dict) -> str:
    """The exact text a canonical policy is stored and shown as."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _export_limit(limit: Limit) -> dict:
    window: int | str = WINDOW_NAMES.get(limit.window, limit.window)
    exported = {"counter": limit.counter, "window": window, "max": limit.max, "scope": limit.scope}
    if limit.on_exceed != "deny":
        exported["on_exceed"] = limit.on_exceed
    return exported


def _export_predicate(pred: Predicate) -> dict:
    return {"path": pred.path, "op": pred.op, "value": json.loads(pred.value_json)}


def _export_property(prop: PropertySchema) -> dict:
    out: dict[str, Any] = {}
    if prop.type is not None:
        out["type"] = prop.type
    if prop.enum_json is not None:
        out["enum"] = json.loads(prop.enum_json)
    if prop.const_json is not None:
        out["const"] = json.loads(prop.const_json)
    for name, value in (("pattern", prop.pattern), ("minimum", prop.minimum),
                        ("maximum", prop.maximum), ("maxLength", prop.max_length)):
        if value is not None:
            out[name] = value
    return out


def _export_arguments(schema: ArgSchema) -> dict:
    out: dict[str, Any] = {}
    if schema.properties:
        out["properties"] = {p.name: _export_property(p) for p in schema.properties}
    if schema.required:
        out["required"] = list(schema.required)
    if schema.forbidden:
        out["forbidden"] = list(schema.forbidden)
    return out


def _export_rule(rule: Rule) -> dict:
    out: dict[str, Any] = {}
    if rule.action != "allow":
        out["action"] = rule.action
    if rule.on_deny is not None:
        out["on_deny"] = rule.on_deny
    if rule.require:
        out["require"] = [_export_predicate(p) for p in rule.require]
    if rule.deny_if:
        out["deny_if"] = [_export_predicate(p) for p in rule.deny_if]
    if rule.arguments is not None:
        out["arguments"] = _export_arguments(rule.arguments)
    if rule.limits:
        out["limits"] = [_export_limit(lim) for lim in rule.limits]
    if rule.approvers > 1:
        out["approvers"] = rule.approvers
    return out


def export_policy(policy: Policy) -> dict:
    """Canonical JSON-able dict: aliases resolved, defaults and empty containers dropped."""
    doc: dict[str, Any] = {"version": policy.version, "default": policy.default}
    if policy.show_denied:
        doc["show_denied"] = True
    if policy.on_deny is not None:
        doc["on_deny"] = policy.on_deny
    if policy.hide:
        doc["hide"] = list(policy.hide)
    if policy.all_limits:
        doc["all_tools"] = {"limits": [_export_limit(lim) for lim in policy.all_limits]}
    if policy.risk:
        doc["risk"] = {r.key: _export_rule(r) for r in policy.risk}
    if policy.tools:
        doc["tools"] = {r.key: _export_rule(r) for r in policy.tools}
    for kind in READ_KINDS:
        if rules := getattr(policy, kind):
            doc[kind] = {r.key: {k: v for k, v in (("action", r.action), ("on_deny", r.on_deny))
                                 if v is not None and not (k == "action" and v == "allow")} for r in rules}
    return doc


def _quote(name: Any) -> str:
    # Names come from upstream servers and agents: never let one break the message.
    text = str(name)
    if text.isprintable() and "'" not in text:
        return f"'{text}'"
    return _dump(text)


def _window_text(window: int) -> str:
    return WINDOW_NAMES.get(window, f"{window} s")
