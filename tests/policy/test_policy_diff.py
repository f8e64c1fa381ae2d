"""Tests for gateway/policy/diff.py: change lines between canonical documents and the one-line summary."""

from __future__ import annotations

import pytest

from gateway.policy import export_policy, parse_policy
from gateway.policy.diff import MAX_ONE_LINE, one_line, summarize
from tests.policy import policy_cases as C


@pytest.mark.parametrize("case", C.DIFF_CASES, ids=[c[0] for c in C.DIFF_CASES])
def test_it_summarizes_changes(case: tuple) -> None:
    _, old, new, expected = case
    assert summarize(old, new) == expected


@pytest.mark.parametrize("case", C.DIFF_CASES, ids=[c[0] for c in C.DIFF_CASES])
def test_it_summarizes_canonical_documents_the_same_way(case: tuple) -> None:
    _, old, new, expected = case
    canonical_old = None if old is None else export_policy(parse_policy(old))
    assert summarize(canonical_old, export_policy(parse_policy(new))) == expected


def test_it_reports_nothing_for_an_identical_document() -> None:
    assert summarize(C.SEED, dict(C.SEED)) == []


def test_it_tolerates_odd_documents() -> None:
    # Summaries run while applying a policy: they must not crash on a surprising shape.
    lines = summarize({"tools": ["x"], "hide": "y"}, {"tools": {"x": "z"}, "all_tools": []})
    assert lines == ["+ tools/x"]


def test_it_joins_short_summaries() -> None:
    assert one_line(["default: allow → deny", "+ tools/x"]) == "default: allow → deny; + tools/x"


def test_it_says_when_nothing_changed() -> None:
    assert one_line([]) == "no changes"


def test_it_truncates_long_summaries_at_a_line_boundary() -> None:
    lines = [f"+ tools/tool_number_{i}" for i in range(40)]
    text = one_line(lines)
    assert len(text) <= MAX_ONE_LINE
    kept = text.split("; … +")[0].split("; ")
    assert kept == lines[: len(kept)]
    assert text.endswith(f"; … +{len(lines) - len(kept)} more")


def test_it_cuts_a_single_overlong_line() -> None:
    text = one_line(["~ tools/" + "x" * 500 + ": limits changed"])
    assert len(text) == MAX_ONE_LINE and text.endswith("…")


@pytest.mark.parametrize("count", range(1, 30))
def test_it_never_exceeds_the_column_width(count: int) -> None:
    lines = [f"~ tools/{'t' * (i * 7 % 60)}: limits changed" for i in range(count)]
    assert len(one_line(lines)) <= MAX_ONE_LINE
