"""A call of a dispatcher ("umbrella") tool, decided as a call of the action it names (docs/POLICY.md,
"Dispatcher tools"): the action read out of the arguments (gateway/policy/dispatch.py), looked up among the
dispatcher's actions in the catalogue, and an action the catalogue does not know queued for a person's review
(or, where the server accepts new actions and the policy's default allows, added and decided at once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction

from gateway import events
from gateway.calls import audit, prepared, repeat_calls
from gateway.models import Tool
from gateway.policy import Policy
from gateway.policy.dispatch import Shape, mismatch, not_an_action_name, parse_pointer, resolve
from gateway.tool_definitions import action_definition, fill_action

# Actions first seen in calls wait for a person; past this many waiting per dispatcher, more are refused
# without being queued (an agent cannot flood the review queue).
MAX_HELD = 100
HELD_UNKNOWN = "first seen in a call: runs only once a person accepts it"
ACTION_SQL = (f"SELECT id, risk_category, risk_level, definition_hash, match, held_reason, gone_at "  # noqa: S608
              f"FROM {Tool._meta.db_table} WHERE server_id = %s AND name = %s AND via_id = %s")


@dataclass(frozen=True)
class Refused:
    refusal: str  # "unknown_tool" (an action the catalogue does not know) or "dispatch" (no usable action named)
    message: str


def _json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


def action_of(base: dict, dispatcher_id: int, raw_shape: object, arguments: object, policy: Policy | None,
              now: datetime) -> tuple | Refused:
    """The action this call of the dispatcher names, as (tool id, risk category, risk level, definition hash,
    the action's own arguments); `base` (the audit row's fields) then describes the call as the action's:
    tool_name the action, via the dispatcher, secret paths under the action's arguments. Or why it is refused:
    never passed on as a call of the dispatcher itself."""
    via = base["tool_name"]
    shape = Shape.from_json(_json(raw_shape))
    resolved = resolve(shape, via, arguments)
    if isinstance(resolved, str):
        return Refused("dispatch", resolved)
    name = resolved.action
    base.update(tool_name=name, via=via)
    params = action_params(base["server"].pk, name, dispatcher_id)
    if prepared.vendor() == "postgresql":  # kept for the next call of this action (calls/repeat_calls.py)
        row = prepared.fetchone(repeat_calls.read_sql(ACTION_SQL), params)
        if row is not None:
            row, text = repeat_calls.split(row)
            repeat_calls.remember_action(params, row, text)
    else:
        row = prepared.fetchone(ACTION_SQL, params)
    if row is None:  # queued for review or added through the ORM; on the loop, before anything is written
        prepared.needs_thread()
        malformed = not_an_action_name(shape, via, name)
        if malformed is not None:
            return Refused("dispatch", malformed)
        run_now = shape.accept_new and policy is not None and policy.default == "allow"
        added = seen_in_call(base["server"].pk, dispatcher_id, via, name, resolved.match, run_now=run_now, now=now)
        if added is None:
            queued = Tool.objects.filter(via_id=dispatcher_id, name=name).exclude(held_reason="").exists()
            return Refused("unknown_tool", (
                f"action {name!r} of {via!r} is not in the gateway's catalogue, so it was refused and queued for a "
                "person's review; it cannot run until a person accepts it" if queued else
                f"action {name!r} of {via!r} is not in the gateway's catalogue, so it was refused; an operator "
                "must add it before it can run"))
        row = (added.pk, added.risk_category, added.risk_level, added.definition_hash, added.match, "", None)
    return _judged(base, shape, resolved, row)


def known_action(base: dict, dispatcher_id: int, raw_shape: object,
                 arguments: object) -> tuple[tuple, repeat_calls.Confirm] | None:
    """A repeat call's action (calls/repeat_calls.py): judged as action_of() judges it, on the action's row as
    last read, with what the writing statement must find again. None when that row is not known here or the call
    would be refused: the call is then decided from a fresh read. Updates `base` as action_of() does."""
    via = base["tool_name"]
    shape = Shape.from_json(_json(raw_shape))
    resolved = resolve(shape, via, arguments)
    if isinstance(resolved, str):
        return None
    params = action_params(base["server"].pk, resolved.action, dispatcher_id)
    known = repeat_calls.known_action(params)
    if known is None:
        return None
    base.update(tool_name=resolved.action, via=via)
    judged = _judged(base, shape, resolved, known.row)
    return None if isinstance(judged, Refused) else (judged, repeat_calls.Confirm(ACTION_SQL, params, known.text))


def action_params(server_id: int, name: str, dispatcher_id: int) -> list:
    return [server_id, audit.stored_text(name), dispatcher_id]  # no action name has a NUL


def _judged(base: dict, shape: Shape, resolved, row: tuple) -> tuple | Refused:
    name, via = resolved.action, base["via"]
    action_id, category, level, digest, match, held, gone = row
    if gone is not None:
        return Refused("unknown_tool", f"action {name!r} of {via!r} is no longer in the gateway's catalogue "
                                       f"({held or 'removed'}), so it was refused")
    if held:
        return Refused("unknown_tool", f"action {name!r} of {via!r} is new to the gateway and waits for a "
                                       "person's review; it cannot run until a person accepts it")
    wrong = mismatch(shape, via, resolved, _json(match))
    if wrong is not None:
        return Refused("dispatch", wrong)
    prefix = parse_pointer(shape.params) if shape.params else ()
    base["secret_paths"] = base["secret_paths"] | frozenset(
        prefix + path for path in audit.secret_paths(action_id, digest, name))
    return action_id, category, level, digest, resolved.params


def seen_in_call(server_id: int, dispatcher_id: int, via: str, name: str, match: dict, *, run_now: bool,
                 now: datetime) -> Tool | None:
    """An action the catalogue does not know was called. run_now: it joins the catalogue (trusted on first use,
    like a new tool in a listing) and is returned. Otherwise it is queued for a person (held) and None is
    returned; None too when the queue is full or the name is taken. Never raises on a race."""
    mine = Tool.objects.filter(via_id=dispatcher_id)
    if not run_now and mine.filter(gone_at__isnull=True).exclude(held_reason="").count() >= MAX_HELD:
        return None
    definition = action_definition(via, {"name": name, "match": {k: v for k, v in match.items() if v is not None}})
    tool = Tool(server_id=server_id, name=name, via_id=dispatcher_id, first_seen_at=now,
                held_reason="" if run_now else HELD_UNKNOWN)
    fill_action(tool, definition, now, position=mine.count())
    if run_now:
        tool.approved_hash, tool.approved_definition = tool.definition_hash, definition
    try:
        with transaction.atomic():
            tool.save()
    except IntegrityError:  # another call queued it first, or the name is a listed tool's
        return None
    if not run_now:
        events.reviews_changed()
    return tool if run_now else None
