"""The approvals queue: pending approvals with what a person needs to decide; staff approve or deny; decided
ones move to the history; read-only users see the queue without buttons and cannot decide."""

from __future__ import annotations

from datetime import timedelta

from django.template import Context, Template
from django.utils import timezone

from gateway.models import Approval, PolicyVersion
from tests.dashboard.fixtures import htmx

BUTTONS = (">Approve<", "Approve &amp; always allow for this grant…", ">Deny<")


def decide_url(approval: Approval) -> str:
    return f"/approvals/{approval.public_id}/decide/"


def pending_part(body: str) -> str:
    return body.split('id="approvals-pending"')[1].split('id="approvals-history"')[0]


def history_part(body: str) -> str:
    return body.split('id="approvals-history"')[1]


def test_it_shows_a_pending_approval_with_everything_needed_to_decide(staff_client, hold):
    approval = hold({"name": "media", "password": "[redacted]", "note": "<b>hi</b>"})
    body = staff_client.get("/approvals/").content.decode()
    card = pending_part(body)
    assert f'id="approval-{approval.public_id}"' in card
    assert 'href="/grants/agent-a/">agent-a</a>' in card and "<code>nas</code>" in card and "share_create" in card
    assert "risk-write lvl-high" in card and "[redacted]" in card
    assert "&lt;b&gt;hi&lt;/b&gt;" in card and "<b>hi</b>" not in card  # arguments are inert text
    assert 'href="/servers/nas/policy/tools/share_create/"><code>/tools/share_create</code>' in card
    assert "in policy v1" in card and 'data-seconds-left="' in card and "59:5" in card
    assert all(button in card for button in BUTTONS) and "csrfmiddlewaretoken" in card


def test_it_shows_the_queue_to_a_read_only_user_without_buttons(reader_client, hold):
    hold()
    body = reader_client.get("/approvals/").content.decode()
    assert "share_create" in pending_part(body) and "only staff users decide" in body
    assert not any(button in body for button in BUTTONS)


def test_it_counts_pending_approvals_in_the_navigation_and_the_title_on_every_page(staff_client, hold):
    hold({"a": 1})
    hold({"a": 2})
    body = staff_client.get("/grants/").content.decode()
    assert "<title>(2) Grants" in body
    assert 'id="pending-count" class="badge nav-count" data-count="2"' in body


