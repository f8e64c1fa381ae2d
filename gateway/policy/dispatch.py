"""Dispatcher ("umbrella") tools: one listed tool that runs many actions, such as TrueNAS's
`truenas(category, action, params)`. Pure functions, no database: the shape a person declares (which argument
names the action, which others must agree with it, where the action's own arguments are), detecting that
shape in a definition, reading the action out of a call, and narrowing the dispatcher's listed schema to the
actions a grant may call. The catalogue side (actions as virtual tools) is gateway/catalogue/actions.py.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

# An action name the gateway will queue for review: what real dispatchers use. Anything else (spaces, control or
# look-alike characters, 129+ characters) is refused without being queued.
ACTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}")
# The argument names a dispatcher's action usually goes by, and its own arguments'.
_ACTION_KEYS = ("action", "operation", "op", "method", "command", "tool")
_PARAMS_KEYS = ("params", "parameters", "arguments", "args", "input")
_SELECTOR_KEYS = ("category", "group", "namespace", "service", "resource")
MISSING = object()


class ShapeInvalid(ValueError):
    """A declared shape that cannot be used; the message says what to fix."""


def parse_pointer(pointer: object) -> tuple[str, ...]:
    """A JSON pointer to an argument (RFC 6901, object keys only): "/params" → ("params",)."""
    if not isinstance(pointer, str) or not pointer.startswith("/") or pointer == "/":
        raise ShapeInvalid(f"{pointer!r} is not a JSON pointer to an argument (write it like /action)")
    steps = tuple(step.replace("~1", "/").replace("~0", "~") for step in pointer[1:].split("/"))
    if any(not step for step in steps):
        raise ShapeInvalid(f"{pointer!r} has an empty step")
    return steps


def _lookup(arguments: object, steps: tuple[str, ...]) -> Any:
    current = arguments
    for step in steps:
        if not isinstance(current, dict) or step not in current:
            return MISSING
        current = current[step]
    return current


@dataclass(frozen=True)
class Shape:
    """How a dispatcher picks its action: `action` names it; every `match` argument must equal the value the
    catalogue holds for that action (TrueNAS: the category); `params` holds the action's own arguments ("" =
    the call's other top-level arguments)."""

    action: str
    match: tuple[str, ...] = ()
    params: str = ""
    accept_new: bool = False  # an unknown action may run when the policy's default is allow

    def __post_init__(self) -> None:
        pointers = [self.action, *self.match] + ([self.params] if self.params else [])
        steps = [parse_pointer(p) for p in pointers]
        if len(set(pointers)) != len(pointers):
            raise ShapeInvalid("the action, match and params arguments must all be different")
        if self.params:
            inside = [p for p, s in zip(pointers[:-1], steps[:-1], strict=True) if s[:len(steps[-1])] == steps[-1]]
            if inside:
                raise ShapeInvalid(f"{inside[0]} is inside the action's own arguments ({self.params}): an action "
                                   "named there could not be told from an argument of the action")

    @classmethod
    def from_json(cls, raw: object) -> Shape:
        if not isinstance(raw, dict) or not isinstance(raw.get("action"), str):
            raise ShapeInvalid("a dispatcher needs at least the argument that names the action (like /action)")
        match = raw.get("match") or []
        if not isinstance(match, list) or not all(isinstance(m, str) for m in match):
            raise ShapeInvalid("match must be a list of JSON pointers")
        params = raw.get("params") or ""
        if not isinstance(params, str):
            raise ShapeInvalid("params must be a JSON pointer or empty")
        return cls(raw["action"], tuple(match), params, raw.get("accept_new") is True)

    def to_json(self) -> dict:
        return {"action": self.action, "match": list(self.match), "params": self.params,
                "accept_new": self.accept_new}

    def describe(self) -> str:
        parts = [f"the action is named by {self.action}"]
        if self.match:
            parts.append(f"{', '.join(self.match)} must agree with it")
        parts.append(f"its own arguments are {self.params}" if self.params else
                     "its own arguments are the call's other arguments")
        return "; ".join(parts)


