from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from gateway.calls import audit_archive


class Command(BaseCommand):
    help = (
        "Move audit rows older than the retention (PORTCULLIS_AUDIT_RETENTION_DAYS, or --days) to compressed JSON "
        "Lines files in the archive directory, then delete them from the database. The gateway's housekeeping "
        "does this on its own; this runs it now."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, metavar="N", help="keep the last N days (default: the setting)")

    def handle(self, *args, **opts):
        days = opts["days"] if opts["days"] is not None else settings.PORTCULLIS_AUDIT_RETENTION_DAYS
        if not days or days < 1:
            raise CommandError("no retention set: give --days N or set PORTCULLIS_AUDIT_RETENTION_DAYS")
        now = timezone.now()
        directory = Path(settings.PORTCULLIS_AUDIT_ARCHIVE_DIR)
        moved = 0
        while True:
            count = audit_archive.archive_before(now - timedelta(days=days), directory, now)
            moved += count
            if count < audit_archive.BATCH:
                break
        self.stdout.write(f"archived {moved} audit rows older than {days} days to {directory}")
