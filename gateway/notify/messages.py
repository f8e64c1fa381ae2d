"""What each kind of channel is sent for one delivery: Slack's and Teams' incoming-webhook payloads, the generic JSON
payload with its HMAC-SHA256 signature over the timestamp and the body, and the email. A link to the dashboard, never
an approve-by-link: deciding still needs a signed-in person with the right."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from gateway.models import NotificationDelivery

SIGNATURE_HEADER = "X-Portcullis-Signature"  # "sha256=" + hex HMAC-SHA256(secret, "<timestamp>.<body>")
TIMESTAMP_HEADER = "X-Portcullis-Timestamp"  # Unix seconds; receivers should refuse old ones (replays)


def _lines(delivery: NotificationDelivery) -> list[str]:
    p = delivery.payload
    lines = [delivery.subject]
    if p.get("why"):
        lines.append(f"Why: {p['why']}")
    if p.get("risk", {}).get("level"):
        lines.append(f"Risk: {p['risk']['category']} · {p['risk']['level']}")
    if (p.get("approvers_needed") or 1) > 1:
        lines.append(f"{p['approvers_needed']} different people must approve.")
    if p.get("error"):
        lines.append(f"Error: {p['error']}")
    return lines


def slack(delivery: NotificationDelivery) -> dict:
    text = "\n".join(_lines(delivery))
    return {"text": f"{text}\n<{delivery.link}|Open in Portcullis>",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}},
                       {"type": "actions", "elements": [{
                           "type": "button", "url": delivery.link,
                           "text": {"type": "plain_text", "text": "Open in Portcullis"}}]}]}


def teams(delivery: NotificationDelivery) -> dict:
    return {"@type": "MessageCard", "@context": "https://schema.org/extensions", "summary": delivery.subject,
            "title": delivery.subject, "text": "\n\n".join(_lines(delivery)[1:]) or delivery.subject,
            "potentialAction": [{"@type": "OpenUri", "name": "Open in Portcullis",
                                 "targets": [{"os": "default", "uri": delivery.link}]}]}


def webhook(delivery: NotificationDelivery, secret: str, now: float | None = None) -> tuple[bytes, dict]:
    body = json.dumps({**delivery.payload, "delivery": delivery.pk, "subject": delivery.subject},
                      ensure_ascii=False, separators=(",", ":")).encode()
    stamp = str(int(now if now is not None else time.time()))
    signature = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"sha256={signature}",
                  "Content-Type": "application/json"}


def email(delivery: NotificationDelivery) -> tuple[str, str]:
    body = "\n".join(_lines(delivery)) + (
        f"\n\nOpen it in Portcullis: {delivery.link}\n\nDeciding needs you to be signed in to the dashboard; "
        "nothing in this email approves anything.\n")
    return f"[Portcullis] {delivery.subject}", body
