"""Background jobs: WAITING -> RUNNING -> SUCCESS / FAILED / ABORTED, driven by a clock.

Nothing here sleeps or spawns tasks. ``JobRunner.tick()`` moves every job to where the clock says
it should be; the server calls it from a timer (and before every read), tests call it directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError

FINAL_STATES = frozenset({"SUCCESS", "FAILED", "ABORTED"})
WAITING_SHARE = 0.2  # share of a job's duration spent WAITING before it turns RUNNING

logger = logging.getLogger(__name__)


def date(ts: float | None) -> dict[str, int] | None:
    """TrueNAS encodes datetimes in API answers as {"$date": epoch milliseconds}."""
    return None if ts is None else {"$date": int(ts * 1000)}


@dataclass
class Job:
    id: int
    method: str
    arguments: list[Any]
    description: str = ""
    state: str = "WAITING"
    percent: float = 0.0
    progress_text: str = ""
    result: Any = None
    error: str | None = None
    time_started: float | None = None
    time_finished: float | None = None
    run_at: float | None = None
    end_at: float | None = None
    lane: str | None = None
    on_success: Callable[[Job], Any] | None = field(default=None, repr=False)
    on_progress: Callable[[Job], None] | None = field(default=None, repr=False)
    on_end: Callable[[Job], None] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "arguments": self.arguments,
            "transient": False,
            "description": self.description or None,
            "abortable": not self.finished,
            "logs_path": None,
            "logs_excerpt": None,
            "progress": {"percent": round(self.percent), "description": self.progress_text, "extra": None},
            "result": self.result,
            "error": self.error,
            "exception": None,
            "exc_info": None,
            "state": self.state,
            "time_started": date(self.time_started),
            "time_finished": date(self.time_finished),
        }


class JobRunner:
    """Owns all jobs and the per-lane queue (one running job, at most one queued job per lane)."""

    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self.clock = clock
        self.seconds = max(0.0, seconds)
        self.jobs: dict[int, Job] = {}
        self._lanes: dict[str, dict[str, int | None]] = {}
        self._next_id = 1
        self._ticking = False

    # -- creation -----------------------------------------------------------------------------

    def _new(self, method: str, arguments: list[Any], description: str) -> Job:
        job = Job(id=self._next_id, method=method, arguments=arguments, description=description)
        self._next_id += 1
        self.jobs[job.id] = job
        return job

    def add_finished(self, method: str, arguments: list[Any], started: float, finished: float,
                     state: str = "SUCCESS", result: Any = None, error: str | None = None) -> Job:
        """Record a job that ended before the simulator started (seed history)."""
        job = self._new(method, arguments, "")
        job.state, job.result, job.error = state, result, error
        job.time_started, job.time_finished = started, finished
        job.percent, job.progress_text = 100.0, "Finished" if state == "SUCCESS" else state.title()
        return job

    def submit(self, method: str, arguments: list[Any], *, on_success: Callable[[Job], Any] | None = None,
               on_progress: Callable[[Job], None] | None = None, on_end: Callable[[Job], None] | None = None,
               lane: str | None = None, description: str = "") -> Job:
        """Start a job now, or queue it behind the lane's running job, or join the lane's queued job."""
        self.tick()
        slot = self._lanes.setdefault(lane, {"running": None, "queued": None}) if lane else None
        if slot is not None and slot["queued"] is not None:
            return self.jobs[slot["queued"]]
        job = self._new(method, arguments, description)
        job.on_success, job.on_progress, job.on_end, job.lane = on_success, on_progress, on_end, lane
        if slot is not None and slot["running"] is not None:
            slot["queued"] = job.id
            job.progress_text = f"Waiting for job {slot['running']} to finish"
            return job
        if slot is not None:
            slot["running"] = job.id
        self._schedule(job, self.clock())
        return job

    def _schedule(self, job: Job, start: float) -> None:
        job.run_at = start + self.seconds * WAITING_SHARE
        job.end_at = start + self.seconds
        job.progress_text = "Waiting to start"

    # -- progress -----------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Advance every job to the given time (default: the clock's now)."""
        if self._ticking:  # a job callback reading state must not re-enter (it would finish itself again)
            return
        self._ticking = True
        try:
            self._tick(self.clock() if now is None else now)
        finally:
            self._ticking = False

    def _tick(self, now: float) -> None:
        while True:
            due = [j for j in self.jobs.values() if not j.finished and j.end_at is not None and j.end_at <= now]
            if not due:
                break
            job = min(due, key=lambda j: (j.end_at, j.id))
            self._finish(job, job.end_at or now)
        for job in self.jobs.values():
            if not job.finished and job.run_at is not None and job.run_at <= now:
                self._advance(job, now)

    def _advance(self, job: Job, now: float) -> None:
        if job.state == "WAITING":
            job.state, job.time_started = "RUNNING", job.run_at
        span = max((job.end_at or now) - (job.run_at or now), 1e-9)
        job.percent = min(99.0, 100.0 * (now - (job.run_at or now)) / span)
        job.progress_text = "Running"
        if job.on_progress is not None:
            self._safely(job.on_progress, job)

    def _finish(self, job: Job, at: float) -> None:
        if job.state == "WAITING":
            job.time_started = job.run_at
        job.time_finished = at
        try:
            job.result = job.on_success(job) if job.on_success is not None else None
            job.state, job.percent, job.progress_text = "SUCCESS", 100.0, "Finished"
        except ApiError as exc:
            job.state, job.error = "FAILED", exc.message
        except Exception as exc:  # a simulator bug must fail the job, not the server
            logger.exception("job %s failed", job.id)
            job.state, job.error = "FAILED", f"{type(exc).__name__}: {exc}"
        self._end(job, at)

    def _end(self, job: Job, at: float) -> None:
        if job.on_end is not None:
            self._safely(job.on_end, job)
        slot = self._lanes.get(job.lane) if job.lane else None
        if slot is None:
            return
        if slot["queued"] == job.id:
            slot["queued"] = None
        if slot["running"] == job.id:
            slot["running"], slot["queued"] = slot["queued"], None
            if slot["running"] is not None:
                self._schedule(self.jobs[slot["running"]], at)

    @staticmethod
    def _safely(callback: Callable[[Job], Any], job: Job) -> None:
        try:
            callback(job)
        except Exception:
            logger.exception("job %s callback failed", job.id)

    # -- control and queries ------------------------------------------------------------------

    def abort(self, job_id: int) -> Job:
        self.tick()
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"[ENOENT] job {job_id} does not exist")
        if not job.finished:
            now = self.clock()
            job.state, job.error, job.time_finished = "ABORTED", "Job aborted by request", now
            job.progress_text = "Aborted"
            self._end(job, now)
        return job

    def lane_jobs(self, lane: str) -> tuple[Job | None, Job | None]:
        """The (running, queued) jobs of a lane."""
        self.tick()
        slot = self._lanes.get(lane, {})
        running, queued = slot.get("running"), slot.get("queued")
        return (self.jobs[running] if running else None, self.jobs[queued] if queued else None)

    def next_deadline(self) -> float | None:
        """When the next job changes state (None if nothing is scheduled)."""
        times = []
        for job in self.jobs.values():
            if job.finished:
                continue
            if job.state == "WAITING" and job.run_at is not None:
                times.append(job.run_at)
            if job.end_at is not None:
                times.append(job.end_at)
        return min(times) if times else None

    def has_active(self) -> bool:
        return any(not j.finished for j in self.jobs.values())

    def get(self, job_id: int) -> Job:
        self.tick()
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"[ENOENT] job {job_id} does not exist")
        return job

    def views(self) -> list[dict[str, Any]]:
        self.tick()
        return [job.view() for job in sorted(self.jobs.values(), key=lambda j: j.id)]
