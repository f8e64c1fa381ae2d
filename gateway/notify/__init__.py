"""Telling people what needs them when they are not looking at the dashboard: pending approvals, tools held for
review, upstreams down. outbox.py turns an event into one delivery row per matching channel (never failing or
delaying the call that caused it); messages.py writes each channel kind's message; sender.py delivers, retrying with
backoff, on a thread of its own."""
