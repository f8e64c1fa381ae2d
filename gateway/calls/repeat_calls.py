"""A repeat call on PostgreSQL: decided on the facts last read for the same token, server and tool, and written only
if the database still holds exactly those facts, in the statement that writes it.

Every call's decision reads one row of facts (admission._admit_sql(): the grant found by the token's prefix, its
token digest, whether it is revoked, expired or covers the server, the server's enabled flag, the tool and whether
it is held, the policy versions in force, a draft in shadow). An agent calls the same tool again and again, and
those facts seldom change. This process keeps the last row read per (token prefix, server, tool name), with
PostgreSQL's own text of it. A repeat call is decided on that row in Python exactly as any call is; its counter and
audit row are then written by one statement that reads the facts again and writes only where their text equals
the text decided on, and says whether they were. If anything differs (a grant revoked or expired, a policy
applied, a tool changed, the time past which `last_used_at` is refreshed), nothing is written or counted and the
call is decided again from a fresh read, as a first call is. If the facts held and the counter is full, the call
is refused by its limit (admission._admit_repeat()).

So a call is never decided on facts older than the statement that writes its row: the read is in that statement
instead of in the round trip before it. Nothing here is trusted: a row kept here only says which facts to check
for. The text comparison is exact (a record's text output quotes and escapes every field, NULL apart from ''), and
it runs in the statement's own snapshot, as a separate read would.

A dispatcher's call (calls/dispatched.py) is decided on its action's row as last read as well, kept per (server,
action name, dispatcher); the statement reads that row again beside the facts, and writes only if both texts are
those decided on.

SQLite reads its facts in-process (calls/loop_database.py), with no round trip to save: it does not use this.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from gateway.calls import ratelimit
from gateway.policy import Reservation

_KNOWN_MAX = 4096


class Known(NamedTuple):
    row: tuple  # the facts as read (admission._admit_sql()'s columns)
    text: str  # PostgreSQL's text of the same row: what the writing statement compares


_KNOWN: dict[tuple[str, int, str], Known] = {}
_ACTIONS: dict[tuple, Known] = {}  # a dispatcher's actions (calls/dispatched.py), by their query's parameters


@functools.cache
def read_sql(sql: str) -> str:
    """The row `sql` selects and, as the last column, its text."""
    return f"SELECT facts.*, facts::text FROM ({sql}) facts"  # noqa: S608 - the code's own SQL only


def split(row: tuple) -> tuple[tuple, str]:
    """A row read by read_sql(): (the row as its query selects it, its text)."""
    return row[:-1], row[-1]


def remember(prefix: str, server_id: int, tool_name: str, facts: tuple, text: str) -> None:
    """Keep the facts of an authenticated call of a tool the server has, for the next call by this token to it."""
    _kept(_KNOWN, (prefix, server_id, tool_name), Known(facts, text))


def known(prefix: str, server_id: int, tool_name: str) -> Known | None:
    return _KNOWN.get((prefix, server_id, tool_name))


def remember_action(params: list, row: tuple, text: str) -> None:
    """Keep a dispatcher's action as read by dispatched.ACTION_SQL with `params`."""
    _kept(_ACTIONS, tuple(params), Known(row, text))


def known_action(params: list) -> Known | None:
    return _ACTIONS.get(tuple(params))


def _kept(kept: dict, key: tuple, known_row: Known) -> None:
    if len(kept) >= _KNOWN_MAX:
        kept.clear()
    kept[key] = known_row


def forget_all() -> None:
    _KNOWN.clear()
    _ACTIONS.clear()


class Confirm(NamedTuple):
    """Rows the writing statement reads again: `sql` with `params` must select exactly one row, of text `text`."""

    sql: str
    params: list
    text: str


CONFIRMED = "confirmed"  # the WITH clause that yields a row only if every row read again is as decided on


def statement(confirms: tuple[Confirm, ...], reservations: tuple[Reservation, ...]) \
        -> tuple[str, list, str, tuple[str, ...], list[Reservation]]:
    """The parts of the audit row's INSERT (audit.open_row_checked()): WITH clauses and their parameters, the
    source of the row, and what the statement answers besides the row's id: whether the rows read again are those
    the call was decided on (CONFIRMED) and, with several counters, which was full (0: none). The counters are
    taken and the row written only where every row read again has the text the call was decided on. Also the
    reservations in the order the statement takes them."""
    ctes, source, answers = _sql(tuple(c.sql for c in confirms), min(len(reservations), 2))
    params = [*(p for c in confirms for p in c.params), *(c.text for c in confirms)]
    if not reservations:
        return ctes, params, source, answers, []
    if len(reservations) == 1:
        only = reservations[0]
        return ctes, [*params, only.key, only.window_end, only.max], source, answers, [only]
    ordered, taking = ratelimit.together(reservations)
    return ctes, [*params, *taking], source, answers, ordered


@functools.cache
def _sql(sqls: tuple[str, ...], counters: int) -> tuple[str, str, tuple[str, ...]]:
    names = [f"facts{i}" for i in range(len(sqls))]
    ctes = ", ".join(f"{name} AS ({sql})" for name, sql in zip(names, sqls, strict=True))
    ctes += (f", {CONFIRMED} AS (SELECT 1 FROM {', '.join(names)} WHERE "  # noqa: S608 - the code's own SQL only
             + " AND ".join(f"{name}::text = %s" for name in names) + ")")
    confirmed = f"EXISTS (SELECT 1 FROM {CONFIRMED})"  # noqa: S608 - the code's own SQL only
    if counters == 0:
        return ctes, CONFIRMED, (confirmed,)
    if counters == 1:
        return f"{ctes}, taken AS ({ratelimit.reserve_from_sql(CONFIRMED)})", "taken", (confirmed,)
    taken, source, full_at = ratelimit.taking_all(CONFIRMED)
    return f"{ctes}, {taken}", source, (confirmed, full_at)
