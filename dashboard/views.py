from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.shortcuts import render

from gateway.models import Server


@login_required
def home(request):
    servers = Server.objects.annotate(
        tool_count=Count("tools", filter=Q(tools__gone_at__isnull=True)),
    ).order_by("slug")
    return render(request, "dashboard/home.html", {"servers": servers})
