from datetime import UTC, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from gateway.calls.call_log import CallFilter, export_lines
from gateway.management.lookup import server_by_slug


class Command(BaseCommand):
    help = (
        "Write the audit log (every recorded call, arguments as stored: redacted) as JSON Lines or CSV, oldest "
        "first, to standard output or a file: the rows since a time (or the last N days), optionally of one "
        "server or one grant. The same rows and columns as the call log's download in the dashboard."
    )

    def add_arguments(self, parser):
        when = parser.add_mutually_exclusive_group()
        when.add_argument("--since", metavar="WHEN", help="from this date or time (UTC, e.g. 2026-12-01 or "
                                                           "2026-12-01T08:00)")
        when.add_argument("--days", type=int, metavar="N", help="the last N days")
        parser.add_argument("--until", metavar="WHEN", help="up to this date or time (UTC), not included")
        parser.add_argument("--server", metavar="SLUG", help="one server's calls")
        parser.add_argument("--grant", metavar="NAME", help="one grant's calls")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--output", metavar="FILE", help="write here instead of standard output")

    def handle(self, *args, **opts):
        since = _when(opts["since"], "--since") if opts["since"] else None
        if opts["days"] is not None:
            if opts["days"] < 1:
                raise CommandError("--days needs 1 or more")
            since = timezone.now() - timedelta(days=opts["days"])
        until = _when(opts["until"], "--until") if opts["until"] else None
        if since and until and until <= since:
            raise CommandError("--until must come after the start")
        if opts["server"]:
            server_by_slug(opts["server"])  # a clear error for an unknown slug
        flt = CallFilter(server=opts["server"] or "", grant=opts["grant"] or "", since=since, until=until)
        out = open(opts["output"], "w", encoding="utf-8", newline="") if opts["output"] else None  # noqa: SIM115
        try:
            rows = 0
            for chunk in export_lines(flt, opts["format"], oldest_first=True):
                if out is None:
                    self.stdout.write(chunk, ending="")
                else:
                    out.write(chunk)
                rows += chunk.count("\n") if opts["format"] == "jsonl" else 0
        finally:
            if out is not None:
                out.close()
        if opts["output"]:
            what = f"{rows} calls" if opts["format"] == "jsonl" else "the calls"
            self.stderr.write(f"wrote {what} to {opts['output']}")


def _when(text: str, option: str):
    moment = parse_datetime(text)
    if moment is None and (day := parse_date(text)) is not None:
        moment = parse_datetime(f"{day.isoformat()}T00:00")
    if moment is None:
        raise CommandError(f"{option} {text!r}: write a date (2026-12-01) or a time (2026-12-01T08:00), UTC")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
