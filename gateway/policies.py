"""Policy versions: apply a document (validated, canonical), roll back, read the active one, and which one applies.

Every change creates a new version; the previous one is kept. Applying a document identical to the active
one creates nothing, so scripts can apply the same file repeatedly.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import F, Max, Q

from gateway.models import Grant, PolicyVersion, Server, Tool
from gateway.policy import PolicyInvalid, Problem, export_policy, parse_policy
from gateway.policy.diff import one_line, summarize
from gateway.policy.layers import layer_of, merge


@dataclass(frozen=True)
class ApplyResult:
    version: PolicyVersion
    created: bool  # False when the document equals the active version
    changes: list[str]
    warnings: list[str]


def canonical(document: object) -> dict:
    """Validate (raises policy.PolicyInvalid) and return the canonical form that export_policy prints."""
    return export_policy(parse_policy(document))


def active_version(server: Server, grant: Grant | None = None) -> PolicyVersion | None:
    """The active version owned by exactly this owner: the server's (grant None) or a grant's override."""
    return PolicyVersion.objects.filter(server=server, grant=grant, is_active=True).first()


def applicable(server: Server, grant: Grant | int | None = None) -> PolicyVersion | None:
    """The version that decides a grant's calls on a server: the grant's own active override if it has one, else
    the server's. The rule is written here twice, in the ORM and in SQL (`applicable_sql`, for the hot path's
    single round trip); tests/calls/test_policy_versions.py checks that the two agree."""
    return (PolicyVersion.objects.filter(server=server, is_active=True)
            .filter(Q(grant=grant) | Q(grant__isnull=True) if grant is not None else Q(grant__isnull=True))
            .order_by(F("grant").asc(nulls_last=True)).first())


def applicable_sql(columns: str, grant: str) -> str:
    """`applicable` as a SELECT of `columns` (of alias p) with parameters server id and True; `grant` is the SQL
    expression of the grant's id (a column of the outer query, or %s)."""
    return (f"SELECT {columns} FROM {PolicyVersion._meta.db_table} p "  # noqa: S608 - code's own constants only
            "WHERE p.server_id = %s AND p.is_active = %s "
            f"AND (p.grant_id = {grant} OR p.grant_id IS NULL) ORDER BY p.grant_id IS NULL LIMIT 1")


@transaction.atomic
def apply(server: Server, document: object, *, grant: Grant | None = None, user=None, actor: str = "",
          summary_prefix: str = "", note: str = "") -> ApplyResult:
    """A new active version of the server's policy or of a grant's rules on it.

    A grant's document is stored as its layer (what differs from the server's active policy; PolicyInvalid if a
    layer cannot say it) and the merged document. A new server version re-merges every grant's layer onto it in the
    same transaction, so server changes reach every grant; a layer that no longer fits refuses the whole change."""
    doc = canonical(document)
    # Lock the server row: two concurrent applies must not both take the same version number.
    Server.objects.select_for_update().filter(pk=server.pk).first()
    layer = base = None
    if grant is not None:
        base = active_version(server)
        layer = layer_of(doc, base.document if base else None)
        doc = merge(base.document if base else None, layer)
    active = active_version(server, grant)
    changes = summarize(active.document if active else None, doc)
    warnings = unknown_tool_warnings(server, doc)
    if active is not None and active.document == doc and active.layer == layer:
        return ApplyResult(active, False, [], warnings)
    version = _new_version(server, grant, active, doc, layer, base, user, actor,
                           (summary_prefix + one_line(changes))[:2000], note)
    if grant is None:
        _follow(server, version, user, actor)
    return ApplyResult(version, True, changes, warnings)


def _new_version(server, grant, active, doc, layer, base, user, actor, summary, note: str = "") -> PolicyVersion:
    number = (PolicyVersion.objects.filter(server=server, grant=grant).aggregate(n=Max("number"))["n"] or 0) + 1
    if active is not None:
        active.is_active = False
        active.save(update_fields=["is_active"])
    return PolicyVersion.objects.create(
        server=server, grant=grant, number=number, document=doc, layer=layer, base=base, is_active=True,
        created_by=user, actor=actor or (user.get_username() if user else ""), summary=summary,
        note=note.strip()[:2000])


def _follow(server: Server, version: PolicyVersion, user, actor: str) -> None:
    """Every grant's rules on the server's new version: a new grant version where what decides its calls changed."""
    layered = (PolicyVersion.objects.filter(server=server, grant__isnull=False, is_active=True, layer__isnull=False)
               .select_related("grant"))
    for own in layered:
        try:
            doc = merge(version.document, own.layer)
        except PolicyInvalid as exc:
            raise PolicyInvalid([Problem(p.pointer, f"grant {own.grant.name}'s rules no longer fit: {p.message}; "
                                                    "change its rules first") for p in exc.problems]) from None
        if doc == own.document:
            own.base = version
            own.save(update_fields=["base"])
            continue
        changes = summarize(own.document, doc)
        _new_version(server, own.grant, own, doc, own.layer, version, user, actor,
                     f"follows {server.slug} v{version.number}: {one_line(changes)}"[:2000])


def rollback(server: Server, number: int, *, grant: Grant | None = None, user=None, actor: str = "") -> ApplyResult:
    """Make version `number` active again, as a new version (history only grows)."""
    try:
        old = PolicyVersion.objects.get(server=server, grant=grant, number=number)
    except PolicyVersion.DoesNotExist:
        raise LookupError(f"{server.slug} has no policy version {number}") from None
    document = old.document
    if grant is not None and old.layer is not None:  # a grant's rules as they were, on the server's policy now
        current = active_version(server)
        document = merge(current.document if current else None, old.layer)
    return apply(server, document, grant=grant, user=user, actor=actor, summary_prefix=f"rollback to v{number}: ")


def unknown_tool_warnings(server: Server, doc: dict) -> list[str]:
    """Exact tool names in the policy that the catalogue does not list (a typo allows or denies nothing)."""
    names = set(Tool.objects.filter(server=server, gone_at__isnull=True).values_list("name", flat=True))
    if not names:
        return []
    exact = [key for key in doc.get("tools", {}) if not any(ch in key for ch in "*?[")]
    exact += [entry for entry in doc.get("hide", []) if not any(ch in entry for ch in "*?[")]
    return [f"{name!r} is not a tool of {server.slug} (yet): the rule matches nothing" for name in exact
            if name not in names]
