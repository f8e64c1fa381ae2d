import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from gateway import policies
from gateway.calls import replaying
from gateway.management.lookup import grant_by_name, server_by_slug
from gateway.policy import PolicyInvalid, load_policy_text


class Command(BaseCommand):
    help = (
        "Validate a policy JSON file, print what changes against the active version, and activate it as a new "
        "version (the old one is kept). Applying the same document again changes nothing. A bad file exits 1 "
        "with one error per line, located by line and column (JSON syntax) or JSON Pointer (policy schema). "
        "The format is documented in docs/POLICY.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the server's slug")
        parser.add_argument("file", help="policy JSON file, or - for standard input")
        parser.add_argument("--grant", metavar="NAME",
                            help="set this grant's own rules for the server: the file says what decides its calls; "
                                 "what differs from the server's policy is kept as the grant's rules "
                                 "(docs/POLICY.md, Grant rules)")
        parser.add_argument("--check", action="store_true", help="validate and show the changes, activate nothing")
        parser.add_argument("--replay", type=int, metavar="N",
                            help="first replay the last N recorded calls of the server (of the grant, with --grant) "
                                 "and print what the file would have done differently from the policy in force")
        parser.add_argument("--note", default="", help="why: kept with the new version and shown in its history")

    def handle(self, *args, **opts):
        server = server_by_slug(opts["slug"])
        grant = grant_by_name(opts["grant"]) if opts["grant"] else None
        label, text = read_source(opts["file"])
        try:
            document = load_policy_text(text)
            if opts["replay"] is not None:
                if opts["replay"] < 1:
                    raise CommandError("--replay needs a number of calls, 1 or more")
                result = replaying.replay_draft(server, policies.canonical(document), grant=grant,
                                                last=opts["replay"])
                self.stdout.write("replay: " + "\n".join(result.lines()))
                for change in result.shown[:20]:
                    self.stdout.write(f"  call #{change.call_id} {change.tool}: {change.before} → {change.after}"
                                      f" ({change.reason})")
            if opts["check"]:
                doc = policies.canonical(document)
                active = policies.active_version(server, grant)
                from gateway.policy.diff import summarize

                self._report(summarize(active.document if active else None, doc), [], None)
                return
            result = policies.apply(server, document, grant=grant, actor=f"cli:apply_policy {label}",
                                    note=opts["note"])
        except PolicyInvalid as exc:
            for problem in exc.problems:
                self.stderr.write(f"{label}: {problem}")  # one line each, control characters escaped
            raise CommandError(f"{label}: {len(exc.problems)} error(s); nothing was applied") from None
        self._report(result.changes, result.warnings, result)

    def _report(self, changes, warnings, result) -> None:
        for line in changes:
            self.stdout.write(f"  {line}")
        for warning in warnings:
            self.stderr.write(f"warning: {warning}")
        if result is None:
            self.stdout.write("check only: nothing was applied")
        elif not result.created:
            self.stdout.write(f"unchanged: identical to active version v{result.version.number}")
        else:
            self.stdout.write(self.style.SUCCESS(f"activated version v{result.version.number}"))


def read_source(name: str) -> tuple[str, str]:
    if name == "-":
        return "<stdin>", sys.stdin.read()
    path = Path(name)
    try:
        return name, path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CommandError(f"{name}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{name}: cannot read it ({exc})") from None
