"""From a call being held to the people who must decide being told: p50 and p99 of the time from an approval's creation
(the held call's admission, as the gateway makes it) to a JSON webhook received by a local HTTP receiver, and to
an email delivered to a local SMTP server (aiosmtpd), with the gateway's own sender thread doing the delivery.

Run: .venv/bin/python bench/notification_bench.py [--calls 200]

In-process, a throw-away SQLite database (never var/). Each held call is admitted with calls.admit(), one after the
other with a short pause, so every measurement is one message's own latency (not a queue's): the sender wakes at
once in the process that queued it (an event) and polls every 0.5 s from other processes.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    received: dict[str, float] = {}
    mailed: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            import json

            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received[body["approval"]] = time.time()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    class Mailbox:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's API
            text = envelope.content.decode(errors="replace")
            mailed[text.split("#approval-", 1)[1][:16]] = time.time()  # the link names the approval
            return "250 OK"

    from aiosmtpd.controller import Controller

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    smtp = Controller(Mailbox(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    with tempfile.TemporaryDirectory(prefix="portcullis-notify-bench-") as state:
        os.environ.update({"PORTCULLIS_STATE_DIR": state, "DJANGO_SETTINGS_MODULE": "config.settings",
                           "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(smtp.port)})
        os.environ.pop("DATABASE_URL", None)
        import django

        django.setup()
        from django.core.management import call_command
        from django.utils import timezone

        call_command("migrate", verbosity=0)
        from gateway import calls
        from gateway.grants import create_grant
        from gateway.models import Approval, NotificationChannel
        from gateway.notify import sender
        from tests.dashboard.approval_fixtures import make_nas

        server, _ = make_nas()
        hook = NotificationChannel(name="hook", kind="webhook", events=["approval_pending"])
        hook.secrets = {"url": f"http://127.0.0.1:{http.server_port}/hook", "signing_secret": "s" * 32}
        hook.save()
        NotificationChannel.objects.create(name="mail", kind="email", events=["approval_pending"],
                                           recipients="ops@example.org")
        token = create_grant("bench-agent", [server], None).token
        sender.start()
        for n in range(args.calls):
            calls.admit(token, server, "share_create", {"name": f"share-{n}"}, timezone.now())
            Approval.objects.filter(state="pending").update(state="expired")  # keep the grant's queue short
            time.sleep(0.05)
        deadline = time.time() + 30
        while (len(received) < args.calls or len(mailed) < args.calls) and time.time() < deadline:
            time.sleep(0.1)
        created = {a.public_id: a.created_at.timestamp() for a in Approval.objects.all()}
        hook_ms = [(received[p] - created[p]) * 1000 for p in received]
        mail_ms = [(mailed[p] - created[p]) * 1000 for p in mailed if p in created]
    smtp.stop()
    http.shutdown()
    for what, values in (("JSON webhook received", hook_ms), ("email delivered to the SMTP server", mail_ms)):
        print(f"held call → {what} ({len(values)} of {args.calls}): "
              f"p50 {statistics.median(values):.1f} ms, p99 {percentile(values, 99):.1f} ms")


if __name__ == "__main__":
    main()
