"""Which requests get a fragment instead of the whole page, and what every response must say about it.

htmx asks for fragments at URLs it also pushes into the history; the browser's Back button then loads the same
URL as a plain navigation. So a fragment is sent only to an htmx request that is not restoring history, every
GET answer varies on `HX-Request` (a cache never hands a fragment to a navigation), and fragments are not stored.
"""

from __future__ import annotations

from django.utils.cache import patch_vary_headers


def wants_fragment(request) -> bool:
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.history_restore_request


class PartialResponsesMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method in ("GET", "HEAD"):
            patch_vary_headers(response, ("HX-Request",))
            if wants_fragment(request):
                response["Cache-Control"] = "no-store"
        return response
