import asyncio

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from gateway.catalogue import sync_tools
from gateway.management.lookup import server_by_slug
from gateway.models import Server
from gateway.upstream.connect import UpstreamError
from gateway.upstream.listing import fetch_tool_definitions


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
        summary = refresh(server)
        self.stdout.write(self.style.SUCCESS(f"refreshed {server.slug}: ") + summary.lines()[0])
        for line in summary.lines()[1:]:
            self.stdout.write(line)


def refresh(server: Server):
    """List the upstream and sync the catalogue; health and last error are recorded either way."""
    try:
        definitions = asyncio.run(fetch_tool_definitions(server))
    except UpstreamError as exc:
        Server.objects.filter(pk=server.pk).update(health=Server.Health.ERROR, last_error=str(exc)[:4000])
        raise CommandError(str(exc)) from None
    now = timezone.now()
    summary = sync_tools(server, definitions, now)
    Server.objects.filter(pk=server.pk).update(health=Server.Health.OK, last_error="", last_contact_at=now)
    return summary
