"""What the dashboard says about grants' own rules on a server's policy: which grants add rules (shown wherever the
server's policy is edited) and what a grant's rules are (shown wherever they are edited)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.models import Grant, PolicyVersion, Server
from gateway.policy import PolicyInvalid, pointer_join
from gateway.policy.layers import layer_of, rule_count


@dataclass(frozen=True)
class GrantRules:
    grant: Grant
    version: PolicyVersion
    rules: int  # 0 for a complete copy (layer None)

    @property
    def copy(self) -> bool:
        """A complete copy from before grant rules were layered: the server's changes do not reach it."""
        return self.version.layer is None


def on_server(server: Server) -> list[GrantRules]:
    """Every grant with its own active rules for this server, by name."""
    versions = (PolicyVersion.objects.filter(server=server, grant__isnull=False, is_active=True)
                .select_related("grant").order_by("grant__name"))
    return [GrantRules(v.grant, v, rule_count(v.layer)) for v in versions]


def pointers(document: dict, server_document: dict | None) -> set[str]:
    """The JSON Pointers of the rules a grant's draft adds or replaces (its rows say "this grant's rule")."""
    try:
        layer = layer_of(document, server_document)
    except PolicyInvalid:
        return set()
    return ({pointer_join("/tools", key) for key in layer.get("tools", {})}
            | {pointer_join("/risk", key) for key in layer.get("risk", {})})
