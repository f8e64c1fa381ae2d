"""The policy builder: a server's (or a grant's) policy edited by clicking, kept as a session draft until saved.

Every edit goes through gateway.policy_edit (validated, canonical); save goes through gateway.policies.apply.
htmx requests get the smallest partial that changed plus out-of-band status; plain requests get a redirect.
"""

from __future__ import annotations

from collections import Counter

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard import drafts, grant_rules, policy_templates, top_level
from dashboard.access import staff_required
from dashboard.confirmations import Question, ask_first
from dashboard.effective import actions_for, filter_tools, grouped, live_tools, tool_facts
from dashboard.forms import BulkLimitForm, CatalogueFilter, ImportForm, ReplayForm
from dashboard.partials import wants_fragment
from dashboard.wording import counted
from gateway import policies, shadows
from gateway.calls import replaying
from gateway.models import Grant, PolicyVersion, Server, ShadowPolicy, Tool
from gateway.policy import (
    RISK_CATEGORIES,
    PolicyInvalid,
    canonical_json,
    load_policy_text,
    parse_policy,
    pointer_join,
)
from gateway.policy import editing as policy_edit
from gateway.policy.behaviour import behaviour_changes
from gateway.policy.diff import summarize
from gateway.policy.replay import WORDS


class Owner:
    """Whose policy: the server's, or one grant's override for that server."""

    def __init__(self, request, slug):
        self.server = get_object_or_404(Server, slug=slug)
        name = request.GET.get("grant") or request.POST.get("grant") or ""
        self.grant = get_object_or_404(Grant, name=name, servers=self.server) if name else None
        self.query = f"?grant={self.grant.name}" if self.grant else ""

    @property
    def hidden(self) -> dict[str, str]:
        """The owner as a form's hidden field (a confirmation sends it back)."""
        return {"grant": self.grant.name} if self.grant else {}

    def url(self, name: str, **kwargs) -> str:
        return reverse(f"dashboard:{name}", kwargs={"slug": self.server.slug, **kwargs}) + self.query


def _filters(source) -> dict:
    form = CatalogueFilter(source)
    return form.cleaned_data if form.is_valid() else {}


def _filter_query(data: dict) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in data.items() if v})


def _state(request, owner: Owner, draft: drafts.Draft | None = None, filters: dict | None = None) -> dict:
    """Everything the builder's page and partials render from."""
    draft = draft or drafts.load(request.session, owner.server, owner.grant)
    tools = list(live_tools(owner.server, "title", "approved_hash", "definition_hash"))
    effective = actions_for(draft.document, tools, owner.server.slug, owner.grant.name if owner.grant else "")
    filters = _filters(request.GET) if filters is None else filters
    shown = filter_tools(tools, effective, filters)
    exact = draft.document.get("tools", {})
    globs = {pointer_join("/tools", key): key for key in exact if policy_edit.is_glob(key)}
    own = set()
    if owner.grant is not None:  # which rows this grant's own rules decide
        server_version = policies.active_version(owner.server)
        own = grant_rules.pointers(draft.document, server_version.document if server_version else None)
    for tool in shown:
        _annotate(tool, effective[tool.name], exact, globs, own)
    changes = draft.changes()
    selection = drafts.selection(request.session, owner.server, owner.grant)
    return {
        "owner": owner, "server": owner.server, "grant": owner.grant, "draft": draft, "changes": changes,
        "groups": grouped(shown), "shown": len(shown), "total": len(tools), "filters": filters,
        "filter_query": _filter_query(filters), "selection": selection,
        "selected_shown": (picked := sum(1 for t in shown if t.name in selection)),
        "selected_hidden": len(selection) - picked,
        "risk_rules": {key: draft.document.get("risk", {}).get(key) for key in RISK_CATEGORIES},
        "hide_all": policy_edit.hides_everything(draft.document),
        "choices": policy_edit.TOOL_CHOICES, "row_urls": _row_urls(owner), "own_pointers": own,
    }


