"""Channels routes. The MCP endpoint and the dashboard's websocket register here as their issues land."""

from django.urls import re_path


def http_routes(django_app):
    # Catch-all must be re_path(r"^"): in a Channels URLRouter path("") only matches the empty path.
    return [re_path(r"^", django_app)]


def websocket_routes():
    return []
