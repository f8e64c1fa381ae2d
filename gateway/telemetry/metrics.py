"""Prometheus metrics of this gateway process, served at /metrics (scrape.py) with the `prometheus_client` library.

Per process: each gateway process counts what it handled and is scraped at its own address (with several
processes, `sum()` across them; a load balancer's address would give a different process at each scrape). Counts
move with the audit rows (gateway/calls/audit.py: a row settled is a call counted, by server, tool, decision and
outcome), so the processes' sums equal the audit table's. Gauges of the whole cluster (approvals pending) are
read from the database at scrape time and are the same on every process: take `max()` across them.

Labels are bounded: the tool label is the catalogued tool's (or action's) name; a call of a name the catalogue
does not know is counted as "(unknown)"; a governed read is counted by its method.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

UNKNOWN_TOOL = "(unknown)"
READS = ("resources/", "prompts/", "completion/")

CALLS = Counter("portcullis_calls", "Calls recorded in the audit log, by outcome once settled",
                ["server", "tool", "decision", "outcome"], registry=REGISTRY)
LIMITS_HIT = Counter("portcullis_limit_hits", "Calls refused because a limit was reached", ["server", "tool"],
                     registry=REGISTRY)
AUDIT_FAILURES = Counter("portcullis_audit_write_failures", "Audit rows that could not be written (the call was "
                         "not forwarded)", registry=REGISTRY)
GATEWAY_SECONDS = Histogram("portcullis_gateway_seconds", "Time the gateway itself added to a tools/call: the "
                            "whole request less the upstream's time and any wait for approval", ["server"],
                            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                            registry=REGISTRY)
UPSTREAM_SECONDS = Histogram("portcullis_upstream_seconds", "Time the upstream took to answer a tools/call",
                             ["server"], buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120),
                             registry=REGISTRY)
APPROVAL_WAIT = Histogram("portcullis_approval_wait_seconds", "How long held calls waited for a person's decision",
                          ["server", "decided"], buckets=(1, 5, 15, 30, 60, 300, 900, 3600), registry=REGISTRY)
UPSTREAM_RESTARTS = Counter("portcullis_upstream_restarts", "Upstream connections (stdio: processes) restarted "
                            "after they died", ["server"], registry=REGISTRY)


def tool_label(tool_name: str, refusal: str) -> str:
    if refusal == "unknown_tool":
        return UNKNOWN_TOOL
    if tool_name.startswith(READS):
        return tool_name.split(" ", 1)[0]
    return tool_name


def call_recorded(server: str, tool: str, decision: str, outcome: str, refusal: str = "") -> None:
    CALLS.labels(server, tool, decision, outcome).inc()
    if refusal == "limit":
        LIMITS_HIT.labels(server, tool).inc()


# What this process holds, handed in by the protocol layer (gateway/protocol/sessions.py), which sits above this one:
# () -> (agent sessions per server, upstream connections per server, [(server, shared link alive)]).
_live: Callable[[], tuple[dict[str, int], dict[str, int], list[tuple[str, bool]]]] | None = None


def provide_live(source: Callable[[], tuple[dict[str, int], dict[str, int], list[tuple[str, bool]]]]) -> None:
    global _live
    _live = source


class _Live:
    """What is read when scraped: this process's agent sessions and upstream connections, each server's health
    as this process sees it, and the cluster's pending approvals (from the database)."""

    def collect(self):
        sessions_per_server, upstream_counts, shared = _live() if _live is not None else ({}, {}, [])
        sessions = GaugeMetricFamily("portcullis_agent_sessions", "Agent sessions this process serves",
                                     labels=["server"])
        for slug, count in sorted(sessions_per_server.items()):
            sessions.add_metric([slug], count)
        yield sessions
        upstreams = GaugeMetricFamily("portcullis_upstream_connections", "Upstream connections (stdio: processes) "
                                      "this process holds", labels=["server"])
        for slug, count in sorted(upstream_counts.items()):
            upstreams.add_metric([slug], count)
        yield upstreams
        up = GaugeMetricFamily("portcullis_upstream_up", "1 if this process's shared connection to the server is "
                               "alive, 0 if it died and has not come back", labels=["server"])
        for slug, alive in shared:
            up.add_metric([slug], 1 if alive else 0)
        yield up
        yield _pending_approvals()


def _pending_approvals() -> GaugeMetricFamily:
    from django.db.models import Count

    from gateway.models import Approval

    pending = GaugeMetricFamily("portcullis_approvals_pending", "Held calls waiting for a person's decision, in the "
                                "whole gateway (the same on every process: use max())", labels=["server"])
    rows = (Approval.objects.filter(state=Approval.State.PENDING).values("server__slug")
            .annotate(n=Count("id")).values_list("server__slug", "n"))
    for slug, count in sorted(rows, key=lambda r: r[0] or ""):
        pending.add_metric([slug or ""], count)
    return pending


REGISTRY.register(_Live())
