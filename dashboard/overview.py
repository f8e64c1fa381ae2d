"""The overview, the dashboard's landing page: what agents did in the last hour or day (calls by decision over
time, top tools, top refused, per grant), approvals waiting, upstream health, tools changed since approved, and
while the gateway is not yet controlling an agent, the checklist that gets it there.

Every figure is a COUNT over the call log's created_at index, grouped in SQL; nothing is cached."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, F
from django.db.models.functions import TruncHour, TruncMinute
from django.urls import reverse

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
    trunc = TruncMinute if width < timedelta(hours=1) else TruncHour
    rows = (Call.objects.filter(created_at__gte=since).annotate(at=trunc("created_at"))
            .values("at", "decision").annotate(n=Count("id")).order_by())
    starts = [since + width * i for i in range(int((now - since) / width) + 1)]
    out = {start: dict.fromkeys(DECISIONS, 0) for start in starts}
    for row in rows:
        index = min(int((row["at"] - since) / width), len(starts) - 1) if row["at"] >= since else 0
        decision = "deny" if row["decision"] == "hide" else row["decision"]
        out[starts[index]][decision] = out[starts[index]].get(decision, 0) + row["n"]
    return [Bucket(start, counts) for start, counts in out.items()]


def top(since: datetime, field: str, refused: bool = False) -> list[tuple[str, str, int]]:
    qs = Call.objects.filter(created_at__gte=since)
    if refused:
        qs = qs.filter(outcome=Call.Outcome.REFUSED)
    rows = qs.values("server_slug", field).annotate(n=Count("id")).order_by("-n", field)[:TOP]
    return [(r["server_slug"], r[field], r["n"]) for r in rows]


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
        Step("List its tools", tools > 0, f"{tools} tool{'s' if tools != 1 else ''} in the catalogue, each "
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
    since = now - span
    since = since.replace(second=0, microsecond=0)
    series = buckets(since, now, width)
    totals = dict.fromkeys(DECISIONS, 0)
    for bucket in series:
        for key, n in bucket.counts.items():
            totals[key] = totals.get(key, 0) + n
    steps = checklist()
    return {
        "period": period, "since": since, "series": series, "totals": totals, "total": sum(totals.values()),
        "peak": max([b.total for b in series] + [1]), "width_minutes": int(width.total_seconds() // 60),
        "top_tools": top(since, "tool_name"), "top_refused": top(since, "tool_name", refused=True),
        "per_grant": top(since, "grant_name"),
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
