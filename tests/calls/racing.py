"""Racing threads, each on its own database connection: what the tests of exact limits share."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


def count_in_threads(attempt: Callable[[], bool], threads: int = 6, attempts: int = 5) -> int:
    """How many of `threads` × `attempts` calls of `attempt` returned true, the threads racing each other (each on
    its own connection, closed at its end: the atomicity is the database's, not Python's)."""
    succeeded, lock = [], threading.Lock()

    def worker() -> None:
        try:
            for _ in range(attempts):
                if attempt():
                    with lock:
                        succeeded.append(1)
        finally:
            connection.close()

    started = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=60)
    return len(succeeded)
