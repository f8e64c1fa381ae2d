"""GET /metrics: this process's Prometheus metrics (metrics.py), off the public path by default. A scrape needs the
bearer token PORTCULLIS_METRICS_TOKEN or an address in PORTCULLIS_METRICS_ALLOW (addresses or networks, as the
gateway sees them: behind a reverse proxy on this host every client is the proxy, so use the token there); with
neither set, metrics are off."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.telemetry.metrics import REGISTRY


def _allowed_address(address: str) -> bool:
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(client in ipaddress.ip_network(net, strict=False) for net in settings.PORTCULLIS_METRICS_ALLOW)


def _refused(status: int, text: str) -> HttpResponse:
    response = HttpResponse(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="portcullis-metrics"'
    return response


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.PORTCULLIS_METRICS_TOKEN
    if not token and not settings.PORTCULLIS_METRICS_ALLOW:
        return _refused(404, "metrics are off: set PORTCULLIS_METRICS_TOKEN (scrapers send it as a bearer token) "
                             "or PORTCULLIS_METRICS_ALLOW (the scrapers' addresses)")
    sent = request.headers.get("Authorization", "")
    if token and sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].encode(), token.encode()):
        pass
    elif not _allowed_address(request.META.get("REMOTE_ADDR", "")):
        if token:
            return _refused(401, "a scrape needs the metrics bearer token")
        return _refused(403, "this address may not scrape the metrics")
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
