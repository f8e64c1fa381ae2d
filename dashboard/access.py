"""Who may do what on the dashboard: every signed-in user reads, staff users change things."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied


def can_manage(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def can_change_commands(user) -> bool:
    """What a stdio server runs, runs on the gateway's host: superusers and holders of the permission only."""
    return bool(can_manage(user) and (user.is_superuser or user.has_perm("gateway.change_server_command")))


def staff_required(view):
    """For every view that changes something (and the pages that only exist to change something): 403 otherwise."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not can_manage(request.user):
            raise PermissionDenied("only staff users can change settings; ask an administrator")
        return view(request, *args, **kwargs)

    return wrapper

