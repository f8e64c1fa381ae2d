"""The call log: newest first, filters, search, keyset pages; a call's detail."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from dashboard import rule_links
from dashboard.forms import CallFilterForm
from dashboard.partials import wants_fragment
from gateway.calls.call_log import CallFilter, page
from gateway.models import Call, Grant, Server


@login_required
def call_list(request):
    form = CallFilterForm(request.GET)
    data = form.cleaned_data if form.is_valid() else {}
    flt = CallFilter(server=data.get("server", ""), grant=data.get("grant", ""), tool=data.get("tool", ""),
                     decision=data.get("decision", ""), outcome=data.get("outcome", ""), search=data.get("q", ""))
    result = page(flt, data.get("before", ""))
    params = request.GET.copy()
    params.pop("before", None)
    params["before"] = result.next_cursor
    context = {"form": form, "calls": result.rows, "next_query": params.urlencode() if result.next_cursor else "",
               "servers": Server.objects.values_list("slug", flat=True),
               "grants": Grant.objects.values_list("name", flat=True), "first_page": not data.get("before")}
    template = "dashboard/calls/_page.html" if wants_fragment(request) else "dashboard/calls/list.html"
    return render(request, template, context)


def rule_link(call: Call) -> str:
    """Where the matched rule is edited in the builder ('' when the server is gone or there is no rule)."""
    if not call.rule or not Server.objects.filter(slug=call.server_slug).exists():
        return ""
    return rule_links.rule_link(call.rule, call.server_slug)


@login_required
def call_detail(request, pk):
    call = get_object_or_404(Call.objects.select_related("grant", "server", "policy_version", "approval"), pk=pk)
    return render(request, "dashboard/calls/detail.html", {"call": call, "rule_link": rule_link(call)})
