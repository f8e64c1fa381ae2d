"""Channels routes: the MCP endpoint and Django (dashboard, static files); websockets for the dashboard."""

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.urls import re_path

from gateway.edge.endpoint import McpEndpoint
from gateway.edge.health import Health
from gateway.edge.legacy_sse import LegacySseEndpoint


def http_routes(django_app):
    return [
        re_path(r"^healthz$", Health(ready=False)),
        re_path(r"^readyz$", Health(ready=True)),
        re_path(r"^mcp/(?P<slug>[a-z0-9][a-z0-9-]{0,49})/?$", McpEndpoint()),
        re_path(r"^mcp/(?P<slug>[a-z0-9][a-z0-9-]{0,49})/(?P<leg>sse|messages)/?$", LegacySseEndpoint()),
        # Static files are served by Django itself (a handful of small files): no second server to run.
        # The catch-all must be re_path(r"^"): in a Channels URLRouter path("") only matches "".
        re_path(r"^", ASGIStaticFilesHandler(django_app)),
    ]


def websocket_routes():
    from dashboard.consumers import LiveConsumer  # imported here: this function is the dashboard's part of the routing

    return [re_path(r"^ws/live/$", LiveConsumer.as_asgi())]
