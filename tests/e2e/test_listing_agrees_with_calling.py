"""Listing and calling agree (issue 4): a property test at the gateway's domain level, plus one end-to-end run.

Hypothesis generates tool sets (names, risk categories and levels, tools the upstream adds since the last
refresh), server policies and grants with and without their own policy override, then computes the listing with
the very function `tools/list` uses (`tools_list.visible_tools`) and the outcome of calls with the very function
`tools/call` uses (`calls.admit`). It checks that every tool absent from the list is refused on call (and
consumes no counter), and that every listed tool is refused only for a limit, its arguments, a pending approval,
or (with `show_denied`) a denial whose reason it names.

The end-to-end test runs one fixed policy through a real gateway (daphne, the TrueNAS simulator, HTTP) and
checks that what the endpoint lists and answers is exactly what those in-process functions say.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import sys
from datetime import UTC, datetime

import httpx2
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import transaction
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway import calls, policies
from gateway.calls import approvals
from gateway.grants import create_grant
from gateway.models import Call, Counter, Server, Tool
from gateway.policy import RISK_CATEGORIES, RISK_KEYS, RISK_LEVELS, SCOPES, PolicyInvalid, parse_policy
from gateway.policy.layers import merge
from gateway.protocol.tools_list import visible_tools
from gateway.tool_definitions import definition_hash
from tests.conftest import start_gateway, stop

# --------------------------------------------------------------------------- what is generated

TOOL_NAMES = ["pool_list", "pool_get", "pool_delete", "Pool_list", "dataset_create", "dataset_delete",
              "cloud_backup_run", "system_info", "svc:start", "a?b", "axb"]
GLOBS = ["pool_*", "*_delete", "*", "Pool_*", "dataset_?reate", "[pd]*", "*list", "a?b", "[!a]*"]
REASONS = ["ask an operator", "destructive tools are off for agents", "read-only agent; see the runbook"]
# Tool sets where the upstream no longer lists some catalogued tools. Off until tools_list.visible_tools marks tools
# missing from a complete listing as gone: test_it_refuses_a_tool_the_upstream_no_longer_lists shows the bug.
UPSTREAM_DROPS_TOOLS = True
COUNTER_WINDOWS = {"calls_day": "day", "calls_hour": "hour", "burst": 900}  # one window per counter name

ARGUMENT_SCHEMAS = [
    {"properties": {"path": {"type": "string", "pattern": "^/mnt/tank/", "maxLength": 20}}},
    {"properties": {"n": {"type": "integer", "minimum": 0, "maximum": 5}}, "required": ["n"]},
    {"properties": {"mode": {"enum": ["a", "b"]}}, "forbidden": ["force"]},
]
PREDICATES = [
    {"path": "args.n", "op": "lt", "value": 3},  # an error when n is a string
    {"path": "args.path", "op": "regex", "value": "\\.\\."},
    {"path": "args.mode", "op": "eq", "value": "b"},
    {"path": "args.force", "op": "exists", "value": True},
    {"path": "args.tags", "op": "contains", "value": "x"},
]
ARGUMENTS = st.fixed_dictionaries({}, optional={
    "path": st.sampled_from(["/mnt/tank/a", "/mnt/tank/../etc", "/etc/passwd", "/mnt/tank/" + "x" * 30, 7]),
    "n": st.sampled_from([0, 2, 4, 9, -1, "2"]),
    "mode": st.sampled_from(["a", "b", "c"]),
    "force": st.booleans(),
    "tags": st.sampled_from([["x"], ["y"], "xy", 3]),
})


def limits():
    return st.lists(st.builds(
        lambda counter, maximum, scope: {"counter": counter, "window": COUNTER_WINDOWS[counter], "max": maximum,
                                         "scope": scope},
        st.sampled_from(sorted(COUNTER_WINDOWS)), st.integers(1, 3), st.sampled_from(SCOPES)), max_size=2)


@st.composite
def rules(draw) -> dict:
    rule: dict = {}
    action = draw(st.sampled_from([None, "allow", "allow", "deny", "hide", "approve", "approve"]))
    if action is not None:
        rule["action"] = action
    if draw(st.booleans()):
        rule["on_deny"] = draw(st.sampled_from(REASONS))
    if draw(st.integers(0, 2)) == 0:
        rule["arguments"] = draw(st.sampled_from(ARGUMENT_SCHEMAS))
    for name in ("require", "deny_if"):
        if draw(st.integers(0, 2)) == 0:
            rule[name] = draw(st.lists(st.sampled_from(PREDICATES), min_size=1, max_size=2, unique_by=json.dumps))
    if found := draw(limits()):
        rule["limits"] = found
    return rule


@st.composite
def documents(draw) -> dict:
    doc: dict = {"version": "1", "default": draw(st.sampled_from(["allow", "deny"]))}
    if draw(st.booleans()):
        doc["show_denied"] = True
    if draw(st.booleans()):
        doc["on_deny"] = "this policy allows only what it names"
    if hide := draw(st.lists(st.sampled_from(TOOL_NAMES + GLOBS), max_size=2, unique=True)):
        doc["hide"] = hide
    if found := draw(limits()):
        doc["all_tools"] = {"limits": found}
    if keys := draw(st.lists(st.sampled_from(RISK_KEYS), max_size=3, unique=True)):
        doc["risk"] = {key: draw(rules()) for key in keys}
    if keys := draw(st.lists(st.sampled_from(TOOL_NAMES + GLOBS), max_size=4, unique=True)):
        doc["tools"] = {key: draw(rules()) for key in keys}
    parse_policy(doc)  # every generated document is valid by construction
    return doc


@st.composite
def scenarios(draw) -> dict:
    names = draw(st.lists(st.sampled_from(TOOL_NAMES), min_size=1, max_size=6, unique=True))
    known = draw(st.integers(1, len(names)))  # the first `known` are in the catalogue; the rest are new upstream
    # The first `dropped` catalogued tools are no longer listed by the upstream.
    dropped = draw(st.integers(0, known)) if UPSTREAM_DROPS_TOOLS else 0
    risks = [(draw(st.sampled_from([*RISK_CATEGORIES, ""])), draw(st.sampled_from([*RISK_LEVELS, ""])))
             for _ in names[:known]]
    server_policy = draw(st.one_of(st.none(), documents(), documents()))  # mostly a policy, sometimes none
    grants = draw(st.lists(st.one_of(st.none(), documents()), min_size=1, max_size=3))  # None: no override
    # Calls: every (grant, tool) once with the first arguments, then a drawn sequence (repeats reach limits).
    argument_sets = draw(st.lists(ARGUMENTS, min_size=1, max_size=3))
    ghosts = [n for n in ("POOL_LIST", "pool_lіst", "pool_list ") if draw(st.booleans())]  # case, look-alike
    extra = draw(st.lists(st.tuples(st.integers(0, len(grants) - 1), st.sampled_from(names + ghosts),
                                    st.integers(0, len(argument_sets) - 1)), max_size=12))
    return {"names": names, "known": known, "dropped": dropped, "risks": risks, "server_policy": server_policy,
            "grants": grants, "argument_sets": argument_sets, "ghosts": ghosts, "extra": extra,
            "approve": draw(st.booleans()),  # a person approves held calls (then the same call runs)
            # The tools are the actions of one dispatcher tool `hub(action, params)` instead (docs/POLICY.md,
            # "Dispatcher tools"): dropped ones are gone from its catalogue, new ones unknown to it.
            "dispatcher": draw(st.booleans())}


# --------------------------------------------------------------------------- the property

_slugs = itertools.count()


def definition(name: str) -> dict:
    return {"name": name, "description": f"The {name} tool.", "inputSchema": {"type": "object"}}


def quoted(name: str) -> str:
    return f"'{name}'"  # every generated name is printable and has no quote (policy._quote)


def resolve(doc: dict, pointer: str):
    node = doc
    for part in pointer.split("/")[1:]:
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def expected_denial(doc: dict, tool: str, rule: str) -> str:
    """The reason a policy denial must name: the rule's (or the policy's) on_deny, else the rule itself."""
    if rule == "/default":
        assert doc["default"] == "deny"
        return doc.get("on_deny") or f"tool {quoted(tool)} is not allowed by this policy (default: deny)"
    found = resolve(doc, rule)
    assert found.get("action") == "deny", (rule, found)
    return found.get("on_deny") or f"tool {quoted(tool)} is denied by rule {rule}"


def counters_now() -> dict[str, int]:
    return dict(Counter.objects.values_list("key", "n"))


HUB = {"name": "hub", "description": "Runs any action.",
       "inputSchema": {"type": "object", "properties": {"action": {"type": "string"}, "params": {"type": "object"}}}}
HUB_SHAPE = {"action": "/action", "match": [], "params": "/params", "accept_new": False}
SESSION = "property-session"


def admit(token: str, server: Server, name: str, arguments: dict, via: str | None):
    """A call of tool `name`, or (via the dispatcher) of the dispatcher with action `name`."""
    if via is None:
        return calls.admit(token, server, name, arguments, datetime.now(UTC), session=SESSION)
    return calls.admit(token, server, via, {"action": name, "params": arguments}, datetime.now(UTC), session=SESSION)


def check_call(*, listed: bool, doc: dict | None, token: str, server: Server, name: str, arguments: dict,
               approver=None, via: str | None = None) -> None:
    before = counters_now()
    admission = admit(token, server, name, arguments, via)
    row = Call.objects.get(pk=admission.call_id)
    where = (name, arguments, row.decision, row.refusal, row.rule, admission.message)
    held = getattr(admission, "held", None)
    event(f"{'listed' if listed else 'absent'}: "
          f"{'held for approval' if held else row.refusal or ('forwarded ' + row.decision)}")
    if held is not None:  # a pending approval: the call waits for a person, nothing is counted yet
        assert listed, where
        assert (row.decision, row.refusal, row.outcome) == ("approve", "", "pending"), where
        assert counters_now() == before, where
        if approver is not None:  # a person approves: the same call again runs (or meets a limit)
            approvals.decide(held, user=approver, approve=True, now=datetime.now(UTC))
            again = admit(token, server, name, arguments, via)
            again_row = Call.objects.get(pk=again.call_id)
            event(f"listed: approved, then {'forwarded' if again.forward else again_row.refusal}")
            assert again.forward or again_row.refusal == "limit", (where, again_row.refusal, again.message)
            assert again_row.decision == "approve" or again_row.refusal == "limit", where
        return
    if admission.forward:
        assert listed, where  # a tool absent from the list must never be forwarded
        assert (row.decision, row.refusal, row.outcome) == ("allow", "", "pending"), where
        return
    assert row.outcome == "refused" and row.reason == admission.message, where
    if not listed:
        # Refused before arguments and limits: hidden, denied, no policy, unknown tool (or, through a dispatcher,
        # no usable action named); nothing counted.
        assert row.decision in ("deny", "hide") and row.refusal in ("hidden", "policy", "unknown_tool", "dispatch"), \
            where
        assert row.refusal != "dispatch" or via is not None, where
        # ... and a denied tool is absent only without show_denied (no policy at all denies too).
        assert row.refusal != "policy" or doc is None or not doc.get("show_denied"), where
        assert counters_now() == before, where
        return
    if row.refusal == "limit":
        assert admission.message.startswith("rate limit ") and " retry in " in admission.message, where
    elif row.refusal == "arguments":
        assert re.search(r"/(arguments/.+|require/\d+|deny_if/\d+)$", row.rule), where
        if admission.message.startswith("denied by policy: "):  # a deny_if that holds names itself or its reason
            rule = resolve(doc, re.sub(r"/deny_if/\d+$", "", row.rule))
            reason = admission.message.removeprefix("denied by policy: ")
            assert "/deny_if/" in row.rule and reason == (rule.get("on_deny") or reason), where
            assert rule.get("on_deny") or reason.startswith("args."), where
        else:
            assert admission.message.startswith(("argument '", "argument check failed: args.")), where
    elif row.refusal == "error":  # an argument of the wrong type for a predicate: refused because of its arguments
        assert re.search(r"/(require|deny_if)/\d+$", row.rule), where
        assert admission.message.startswith("policy error: args."), where
    elif row.refusal == "policy":
        assert doc is not None and doc.get("show_denied") is True, where  # listed although denied: show_denied
        assert admission.message == f"denied by policy: {expected_denial(doc, name, row.rule)}", where
    else:
        raise AssertionError(f"a listed tool was refused for {row.refusal!r}: {where}")
    assert row.refusal == "limit" or counters_now() == before, where  # only a limit refusal may leave counts


def run_scenario(s: dict) -> None:
    server = Server.objects.create(slug=f"prop-{next(_slugs)}", name="Property", transport=Server.Transport.STDIO,
                                   command=["true"])
    hub = via = None
    event("through a dispatcher" if s["dispatcher"] else "flat tools")
    if s["dispatcher"]:
        hub = Tool.objects.create(server=server, name="hub", definition=HUB, input_schema=HUB["inputSchema"],
                                  definition_hash=definition_hash(HUB), approved_hash=definition_hash(HUB),
                                  risk_category="execute", risk_level="critical", dispatch=HUB_SHAPE)
        via = "hub"
    for position, (name, (category, level)) in enumerate(zip(s["names"][:s["known"]], s["risks"], strict=True)):
        d = definition(name)
        gone = datetime.now(UTC) if hub is not None and position < s["dropped"] else None
        Tool.objects.create(server=server, name=name, definition=d, input_schema=d["inputSchema"],
                            description=d["description"], definition_hash=definition_hash(d),
                            approved_hash=definition_hash(d), position=position, risk_category=category,
                            risk_level=level, risk_overridden=True, via=hub, gone_at=gone)
    # The upstream's listing now: the catalogue minus the dropped tools, plus the new ones (a dispatcher's
    # listing is the one tool: its dropped actions are gone from the catalogue, its new ones unknown).
    listing = [HUB] if hub is not None else [definition(name) for name in s["names"][s["dropped"]:]]
    if s["server_policy"] is not None:
        policies.apply(server, s["server_policy"], actor="property")
    grants = []
    for i, own in enumerate(s["grants"]):
        new = create_grant(f"{server.slug}-g{i}", [server], None)
        if own is not None:  # the grant's own rules: a layer on the server's policy (docs/POLICY.md, Grant rules)
            base = policies.canonical(s["server_policy"]) if s["server_policy"] is not None else None
            try:
                own = merge(base, {k: v for k, v in policies.canonical(own).items() if k != "version"})
            except PolicyInvalid:
                own = None  # rules that do not fit the server's (a counter with another window): no own rules
            else:
                policies.apply(server, own, grant=new.grant, actor="property")
        effective = own if own is not None else s["server_policy"]
        listed = visible_tools(server, new.token, listing, complete=True, mark_gone=True)
        shown = {d["name"] for d in listed}
        assert shown <= {d["name"] for d in listing}
        if hub is not None:  # the hub is listed with its action narrowed to what the grant may call, or not at all
            assert [d["name"] for d in listed] in ([], ["hub"])
            shown = set(listed[0]["inputSchema"]["properties"]["action"]["enum"]) if listed else set()
            assert shown and shown <= set(s["names"][s["dropped"]:s["known"]]) or not listed
        grants.append((new.token, effective, shown))
    # The listing brought the catalogue up to date before any call: new tools classified, dropped ones gone.
    live = set(Tool.objects.filter(server=server, gone_at__isnull=True).values_list("name", flat=True))
    assert live == ({d["name"] for d in listing} if hub is None else {"hub", *s["names"][s["dropped"]:s["known"]]})
    first = s["argument_sets"][0]
    sequence = [(g, name, first) for g in range(len(grants)) for name in s["names"] + s["ghosts"]]
    sequence += [(g, name, s["argument_sets"][a]) for g, name, a in s["extra"]]
    approver = User.objects.create_user(f"{server.slug}-person") if s["approve"] else None
    for g, name, arguments in sequence:
        token, effective, shown = grants[g]
        check_call(listed=name in shown, doc=effective, token=token, server=server, name=name, arguments=arguments,
                   approver=approver, via=via)


@pytest.mark.django_db
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenario=scenarios())
def test_it_lists_exactly_the_tools_it_would_call_and_refuses_listed_ones_only_for_stated_reasons(scenario):
    with transaction.atomic():  # each example leaves no rows behind
        run_scenario(scenario)
        transaction.set_rollback(True)


# --------------------------------------------------------------------------- a tool the upstream dropped

@pytest.mark.django_db
def test_it_refuses_a_tool_the_upstream_no_longer_lists():
    """The upstream dropped `pool_delete` since the last refresh; the others are unchanged. The listing shows
    only what the upstream lists, so a call to the dropped tool must be refused, not forwarded."""
    server = Server.objects.create(slug="dropped", name="Dropped", transport=Server.Transport.STDIO,
                                   command=["true"])
    for position, name in enumerate(["pool_list", "pool_delete"]):
        d = definition(name)
        Tool.objects.create(server=server, name=name, definition=d, definition_hash=definition_hash(d),
                            approved_hash=definition_hash(d), position=position, risk_category="read",
                            risk_level="low")
    policies.apply(server, {"version": "1", "default": "allow"}, actor="test")
    token = create_grant("dropped-agent", [server], None).token
    shown = [d["name"] for d in visible_tools(server, token, [definition("pool_list")], complete=True, mark_gone=True)]
    assert shown == ["pool_list"]
    admission = calls.admit(token, server, "pool_delete", {}, datetime.now(UTC))
    assert not admission.forward, "a tool absent from the complete listing was forwarded to the upstream"
    assert admission.message.startswith("unknown tool")


# --------------------------------------------------------------------------- end to end, one fixed policy

E2E_POLICY = {
    "version": "1", "default": "deny",
    "hide": ["pool_export", "*_shutdown"],
    "risk": {"read": {}, "destructive": {"action": "deny", "on_deny": "destructive tools are off for agents"}},
    "tools": {
        "dataset_create": {"arguments": {"properties": {"name": {"type": "string", "pattern": "^tank/agents/"}}}},
        "pool_scrub": {"action": "approve"},
        "service_*": {"action": "hide"},
        "system_info": {"limits": [{"counter": "info", "window": "day", "max": 1, "scope": "grant"}]},
    },
}
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "agree", "version": "1"}}


@pytest.fixture(scope="module")
def quick_gateway(django_db_setup, django_db_blocker, tmp_path_factory):
    """A gateway that holds a call for approval 1 s (the least) instead of 50, so a held call answers quickly."""
    gw = start_gateway(tmp_path_factory.mktemp("gateway"), {"PORTCULLIS_APPROVAL_HOLD_S": "1"})
    yield gw
    stop(gw.proc)


class Agent:
    def __init__(self, http: httpx2.Client, url: str, token: str) -> None:
        self.http, self.url, self.ids = http, url, itertools.count(1)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                        "Accept": "application/json"}
        reply = self.post("initialize", INIT)
        self.headers.update({"Mcp-Session-Id": reply.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"})

    def post(self, method: str, params: dict) -> httpx2.Response:
        body = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}
        response = self.http.post(self.url, content=json.dumps(body).encode(), headers=self.headers)
        assert response.status_code == 200, response.text
        return response

    def list_tools(self) -> list[dict]:
        return self.post("tools/list", {}).json()["result"]["tools"]

    def call(self, name: str, arguments: dict) -> dict:
        return self.post("tools/call", {"name": name, "arguments": arguments}).json()["result"]


def without_wait(text: str) -> str:
    return re.sub(r"retry in \d+ s", "retry in N s", text)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_endpoint_lists_and_answers_exactly_what_the_in_process_functions_say(quick_gateway):
    server = Server.objects.create(slug="truenas", name="TrueNAS", transport=Server.Transport.STDIO,
                                   command=[sys.executable, "-m", "truenas_sim"])
    call_command("refresh_tools", "truenas", stdout=io.StringIO())
    policies.apply(server, E2E_POLICY, actor="test")
    over_http = create_grant("over-http", [server], None).token
    in_process = create_grant("in-process", [server], None).token  # same policy, its own counters
    catalogue = list(Tool.objects.filter(server=server).order_by("position"))
    upstream_listing = [t.definition for t in catalogue]
    # Every tool once, then the good and bad arguments of dataset_create and the second (over-limit) system_info.
    plan = [(t.name, {}) for t in catalogue]
    plan += [("dataset_create", {"name": "tank/agents/a"}), ("dataset_create", {"name": "tank/media"}),
             ("system_info", {})]

    with httpx2.Client(timeout=60) as http:
        agent = Agent(http, quick_gateway.url("truenas"), over_http)
        listed = [t["name"] for t in agent.list_tools()]
        answers = [agent.call(name, arguments) for name, arguments in plan]

    expected = [d["name"] for d in visible_tools(server, in_process, upstream_listing, complete=True, mark_gone=True)]
    assert listed == expected  # the same tools, in the upstream's order
    assert "pool_scrub" in listed and "system_info" in listed and "dataset_create" in listed
    assert "pool_export" not in listed and "service_start" not in listed and "dataset_delete" not in listed

    rows = list(Call.objects.filter(grant__name="over-http").order_by("id"))
    assert len(rows) == len(plan)
    for (name, arguments), answer, row in zip(plan, answers, rows, strict=True):
        admission = calls.admit(in_process, server, name, arguments, datetime.now(UTC))
        mine = Call.objects.get(pk=admission.call_id)
        where = (name, arguments, answer, row.refusal, mine.refusal)
        assert (row.tool_name, row.decision, row.rule) == (name, mine.decision, mine.rule), where
        if getattr(admission, "held", None) is not None:  # over HTTP the hold window (1 s) ran out unanswered
            assert (row.refusal, row.outcome) == ("approval", "refused"), where
            assert answer["isError"] is True and answer["content"][0]["text"].startswith("approval pending"), where
        elif admission.forward:
            assert row.refusal == "" and row.outcome in ("ok", "tool_error"), where  # forwarded by the gateway too
        else:
            assert (row.refusal, row.outcome) == (mine.refusal, "refused") and answer["isError"] is True, where
            assert without_wait(answer["content"][0]["text"]) == without_wait(admission.message), where
        # The property itself, over HTTP: absent → refused; listed → refused only for the stated reasons.
        if name not in listed:
            assert row.outcome == "refused" and row.refusal in ("hidden", "policy"), where
        elif row.outcome == "refused":
            assert row.refusal in ("limit", "arguments", "approval"), where
    kinds = {row.refusal or row.outcome for row in rows}
    assert {"hidden", "policy", "approval", "arguments", "limit", "ok"} <= kinds, kinds  # every path was taken
    assert sorted(Counter.objects.filter(key__startswith="info|").values_list("n", flat=True)) == [1, 1]  # a grant each