def _annotate(tool, effective, exact: dict, globs: dict, own: set[str] = frozenset()) -> None:
    """What one row shows, worked out once here rather than per option in the template (279 rows)."""
    tool.effective, tool.has_rule = effective, tool.name in exact
    tool.grant_rule = effective.rule in own  # decided by the grant's own rule, not the server's
    tool.rule_action = exact[tool.name].get("action", "allow") if tool.has_rule else policy_edit.INHERIT
    tool.glob = globs.get(effective.rule)  # decided by a glob rule: the row links to its editor


def _row_urls(owner: Owner) -> dict:
    return {"select": reverse("dashboard:builder_select", kwargs={"slug": owner.server.slug}),
            "action": reverse("dashboard:builder_action", kwargs={"slug": owner.server.slug})}


@login_required
def builder(request, slug):
    owner = Owner(request, slug)
    if not (wants_fragment(request) and request.htmx.target == "tool-groups"):
        # A selection lives as long as the page it was made on: a new page starts with none selected.
        if drafts.selection(request.session, owner.server, owner.grant):
            drafts.set_selection(request.session, owner.server, owner.grant, set())
    state = _state(request, owner)
    if wants_fragment(request) and request.htmx.target == "tool-groups":
        return render(request, "dashboard/builder/_groups.html", state)
    state.update(filter_form=CatalogueFilter(request.GET))
    return render(request, "dashboard/builder/page.html", page_context(owner, state))


def page_context(owner: Owner, state: dict, **extra) -> dict:
    """What the whole page adds to the partials' state: the forms, the policy-wide settings, the glob rules, and
    whose rules sit on top of whose (grants' rules on the server's policy)."""
    document = state["draft"].document
    facts = [tool_facts(t) for t in live_tools(owner.server)]
    context = {"filter_form": CatalogueFilter(), "limit_form": BulkLimitForm(), "import_form": ImportForm(),
               "globs": policy_edit.glob_reach(document, facts), **state}
    if not state["draft"].active:  # a first policy: the templates are on the page
        context["templates"] = policy_templates.all_templates()
    if owner.grant is None:
        context["grant_rules"] = grant_rules.on_server(owner.server)
    else:
        context["server_version"] = policies.active_version(owner.server)
        context["own_version"] = policies.active_version(owner.server, owner.grant)
    if "wide" not in context:
        context.update(top_level.context(owner.server, document))
    context.update(extra)
    return context


def _after_edit(request, owner: Owner, template: str = "dashboard/builder/_groups.html", **extra):
    """htmx: the changed partial + out-of-band status; otherwise back to the builder with the same filters."""
    filters = _filters(request.POST)
    if not request.htmx:
        return redirect(owner.url("builder") + ("&" if owner.query else "?") + _filter_query(filters))
    state = _state(request, owner, filters=filters)
    state.update(extra)
    response = render(request, template, state)
    response["HX-Trigger"] = "draft-changed"
    return response


def _edit(request, owner: Owner, change) -> drafts.Draft | HttpResponse:
    draft = drafts.load(request.session, owner.server, owner.grant)
    try:
        document = change(draft.document)
    except PolicyInvalid as exc:
        text = "; ".join(str(p) for p in exc.problems)
        if request.htmx:
            return HttpResponse(f"not changed: {text}", status=400, content_type="text/plain")
        messages.error(request, f"not changed: {text}")
        return redirect(owner.url("builder"))
    return drafts.store(request.session, owner.server, owner.grant, draft, document)


@require_POST
@staff_required
def set_action(request, slug):
    owner = Owner(request, slug)
    name, choice = request.POST.get("tool", ""), request.POST.get("set", "")
    tool = get_object_or_404(Tool, server=owner.server, name=name)
    result = _edit(request, owner, lambda doc: policy_edit.set_actions(doc, [tool.name], choice))
    if isinstance(result, HttpResponse):
        return result
    if not request.htmx:
        return _after_edit(request, owner)
    return _row_response(request, owner, tool, result)


