"""Bytes of the dashboard's biggest pages for the same view: the 279-tool TrueNAS catalogue under its seed policy,
a fresh session (nothing selected, no draft). Compare two commits with --root (a git worktree of the other one):

    .venv/bin/python -m bench.page_sizes [--root /tmp/old-worktree]

The pages are rendered by the code under --root, in a child process with a throw-away SQLite database.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

PAGES = ("/servers/truenas/policy/", "/servers/truenas/tools/", "/calls/", "/approvals/")
CHILD = """
import sys, tempfile
from bench import dashboard_bench
with tempfile.TemporaryDirectory(prefix="portcullis-sizes-") as state_dir:
    dashboard_bench.setup(state_dir)
    _, user = dashboard_bench.seed(0)
    from django.test import Client
    client = Client()
    client.force_login(user)
    for url in sys.argv[1:]:
        response = client.get(url)
        print(f"{url:28} {response.status_code} {len(response.content):>9,} bytes")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent),
                        help="the checkout whose code renders the pages (default: this one)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": args.root}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", CHILD, *PAGES], cwd=args.root, env=env, capture_output=True,
                          text=True, check=False)
    sys.stdout.write("".join(line + "\n" for line in done.stdout.splitlines() if "bytes" in line))
    if done.returncode:
        sys.exit(done.stderr[-2000:])


if __name__ == "__main__":
    main()
