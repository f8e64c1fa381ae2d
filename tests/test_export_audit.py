"""export_audit (issue 17, export): the audit log as JSON Lines or CSV, oldest first, by time, server and grant,
the same rows as the dashboard's download; arguments as stored (redacted)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from gateway.models import Call, Server


@pytest.fixture
def log(db):
    server = Server.objects.create(slug="nas", name="NAS", transport="stdio", command=["x"])
    other = Server.objects.create(slug="git", name="Git", transport="stdio", command=["y"])
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    for i in range(6):
        Call.objects.create(created_at=start + timedelta(hours=i), server=server if i % 2 == 0 else other,
                            server_slug="nas" if i % 2 == 0 else "git", grant_name="alice" if i < 3 else "bob",
                            tool_name=f"t{i}", via="truenas" if i == 0 else "", decision="allow", outcome="ok",
                            arguments={"password": "[REDACTED]", "n": i}, argument_hash=f"{i:064d}")
    return start


def export(*args) -> str:
    out = io.StringIO()
    call_command("export_audit", *args, stdout=out)
    return out.getvalue()


def test_it_exports_every_row_oldest_first_as_json_lines(log):
    rows = [json.loads(line) for line in export().splitlines()]
    assert [r["tool_name"] for r in rows] == ["t0", "t1", "t2", "t3", "t4", "t5"]
    assert rows[0]["via"] == "truenas" and rows[0]["arguments"] == {"password": "[REDACTED]", "n": 0}


def test_it_filters_by_time_server_and_grant(log):
    rows = [json.loads(line) for line in export("--since", "2026-12-01T10:00", "--until", "2026-12-01T13:00")
            .splitlines()]
    assert [r["tool_name"] for r in rows] == ["t2", "t3", "t4"]
    assert [json.loads(x)["tool_name"] for x in export("--server", "nas", "--grant", "alice").splitlines()] == \
        ["t0", "t2"]


def test_it_exports_csv_with_formula_cells_quoted(log):
    Call.objects.filter(tool_name="t5").update(reason="=HYPERLINK(\"http://evil\")")
    rows = list(csv.DictReader(io.StringIO(export("--format", "csv"))))
    assert len(rows) == 6 and rows[-1]["reason"].startswith("'=")


def test_it_writes_a_file(log, tmp_path):
    target = tmp_path / "audit.jsonl"
    err = io.StringIO()
    call_command("export_audit", "--output", str(target), "--days", "10000", stdout=io.StringIO(), stderr=err)
    assert len(target.read_text().splitlines()) == 6 and "wrote 6 calls" in err.getvalue()


@pytest.mark.parametrize("args, says", [
    (["--since", "yesterday"], "write a date"),
    (["--since", "2026-12-02", "--until", "2026-12-01"], "must come after"),
    (["--days", "0"], "--days needs 1 or more"),
    (["--server", "nope"], "no server with slug 'nope'"),
])
def test_it_says_what_is_wrong(log, args, says):
    with pytest.raises(CommandError, match=says):
        export(*args)