def _row_response(request, owner: Owner, tool: Tool, draft: drafts.Draft | None = None):
    """One row plus the out-of-band status and selection bar: what a click on one tool changes."""
    state = _state(request, owner, draft=draft, filters=_filters(request.POST))
    draft = state["draft"]
    row = Tool.objects.filter(pk=tool.pk).only("id", "name", "title", "risk_category", "risk_level",
                                                 "approved_hash", "definition_hash").get()
    effective = actions_for(draft.document, [row], owner.server.slug, owner.grant.name if owner.grant else "")
    exact = draft.document.get("tools", {})
    _annotate(row, effective[row.name], exact,
              {pointer_join("/tools", key): key for key in exact if policy_edit.is_glob(key)}, state["own_pointers"])
    state.update(tool=row, oob=True)
    response = render(request, "dashboard/builder/_row_and_status.html", state)
    response["HX-Trigger"] = "draft-changed"
    return response


@require_POST
@staff_required
def set_default(request, slug):
    owner = Owner(request, slug)
    result = _edit(request, owner, lambda doc: policy_edit.set_default(doc, request.POST.get("default", "")))
    return result if isinstance(result, HttpResponse) else _after_edit(request, owner)


@require_POST
@staff_required
def set_risk(request, slug):
    owner = Owner(request, slug)
    key, choice = request.POST.get("risk", ""), request.POST.get("set", "")
    result = _edit(request, owner, lambda doc: policy_edit.set_risk_action(doc, key, choice))
    return result if isinstance(result, HttpResponse) else _after_edit(request, owner)


@require_POST
@staff_required
def select(request, slug):
    """Change the selection: one tool on/off, everything the filter shows, or nothing."""
    owner = Owner(request, slug)
    chosen = drafts.selection(request.session, owner.server, owner.grant)
    what = request.POST.get("what", "")
    if what == "none":
        chosen = set()
    elif what == "matching":
        state = _state(request, owner, filters=_filters(request.POST))
        chosen |= {t.name for _, rows in state["groups"] for t in rows}
    elif what == "toggle":
        tool = get_object_or_404(Tool, server=owner.server, name=request.POST.get("tool", ""))
        chosen ^= {tool.name}
        drafts.set_selection(request.session, owner.server, owner.grant, chosen)
        return _row_response(request, owner, tool) if request.htmx else _after_edit(request, owner)
    drafts.set_selection(request.session, owner.server, owner.grant, chosen)
    if not request.htmx:
        return _after_edit(request, owner)
    state = _state(request, owner, filters=_filters(request.POST))
    return render(request, "dashboard/builder/_groups.html", state)


BULK_VERBS = {"allow": "Allow", "deny": "Deny", "hide": "Hide", "approve": "Hold for approval",
              policy_edit.INHERIT: "Give back to the tier rule", "limit": "Limit"}


