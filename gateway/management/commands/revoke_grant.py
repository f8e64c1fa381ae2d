from django.core.management.base import BaseCommand
from django.utils import timezone

from gateway.grants import revoke
from gateway.management.lookup import grant_by_name


class Command(BaseCommand):
    help = "Revoke a grant. It takes effect on the agent's next call. Revoking twice is harmless (exit 0)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the grant's name")

    def handle(self, *args, **opts):
        grant = grant_by_name(opts["name"])
        if revoke(grant, timezone.now()):
            self.stdout.write(self.style.SUCCESS(f"revoked grant {grant.name!r}"))
        else:
            self.stdout.write(f"grant {grant.name!r} was already revoked at {grant.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
