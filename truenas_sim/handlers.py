"""From a tool call to an answer: schema checks, the confirm gate, dispatch, and the result text.

``Dispatcher`` knows nothing about MCP transports; it returns an ``Outcome`` (text + error flag) that
``server.py`` wraps into a ``CallToolResult``. It serves both listing modes: flat (278 tools) and
umbrella (the single ``truenas`` tool), plus the raw REST passthrough ``truenas_api_call``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from jsonschema import Draft202012Validator

from .catalogue import CATEGORY_BLURBS, RAW_API, UMBRELLA, Catalogue, ToolSpec, describe, load_catalogue
from .errors import ApiError
from .state import State

logger = logging.getLogger(__name__)
API_PREFIX = "/api/v2.0"


@dataclass(frozen=True)
class Outcome:
    """What a tool call answers: one text block, an error flag, and a short kind for the call log."""

    text: str
    is_error: bool = False
    kind: str = "ok"


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def api_error(exc: ApiError) -> Outcome:
    return Outcome(f"Error: {exc}", True, "api_error")


def not_confirmed(name: str) -> Outcome:
    return Outcome(f"Not confirmed: {name} changes or destroys data, so it only runs with \"confirm\": true. "
                   "Nothing was done. Call it again with \"confirm\": true to proceed.", False, "not_confirmed")


def integral(value: Any) -> Any:
    """JSON numbers like 3.0 become 3, recursively, so ids and sizes compare as integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral(v) for v in value]
    return value


