"""The landing page: what agents did lately, what needs a person, and (until an agent is controlled) what to do next."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone

from dashboard import overview as facts


@login_required
def overview(request):
    return render(request, "dashboard/overview/page.html",
                  facts.context(request.GET.get("period", "hour"), timezone.now()))
