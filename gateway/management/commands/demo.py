import json
import os
import secrets
import sys
from importlib import resources

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from gateway import policies
from gateway.catalogue import actions
from gateway.catalogue.refresh import RefreshFailed, refresh
from gateway.clientconfig import gateway_url
from gateway.grants import create_grant
from gateway.management.commands.create_grant import write_grant
from gateway.models import Grant, Server, Tool
from gateway.policy.dispatch import Shape

DEMO_SLUG = "truenas"
# The same simulator listing one tool, truenas(category, action, params), as the real TrueNAS server does: the
# same seed policy governs it through its actions (docs/POLICY.md, "Dispatcher tools").
UMBRELLA_SLUG = "truenas-umbrella"
DEMO_GRANT = "demo-agent"


class Command(BaseCommand):
    help = (
        "Load the demo: register the bundled TrueNAS simulator as server 'truenas' (278 tools) and as server "
        "'truenas-umbrella' (one dispatcher tool, like the real server, governed per action), refresh their tools, "
        "apply the seed policy to both (default deny; reads allowed; writes limited; cloud_backup_run 10 per "
        "minute per grant; destructive tools denied), create the dashboard's admin user (password from "
        "PORTCULLIS_ADMIN_PASSWORD or generated and printed once) and a grant 'demo-agent' whose token is "
        "printed once. "
        "Safe to run again: nothing is duplicated."
    )

    def handle(self, *args, **opts):
        seed = json.loads(resources.files("gateway").joinpath("seed/truenas-policy.json").read_text())
        servers = []
        for slug, name, flags in ((DEMO_SLUG, "TrueNAS (simulator)", []),
                                  (UMBRELLA_SLUG, "TrueNAS (simulator, one tool like the real server)",
                                   ["--umbrella"])):
            server = self._server(slug, name, flags)
            try:
                summary = refresh(server)
            except RefreshFailed as exc:
                raise CommandError(f"the demo's TrueNAS simulator could not be listed: {exc}") from None
            self.stdout.write(f"tools of {slug}: {summary.lines()[0]}")
            if flags:
                self._dispatcher(server)
            result = policies.apply(server, seed, actor="cli:demo")
            state = f"activated v{result.version.number}" if result.created else "already active"
            self.stdout.write(f"seed policy on {slug}: {state}")
            servers.append(server)
        self._admin()
        self._grant(servers)
        self.stdout.write(f"\ndashboard: {settings.PORTCULLIS_PUBLIC_URL}/   MCP endpoints: {gateway_url(DEMO_SLUG)} "
                          f"and {gateway_url(UMBRELLA_SLUG)}")

    def _server(self, slug: str, name: str, flags: list[str]) -> Server:
        command = [sys.executable, "-m", "truenas_sim", *flags]
        server, created = Server.objects.get_or_create(
            slug=slug, defaults={"name": name, "transport": Server.Transport.STDIO, "command": command})
        if not created and (server.transport, server.command) != (Server.Transport.STDIO, command):
            server.transport, server.command, server.url = Server.Transport.STDIO, command, ""
            server.save()
        self.stdout.write(f"server {slug}: {'registered' if created else 'already registered'}")
        return server

    def _dispatcher(self, server: Server) -> None:
        """The one tool is a dispatcher: its 278 actions from the project's own list, each governed by name."""
        tool = Tool.objects.get(server=server, name="truenas", via__isnull=True)
        if not tool.dispatch:
            actions.declare(tool, Shape.from_json(tool.dispatch_suggested), actor="cli:demo")
        summary = actions.import_actions(tool, actions.truenas_action_list())
        self.stdout.write(f"actions of {server.slug}/truenas: {summary.lines()[0]}")

    def _admin(self) -> None:
        User = get_user_model()
        username = os.environ.get("PORTCULLIS_ADMIN_USER", "admin")
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"dashboard user {username!r}: already exists (password unchanged)")
            return
        password = os.environ.get("PORTCULLIS_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if os.environ.get("PORTCULLIS_ADMIN_PASSWORD"):
            self.stdout.write(f"dashboard user {username!r}: created with the password from PORTCULLIS_ADMIN_PASSWORD")
        else:
            self.stdout.write(f"dashboard user {username!r}: created, password (shown once): {password}")

    @transaction.atomic
    def _grant(self, servers: list[Server]) -> None:
        existing = Grant.objects.filter(name=DEMO_GRANT).first()
        if existing is not None:
            missing = [s for s in servers if not existing.servers.filter(pk=s.pk).exists()]
            existing.servers.add(*missing)
            also = f" (now also for {', '.join(s.slug for s in missing)})" if missing else ""
            self.stdout.write(
                f"grant {DEMO_GRANT!r}: already exists{also}; its token was shown when it was created. For a new "
                f"one: python manage.py create_grant my-agent --server {DEMO_SLUG}")
            return
        new = create_grant(DEMO_GRANT, servers, None)
        write_grant(self.stdout, new.grant, new.token, servers)
