"""A record's payload as the record browser shows it: pure functions over bytes.

The browser shows each payload in one of four views: `text` (UTF-8, invalid bytes replaced),
`json` (pretty-printed when the payload is a JSON document, else said so and shown as text),
`hex` (spaced bytes, 16 per line) and `base64`. Payloads are shown as text whatever they hold:
the templates escape them (autoescape), so markup in a record is never interpreted.
KPL-aggregated records are expanded into their user records (`broker.client.kpl.deaggregate`,
as the KCL does).
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.client.kpl import deaggregate

VIEWS = ("text", "json", "hex", "base64")
PREVIEW_BYTES_MAX = 64 * 1024  # what one record shows at most; the rest is counted, not shown


@dataclass(frozen=True, slots=True, kw_only=True)
class ShownRecord:
    sequence_number: str
    sub_sequence_number: int | None  # set for a user record from a KPL aggregate
    partition_key: str
    arrival: str  # ISO 8601, UTC
    size: int
    view: str  # the view actually used ("text" when a JSON view was asked of non-JSON)
    body: str
    note: str | None  # e.g. "not JSON; shown as text", "first 65536 of 100000 bytes"
    shard_id: str = ""  # the shard read, when a page mixes shards


def render(data: bytes, view: str) -> tuple[str, str, str | None]:
    """(view used, body, note) for one payload in `view` (one of VIEWS)."""
    note: str | None = None
    shown = data
    if len(data) > PREVIEW_BYTES_MAX:
        shown = data[:PREVIEW_BYTES_MAX]
        note = f"first {PREVIEW_BYTES_MAX} of {len(data)} bytes"
    if view == "hex":
        return "hex", _hex(shown), note
    if view == "base64":
        return "base64", base64.b64encode(shown).decode("ascii"), note
    text = shown.decode("utf-8", errors="replace")
    if view == "json":
        try:
            document = json.loads(data)
        except ValueError:
            return "text", text, _join(note, "not JSON; shown as text")
        return "json", json.dumps(document, indent=2, ensure_ascii=False), None
    return "text", text, note


def _hex(data: bytes) -> str:
    return "\n".join(data[at : at + 16].hex(" ") for at in range(0, len(data), 16))


def _join(first: str | None, second: str) -> str:
    return second if first is None else f"{first}; {second}"


def shown_records(
    records: Sequence[Mapping[str, Any]], view: str, *, shard_id: str = ""
) -> list[ShownRecord]:
    """GetRecords' records as the browser lists them, aggregates expanded."""
    shown: list[ShownRecord] = []
    for record in records:
        arrival = record.get("ApproximateArrivalTimestamp")
        arrival_text = _arrival_text(arrival)
        for user in deaggregate(record):
            used, body, note = render(user.data, view)
            shown.append(
                ShownRecord(
                    sequence_number=str(record["SequenceNumber"]),
                    sub_sequence_number=user.sub_sequence_number if user.aggregated else None,
                    partition_key=user.partition_key,
                    arrival=arrival_text,
                    size=len(user.data),
                    view=used,
                    body=body,
                    note=note,
                    shard_id=shard_id,
                )
            )
    return shown


def _arrival_text(arrival: object) -> str:
    if isinstance(arrival, datetime.datetime):
        return arrival.astimezone(datetime.UTC).isoformat(timespec="milliseconds")
    if isinstance(arrival, int | float):
        moment = datetime.datetime.fromtimestamp(arrival, tz=datetime.UTC)
        return moment.isoformat(timespec="milliseconds")
    return ""
