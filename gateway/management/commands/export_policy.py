from django.core.management.base import BaseCommand, CommandError

from gateway.management.lookup import grant_by_name, server_by_slug
from gateway.models import PolicyVersion
from gateway.policy import canonical_json, export_policy, parse_policy


class Command(BaseCommand):
    help = "Print a server's active policy (or a given version) as JSON that apply_policy accepts unchanged."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the server's slug")
        parser.add_argument("--grant", metavar="NAME", help="the grant's own policy for this server")
        parser.add_argument("--policy-version", type=int, metavar="N", dest="number", help="a past version instead")

    def handle(self, *args, **opts):
        server = server_by_slug(opts["slug"])
        grant = grant_by_name(opts["grant"]) if opts["grant"] else None
        versions = PolicyVersion.objects.filter(server=server, grant=grant)
        version = versions.filter(number=opts["number"]).first() if opts["number"] else versions.filter(
            is_active=True).first()
        owner = f"{server.slug}" + (f" for grant {grant.name}" if grant else "")
        if version is None:
            what = f"version {opts['number']}" if opts["number"] else "an active policy"
            raise CommandError(f"{owner} has no {what}; apply one with apply_policy")
        # Re-export rather than dump the stored JSON: PostgreSQL's jsonb does not keep key order.
        self.stdout.write(canonical_json(export_policy(parse_policy(version.document))), ending="")
