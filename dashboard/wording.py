"""Counts in the dashboard's sentences: "1 change", "3 changes"."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
