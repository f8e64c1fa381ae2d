"""The process log as JSON Lines (PORTCULLIS_LOG_FORMAT=json), for log shippers: one object per record with the
time (UTC, ISO 8601), level, logger, message and, where there is one, the exception's traceback. What a record says
is what the plain format says: messages are written redacted at their source (gateway/redaction.py)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage(),
                 "process": record.process}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
