from django.core.management.base import BaseCommand, CommandError

from gateway import policies
from gateway.management.lookup import grant_by_name, server_by_slug


class Command(BaseCommand):
    help = "Make an earlier policy version active again. This creates a new version; history only grows."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the server's slug")
        parser.add_argument("number", type=int, help="the version to restore (see export_policy --policy-version N)")
        parser.add_argument("--grant", metavar="NAME", help="roll back the grant's own policy for this server")

    def handle(self, *args, **opts):
        server = server_by_slug(opts["slug"])
        grant = grant_by_name(opts["grant"]) if opts["grant"] else None
        try:
            result = policies.rollback(server, opts["number"], grant=grant, actor="cli:rollback_policy")
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        if result.created:
            self.stdout.write(self.style.SUCCESS(
                f"activated version v{result.version.number} (a copy of v{opts['number']})"))
        else:
            self.stdout.write(f"unchanged: v{opts['number']} is identical to the active version")
