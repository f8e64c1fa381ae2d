"""A repeat call on PostgreSQL: decided on the facts last read for the same token, server and tool, and written only
if the database still holds exactly those facts, in the statement that writes it.

Every call's decision reads one row of facts (admission._admit_sql(): the grant found by the token's prefix, its
token digest, whether it is revoked, expired or covers the server, the server's enabled flag, the tool and whether
it is held, the policy versions in force, a draft in shadow). An agent calls the same tool again and again, and
those facts seldom change. This process keeps the last row read per (token prefix, server, tool name), with
PostgreSQL's own text of it. A repeat call is decided on that row in Python exactly as any call is; its counter and
audit row are then written by one statement that reads the facts again and writes only where their text equals
the text decided on. If anything differs (a grant revoked or expired, a policy applied, a tool changed, the time
past which `last_used_at` is refreshed) or the counter is full, nothing is written or counted and the call is
decided again from a fresh read, as a first call is.

So a call is never decided on facts older than the statement that writes its row: the read is in that statement
instead of in the round trip before it. Nothing here is trusted: a row kept here only says which facts to check
for. The text comparison is exact (a record's text output quotes and escapes every field, NULL apart from ''), and
it runs in the statement's own snapshot, as a separate read would.

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


@functools.cache
def read_sql(admit_sql: str) -> str:
    """The facts and, as the last column, their text."""
    return f"SELECT facts.*, facts::text FROM ({admit_sql}) facts"  # noqa: S608 - the code's own SQL only


def remember(prefix: str, server_id: int, tool_name: str, row: tuple) -> tuple:
    """Keep a row read by read_sql() for the next call by this token to this tool; returns the facts without the
    text."""
    facts = row[:-1]
    if len(_KNOWN) >= _KNOWN_MAX:
        _KNOWN.clear()
    _KNOWN[(prefix, server_id, tool_name)] = Known(facts, row[-1])
    return facts


def known(prefix: str, server_id: int, tool_name: str) -> Known | None:
    return _KNOWN.get((prefix, server_id, tool_name))


def forget_all() -> None:
    _KNOWN.clear()


def statement(admit_sql: str, admit_params: list, text: str,
              reservation: Reservation | None) -> tuple[str, list, str, list]:
    """The parts of the audit row's INSERT (audit.open_row_from()): WITH clauses and their parameters, and the
    source of the row and its parameters. The facts are read again; the counter (when the call has one) is taken
    and the row written only from a row of facts whose text is `text`."""
    if reservation is None:
        return _ctes(admit_sql, False), admit_params, _CONFIRMED, [text]
    return (_ctes(admit_sql, True), [*admit_params, reservation.key, reservation.window_end, text, reservation.max],
            "taken", [])


_CONFIRMED = "facts WHERE facts::text = %s"  # the facts read now, if they are those the call was decided on


@functools.cache
def _ctes(admit_sql: str, counted: bool) -> str:
    facts = f"facts AS ({admit_sql})"
    return f"{facts}, taken AS ({ratelimit.reserve_from_sql(_CONFIRMED)})" if counted else facts
