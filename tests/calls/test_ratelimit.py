"""Counters are reserved all-or-nothing with a conditional upsert, and given back when a call fails."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.calls import ratelimit
from gateway.models import Counter
from tests.calls.racing import count_in_threads


@dataclass(frozen=True)
class Res:
    key: str
    max: int
    window_end: int


def test_it_admits_exactly_max_then_refuses(db):
    res = Res("k|grant|s/g|60|0", 3, 60)
    assert [ratelimit.reserve([res]) for _ in range(3)] == [None, None, None]
    assert ratelimit.reserve([res]) == res
    assert Counter.objects.get(key=res.key).n == 3


def test_it_consumes_nothing_when_any_counter_is_full(db):
    roomy, full = Res("a-roomy", 10, 60), Res("b-full", 1, 60)
    assert ratelimit.reserve([full]) is None
    assert ratelimit.reserve([roomy, full]) == full
    assert not Counter.objects.filter(key="a-roomy").exists()
    assert Counter.objects.get(key="b-full").n == 1


def test_it_gives_a_reservation_back_but_never_below_zero(db):
    res = Res("k", 1, 60)
    assert ratelimit.reserve([res]) is None
    ratelimit.release([res])
    ratelimit.release([res])
    assert Counter.objects.get(key="k").n == 0
    assert ratelimit.reserve([res]) is None


def test_it_reads_current_counts_and_sweeps_ended_windows(db):
    ratelimit.reserve([Res("old", 5, 100), Res("new", 5, 200)])
    assert ratelimit.current(["old", "new", "missing"]) == {"old": 1, "new": 1}
    assert ratelimit.sweep(150) == 1
    assert ratelimit.current(["old", "new"]) == {"new": 1}


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_admit_exactly_max():
    # Threads each use their own database connection: the upsert's atomicity is the database's, not Python's.
    res = Res("race", 7, 60)
    assert count_in_threads(lambda: ratelimit.reserve([res]) is None) == 7
    assert Counter.objects.get(key="race").n == 7
