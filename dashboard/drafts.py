"""The builder's working copy of a policy and its tool selection, kept in the person's session.

A draft is always a canonical, valid document (edits are validated before they are stored), starts as a copy of
the active version, and remembers which version it started from so a save can warn about a concurrent change.
Keyed by server and grant: each owner of a policy has its own draft.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import policies
from gateway.models import Grant, PolicyVersion, Server
from gateway.policy import export_policy, parse_policy
from gateway.policy.diff import summarize
from gateway.policy.editing import EMPTY_POLICY


def _key(server: Server, grant: Grant | None, what: str) -> str:
    return f"builder:{server.pk}:{grant.pk if grant else 0}:{what}"


@dataclass
class Draft:
    document: dict
    base: int  # number of the active version the draft started from (0: none)
    active: PolicyVersion | None
    stored: bool  # False while the draft is just the active version

    @property
    def dirty(self) -> bool:
        return self.active is None or self.active.document != self.document

    def changes(self) -> list[str]:
        """What the draft changes against the active version, one line each ([] when it changes nothing)."""
        return summarize(self.active.document if self.active else None, self.document) if self.dirty else []

    @property
    def stale(self) -> bool:
        return self.stored and (self.active.number if self.active else 0) != self.base




def load(session, server: Server, grant: Grant | None) -> Draft:
    active = policies.active_version(server, grant)
    stored = session.get(_key(server, grant, "draft"))
    if stored is not None:
        return Draft(stored["document"], stored["base"], active, True)
    start = policies.applicable(server, grant)  # a grant's new override starts from the server's policy
    # Re-export: PostgreSQL's jsonb does not keep key order, the draft must.
    document = export_policy(parse_policy(start.document)) if start else dict(EMPTY_POLICY)
    return Draft(document, active.number if active else 0, active, False)


def store(session, server: Server, grant: Grant | None, draft: Draft, document: dict) -> Draft:
    session[_key(server, grant, "draft")] = {"document": document, "base": draft.base}
    return Draft(document, draft.base, draft.active, True)


def discard(session, server: Server, grant: Grant | None) -> None:
    session.pop(_key(server, grant, "draft"), None)


def selection(session, server: Server, grant: Grant | None) -> set[str]:
    return set(session.get(_key(server, grant, "selection"), []))


def set_selection(session, server: Server, grant: Grant | None, names: set[str]) -> None:
    session[_key(server, grant, "selection")] = sorted(names)
