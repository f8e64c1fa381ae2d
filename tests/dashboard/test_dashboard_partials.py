"""Fragments at pushed URLs (issue 13, item 4): every GET varies on HX-Request, fragments are never stored, and a
history-restore request from htmx gets the whole page."""

from __future__ import annotations

from tests.dashboard.fixtures import htmx


def test_a_fragment_varies_on_hx_request_and_is_not_stored(staff_client, truenas):
    fragment = staff_client.get("/servers/truenas/tools/?q=pool", **htmx())
    assert "HX-Request" in fragment["Vary"] and fragment["Cache-Control"] == "no-store"
    assert "<html" not in fragment.content.decode()
    page = staff_client.get("/servers/truenas/tools/?q=pool")
    assert "HX-Request" in page["Vary"] and "<html" in page.content.decode()


def test_a_history_restore_gets_the_whole_page(staff_client, truenas):
    restored = staff_client.get("/calls/?q=pool", **htmx(), HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in restored.content.decode()
