from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gateway.calls import audit_verify


class Command(BaseCommand):
    help = (
        "Check the audit log's hash chains: every row unaltered, none deleted, inserted or reordered, each chain "
        "reaching the position its writer last reported; with the archives the housekeeping moved old rows into, "
        "also those. Prints the first problem of each chain and exits with status 1 if there is any."
    )

    def add_arguments(self, parser):
        parser.add_argument("--archive", metavar="DIR",
                            help="the archive directory (default: PORTCULLIS_AUDIT_ARCHIVE_DIR, when it exists)")
        parser.add_argument("--no-archive", action="store_true", help="check the table only")

    def handle(self, *args, **opts):
        report = audit_verify.Report()
        ends = None
        directory = Path(opts["archive"] or settings.PORTCULLIS_AUDIT_ARCHIVE_DIR)
        if opts["archive"] and not directory.is_dir():
            raise CommandError(f"{directory} is not a directory of audit archives")
        if not opts["no_archive"] and directory.is_dir():
            ends = audit_verify.verify_archives(directory, report)
        audit_verify.verify_table(report, ends)
        summary = (f"{report.rows} rows in {report.chains} chains"
                   + (f", {report.archived} archived rows" if ends is not None else "")
                   + (f", {report.unchained} rows from before the hash chain (not covered)" if report.unchained
                      else ""))
        if report.clean:
            self.stdout.write(f"audit log verified: {summary}")
            return
        for problem in report.problems:
            self.stderr.write(problem)
        self.stderr.write(f"audit log NOT verified: {len(report.problems)} problem(s) in {summary}")
        raise SystemExit(1)
