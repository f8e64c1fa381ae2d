import getpass
import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from gateway.catalogue import actions
from gateway.management.lookup import server_by_slug
from gateway.models import Tool
from gateway.policy.dispatch import Shape, ShapeInvalid


class Command(BaseCommand):
    help = (
        "Declare that a tool of a server is a dispatcher: one tool that runs many actions, such as TrueNAS's "
        "truenas(category, action, params). Its calls are then governed as calls of their actions, by the "
        "actions' names (docs/POLICY.md, 'Dispatcher tools'). Without --action, the shape the gateway detected "
        "is used. --import truenas adds the 278 TrueNAS actions; --import listing asks the server's own listing "
        "action (TrueNAS-style: no arguments list the categories, a category lists its actions); --import FILE "
        "adds a JSON list of {name, description, inputSchema, match}. Run refresh_tools first so the tool is in "
        "the catalogue."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the server's slug")
        parser.add_argument("tool", help="the dispatcher tool's name, e.g. truenas")
        parser.add_argument("--action", metavar="POINTER", help="the argument naming the action, e.g. /action")
        parser.add_argument("--match", action="append", default=None, metavar="POINTER",
                            help="another argument that must agree with the action, e.g. /category (repeatable)")
        parser.add_argument("--params", metavar="POINTER", default=None,
                            help="where the action's own arguments are, e.g. /params (default: the other arguments)")
        parser.add_argument("--accept-new-actions", action="store_true",
                            help="an action not in the catalogue may run where the policy's default is allow "
                                 "(otherwise it is refused and queued for review)")
        parser.add_argument("--import", dest="source", metavar="truenas|listing|FILE",
                            help="add actions: the bundled TrueNAS list, the server's own listing action, or a "
                                 "JSON file with a list of actions")
        parser.add_argument("--off", action="store_true", help="govern the tool as one tool again")

    def handle(self, *args, **opts):
        server = server_by_slug(opts["slug"])
        tool = Tool.objects.filter(server=server, name=opts["tool"], via__isnull=True, gone_at__isnull=True).first()
        if tool is None:
            raise CommandError(f"{server.slug} lists no tool {opts['tool']!r}; run refresh_tools {server.slug} first")
        actor = f"cli:set_dispatcher ({getpass.getuser()})"
        if opts["off"]:
            actions.undeclare(tool, actor=actor)
            self.stdout.write(f"{tool.name} is governed as one tool again")
            return
        try:
            shape = self._shape(tool, opts)
            summary = actions.declare(tool, shape, actor=actor)
            if opts["source"]:
                tool.refresh_from_db()
                summary = actions.learn_by_listing(tool) if opts["source"] == "listing" else \
                    actions.import_actions(tool, self._entries(opts["source"]))
        except (ShapeInvalid, actions.LearnFailed) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"{server.slug}/{tool.name} is a dispatcher: {shape.describe()}"))
        self.stdout.write("actions: " + "\n".join(summary.lines()))
        total = Tool.objects.filter(via=tool, gone_at__isnull=True, held_reason="").count()
        self.stdout.write(f"{total} actions in the catalogue; the policy decides each by its name")

    @staticmethod
    def _shape(tool: Tool, opts) -> Shape:
        if opts["action"] is None:
            if opts["match"] or opts["params"]:
                raise ShapeInvalid("--match and --params need --action too")
            if not tool.dispatch_suggested and not tool.dispatch:
                raise ShapeInvalid(f"{tool.name} does not look like a dispatcher: give --action (and --params)")
            raw = dict(tool.dispatch or tool.dispatch_suggested)
        else:
            raw = {"action": opts["action"], "match": opts["match"] or [], "params": opts["params"] or ""}
        raw["accept_new"] = opts["accept_new_actions"]
        return Shape.from_json(raw)

    @staticmethod
    def _entries(source: str) -> list:
        if source == "truenas":
            return actions.truenas_action_list()
        try:
            data = json.loads(Path(source).read_text())
        except (OSError, ValueError) as exc:
            raise ShapeInvalid(f"--import {source}: cannot read a JSON list of actions ({exc})") from None
        entries = data.get("actions") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise ShapeInvalid(f"--import {source}: expected a JSON list of actions (or {{\"actions\": [...]}})")
        return entries
