from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from gateway.clientconfig import render_text
from gateway.grants import GrantError, create_grant, parse_duration
from gateway.management.lookup import server_by_slug


class Command(BaseCommand):
    help = (
        "Create a grant (an agent's credential) for one or more servers. The token is printed once, with "
        "ready-to-paste client configurations; only its hash is stored, so save it now."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="grant name, e.g. claude-laptop (lowercase letters, digits, hyphens)")
        parser.add_argument("--server", action="append", required=True, metavar="SLUG",
                            help="a server this grant may use (repeatable)")
        parser.add_argument("--expires", metavar="DURATION",
                            help="expiry from now: 90m, 12h, 30d or 2w (default never)")

    def handle(self, *args, **opts):
        servers = [server_by_slug(slug) for slug in dict.fromkeys(opts["server"])]
        try:
            expires_at = timezone.now() + parse_duration(opts["expires"]) if opts["expires"] else None
            new = create_grant(opts["name"], servers, expires_at)
        except GrantError as exc:
            raise CommandError(str(exc)) from None
        except Exception as exc:  # model validation (name format)
            raise CommandError(f"cannot create grant {opts['name']!r}: {exc}") from None
        write_grant(self.stdout, new.grant, new.token, servers)


def write_grant(out, grant, token, servers) -> None:
    expiry = f", expires {grant.expires_at:%Y-%m-%d %H:%M} UTC" if grant.expires_at else ""
    out.write(f"created grant {grant.name!r}{expiry}")
    out.write(f"token (shown once, store it now): {token}")
    for server in servers:
        out.write(f"\n## {server.slug}\n")
        out.write(render_text(server.slug, token))
