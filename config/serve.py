"""Run daphne with an access log that never records query strings.

A token sent in a URL by mistake (the gateway refuses it) must not land in the log either. Usage is the same
as daphne's: python -m config.serve -b 127.0.0.1 -p 8000 config.asgi:application
"""

from __future__ import annotations

import sys

from daphne import cli


class QuerylessAccessLog(cli.AccessLogGenerator):
    def __call__(self, protocol, action, details):
        path = details.get("path")
        if isinstance(path, str) and "?" in path:
            details = {**details, "path": path.split("?", 1)[0] + "?[query omitted]"}
        super().__call__(protocol, action, details)


def main(argv: list[str] | None = None) -> None:
    cli.AccessLogGenerator = QuerylessAccessLog  # the CLI builds its access log from this name
    cli.CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