def test_the_count_costs_one_query_and_leaves_out_expired_and_decided_ones(hold, staff, django_assert_num_queries):
    hold({"a": 1})
    Approval.objects.filter(pk=hold({"a": 2}).pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    Approval.objects.filter(pk=hold({"a": 3}).pk).update(state="denied")
    with django_assert_num_queries(1):
        assert Template("{% load portcullis %}{% pending_approvals %}").render(Context()) == "1"


def test_it_shows_no_count_when_nothing_waits(staff_client, nas):
    body = staff_client.get("/calls/").content.decode()
    assert "<title>Call log" in body and 'data-count="0"' in body


def test_it_sends_anonymous_visitors_to_sign_in(client, hold):
    approval = hold()
    assert client.get("/approvals/")["Location"].startswith("/login/")
    assert client.post(decide_url(approval), {"decision": "approve"})["Location"].startswith("/login/")


def test_a_staff_user_approves_and_the_approval_moves_to_the_history(staff_client, staff, hold):
    approval = hold()
    response = staff_client.post(decide_url(approval), {"decision": "approve"})
    assert response.status_code == 302 and response["Location"] == "/approvals/"
    approval.refresh_from_db()
    assert approval.state == "approved" and approval.decided_by == staff
    body = staff_client.get("/approvals/").content.decode()
    assert approval.public_id not in pending_part(body) and "Nothing is waiting" in pending_part(body)
    history = history_part(body)
    assert approval.public_id in history and "</svg>approved" in history and "by alice" in history
    assert "<title>Approvals" in body


def test_a_staff_user_denies_with_a_reason_the_agent_will_read(staff_client, hold):
    approval = hold()
    staff_client.post(decide_url(approval), {"decision": "deny", "reason": "not on a Friday"})
    approval.refresh_from_db()
    assert approval.state == "denied" and approval.reason == "not on a Friday"
    history = history_part(staff_client.get("/approvals/").content.decode())
    assert "</svg>denied" in history and "not on a Friday" in history


def test_denying_without_a_reason_shows_what_to_do_next_to_the_card(staff_client, hold):
    approval = hold()
    response = staff_client.post(decide_url(approval), {"decision": "deny", "reason": "  "})
    assert response.status_code == 400
    card = pending_part(response.content.decode()).split(f'id="approval-{approval.public_id}"')[1]
    assert "say why the call is denied" in card.split("</article>")[0]
    approval.refresh_from_db()
    assert approval.state == "pending"


def test_denying_without_a_reason_over_htmx_answers_with_the_card_and_the_error(staff_client, hold):
    approval = hold()
    response = staff_client.post(decide_url(approval), {"decision": "deny"}, **htmx())
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body  # htmx swaps only 2xx answers
    assert body.strip().startswith(f'<article id="approval-{approval.public_id}"')
    assert "say why the call is denied" in body
    assert 'data-into="approvals-pending"' in body and ">Deny<" in body


def test_deciding_twice_says_it_was_already_approved(staff_client, hold):
    approval = hold()
    staff_client.post(decide_url(approval), {"decision": "approve"})
    response = staff_client.post(decide_url(approval), {"decision": "deny", "reason": "too late"})
    assert response.status_code == 400
    card = history_part(response.content.decode()).split(f'id="approval-{approval.public_id}"')[1]
    assert "was already approved" in card.split("</article>")[0].lower()
    approval.refresh_from_db()
    assert approval.state == "approved" and approval.reason == ""


def test_deciding_over_htmx_answers_with_the_decided_card_for_the_history(staff_client, hold):
    approval = hold()
    body = staff_client.post(decide_url(approval), {"decision": "approve"}, **htmx()).content.decode()
    assert 'data-into="approvals-history"' in body and "</svg>approved" in body and ">Approve<" not in body


def test_approve_and_always_allow_asks_first_then_writes_the_grants_own_policy(staff_client, hold, nas):
    approval = hold()
    asked = staff_client.post(decide_url(approval), {"decision": "always", "reason": "weekly job"}, **htmx())
    body = asked.content.decode()
    assert "Always allow" in body and "without asking, until someone removes the rule" in body
    assert 'value="weekly job"' in body and 'name="confirm"' in body
    approval.refresh_from_db()
    assert approval.state == "pending" and not PolicyVersion.objects.filter(grant=nas["grant"]).exists()
    assert "Always allow" in staff_client.post(decide_url(approval), {"decision": "always"}).content.decode()
    staff_client.post(decide_url(approval), {"decision": "always", "confirm": "1"})
    approval.refresh_from_db()
    own = PolicyVersion.objects.get(server=nas["server"], grant=nas["grant"], is_active=True)
    assert approval.state == "approved" and own.created_by.username == "alice"
    assert own.document["tools"]["share_create"] == {} and "from now on" in own.summary


def test_an_expired_approval_cannot_be_decided_and_says_so(staff_client, hold):
    approval = hold()
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = staff_client.post(decide_url(approval), {"decision": "approve"})
    body = response.content.decode()
    assert response.status_code == 400 and "has expired; the agent must call again" in history_part(body)
    assert "</svg>expired" in history_part(body)


def test_it_refuses_an_unknown_decision(staff_client, hold):
    approval = hold()
    response = staff_client.post(decide_url(approval), {"decision": "maybe"})
    assert response.status_code == 400
    assert "choose Approve, Approve &amp; always allow, or Deny" in response.content.decode()


def test_a_read_only_user_gets_403_and_decides_nothing(reader_client, hold):
    approval = hold()
    response = reader_client.post(decide_url(approval), {"decision": "approve"})
    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.state == "pending"


def test_a_decision_without_a_csrf_token_is_refused(csrf_client, hold):
    approval = hold()
    assert csrf_client.post(decide_url(approval), {"decision": "approve"}).status_code == 403
    approval.refresh_from_db()
    assert approval.state == "pending"


def test_a_decision_with_the_pages_csrf_token_is_accepted(csrf_client, hold):
    approval = hold()
    page = csrf_client.get("/approvals/").content.decode()
    token = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
    response = csrf_client.post(decide_url(approval), {"decision": "approve", "csrfmiddlewaretoken": token})
    assert response.status_code == 302


def test_deciding_needs_a_post(staff_client, hold):
    assert staff_client.get(decide_url(hold())).status_code == 405


def test_an_unknown_approval_is_404(staff_client, nas):
    assert staff_client.post("/approvals/nope/decide/", {"decision": "approve"}).status_code == 404
