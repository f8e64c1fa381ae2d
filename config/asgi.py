"""ASGI entry point served by daphne: HTTP to Django (and the MCP endpoint), websockets to the dashboard."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()  # sets Django up before anything imports models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from config.routing import http_routes, websocket_routes  # noqa: E402
from gateway.telemetry import tracing  # noqa: E402

tracing.configure()  # only when an OTLP endpoint is configured

application = ProtocolTypeRouter(
    {
        "http": URLRouter(http_routes(django_asgi_app)),
        "websocket": OriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_routes())), settings.PORTCULLIS_ALLOWED_ORIGINS
        ),
    }
)
