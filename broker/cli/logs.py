"""How `shoal serve` logs: named events with fields (house style B.10), as text or JSON lines.

Every log call in `broker/` names an event (`log.info("node_started", extra={...})`); the
fields travel as `extra`. Two renderings on stderr, chosen by `Config.log_format`:

- `text`: `2026-01-02 03:04:05,678 INFO broker.node node_started grpc_port=50051 ...`
- `json`: one object per line, `{"time": "2026-01-02T03:04:05.678Z", "level": "info",
  "logger": "broker.node", "event": "node_started", "node_id": "shoal-0", "grpc_port": 50051,
  ...}`, with `exception` holding the traceback when there is one: what Loki, Elasticsearch,
  Vector or Fluent Bit read without a parsing rule.

Both carry the node's id (a filter adds it), so interleaved logs of several nodes stay apart.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

_STANDARD_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
_RESERVED = frozenset({"message", "asctime", "node_id"})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_RECORD_FIELDS and key not in _RESERVED
    }


class EventFormatter(logging.Formatter):
    """Log lines as `time LEVEL logger event key=value ...`: the standard format would drop
    the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={value!r}" for key, value in sorted(fields.items()))


class JsonFormatter(logging.Formatter):
    """One JSON object per record; values that JSON cannot hold are written as their repr."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        document: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        node_id = getattr(record, "node_id", None)
        if node_id is not None:
            document["node_id"] = node_id
        for key, value in sorted(_fields(record).items()):
            document[key] = value if _plain(value) else repr(value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False)


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


class _NodeIdFilter(logging.Filter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self._node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.node_id = self._node_id
        return True


def configure_logging(*, log_format: str, log_level: str, node_id: str) -> None:
    """Sends every log record at `log_level` and above to stderr in `log_format`."""
    handler = logging.StreamHandler()
    handler.addFilter(_NodeIdFilter(node_id))
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(EventFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler], force=True)
