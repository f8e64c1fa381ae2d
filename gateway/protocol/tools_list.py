"""tools/list: the upstream's listing, synced into the catalogue (new tools classified before use, changed ones
flagged: gateway/catalogue/), then filtered to what this grant's policy lets it see. A listing is filtered per
grant and the policy can change at any time, so a stateless-era agent is told not to share or keep it."""

from __future__ import annotations

import threading

from django.utils import timezone
from mcp.shared.exceptions import MCPError

from gateway import calls
from gateway.calls import dbthreads
from gateway.catalogue.sync import sync_tools
from gateway.grants import authenticate
from gateway.models import Server, Tool
from gateway.policy import visibility
from gateway.policy.dispatch import Shape, narrow
from gateway.protocol import jsonrpc
from gateway.protocol.bridged_calls import needs_own_link
from gateway.protocol.era import Era, declared_capabilities, upstream_params
from gateway.protocol.exchange import Reply, Request, ok_reply
from gateway.protocol.hops import record_upstream_problem
from gateway.protocol.jsonrpc import RpcError
from gateway.protocol.sessions import REGISTRY
from gateway.tool_definitions import definition_hash
from gateway.upstream.connect import UpstreamError
from gateway.upstream.link import UpstreamLink, declarable

# (server id, created) → {tool name: definition hash} last synced into the catalogue.
_KNOWN_HASHES: dict[tuple, dict[str, str]] = {}
# One catalogue sync at a time in this process: listings arrive on several database threads (PostgreSQL), and two
# syncs inserting the same new tool would collide.
_CATALOGUE_SYNC = threading.Lock()

# An upstream may list some tools only to clients that can sample, elicit or list roots (server-everything
# does). A listing made with fewer of these capabilities is no evidence that a missing tool is gone.
EVERY_CAPABILITY = frozenset({"sampling", "elicitation", "roots"})


def lists_everything(capabilities: dict | None) -> bool:
    return capabilities is not None and EVERY_CAPABILITY <= capabilities.keys()


def visible_tools(server: Server, token: str, listed: list, complete: bool, mark_gone: bool) -> list:
    """The listed definitions this grant may see, after syncing any new or changed ones into the catalogue."""
    grant = authenticate(token, server, timezone.now())
    hashes: dict[str, str] = {}  # the first definition of each name, as the catalogue keeps it
    for d in listed:
        if isinstance(d, dict) and isinstance(d.get("name"), str):
            hashes.setdefault(d["name"], definition_hash(d))
    known = _KNOWN_HASHES.setdefault((server.pk, server.created_at), dict(
        Tool.objects.filter(server=server, gone_at__isnull=True, via__isnull=True).values_list("name",
                                                                                           "definition_hash")))
    dropped = mark_gone and bool(known.keys() - hashes.keys())  # a complete listing without a catalogued tool
    if dropped or any(known.get(name) != digest for name, digest in hashes.items()):
        with _CATALOGUE_SYNC:  # New tools get classified before use.
            sync_tools(server, listed, timezone.now(), complete=complete, mark_gone=mark_gone)
            if mark_gone:
                known.clear()  # what a complete listing leaves out is gone (sync_tools marked it)
            known.update(hashes)
    catalogue = {t.name: t for t in Tool.objects.filter(server=server, name__in=list(hashes), gone_at__isnull=True,
                                                        via__isnull=True)}
    _, policy = calls.policy_for(server, grant)
    shown = []
    for definition in listed:
        tool = catalogue.pop(definition.get("name"), None) if isinstance(definition, dict) else None
        # Only the definition the catalogue holds (classified, flagged if changed), once: a second definition
        # under the same name was never classified or reviewed.
        if tool is None or tool.definition_hash != hashes.get(tool.name):
            continue
        if tool.held_reason:  # changed or new, waiting for a person's review: refused if called, so not listed
            continue
        if tool.dispatch:
            narrowed = _dispatcher_as_seen(grant, server, tool, definition, policy)
            if narrowed is not None:
                shown.append(narrowed)
        elif visibility(calls.facts_for(grant, server, tool, {}), policy).allowed:
            shown.append(definition)
    return shown


def _dispatcher_as_seen(grant, server: Server, tool: Tool, definition: dict, policy) -> dict | None:
    """A dispatcher is listed only if the grant may see one of its actions, with the argument naming the action
    narrowed to those actions (docs/POLICY.md, "Dispatcher tools")."""
    visible = []
    for action in Tool.objects.filter(via=tool, gone_at__isnull=True, held_reason="").only(
            "name", "risk_category", "risk_level", "match").order_by("position", "name"):
        if visibility(calls.facts_for(grant, server, action, {}, via=tool.name), policy).allowed:
            visible.append((action.name, action.match))
    return narrow(definition, Shape.from_json(tool.dispatch), visible) if visible else None


filter_tools = dbthreads.hop(visible_tools)


async def tools_list(req: Request, msg: jsonrpc.Message, server: Server, link: UpstreamLink, era: Era) -> Reply:
    declared = declared_capabilities(msg.params, era)
    try:
        if era is Era.STATELESS and needs_own_link(link, msg.params):
            # A session-era upstream offers capability-dependent tools only to a session that declared them.
            link = await REGISTRY.listing_link(server, declarable(declared))
        result = await link.request("tools/list", upstream_params(msg.params), timeout=server.timeout_seconds,
                                    client_capabilities=declared)
    except MCPError as exc:
        raise RpcError(exc.code, exc.message, exc.error.data) from None
    except UpstreamError as exc:
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, str(exc)) from None
    listed = result.get("tools")
    if not isinstance(listed, list):  # an unparseable list is refused, never passed through
        raise RpcError(jsonrpc.UPSTREAM_UNAVAILABLE, f"upstream {server.slug!r} sent a tools/list without tools")
    complete = "cursor" not in msg.params and not result.get("nextCursor")
    everything = lists_everything(declared if era is Era.STATELESS else link.agent_capabilities)
    shown = await filter_tools(server, req.token, listed, complete, complete and everything)
    return ok_reply(msg, {**result, "tools": shown}, era)  # private, never kept: filtered per grant


def _sync_listing(server: Server, listed: list, mark_gone: bool) -> None:
    with _CATALOGUE_SYNC:
        sync_tools(server, listed, timezone.now(), complete=True, mark_gone=mark_gone)
        _KNOWN_HASHES.pop((server.pk, server.created_at), None)


_sync_catalogue = dbthreads.hop(_sync_listing)


async def refresh_catalogue(link: UpstreamLink) -> None:
    """The upstream's tool list changed: list it whole and sync the catalogue (new tools get classified,
    changed ones flagged) before the agent hears of it and lists again."""
    listed, cursor = [], None
    try:
        for _ in range(100):
            page = await link.request("tools/list", {"cursor": cursor} if cursor else {},
                                      timeout=link.server.timeout_seconds)
            listed.extend(page.get("tools") or [])
            cursor = page.get("nextCursor")
            if not cursor:
                break
        await _sync_catalogue(link.server, listed, lists_everything(link.agent_capabilities))
    except Exception as exc:  # the next tools/list syncs anyway; the failure is recorded on the server
        await record_upstream_problem(link.server, f"catalogue refresh after list_changed failed: {exc}")
