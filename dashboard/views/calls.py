"""The call log: newest first, filters, search, keyset pages; a call's detail."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone

from dashboard import call_facts, rule_links
from dashboard.forms import CallFilterForm
from dashboard.partials import wants_fragment
from gateway.calls import audit_stream, call_log
from gateway.calls.call_log import filtered, grouped, page
from gateway.models import Call, Grant, Server


@login_required
def call_list(request):
    form = CallFilterForm(request.GET)
    data = form.cleaned_data if form.is_valid() else {}
    flt = call_facts.call_filter(data, timezone.now())
    result = page(flt, data.get("before", ""))
    params = request.GET.copy()
    params.pop("before", None)
    export = params.urlencode()
    params["before"] = result.next_cursor
    context = {"form": form, "calls": result.rows, "next_query": params.urlencode() if result.next_cursor else "",
               "servers": Server.objects.values_list("slug", flat=True),
               "grants": Grant.objects.values_list("name", flat=True), "first_page": not data.get("before"),
               "repeats": grouped(result.rows) if data.get("group") else None, "export_query": export,
               "matching": filtered(flt).count() if not data.get("before") else None,
               "filtered": any(v for k, v in data.items() if k != "before")}
    if wants_fragment(request):
        return render(request, "dashboard/calls/_page.html", context)
    context["keeping"] = audit_stream.status()
    return render(request, "dashboard/calls/list.html", context)


def rule_link(call: Call) -> str:
    """Where the matched rule is edited in the builder ('' when the server is gone or there is no rule)."""
    if not call.rule or not Server.objects.filter(slug=call.server_slug).exists():
        return ""
    return rule_links.rule_link(call.rule, call.server_slug)


@login_required
def call_detail(request, pk):
    call = get_object_or_404(Call.objects.select_related("grant", "server", "policy_version", "approval"), pk=pk)
    return render(request, "dashboard/calls/detail.html", {
        "call": call, "rule_link": rule_link(call), "kind": call.what_happened_text,
        "counters": call_facts.counters_in_words(call, timezone.now())})


@login_required
def call_export(request):
    """Every call the current filter matches, as CSV or JSON Lines (arguments as stored: redacted)."""
    form = CallFilterForm(request.GET)
    if not form.is_valid():
        return HttpResponse("not exported: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()),
                            status=400, content_type="text/plain")
    kind = "jsonl" if request.GET.get("format") == "jsonl" else "csv"
    lines = call_log.export_lines(call_facts.call_filter(form.cleaned_data, timezone.now()), kind)
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson; charset=utf-8" if kind == "jsonl"
                                     else "text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="portcullis-calls-{timezone.now():%Y%m%d-%H%M%S}.{kind}"'
    return response
