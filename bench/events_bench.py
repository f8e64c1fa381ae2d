"""What the live events of calls (gateway/events.py) cost the gateway's process per call, in-process.

Calls are paced as at concurrency 1 (one every `--gap-ms`, "opened" half-way through and "settled" at its end) and
the process's CPU time is read with and without the events; the difference is what the events cost per call (the
channel layer's client work: building and sending messages, the sender task's wake-ups). With `--redis URL` the
channel layer is Redis's (as a team's replicas run), otherwise the in-memory one. Nobody is listening: the cost
every call pays whether or not a dashboard is open.

Run from any checkout, to compare (`--root` names it; the default is this one):
    .venv/bin/python bench/events_bench.py [--root DIR] [--redis redis://127.0.0.1:6379/14] [--calls N] [--gap-ms MS]
Give Redis a database number of its own: the bench publishes there (to a group nobody is in).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path


async def _paced(events, calls: int, gap_s: float, publish: bool) -> float:
    started = time.process_time()
    for i in range(calls):
        if publish:
            events.call_changed(i + 1, "bench", "opened")
        await asyncio.sleep(gap_s / 2)
        if publish:
            events.call_changed(i + 1, "bench", "settled")
        await asyncio.sleep(gap_s / 2)
    while events._sender is not None and not events._sender.done():  # everything queued is sent
        await asyncio.sleep(0.01)
    return (time.process_time() - started) / calls * 1e3


async def _measure(events, calls: int, gap_s: float, rounds: int) -> list[tuple[float, float]]:
    await _paced(events, calls // 5, gap_s, True)  # warm-up: the layer's connection is open
    out = []
    for _ in range(rounds):
        alone = await _paced(events, calls, gap_s, False)
        out.append((await _paced(events, calls, gap_s, True) - alone, alone))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/events_bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent), help="the checkout measured")
    parser.add_argument("--redis", default="", metavar="URL", help="Redis's channel layer (a database of its own)")
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--gap-ms", type=float, default=2.0, help="one call every this long (as at concurrency 1)")
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args(argv)
    root = Path(opts.root).resolve()
    sys.path.insert(0, str(root))
    os.chdir(root)
    for name in ("DATABASE_URL", "REDIS_URL"):  # the developer's own are never touched
        os.environ.pop(name, None)
    state = tempfile.mkdtemp(prefix="portcullis-events-bench-")
    os.environ.update(DJANGO_SETTINGS_MODULE="config.settings", SECRET_KEY="events-bench-" + "x" * 40,
                      PORTCULLIS_STATE_DIR=state, DATABASE_URL=f"sqlite:///{state}/unused.sqlite3")
    if opts.redis:
        os.environ["REDIS_URL"] = opts.redis
    import django

    django.setup()
    import uvloop

    from gateway import events

    rows = uvloop.run(_measure(events, opts.calls, opts.gap_ms / 1e3, opts.rounds))
    layer = f"Redis at {opts.redis}" if opts.redis else "in-memory"
    print(f"live events of calls, {layer} channel layer, {opts.root}: {opts.calls} calls, one every {opts.gap_ms} ms")
    for cost, alone in rows:
        print(f"  events' CPU per call: {cost:.3f} ms (the paced loop alone: {alone:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
