"""The overview, the dashboard's landing page: what agents did in the last hour or day (calls by decision over
time, top tools, top refused, per grant), approvals waiting, upstream health, tools changed since approved, and
while the gateway is not yet controlling an agent, the checklist that gets it there.

Every figure is a COUNT over the call log's created_at index, grouped in SQL; nothing is cached."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import Count, F
from django.db.models.expressions import RawSQL
from django.urls import reverse

from dashboard.wording import counted
from gateway.calls import approvals
from gateway.models import Call, Grant, PolicyVersion, Server, Tool

PERIODS = {"hour": (timedelta(hours=1), timedelta(minutes=5)), "day": (timedelta(days=1), timedelta(hours=1))}
DECISIONS = ("allow", "approve", "deny")  # drawn bottom to top; "hide" counts as deny (a refusal)
TOP = 8


@dataclass(frozen=True)
class Bucket:
    start: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Step:
    title: str
    done: bool
    detail: str
    link: str
    action: str


def buckets(since: datetime, now: datetime, width: timedelta) -> list[Bucket]:
    """Calls per bucket and decision in one GROUP BY. The bucket is worked out by the database's own date
    arithmetic: Django's Trunc functions run as Python callbacks per row on SQLite (0.4 s for a day's 86,400 calls)."""
    seconds = int(width.total_seconds())
    if connection.vendor == "sqlite":
        index = RawSQL("CAST((julianday(created_at) - julianday(%s)) * 86400 / %s AS INTEGER)",
                       (since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"), seconds))
    else:
        index = RawSQL("FLOOR(EXTRACT(EPOCH FROM (created_at - %s)) / %s)", (since, seconds))
    rows = (Call.objects.filter(created_at__gte=since).annotate(bucket=index)
            .values("bucket", "decision").annotate(n=Count("id")).order_by())
    starts = [since + width * i for i in range(int((now - since) / width) + 1)]
    out = [dict.fromkeys(DECISIONS, 0) for _ in starts]
    for row in rows:
        i = min(max(int(row["bucket"]), 0), len(starts) - 1)
        decision = "deny" if row["decision"] == "hide" else row["decision"]
        out[i][decision] = out[i].get(decision, 0) + row["n"]
    return [Bucket(start, counts) for start, counts in zip(starts, out, strict=True)]


def tops(since: datetime) -> dict[str, list[tuple[str, str, int]]]:
    """Most called tools, most refused tools and calls per grant over the period, exact, in few index scans."""
    def ranked(rows, key):
        return [(r["server_slug"], r[key], r["n"]) for r in sorted(rows, key=lambda r: (-r["n"], r[key],
                                                                                         r["server_slug"]))[:TOP]]

    period = Call.objects.filter(created_at__gte=since)
    refused = (period.filter(outcome=Call.Outcome.REFUSED).values("server_slug", "tool_name")
               .annotate(n=Count("id")).order_by())
    # By grant id: the (grant, created_at) index answers it alone; names from the grants (deleted ones keep theirs).
    counts = dict(period.values_list("grant").annotate(n=Count("id")).order_by())
    names = dict(Grant.objects.filter(pk__in=[g for g in counts if g]).values_list("pk", "name"))
    per_grant = sorted(((names.get(g, "") if g else "", n) for g, n in counts.items()), key=lambda p: (-p[1], p[0]))
    return {"top_tools": most_called(period), "top_refused": ranked(refused, "tool_name"),
            "per_grant": [("", name, n) for name, n in per_grant[:TOP]]}


def most_called(period) -> list[tuple[str, str, int]]:
    """The TOP (server, tool) pairs by calls. Counting by tool name alone reads only the (tool_name, created_at)
    index. With one server in the period that is the answer; otherwise a name's count bounds each of its servers'
    counts, so the busiest names are split by server, a batch at a time, until no unsplit name could still rank."""
    by_name = sorted(period.values("tool_name").annotate(n=Count("id")).order_by().values_list("tool_name", "n"),
                     key=lambda item: (-item[1], item[0]))
    servers = list(period.values_list("server", flat=True).distinct()[:2])
    if len(servers) == 1:
        slug = period.order_by("-created_at").values_list("server_slug", flat=True)[0]
        return [(slug, name, n) for name, n in by_name[:TOP]]
    pairs: list[tuple[str, str, int]] = []
    split = 0
    while split < len(by_name):
        batch = [name for name, _ in by_name[split:split + 8 * TOP]]
        split += len(batch)
        rows = period.filter(tool_name__in=batch).values("server_slug", "tool_name").annotate(n=Count("id"))
        pairs = sorted(pairs + [(r["server_slug"], r["tool_name"], r["n"]) for r in rows.order_by()],
                       key=lambda p: (-p[2], p[1], p[0]))
        floor = pairs[TOP - 1][2] if len(pairs) >= TOP else 0
        if split >= len(by_name) or by_name[split][1] < floor:
            break
    return pairs[:TOP]


def checklist() -> list[Step]:
    """From an empty gateway to "my agent is controlled": each step done or the link that does it."""
    server = Server.objects.order_by("created_at").first()
    tools = Tool.objects.filter(gone_at__isnull=True).count()
    policy = PolicyVersion.objects.filter(grant__isnull=True, is_active=True).select_related("server").first()
    grant = Grant.objects.filter(revoked_at__isnull=True).order_by("created_at").first()
    call = Call.objects.order_by("-created_at").first()
    slug = server.slug if server else ""
    return [
        Step("Register an MCP server", server is not None,
             f"{Server.objects.count()} registered" if server else "the server your agent should reach through "
                                                                     "Portcullis (stdio, HTTP or SSE)",
             reverse("dashboard:server_new"), "Register a server"),
        Step("List its tools", tools > 0, f"{counted(tools, 'tool')} in the catalogue, each "
                                          "classified by risk" if tools else
             "Portcullis lists them and classifies each by risk",
             reverse("dashboard:server", kwargs={"slug": slug}) if slug else "", "Open the server"),
        Step("Write its policy", policy is not None,
             f"{policy.server.slug} v{policy.number} is in force" if policy else
             "until there is one, every call is refused; start from a template",
             reverse("dashboard:builder", kwargs={"slug": slug}) if slug else "", "Open the policy builder"),
        Step("Give the agent a grant", grant is not None,
             f"grant {grant.name}" if grant else "a token for the agent, with its configuration ready to paste",
             reverse("dashboard:grant_new"), "Create a grant"),
        Step("See its first call", call is not None,
             f"last call {call.tool_name} ({call.decision})" if call else
             "connect the agent with the grant's configuration and make a call",
             reverse("dashboard:calls"), "Open the call log"),
    ]


def context(period: str, now: datetime) -> dict:
    span, width = PERIODS.get(period, PERIODS["hour"])
    period = period if period in PERIODS else "hour"
    since = (now - span).replace(second=0, microsecond=0)
    series = buckets(since, now, width)
    totals = dict.fromkeys(DECISIONS, 0)
    for bucket in series:
        for key, n in bucket.counts.items():
            totals[key] = totals.get(key, 0) + n
    steps = checklist()
    return {
        "period": period, "totals": totals, "total": sum(totals.values()),
        "width_minutes": int(width.total_seconds() // 60),
        **tops(since),
        "pending": approvals.pending_count(now),
        "servers": list(Server.objects.order_by("slug").only("slug", "name", "health", "last_error", "enabled",
                                                              "last_contact_at")),
        "changed": list(Tool.objects.filter(gone_at__isnull=True).exclude(approved_hash="")
                        .exclude(approved_hash=F("definition_hash")).select_related("server")
                        .order_by("-last_seen_at")[:TOP]),
        "steps": steps, "controlled": all(s.done for s in steps), "chart": chart(series, width),
        "next_step": next((i for i, step in enumerate(steps) if not step.done), None),
    }


CHART_W, CHART_H, AXIS = 720, 150, 18


def chart(series: list[Bucket], width: timedelta) -> dict:
    """The geometry of the stacked bars (an SVG drawn by the template; no chart library)."""
    peak = max([b.total for b in series] + [1])
    step = CHART_W / max(len(series), 1)
    bars = []
    for i, bucket in enumerate(series):
        y, segments = CHART_H, []
        for decision in DECISIONS:
            n = bucket.counts.get(decision, 0)
            h = round(n / peak * (CHART_H - 4), 1)
            if n:
                y -= h
                segments.append({"decision": decision, "y": round(y, 1), "h": max(h, 1), "n": n})
        end = bucket.start + width
        bars.append({"x": round(i * step + 1, 1), "w": round(max(step - 2, 1), 1), "segments": segments,
                     "title": f"{bucket.start:%H:%M}–{end:%H:%M} UTC: " + ", ".join(
                         f"{bucket.counts.get(d, 0)} {d}" for d in DECISIONS),
                     "label": f"{bucket.start:%H:%M}" if i % max(len(series) // 6, 1) == 0 else ""})
    return {"bars": bars, "w": CHART_W, "h": CHART_H, "full_h": CHART_H + AXIS, "peak": peak, "axis_y": CHART_H + 13}