@require_POST
@staff_required
def bulk(request, slug):
    """A bulk action in two steps: first what it would change for agents (only the selected tools the filter
    shows), then, confirmed, exactly the tools named in that confirmation."""
    owner = Owner(request, slug)
    choice = request.POST.get("set", "")
    if choice not in BULK_VERBS:
        return _refused(request, owner, "choose one of: " + ", ".join(BULK_VERBS))
    filters = _filters(request.POST)
    not_shown = 0  # selected tools the filter hides, which the action leaves alone
    if request.POST.get("confirm"):
        live = {t.name for t in live_tools(owner.server)}
        names = [n for n in request.POST.getlist("tool") if n in live]
    else:
        chosen = drafts.selection(request.session, owner.server, owner.grant)
        if not chosen:
            return _nothing_selected(request, owner)
        state = _state(request, owner, filters=filters)
        names = [t.name for _, rows in state["groups"] for t in rows if t.name in chosen]
        if not names:
            return _refused(request, owner, f"the {len(chosen)} selected tools are all hidden by the search or "
                                            "filters: clear them to see the selection, or select tools shown")
        not_shown = len(chosen) - len(names)
    plan = _plan(request, owner, choice, names)
    if isinstance(plan, HttpResponse):
        return plan
    if not request.POST.get("confirm"):
        context = {"owner": owner, "server": owner.server, "grant": owner.grant, "plan": plan, "names": names,
                   "choice": choice, "verb": BULK_VERBS[choice], "filters": filters,
                   "not_shown": not_shown,
                   "limit": [(k, request.POST.get(k, "")) for k in ("max", "window", "scope", "counter")]
                   if choice == "limit" else None,
                   "reasons": sorted({c.after.reason for c in plan.changed if c.after.reason})}
        template = "dashboard/builder/_bulk_confirm.html" if request.htmx else "dashboard/builder/bulk_confirm.html"
        return render(request, template, context)
    draft = drafts.load(request.session, owner.server, owner.grant)
    drafts.store(request.session, owner.server, owner.grant, draft, plan.document)
    drafts.set_selection(request.session, owner.server, owner.grant, set())
    done = (f"{BULK_VERBS[choice]}: {counted(len(plan.changed), 'tool')} changed in "
            f"the draft ({counted(plan.rules_written, 'rule')} written, "
            f"{plan.rules_removed} removed); not in force until you save")
    if not request.htmx:
        messages.success(request, done)
    return _after_edit(request, owner, bulk_done=done)


