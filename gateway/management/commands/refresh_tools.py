from django.core.management.base import BaseCommand, CommandError

from gateway.catalogue.refresh import RefreshFailed, refresh
from gateway.management.lookup import server_by_slug


class Command(BaseCommand):
    help = (
        "Connect to a registered upstream, list its tools, and update the catalogue: new tools are classified "
        "by risk, changed definitions are flagged for review, tools no longer listed are marked gone. "
        "Exits 1 (and records the error on the server) if the upstream cannot be listed; nothing changes then."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the server's slug")

    def handle(self, *args, **opts):
        server = server_by_slug(opts["slug"])
        try:
            summary = refresh(server)
        except RefreshFailed as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"refreshed {server.slug}: ") + summary.lines()[0])
        for line in summary.lines()[1:]:
            self.stdout.write(line)

