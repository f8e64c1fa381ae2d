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
from gateway.catalogue.refresh import RefreshFailed, refresh
from gateway.clientconfig import gateway_url
from gateway.grants import create_grant
from gateway.management.commands.create_grant import write_grant
from gateway.models import Grant, Server

DEMO_SLUG = "truenas"
DEMO_GRANT = "demo-agent"


class Command(BaseCommand):
    help = (
        "Load the demo: register the bundled TrueNAS simulator as server 'truenas', refresh its tools, apply the "
        "seed policy (default deny; reads allowed; writes limited; cloud_backup_run 10 per minute per grant; "
        "destructive tools denied), create the dashboard's admin user (password from PORTCULLIS_ADMIN_PASSWORD "
        "or generated and printed once) and a grant 'demo-agent' whose token is printed once. "
        "Safe to run again: nothing is duplicated."
    )

    def handle(self, *args, **opts):
        server = self._server()
        try:
            summary = refresh(server)
        except RefreshFailed as exc:
            raise CommandError(f"the demo's TrueNAS simulator could not be listed: {exc}") from None
        self.stdout.write(f"tools of {DEMO_SLUG}: {summary.lines()[0]}")
        seed = json.loads(resources.files("gateway").joinpath("seed/truenas-policy.json").read_text())
        result = policies.apply(server, seed, actor="cli:demo")
        state = f"activated v{result.version.number}" if result.created else "already active"
        self.stdout.write(f"seed policy: {state}")
        self._admin()
        self._grant(server)
        self.stdout.write(f"\ndashboard: {settings.PORTCULLIS_PUBLIC_URL}/   MCP endpoint: {gateway_url(DEMO_SLUG)}")

    def _server(self) -> Server:
        command = [sys.executable, "-m", "truenas_sim"]
        server, created = Server.objects.get_or_create(
            slug=DEMO_SLUG,
            defaults={"name": "TrueNAS (simulator)", "transport": Server.Transport.STDIO, "command": command},
        )
        if not created and (server.transport, server.command) != (Server.Transport.STDIO, command):
            server.transport, server.command, server.url = Server.Transport.STDIO, command, ""
            server.save()
        self.stdout.write(f"server {DEMO_SLUG}: {'registered' if created else 'already registered'}")
        return server

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
    def _grant(self, server: Server) -> None:
        if Grant.objects.filter(name=DEMO_GRANT).exists():
            self.stdout.write(
                f"grant {DEMO_GRANT!r}: already exists; its token was shown when it was created. For a new one: "
                f"python manage.py create_grant my-agent --server {DEMO_SLUG}")
            return
        new = create_grant(DEMO_GRANT, [server], None)
        write_grant(self.stdout, new.grant, new.token, [server])
