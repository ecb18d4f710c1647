"""Structured logs: JSON lines when stdout is not a terminal, readable text when it is.

Modules log with the stdlib `logging` and put context in `extra`
(`revision`, `cache`, `action`); this module only decides how records look.
JSON is what log shippers (Loki, Elasticsearch) parse; text is what a person
at a terminal reads. Messages never carry credentials: callers log names of
secrets, never values.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

CONTEXT_FIELDS = ("revision", "cache", "action", "provider", "reason")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        context = " ".join(
            f"{key}={getattr(record, key)}"
            for key in CONTEXT_FIELDS
            if getattr(record, key, None) is not None
        )
        line = f"{moment} {record.levelname:<7} {record.getMessage()}"
        if context:
            line += f"  [{context}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(
    *, stream: TextIO | None = None, level: str = "info", json_format: bool | None = None
) -> None:
    """Send gitsync's logs to `stream` (stdout), as JSON unless it is a terminal."""
    out = stream or sys.stdout
    as_json = (not out.isatty()) if json_format is None else json_format
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root = logging.getLogger("gitsync")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
