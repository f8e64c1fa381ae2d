import getpass
import shlex
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from gateway import server_changes, upstream_addresses
from gateway.catalogue.review import apply_change_setting
from gateway.clientconfig import gateway_url
from gateway.management.lookup import key_values
from gateway.models import Server
from gateway.vault import masked


class Command(BaseCommand):
    help = (
        "Register an upstream MCP server under a slug; agents then reach it at /mcp/<slug>/. "
        "Give exactly one of --stdio, --http or --sse. Env values and headers are encrypted at rest "
        "and only ever shown masked. Then run refresh_tools <slug> to load its tools."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="short name used in the gateway URL, e.g. truenas")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--stdio", metavar="COMMAND_LINE",
                            help='command line of a stdio server, split like a shell would (no shell runs it), '
                                 'e.g. "mcp-server-time --local-timezone UTC"')
        target.add_argument("--http", metavar="URL", help="Streamable HTTP endpoint, e.g. http://127.0.0.1:3001/mcp")
        target.add_argument("--sse", metavar="URL", help="legacy HTTP+SSE endpoint, e.g. http://127.0.0.1:3001/sse")
        parser.add_argument("--env", action="append", default=[], metavar="K=V",
                            help="environment variable for a stdio server (repeatable; stored encrypted)")
        parser.add_argument("--header", action="append", default=[], metavar="K=V",
                            help="HTTP header sent to an http/sse server (repeatable; stored encrypted)")
        parser.add_argument("--timeout", type=int, default=60, metavar="SECONDS",
                            help="per-call upstream timeout in seconds (default 60)")
        parser.add_argument("--name", help="display name (default: the slug)")
        parser.add_argument("--update", action="store_true", help="change an existing server instead of failing")
        parser.add_argument("--disabled", action="store_true", help="register it disabled (agents get refused)")
        parser.add_argument("--refuse", action="append", default=[], choices=["sampling", "elicitation", "roots"],
                            help="a question the server may not ask agents (sampling spends the agent's model, "
                                 "roots reveal its paths); repeat for several")
        parser.add_argument("--isolate-sessions", action="store_true",
                            help="every agent session gets an upstream session of its own (stateful servers)")
        parser.add_argument("--on-change", choices=["block", "flag"], default="block",
                            help="what a change to an approved tool definition does: block (the default) holds the "
                                 "tool until a person approves the new definition; flag only marks it")
        parser.add_argument("--hold-new-tools", action="store_true",
                            help="a tool new on a server already in use waits for a person's approval")

    def handle(self, *args, **opts):
        slug = opts["slug"]
        server = Server.objects.filter(slug=slug).first()
        if server is not None and not opts["update"]:
            raise CommandError(f"server {slug!r} already exists; pass --update to change it")
        if opts["timeout"] < 1 or opts["timeout"] > 3600:
            raise CommandError("--timeout must be between 1 and 3600 seconds")
        before = server_changes.snapshot(server)
        server = server or Server(slug=slug)
        server.name = opts["name"] or server.name or slug
        server.timeout_seconds = opts["timeout"]
        server.enabled = not opts["disabled"]
        server.allow_sampling, server.allow_elicitation, server.allow_roots = (
            name not in opts["refuse"] for name in ("sampling", "elicitation", "roots"))
        server.isolate_sessions = opts["isolate_sessions"]
        server.on_definition_change, server.hold_new_tools = opts["on_change"], opts["hold_new_tools"]
        self._set_target(server, opts)
        try:
            server.full_clean()
        except ValidationError as exc:
            problems = (f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
            raise CommandError("; ".join(problems)) from None
        server.save()
        server_changes.record(server, before, actor=f"cli:register_server ({getpass.getuser()})")
        if before.get("on_change", server.on_definition_change) != server.on_definition_change:
            apply_change_setting(server)
        self.stdout.write(self.style.SUCCESS(f"{'updated' if opts['update'] else 'registered'} server {slug!r}"))
        self.stdout.write(f"  upstream:    {server.get_transport_display()} {server.target_display()}")
        for label, values in (("env", server.env), ("headers", server.headers)):
            if values:
                self.stdout.write(f"  {label}:{' ' * (10 - len(label))} " +
                                  ", ".join(f"{k}={v}" for k, v in masked(values).items()))
        self.stdout.write(f"  gateway URL: {gateway_url(slug)}")
        self.stdout.write(f"next: python manage.py refresh_tools {slug}")

    def _set_target(self, server: Server, opts) -> None:
        env, headers = key_values(opts["env"], "--env"), key_values(opts["header"], "--header")
        if opts["stdio"] is not None:
            if headers:
                raise CommandError("--header is for --http/--sse servers; a stdio server takes --env")
            try:
                argv = shlex.split(opts["stdio"])
            except ValueError as exc:
                raise CommandError(f"--stdio: cannot split the command line ({exc})") from None
            if not argv:
                raise CommandError("--stdio: the command line is empty")
            server.transport, server.command, server.url = Server.Transport.STDIO, argv, ""
            server.env, server.headers = env, {}
            return
        if env:
            raise CommandError("--env is for --stdio servers; an http/sse server takes --header")
        transport, url = (Server.Transport.HTTP, opts["http"]) if opts["http"] else (Server.Transport.SSE, opts["sse"])
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(f"{url!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise CommandError("put credentials in --header, not in the URL (URLs are shown on pages and in logs)")
        try:
            upstream_addresses.check_url(url)
        except upstream_addresses.AddressRefused as exc:
            raise CommandError(str(exc)) from None
        server.transport, server.url, server.command = transport, url, []
        server.headers, server.env = headers, {}
