"""Channels routes. The MCP endpoint and the dashboard's websocket register here as their issues land."""

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.urls import re_path


def http_routes(django_app):
    # Static files are served by Django itself (a handful of small files for the dashboard): no second
    # server to run. The catch-all must be re_path(r"^"): in a Channels URLRouter path("") only matches "".
    return [re_path(r"^", ASGIStaticFilesHandler(django_app))]


def websocket_routes():
    return []
