"""Logs: one JSON object per line on stderr, carrying the context of the work being done.

Every line has `time` (UTC, ISO 8601), `level`, `logger`, `service` (`Settings.service`) and
`message`, plus the fields of the current log context: the worker loop sets `dataset`, `version`,
`chunk`, `view` and `message_id` for the message it handles, the query sets `request_id` for the
request it answers. The context is a `ContextVar`, so it follows asyncio tasks and
`asyncio.to_thread` into the handler's own log lines. Extra fields of one line go in
`extra={"fields": {...}}`. The level is `Settings.log_level` (`WIDEVIEWS_LOG_LEVEL`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from shared.config import Settings

_context: ContextVar[dict[str, Any]] = ContextVar("wideviews_log_context", default={})  # noqa: B039 - never mutated


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object: the standard fields, the context, the record's own fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service or None,
            "message": record.getMessage(),
        }
        line.update(_context.get())
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # default=str: a value json cannot write (a Path, an enum) is written as its text, never dropped.
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Send every logger's records to stderr as JSON lines at the configured level (replaces other handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(settings.service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add fields (None ones left out) to every log line written inside the block, in this task or thread."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, Any]:
    """The fields the current log context adds to each line."""
    return dict(_context.get())