def detect(definition: object) -> Shape | None:
    """The dispatcher shape a tool's definition suggests (a person confirms it), or None: a string argument
    named like an action, and an object argument named like parameters (TrueNAS: action, category, params)."""
    if not isinstance(definition, dict):
        return None
    schema = definition.get("inputSchema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return None

    def typed(key: str, kind: str) -> bool:
        prop = props.get(key)
        return isinstance(prop, dict) and (prop.get("type") == kind or (kind == "string" and "enum" in prop))

    action = next((k for k in _ACTION_KEYS if typed(k, "string")), None)
    params = next((k for k in _PARAMS_KEYS if typed(k, "object")), None)
    if action is None or params is None:
        return None
    match = tuple(f"/{k}" for k in _SELECTOR_KEYS if typed(k, "string"))
    return Shape(f"/{action}", match, f"/{params}")


@dataclass(frozen=True)
class Resolved:
    """The action a call asks for: its name, the values of the match arguments, and its own arguments."""

    action: str
    match: dict
    params: dict


def resolve(shape: Shape, via: str, arguments: object) -> Resolved | str:
    """The action this call of dispatcher `via` asks for, or the refusal text (a missing, non-string or
    malformed action name is never passed on as a call of the dispatcher itself)."""
    if not isinstance(arguments, dict):
        return f"{via} needs its arguments as a JSON object"
    name = _lookup(arguments, parse_pointer(shape.action))
    where = f"argument {shape.action} of {via!r}"
    if name is MISSING or name == "":
        return f"{where} is required: it names the action to run (one action per call)"
    if not isinstance(name, str):
        kind = {list: "an array", dict: "an object", bool: "a boolean"}.get(type(name), "not a string")
        return f"{where} must be one action name as a string, not {kind}"
    match = {}
    for pointer in shape.match:
        value = _lookup(arguments, parse_pointer(pointer))
        if value is not MISSING and not isinstance(value, str):
            return f"argument {pointer} of {via!r} must be a string"
        match[pointer] = None if value is MISSING else value
    if shape.params:
        params = _lookup(arguments, parse_pointer(shape.params))
        if params is MISSING or params is None:
            params = {}
        if not isinstance(params, dict):
            return f"argument {shape.params} of {via!r} must be an object: the arguments of action {name!r}"
    else:
        used = {parse_pointer(p)[0] for p in (shape.action, *shape.match)}
        params = {k: v for k, v in arguments.items() if k not in used}
    return Resolved(name, match, params)


def not_an_action_name(shape: Shape, via: str, name: str) -> str | None:
    """For a name the catalogue does not hold: the refusal text when it is not even shaped like an action name
    (then it is not queued for review either)."""
    if ACTION_NAME.fullmatch(name):
        return None
    return (f"argument {shape.action} of {via!r} ({name[:80]!r}) is not an action name: names are letters, digits "
            "and _ . : / - (check for spaces or look-alike characters)")


def mismatch(shape: Shape, via: str, resolved: Resolved, recorded: dict) -> str | None:
    """The refusal text when a match argument disagrees with the catalogue's value for the action."""
    for pointer in shape.match:
        expected = recorded.get(pointer) if isinstance(recorded, dict) else None
        if expected is not None and resolved.match.get(pointer) != expected:
            got = resolved.match.get(pointer)
            said = "is missing" if got is None else f"is {got!r}"
            return (f"action {resolved.action!r} of {via!r} needs argument {pointer} = {expected!r} "
                    f"(the call's {said}); call it again with {pointer} = {expected!r}")
    return None


def listed_actions(shape: Shape, definition: object) -> list[str]:
    """The action names a dispatcher's own schema lists (an `enum` on the action argument), in order."""
    schema = definition.get("inputSchema") if isinstance(definition, dict) else None
    prop = _property(schema, parse_pointer(shape.action))
    enum = prop.get("enum") if isinstance(prop, dict) else None
    if not isinstance(enum, list):
        return []
    return list(dict.fromkeys(v for v in enum if isinstance(v, str) and ACTION_NAME.fullmatch(v)))


def _property(schema: object, steps: tuple[str, ...]) -> dict | None:
    for step in steps:
        props = schema.get("properties") if isinstance(schema, dict) else None
        schema = props.get(step) if isinstance(props, dict) else None
    return schema if isinstance(schema, dict) else None


def narrow(definition: dict, shape: Shape, visible: list[tuple[str, dict]]) -> dict:
    """The dispatcher's definition as a grant sees it: the action argument an `enum` of the actions it may call
    (`visible`: (name, match values) in catalogue order), the match arguments narrowed to their values, and
    per-action alternatives (`oneOf`/`anyOf` of `const`s) of other actions removed."""
    names = [name for name, _ in visible]
    out = copy.deepcopy(definition)
    schema = out.get("inputSchema")
    prop = _property(schema, parse_pointer(shape.action))
    if prop is not None:
        _narrow_property(prop, names)
    for pointer in shape.match:
        values = [m.get(pointer) for _, m in visible]
        prop = _property(schema, parse_pointer(pointer))
        if prop is not None and values and all(isinstance(v, str) for v in values):
            _narrow_property(prop, list(dict.fromkeys(values)))
    return out


def _narrow_property(prop: dict, allowed: list[str]) -> None:
    prop["enum"] = list(allowed)
    keep = set(allowed)
    for key in ("oneOf", "anyOf"):
        if isinstance(prop.get(key), list):
            prop[key] = [alt for alt in prop[key] if not isinstance(alt, dict) or alt.get("const") in keep]
    for key in ("default", "const"):
        if key in prop and prop[key] not in keep:
            del prop[key]
    if isinstance(prop.get("examples"), list):
        prop["examples"] = [e for e in prop["examples"] if e in keep]