def _plan(request, owner: Owner, choice: str, names: list[str]) -> policy_edit.BulkPlan | HttpResponse:
    draft = drafts.load(request.session, owner.server, owner.grant)
    facts = [tool_facts(t) for t in live_tools(owner.server)]
    try:
        if choice == "limit":
            form = BulkLimitForm(request.POST)
            if not form.is_valid():
                return _refused(request, owner, "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
            data = form.cleaned_data
            return policy_edit.plan_limits(draft.document, facts, names, data["max"], data["window"],
                                           data["scope"], data["counter"])
        reason = request.POST.get("reason", "").strip()[:500] if choice == "deny" else ""
        return policy_edit.plan_actions(draft.document, facts, names, choice, reason)
    except PolicyInvalid as exc:
        return _refused(request, owner, "; ".join(str(p) for p in exc.problems))


def _refused(request, owner: Owner, text: str) -> HttpResponse:
    text = f"not changed: {text}"
    if request.htmx:
        return HttpResponse(text, status=400, content_type="text/plain")
    messages.error(request, text)
    return redirect(owner.url("builder"))


def _nothing_selected(request, owner):
    return _refused(request, owner, "select some tools first (tick them, or 'select all shown')")


@login_required
def preview(request, slug):
    owner = Owner(request, slug)
    draft = drafts.load(request.session, owner.server, owner.grant)
    active = draft.active.document if draft.active else None
    context = {"owner": owner, "server": owner.server, "draft": draft,
               "text": canonical_json(draft.document), "diff": policy_edit.text_diff(active, draft.document),
               "changes": draft.changes(), "replay_form": ReplayForm(),
               "behaviour": behaviour_lines(owner, draft) if draft.dirty else [], **shadow_context(owner)}
    template = "dashboard/builder/_preview.html" if wants_fragment(request) else "dashboard/builder/preview.html"
    return render(request, template, context)


def behaviour_lines(owner: Owner, draft: drafts.Draft) -> list[str]:
    """What the draft changes for calls, tool by tool (grouped), against the version in force."""
    def parsed(document):
        try:
            return parse_policy(document) if document is not None else None
        except PolicyInvalid:
            return None
    facts = [tool_facts(t) for t in live_tools(owner.server)]
    return behaviour_changes(parsed(draft.active.document if draft.active else None), parsed(draft.document), facts,
                             owner.server.slug, owner.grant.name if owner.grant else "")


@require_POST
@staff_required
def shadow(request, slug):
    """Run the draft in shadow on live calls (op=start), or stop it (op=stop). Server policies only."""
    owner = Owner(request, slug)
    if owner.grant is not None:
        messages.error(request, "a grant's rules cannot run in shadow yet: replay them against the call log instead")
    elif request.POST.get("op") == "stop":
        if shadows.end(owner.server, f"stopped by {request.user.get_username()}") is not None:
            messages.info(request, "the shadow run stopped; what it recorded stays on this page until the next one")
    else:
        draft = drafts.load(request.session, owner.server, None)
        try:
            shadows.start(owner.server, draft.document, request.user)
        except PolicyInvalid as exc:
            messages.error(request, "not started: " + "; ".join(str(p) for p in exc.problems))
        else:
            messages.success(request, "the draft now runs in shadow: every live call is decided by it too, never "
                                      "enforced; what it would have done differently shows here")
    return redirect(owner.url("builder"))


def shadow_context(owner: Owner) -> dict:
    """The latest shadow run of the server's policy, for the preview: counts and the last differences."""
    if owner.grant is not None:
        return {}
    latest = ShadowPolicy.objects.filter(server=owner.server).first()
    if latest is None:
        return {}
    kinds = Counter(latest.divergences.values_list("actual", "shadow_kind"))
    return {"shadow": latest, "shadow_seen": shadows.seen(latest), "shadow_pairs": [
        f"{n} {WORDS[a]} → {WORDS[b]}" for (a, b), n in kinds.most_common()],
        "shadow_examples": list(latest.divergences.all()[:10])}


def replay(request, slug):
    """What the draft would have done with recorded calls (the last N, or a time range), beside the policy in
    force: counts by change and the affected calls, linked."""
    owner = Owner(request, slug)
    draft = drafts.load(request.session, owner.server, owner.grant)
    form = ReplayForm(request.GET or None)
    result = None
    if form.is_valid():
        data = form.cleaned_data
        result = replaying.replay_draft(owner.server, draft.document, grant=owner.grant,
                                        last=None if data["since"] else data["last"] or replaying.DEFAULT_LAST,
                                        since=data["since"], until=data["until"])
    context = {"owner": owner, "server": owner.server, "draft": draft, "form": form, "replay": result}
    template = "dashboard/builder/_replay.html" if wants_fragment(request) else "dashboard/builder/replay.html"
    return render(request, template, context)


@require_POST
@staff_required
def save(request, slug):
    owner = Owner(request, slug)
    draft = drafts.load(request.session, owner.server, owner.grant)
    if draft.dirty:
        changes = draft.changes()
        next_number = (PolicyVersion.objects.filter(server=owner.server, grant=owner.grant)
                       .order_by("-number").values_list("number", flat=True).first() or 0) + 1
        who = f"grant {owner.grant.name}'s calls to {owner.server.slug}" if owner.grant else \
            f"every grant's calls to {owner.server.slug}"
        consequences = [f"The draft's {counted(len(changes), 'change')} become version "
                        f"v{next_number} and decide {who} from the next call."]
        if owner.grant is None:
            others = grant_rules.on_server(owner.server)
            layered = [g for g in others if not g.copy]
            copies = [g.grant.name for g in others if g.copy]
            if layered:
                consequences.append(f"{counted(len(layered), 'grant')} with rules of "
                                    f"{'their' if len(layered) != 1 else 'its'} own get it too, with those rules on "
                                    f"top: {', '.join(g.grant.name for g in layered)}.")
            if copies:
                consequences.append(f"It does not reach {', '.join(copies)}: a complete copy of an older policy "
                                    "decides their calls.")
        if draft.stale:
            consequences.append(f"The active version changed since this draft started (v{draft.base} → "
                                f"v{draft.active.number}): saving replaces it.")
        question = Question(
            f"Save {counted(len(changes), 'change')} as v{next_number}?", consequences,
            f"Save v{next_number}", owner.url("builder"), danger=False, details=behaviour_lines(owner, draft) + changes,
            note="Why this change? (kept with the version, shown in its history)",
            undo=f"Undo: roll back to v{draft.active.number} from the history." if draft.active else "",
            hidden=owner.hidden)
        if (answer := ask_first(request, question)) is not None:
            return answer
    try:
        result = policies.apply(owner.server, draft.document, grant=owner.grant, user=request.user,
                                note=request.POST.get("note", ""))
    except PolicyInvalid as exc:
        messages.error(request, "not saved: " + "; ".join(str(p) for p in exc.problems))
        return redirect(owner.url("builder"))
    drafts.discard(request.session, owner.server, owner.grant)
    if owner.grant is None and (ended := shadows.end(owner.server, f"saved as v{result.version.number} by "
                                                                   f"{request.user.get_username()}")) is not None:
        messages.info(request, f"the shadow run ended: {ended.divergences.count()} live calls would have been "
                               "decided differently")
    if result.created:
        messages.success(request, f"activated version v{result.version.number}: {result.version.summary}")
    else:
        messages.info(request, f"unchanged: identical to active version v{result.version.number}")
    for warning in result.warnings:
        messages.warning(request, warning)
    return redirect(owner.url("builder"))


@require_POST
@staff_required
def discard(request, slug):
    owner = Owner(request, slug)
    draft = drafts.load(request.session, owner.server, owner.grant)
    if draft.stored and draft.dirty:
        changes = draft.changes()
        kept = f"The active version v{draft.active.number} stays in force." if draft.active else \
            "Nothing was ever saved: there stays no active policy."
        question = Question(
            f"Discard the draft's {counted(len(changes), 'change')}?",
            [f"The changes below are lost: they were never saved. {kept}"], "Discard the draft", owner.url("builder"),
            details=changes, hidden=owner.hidden)
        if (answer := ask_first(request, question)) is not None:
            return answer
    drafts.discard(request.session, owner.server, owner.grant)
    if owner.grant is None:
        shadows.end(owner.server, f"draft discarded by {request.user.get_username()}")
    messages.info(request, "draft discarded: showing the active version")
    return redirect(owner.url("builder"))


@staff_required
def start_from_template(request, slug):
    """The templates (GET), or load one into the draft (POST; asking first when that replaces unsaved changes)."""
    owner = Owner(request, slug)
    if request.method != "POST":
        return render(request, "dashboard/builder/templates.html", {
            "owner": owner, "server": owner.server, "grant": owner.grant,
            "templates": policy_templates.all_templates()})
    template = policy_templates.by_key(request.POST.get("template", ""))
    if template is None:
        messages.error(request, "not changed: choose one of the templates shown")
        return redirect(owner.url("builder"))
    draft = drafts.load(request.session, owner.server, owner.grant)
    if draft.stored and draft.dirty:
        changes = draft.changes()
        question = Question(
            f"Replace the draft's {counted(len(changes), 'unsaved change')}?",
            [f"The draft becomes the template “{template.title}”: {template.says}.",
             "The changes below are lost; nothing is in force until you save."],
            f"Start from “{template.title}”", owner.url("builder"), details=changes,
            hidden={"template": template.key, **owner.hidden})
        if (answer := ask_first(request, question)) is not None:
            return answer
    drafts.store(request.session, owner.server, owner.grant, draft, template.document)
    messages.success(request, f"the draft is now the template “{template.title}”: check it, change what you need, "
                              "then save")
    return redirect(owner.url("builder"))


@require_POST
@staff_required
def import_policy(request, slug):
    owner = Owner(request, slug)
    form = ImportForm(request.POST, request.FILES)
    problems: list[str] = []
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            document = policy_edit.normalize(load_policy_text(upload.read().decode("utf-8")))
        except UnicodeDecodeError:
            problems = [f"{upload.name}: (document): the file is not UTF-8 text"]
        except PolicyInvalid as exc:
            problems = [f"{upload.name}: {p.pointer or '(document)'}: {p.message}" for p in exc.problems]
        else:
            draft = drafts.load(request.session, owner.server, owner.grant)
            drafts.store(request.session, owner.server, owner.grant, draft, document)
            messages.success(request, f"imported {upload.name} into the draft: check the changes, then save")
            return redirect(owner.url("builder"))
    else:
        problems = [f"{k}: {' '.join(v)}" for k, v in form.errors.items()]
    state = _state(request, owner, filters={})
    context = page_context(owner, state, import_form=form, import_problems=problems)
    return render(request, "dashboard/builder/page.html", context, status=400)


@login_required
def export(request, slug):
    owner = Owner(request, slug)
    if request.GET.get("draft"):
        document, label = drafts.load(request.session, owner.server, owner.grant).document, "draft"
    else:
        version = policies.active_version(owner.server, owner.grant)
        if version is None:
            raise Http404("no active policy")
        document, label = version.document, f"v{version.number}"
    response = HttpResponse(policy_edit.text(document), content_type="application/json; charset=utf-8")
    owner_name = owner.server.slug + (f"-{owner.grant.name}" if owner.grant else "")
    response["Content-Disposition"] = f'attachment; filename="{owner_name}-policy-{label}.json"'
    return response


@login_required
def versions(request, slug):
    owner = Owner(request, slug)
    rows = list(PolicyVersion.objects.filter(server=owner.server, grant=owner.grant)
                .select_related("created_by").order_by("-number"))
    numbers = [v.number for v in rows]
    a, b = _pair(request, numbers)
    diff = changes = None
    if a and b:
        docs = {v.number: v.document for v in rows if v.number in (a, b)}
        diff = policy_edit.text_diff(docs[a], docs[b])
        changes = summarize(docs[a], docs[b])
    return render(request, "dashboard/builder/versions.html",
                  {"owner": owner, "server": owner.server, "grant": owner.grant, "versions": rows,
                   "a": a, "b": b, "diff": diff, "changes": changes})


def _pair(request, numbers: list[int]) -> tuple[int | None, int | None]:
    def pick(name, fallback):
        raw = request.GET.get(name, "")
        return int(raw) if raw.isdigit() and int(raw) in numbers else fallback

    if len(numbers) < 2:
        return None, None
    return pick("a", numbers[1]), pick("b", numbers[0])


@require_POST
@staff_required
def rollback(request, slug, number):
    owner = Owner(request, slug)
    target = PolicyVersion.objects.filter(server=owner.server, grant=owner.grant, number=number).first()
    if target is None:
        raise Http404(f"no version v{number}")
    active = policies.active_version(owner.server, owner.grant)
    if active is not None and active.number != number:
        changes = summarize(active.document, target.document)
        draft = drafts.load(request.session, owner.server, owner.grant)
        consequences = [f"v{number} (from {target.created_at:%Y-%m-%d %H:%M}) decides calls again from the next "
                        f"call, saved as a new version; v{active.number} stays in the history."]
        if draft.stored and draft.dirty:
            consequences.append("Your unsaved draft is dropped.")
        question = Question(
            f"Roll back to v{number}?", consequences, f"Roll back to v{number}", owner.url("versions"),
            danger=False, details=changes or ["identical documents"],
            undo=f"Undo: roll back to v{active.number} from this history.",
            hidden=owner.hidden)
        if (answer := ask_first(request, question)) is not None:
            return answer
    try:
        result = policies.rollback(owner.server, number, grant=owner.grant, user=request.user)
    except LookupError as exc:
        raise Http404(str(exc)) from None
    drafts.discard(request.session, owner.server, owner.grant)
    if result.created:
        messages.success(request, f"rolled back: v{number} is active again as v{result.version.number}")
    else:
        messages.info(request, f"v{number} is already what is active (v{result.version.number})")
    return redirect(owner.url("versions"))
