"""Content-Security-Policy for every response: scripts, styles and connections from this origin only; and a 503 page
when the database is locked or unavailable (DatabaseBusyMiddleware).

The dashboard has no inline script or style (htmx's own indicator style is switched off in base.html), so a
description that sneaks markup past escaping still cannot run or restyle anything.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.template.loader import render_to_string

log = logging.getLogger("portcullis.dashboard")

BUSY_PAGE = "dashboard/database_busy.html"
BUSY_TEXT = "dashboard/database_busy.txt"
RETRY_AFTER_S = 5

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "object-src 'none'",
])


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


class DatabaseBusyMiddleware:
    """A locked or unreachable database answers 503 saying what happened and what to do, not a 500.

    SQLite's write lock held past the busy timeout (a long command, a backup, a burst of calls) or a database that
    is down raises OperationalError (InterfaceError: a connection that is gone) in the view. The page is rendered
    without a request context: the usual layout reads the session and the pending count, from the same database.
    htmx requests get the short text static/js/portcullis.js puts in its error box."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        log.warning("database busy or unavailable on %s %s: %s", request.method, request.path, exception)
        if request.headers.get("HX-Request") == "true":
            body, content_type = render_to_string(BUSY_TEXT).strip() + "\n", "text/plain; charset=utf-8"
        else:
            reload = request.get_full_path() if request.method == "GET" else None
            body, content_type = render_to_string(BUSY_PAGE, {"reload": reload}), "text/html; charset=utf-8"
        response = HttpResponse(body, status=503, content_type=content_type)
        response["Retry-After"] = str(RETRY_AFTER_S)
        response["Cache-Control"] = "no-store"
        return response
