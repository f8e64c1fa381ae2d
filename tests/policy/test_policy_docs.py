"""docs/POLICY.md must stay exact: every example is canonical and the reference covers every field and op."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.policy import canonical_json, export_policy, load_policy_text, parse_policy
from gateway.policy import engine as P
from tests.policy.policy_cases import SEED

DOC = (Path(__file__).resolve().parents[2] / "docs" / "POLICY.md").read_text(encoding="utf-8")
ALIAS_TAG = "<!-- aliases -->"
BLOCK = re.compile(r"^```json\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str, bool]]:
    """(id, text, is_alias_block) for every ```json block, in document order."""
    found = []
    for number, match in enumerate(BLOCK.finditer(DOC)):
        before = DOC[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = DOC.count("\n", 0, match.start()) + 1
        found.append((f"line-{line}", match.group(1), before.strip() == ALIAS_TAG))
        assert number < 100
    return found


BLOCKS = _blocks()
CANONICAL = [b for b in BLOCKS if not b[2]]
ALIASES = [(i, b) for i, b in enumerate(BLOCKS) if b[2]]


def test_it_has_at_least_six_canonical_examples() -> None:
    assert len(CANONICAL) >= 6


@pytest.mark.parametrize("block", CANONICAL, ids=[b[0] for b in CANONICAL])
def test_it_documents_only_canonical_examples(block: tuple) -> None:
    _, text, _ = block
    document = load_policy_text(text)
    assert export_policy(parse_policy(document)) == document
    assert canonical_json(export_policy(parse_policy(document))) == text


def test_it_includes_the_seed_example() -> None:
    assert any(load_policy_text(text) == SEED for _, text, _ in CANONICAL)


def test_it_shows_what_the_alias_example_exports_to() -> None:
    assert ALIASES, f"expected a block tagged {ALIAS_TAG}"
    for index, (_, text, _) in ALIASES:
        written = load_policy_text(text)
        assert export_policy(parse_policy(written)) != written, "an alias block should not already be canonical"
        _, shown, is_alias = BLOCKS[index + 1]
        assert not is_alias
        assert canonical_json(export_policy(parse_policy(written))) == shown


@pytest.mark.parametrize("name", P.TOP_FIELDS + P.RULE_FIELDS + P.RULE_ALIASES + P.LIMIT_FIELDS
                         + P.PREDICATE_FIELDS + P.ARGUMENTS_FIELDS + P.PROPERTY_FIELDS)
def test_it_documents_every_field(name: str) -> None:
    assert f"`{name}`" in DOC


@pytest.mark.parametrize("op", P.OPS)
def test_it_has_a_row_for_every_op(op: str) -> None:
    assert re.search(rf"^\| `{op}` \|", DOC, re.MULTILINE)


@pytest.mark.parametrize("word", P.ACTIONS + P.SCOPES + P.RISK_KEYS + P.TYPES + tuple(P.NAMED_WINDOWS))
def test_it_documents_every_value(word: str) -> None:
    assert f"`{word}`" in DOC or f'"{word}"' in DOC


def test_it_numbers_the_evaluation_order() -> None:
    section = DOC.split("## Evaluation order", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"^(\d)\. \*\*", section, re.MULTILINE)
    assert steps == ["0", "1", "2", "3", "4", "5"]


@pytest.mark.parametrize("phrase", [
    "2 × max",  # the boundary burst, said plainly
    "second, longer window",
    "re.search",
    "00:00 UTC",
    "floor(now / w) * w",
    "given back",  # reservations are returned when the upstream call fails
    "Errors deny",
    "show_denied",
    "line L column C",
    "PolicyLayer",
])
def test_it_explains_the_sharp_edges(phrase: str) -> None:
    assert phrase.lower() in DOC.lower()


def _message(document: dict | None, tool: str = "x", args: object = None, category: str = "read") -> str:
    policy = None if document is None else parse_policy(document)
    facts = P.Facts("alice", "truenas", tool, category, "low", args)
    return P.evaluate(facts, policy, {}, 0).message


def _limit_text() -> str:
    res = P.Reservation("k", "cloud_backup_run_rate", "grant", 10, 60, 0, 60, "/tools/x/limits/0")
    return P.limit_message(res, 43)


HEADER = {"version": "1", "default": "deny"}
ENGINE_MESSAGES = {
    "no-policy": lambda: _message(None),
    "not-an-object": lambda: _message(HEADER, args=[]),
    "hidden": lambda: _message({**HEADER, "hide": ["x"]}),
    "default-deny": lambda: _message(HEADER),
    "rule-deny": lambda: _message({**HEADER, "risk": {"destructive": {"action": "deny"}}}, category="destructive"),
    "require": lambda: _message({**HEADER, "tools": {"x": {"require": [{"path": "args.reason", "op": "exists"}]}}}),
    "deny-if": lambda: _message({**HEADER, "tools": {"x": {"deny_if": [
        {"path": "args.amount", "op": "gt", "value": 10000}]}}}, args={"amount": 10001}),
    "pattern": lambda: _message({**HEADER, "tools": {"x": {"arguments": {
        "properties": {"path": {"pattern": "^/mnt/tank/"}}}}}}, args={"path": "/etc"}),
    "maximum": lambda: _message({**HEADER, "tools": {"x": {"arguments": {
        "properties": {"n": {"maximum": 5}}}}}}, args={"n": 6}),
    "forbidden": lambda: _message({**HEADER, "tools": {"x": {"arguments": {"forbidden": ["force"]}}}},
                                  args={"force": True}),
    "enum": lambda: _message({**HEADER, "tools": {"x": {"arguments": {
        "properties": {"mode": {"enum": ["a", "b"]}}}}}}, args={"mode": "c"}),
    "error": lambda: _message({**HEADER, "tools": {"payment_send": {"deny_if": [
        {"path": "args.amount", "op": "gt", "value": 10000}]}}}, tool="payment_send", args={"amount": "1"}),
    "limit": _limit_text,
}


@pytest.mark.parametrize("name", ENGINE_MESSAGES)
def test_it_quotes_the_engines_real_messages(name: str) -> None:
    message = ENGINE_MESSAGES[name]()
    assert message and message in DOC, message