class Dispatcher:
    """Turns tool calls into State operations, for one listing mode."""

    def __init__(self, state: State, *, umbrella: bool = False, catalogue: Catalogue | None = None) -> None:
        self.state = state
        self.umbrella = umbrella
        self.catalogue = catalogue or load_catalogue()
        self._validators: dict[str, Draft202012Validator] = {}
        self._routes = build_routes(self.catalogue)

    # -- entry point --------------------------------------------------------------------------

    def listed_specs(self) -> list[ToolSpec]:
        if self.umbrella:
            return [self.catalogue.umbrella]
        return list(self.catalogue.tools.values())

    def input_schema(self, name: str) -> dict[str, Any] | None:
        if self.umbrella:
            return self.catalogue.umbrella.schema if name == UMBRELLA else None
        spec = self.catalogue.tools.get(name)
        return spec.schema if spec else None

    def call(self, tool: str, arguments: dict[str, Any] | None) -> Outcome:
        """Answer one tools/call. Never raises."""
        args = dict(arguments or {})
        actions: list[str] = []
        try:
            outcome = self._dispatch(tool, args, actions)
        except ApiError as exc:
            outcome = api_error(exc)
        except Exception as exc:  # the simulator must answer, whatever happens
            logger.exception("tool %s failed", tool)
            outcome = Outcome(f"Error: TrueNAS API error 500: [EFAULT] simulator failure in {tool}: {exc}", True,
                              "crash")
        self.state.record_call(tool, actions, args, outcome.kind)
        return outcome

    def _dispatch(self, tool: str, args: dict[str, Any], actions: list[str]) -> Outcome:
        if self.umbrella:
            if tool != UMBRELLA:
                return Outcome(f"Error: unknown tool {tool!r}; this server has one tool, {UMBRELLA!r}", True,
                               "unknown")
            return self._umbrella(args, actions)
        spec = self.catalogue.tools.get(tool)
        if spec is None:
            return Outcome(f"Error: unknown tool {tool!r}", True, "unknown")
        actions.append(spec.name)
        return self._action(spec, args, actions)

    # -- one action ---------------------------------------------------------------------------

    def validator(self, spec: ToolSpec) -> Draft202012Validator:
        if spec.name not in self._validators:
            self._validators[spec.name] = Draft202012Validator(spec.schema)
        return self._validators[spec.name]

    def schema_problems(self, spec: ToolSpec, args: dict[str, Any], *, ignore: tuple[str, ...] = ()) -> list[str]:
        problems = []
        for err in sorted(self.validator(spec).iter_errors(args), key=lambda e: list(map(str, e.absolute_path))):
            if err.validator == "required" and any(f"'{name}'" in err.message for name in ignore):
                continue
            where = ".".join(str(p) for p in err.absolute_path)
            problems.append(f"{where}: {err.message}" if where else err.message)
        return problems

    @staticmethod
    def with_defaults(spec: ToolSpec, args: dict[str, Any]) -> dict[str, Any]:
        out = integral(args)
        for key, schema in spec.properties.items():
            if key not in out and "default" in schema:
                out[key] = schema["default"]
        return out

    def _action(self, spec: ToolSpec, args: dict[str, Any], actions: list[str]) -> Outcome:
        # A gated action without confirm is "not confirmed", not a schema error, even where confirm is required.
        problems = self.schema_problems(spec, args, ignore=("confirm",) if spec.confirm else ())
        if problems:
            return Outcome(f"Error: invalid arguments for {spec.name}: " + "; ".join(problems), True, "invalid")
        if spec.confirm and args.get("confirm") is not True:
            return not_confirmed(spec.name)
        if spec.name == RAW_API:
            return self._raw_api(args, actions)
        try:
            return Outcome(to_json(self.state.run(spec, self.with_defaults(spec, args))))
        except ApiError as exc:
            return api_error(exc)

    # -- the umbrella tool --------------------------------------------------------------------

    def _umbrella(self, args: dict[str, Any], actions: list[str]) -> Outcome:
        problems = self.schema_problems(self.catalogue.umbrella, args)
        if problems:
            return Outcome(f"Error: invalid arguments for {UMBRELLA}: " + "; ".join(problems), True, "invalid")
        category, action = args.get("category"), args.get("action")
        categories = self.catalogue.categories
        if (not category and not action) or category == "help":
            return Outcome(to_json(self._category_index()), False, "help")
        if not action:
            if category not in categories:
                return self._umbrella_error(f"unknown category {category!r}", categories=sorted(categories))
            return Outcome(to_json(self._category_actions(category)), False, "help")
        spec = self.catalogue.tools.get(action)
        if spec is None:
            known = sorted(categories.get(category, [])) if category in categories else None
            return self._umbrella_error(f"unknown action {action!r}" + (f" in category {category!r}" if known else ""),
                                        available_actions=known, categories=None if known else sorted(categories))
        if category != spec.category:
            where = f"is not in category {category!r}" if category else "needs a category"
            return self._umbrella_error(f"action {action!r} {where}; it belongs to category {spec.category!r}",
                                        correct_category=spec.category)
        actions.append(spec.name)
        return self._action(spec, dict(args.get("params") or {}), actions)

    @staticmethod
    def _umbrella_error(message: str, **extra: Any) -> Outcome:
        body = {"error": message, **{k: v for k, v in extra.items() if v is not None}}
        return Outcome(to_json(body), True, "unknown")

    def _category_index(self) -> dict[str, Any]:
        cats = self.catalogue.categories
        return {
            "usage": "Call truenas with a category to list its actions, then with category, action and params.",
            "categories": [{"name": c, "actions": len(cats[c]), "covers": CATEGORY_BLURBS.get(c, "")}
                           for c in sorted(cats)],
        }

    def _category_actions(self, category: str) -> dict[str, Any]:
        specs = [self.catalogue.tools[n] for n in self.catalogue.categories[category]]
        return {"category": category, "actions": [
            {"action": s.name, "description": describe(s), "params": s.schema} for s in specs]}

    # -- the raw REST passthrough -------------------------------------------------------------

    def _raw_api(self, args: dict[str, Any], actions: list[str]) -> Outcome:
        verb, url = args["method"], urlsplit(args["path"])
        path = url.path[len(API_PREFIX):] if url.path.startswith(API_PREFIX) else url.path
        path = "/" + path.strip("/")
        query = dict(parse_qsl(url.query))
        try:
            if verb == "GET" and path == "/core/get_jobs":
                return Outcome(to_json(filter_rows(self.state.resource("jobs"), query)))
            body = parse_body(args.get("body"))
            spec, params = self._route(verb, path)
            actions.append(spec.name)
            call_args = self._raw_arguments(spec, {**body, **params})
            result = self.state.run(spec, self.with_defaults(spec, call_args))
            return Outcome(to_json(filter_rows(result, query) if query else result))
        except ApiError as exc:
            return api_error(exc)

    def _route(self, verb: str, path: str) -> tuple[ToolSpec, dict[str, Any]]:
        for route_verb, pattern, spec in self._routes:
            match = pattern.match(path)
            if route_verb == verb and match:
                return spec, {k: unquote(v) for k, v in match.groupdict().items()}
        raise ApiError(404, f"[ENOENT] no API route for {verb} {API_PREFIX}{path}")

    def _raw_arguments(self, spec: ToolSpec, call_args: dict[str, Any]) -> dict[str, Any]:
        id_schema = spec.properties.get("id", {})
        if "id" in call_args and id_schema.get("type") == "number" and isinstance(call_args["id"], str):
            try:
                call_args["id"] = int(call_args["id"])
            except ValueError:
                raise ApiError(422, f"[EINVAL] id: {call_args['id']!r} is not a number") from None
        problems = self.schema_problems(spec, call_args, ignore=("confirm",))
        if problems:
            raise ApiError(422, f"[EINVAL] {spec.method}: " + "; ".join(problems))
        return call_args


def build_routes(catalogue: Catalogue) -> list[tuple[str, re.Pattern[str], ToolSpec]]:
    routes = []
    for spec in catalogue.tools.values():
        for verb, route in spec.routes:
            path = route[len(API_PREFIX):] if route.startswith(API_PREFIX) else route
            regex = re.escape(path).replace(re.escape("{id}"), "(?P<id>[^/]+)")
            routes.append((verb, re.compile(f"^{regex}$"), spec))
    return routes


def parse_body(body: str | None) -> dict[str, Any]:
    if body is None or not body.strip():
        return {}
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"[EINVAL] body is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ApiError(422, "[EINVAL] body must be a JSON object")
    return integral(value)


def filter_rows(result: Any, query: dict[str, str]) -> Any:
    """Apply ?field=value filters of a REST query to a list answer."""
    if not isinstance(result, list) or not query:
        return result
    return [row for row in result if isinstance(row, dict)
            and all(str(row.get(k)) == v for k, v in query.items())]
