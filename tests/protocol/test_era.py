"""The protocol eras' pure helpers (gateway/protocol/era.py), as tables: which era a request is in, how a result
is shaped for the agent's era, and what goes upstream."""

from __future__ import annotations

import pytest
from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY, SERVER_INFO_META_KEY

from gateway.protocol.era import Era, declared_capabilities, era_of, shape_result, tool_call_params, upstream_params

V = {PROTOCOL_VERSION_META_KEY: "2026-07-28"}
CLIENT_INFO = "io.modelcontextprotocol/clientInfo"

ERAS = [
    # (method, params, session id) -> era
    ("initialize", {}, None, Era.SESSION),
    ("initialize", {"_meta": V}, None, Era.SESSION),
    ("tools/list", {}, "abc", Era.SESSION),
    ("tools/list", {"_meta": V}, "abc", Era.SESSION),  # a session id wins: the session's rules apply
    ("server/discover", {}, None, Era.STATELESS),
    ("tools/list", {"_meta": V}, None, Era.STATELESS),
    ("tools/call", {"_meta": {"progressToken": 1}}, None, Era.SESSION),  # no envelope: a session request without one
    ("tools/call", {"_meta": "nonsense"}, None, Era.SESSION),
    (None, {}, None, Era.SESSION),  # an answer to a server→client request
]


@pytest.mark.parametrize(("method", "params", "session_id", "era"), ERAS)
def test_the_era_of_a_request(method, params, session_id, era):
    assert era_of(method, params, session_id) is era


SHAPES = [
    # (result, era, method) -> shaped
    ({"content": []}, Era.STATELESS, "tools/call", {"content": [], "resultType": "complete"}),
    ({"resultType": "input_required", "inputRequests": {}}, Era.STATELESS, "tools/call",
     {"resultType": "input_required", "inputRequests": {}}),
    ({"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"}, Era.SESSION, "tools/list",
     {"tools": []}),
    ({"x": 1, "_meta": {SERVER_INFO_META_KEY: {"name": "up"}}}, Era.SESSION, "ping", {"x": 1}),
    ({"x": 1, "_meta": {SERVER_INFO_META_KEY: {}, "k": 2}}, Era.STATELESS, "ping",
     {"x": 1, "_meta": {"k": 2}, "resultType": "complete"}),
    ({"x": 1, "_meta": {"k": 2}}, Era.SESSION, "ping", {"x": 1, "_meta": {"k": 2}}),
    # every cacheable method, from a session-era upstream (no cache fields) or a stateless one (its own)
    *[({key: []}, Era.STATELESS, method, {key: [], "resultType": "complete", "cacheScope": "private", "ttlMs": 0})
      for method, key in (("tools/list", "tools"), ("resources/list", "resources"), ("prompts/list", "prompts"),
                          ("resources/templates/list", "resourceTemplates"), ("resources/read", "contents"))],
    ({"resources": [], "resultType": "complete", "cacheScope": "public", "ttlMs": 60000}, Era.STATELESS,
     "resources/list", {"resources": [], "resultType": "complete", "cacheScope": "private", "ttlMs": 0}),
    ({"contents": [], "cacheScope": "public", "ttlMs": 5}, Era.SESSION, "resources/read", {"contents": []}),
    ({"resultType": "input_required", "inputRequests": {}}, Era.STATELESS, "resources/read",
     {"resultType": "input_required", "inputRequests": {}}),
]


@pytest.mark.parametrize(("result", "era", "method", "shaped"), SHAPES)
def test_a_result_is_shaped_for_the_agents_era(result, era, method, shaped):
    assert shape_result(result, era, method) == shaped


UPSTREAM = [
    ({"name": "t"}, {"name": "t"}),
    ({"name": "t", "task": {"ttl": 5}}, {"name": "t"}),  # no tasks offered: the upstream processes it normally
    ({"name": "t", "_meta": {**V, CLIENT_INFO: {}, CLIENT_CAPABILITIES_META_KEY: {}}}, {"name": "t"}),
    ({"name": "t", "_meta": {**V, "progressToken": 7}}, {"name": "t", "_meta": {"progressToken": 7}}),
    ({"_meta": {"progressToken": 7}}, {"_meta": {"progressToken": 7}}),
]


@pytest.mark.parametrize(("params", "sent"), UPSTREAM)
def test_the_agents_envelope_and_task_never_go_upstream(params, sent):
    assert upstream_params(params) == sent


CALLS = [
    # (params, era, the upstream's own state from the seal) -> sent
    ({"name": "t", "inputResponses": {"a": {}}, "requestState": "seal"}, Era.SESSION, None, {"name": "t"}),
    ({"name": "t", "inputResponses": {"a": {}}, "requestState": "seal"}, Era.STATELESS, "theirs",
     {"name": "t", "inputResponses": {"a": {}}, "requestState": "theirs"}),
    ({"name": "t", "requestState": "seal"}, Era.STATELESS, None, {"name": "t"}),  # never the gateway's seal
    ({"name": "t", "_meta": V}, Era.STATELESS, None, {"name": "t"}),
]


@pytest.mark.parametrize(("params", "era", "state", "sent"), CALLS)
def test_what_a_tools_call_sends_upstream(params, era, state, sent):
    assert tool_call_params(params, era, state) == sent


DECLARED = [
    ({"_meta": {**V, CLIENT_CAPABILITIES_META_KEY: {"elicitation": {}}}}, Era.STATELESS, {"elicitation": {}}),
    ({"_meta": V}, Era.STATELESS, {}),
    ({"_meta": {**V, CLIENT_CAPABILITIES_META_KEY: "x"}}, Era.STATELESS, {}),
    ({"_meta": {**V, CLIENT_CAPABILITIES_META_KEY: {"sampling": {}}}}, Era.SESSION, None),  # the link knows them
]


@pytest.mark.parametrize(("params", "era", "declared"), DECLARED)
def test_the_capabilities_a_stateless_agent_declared(params, era, declared):
    assert declared_capabilities(params, era) == declared
