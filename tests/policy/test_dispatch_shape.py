"""gateway/policy/dispatch.py, pure: a dispatcher's shape, detected and validated; the action read out of a call;
the listing narrowed to the actions a grant may call. Cases as data."""

from __future__ import annotations

import pytest

from gateway.policy.dispatch import Resolved, Shape, ShapeInvalid, detect, listed_actions, mismatch, narrow, resolve

TRUENAS = Shape("/action", ("/category",), "/params")


def definition(**props) -> dict:
    return {"name": "hub", "inputSchema": {"type": "object", "properties": props}}


DETECT_CASES = [
    ("truenas", definition(category={"type": "string"}, action={"type": "string"}, params={"type": "object"}),
     {"action": "/action", "match": ["/category"], "params": "/params", "accept_new": False}),
    ("operation-and-arguments", definition(operation={"enum": ["a", "b"]}, arguments={"type": "object"}),
     {"action": "/operation", "match": [], "params": "/arguments", "accept_new": False}),
    ("no-params-object", definition(action={"type": "string"}, path={"type": "string"}), None),
    ("action-not-a-string", definition(action={"type": "integer"}, params={"type": "object"}), None),
    ("no-schema", {"name": "x"}, None),
    ("not-a-definition", "hub", None),
]


@pytest.mark.parametrize("case", DETECT_CASES, ids=[c[0] for c in DETECT_CASES])
def test_it_suggests_the_shape_of_a_dispatcher(case):
    _, found, expected = case
    shape = detect(found)
    assert (shape.to_json() if shape else None) == expected


SHAPE_ERRORS = [
    ("not-a-pointer", {"action": "action"}, "is not a JSON pointer"),
    ("root-pointer", {"action": "/"}, "is not a JSON pointer"),
    ("empty-step", {"action": "/a//b"}, "has an empty step"),
    ("same-twice", {"action": "/action", "match": ["/action"]}, "must all be different"),
    ("action-inside-params", {"action": "/params/action", "params": "/params"}, "inside the action's own arguments"),
    ("match-not-a-list", {"action": "/action", "match": "/category"}, "match must be a list"),
    ("no-action", {"params": "/params"}, "at least the argument that names the action"),
]


@pytest.mark.parametrize("case", SHAPE_ERRORS, ids=[c[0] for c in SHAPE_ERRORS])
def test_it_refuses_a_shape_that_cannot_work(case):
    _, raw, says = case
    with pytest.raises(ShapeInvalid, match=says):
        Shape.from_json(raw)


RESOLVE_CASES = [
    ("truenas", TRUENAS, {"category": "storage", "action": "pool_list", "params": {"x": 1}},
     Resolved("pool_list", {"/category": "storage"}, {"x": 1})),
    ("params-missing-is-empty", TRUENAS, {"category": "storage", "action": "pool_list"},
     Resolved("pool_list", {"/category": "storage"}, {})),
    ("params-null-is-empty", TRUENAS, {"action": "pool_list", "params": None},
     Resolved("pool_list", {"/category": None}, {})),
    ("siblings-are-the-params", Shape("/op"), {"op": "send", "to": "a", "body": "b"},
     Resolved("send", {}, {"to": "a", "body": "b"})),
    ("nested-pointer", Shape("/call/name", (), "/call/args"), {"call": {"name": "x", "args": {"a": 1}}},
     Resolved("x", {}, {"a": 1})),
    ("escaped-pointer", Shape("/a~1b", (), "/c~0d"), {"a/b": "x", "c~d": {"k": 1}}, Resolved("x", {}, {"k": 1})),
    ("missing", TRUENAS, {"category": "storage"}, "argument /action of 'hub' is required"),
    ("empty", TRUENAS, {"action": ""}, "argument /action of 'hub' is required"),
    ("array", TRUENAS, {"action": ["a"]}, "not an array"),
    ("object", TRUENAS, {"action": {"a": 1}}, "not an object"),
    ("number", TRUENAS, {"action": 1}, "not a string"),
    ("null", TRUENAS, {"action": None}, "not a string"),
    ("match-not-a-string", TRUENAS, {"action": "a", "category": 3}, "/category of 'hub' must be a string"),
    ("params-not-an-object", TRUENAS, {"action": "a", "params": "x=1"}, "must be an object"),
    ("arguments-not-an-object", TRUENAS, ["a"], "needs its arguments as a JSON object"),
]


@pytest.mark.parametrize("case", RESOLVE_CASES, ids=[c[0] for c in RESOLVE_CASES])
def test_it_reads_the_action_out_of_a_call(case):
    _, shape, arguments, expected = case
    found = resolve(shape, "hub", arguments)
    if isinstance(expected, str):
        assert isinstance(found, str) and expected in found, found
    else:
        assert found == expected


def test_a_match_argument_must_agree_with_the_catalogue():
    resolved = resolve(TRUENAS, "hub", {"category": "storage", "action": "cloud_backup_run"})
    assert "needs argument /category = 'data_protection'" in mismatch(TRUENAS, "hub", resolved,
                                                                      {"/category": "data_protection"})
    assert mismatch(TRUENAS, "hub", resolved, {"/category": "storage"}) is None
    assert mismatch(TRUENAS, "hub", resolved, {}) is None  # the catalogue does not know it: any value


def test_it_narrows_the_listing_to_the_visible_actions():
    listed = {"name": "hub", "description": "d", "inputSchema": {"type": "object", "properties": {
        "category": {"type": "string", "enum": ["storage", "system", "data_protection"]},
        "action": {"type": "string", "default": "dataset_delete", "examples": ["pool_list", "dataset_delete"],
                   "oneOf": [{"const": "pool_list", "description": "List pools."},
                             {"const": "dataset_delete", "description": "Delete a dataset and its data."},
                             {"const": "cloud_backup_run", "description": "Run a backup."}]},
        "params": {"type": "object"}}}}
    seen = narrow(listed, TRUENAS, [("pool_list", {"/category": "storage"}),
                                    ("cloud_backup_run", {"/category": "data_protection"})])
    action = seen["inputSchema"]["properties"]["action"]
    assert action["enum"] == ["pool_list", "cloud_backup_run"]
    assert [alt["const"] for alt in action["oneOf"]] == ["pool_list", "cloud_backup_run"]  # denied ones' text gone
    assert "default" not in action and action["examples"] == ["pool_list"]
    assert seen["inputSchema"]["properties"]["category"]["enum"] == ["storage", "data_protection"]
    assert listed["inputSchema"]["properties"]["action"]["oneOf"][1]["const"] == "dataset_delete"  # a copy


def test_it_reads_the_actions_a_schema_lists():
    shape = Shape("/action", (), "/params")
    assert listed_actions(shape, definition(action={"enum": ["a", "b", "a", 3, "bad name"]})) == ["a", "b"]
    assert listed_actions(shape, definition(action={"type": "string"})) == []
