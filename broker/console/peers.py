"""What each node tells the others' consoles about itself, so a page served by any node shows
the whole cluster: its disk use and the rates its consumers read each stream at.

A node answers `GET /console/peer/node.json` only with a peer token (`sessions.peer_token`,
an HMAC keyed from the cluster's secret), so only members of the cluster can ask. A console
asks every other node at once, each bounded by `FETCH_TIMEOUT_S`; a node that does not answer
in time shows as unknown, never holds the page up longer than that.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PEER_PATH = "/peer/node.json"
FETCH_TIMEOUT_S = 1.0
STATS_BYTES_MAX = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DiskUse:
    path: str
    used_bytes: int
    total_bytes: int

    @property
    def percent(self) -> float:
        return 100 * self.used_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStats:
    node_id: str
    disk: DiskUse | None
    # stream -> (records, bytes) read per second from this node
    reads: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # "stream/shardId" -> (records read, bytes read, reads throttled, writes throttled) per
    # second: counted per shard only for streams with enhanced monitoring, as on AWS.
    shards: Mapping[str, tuple[float, float, float, float]] = field(default_factory=dict)

    @property
    def read_records_per_second(self) -> float:
        return sum(records for records, _ in self.reads.values())

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "node_id": self.node_id,
            "disk": None
            if self.disk is None
            else {
                "path": self.disk.path,
                "used_bytes": self.disk.used_bytes,
                "total_bytes": self.disk.total_bytes,
            },
            "reads": {name: list(rates) for name, rates in self.reads.items()},
            "shards": {key: list(rates) for key, rates in self.shards.items()},
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, body: bytes) -> NodeStats:
        document = json.loads(body)
        disk = document.get("disk")
        return cls(
            node_id=str(document["node_id"]),
            disk=None
            if disk is None
            else DiskUse(str(disk["path"]), int(disk["used_bytes"]), int(disk["total_bytes"])),
            reads={
                str(name): (float(rates[0]), float(rates[1]))
                for name, rates in document.get("reads", {}).items()
            },
            shards={
                str(key): (float(rates[0]), float(rates[1]), float(rates[2]), float(rates[3]))
                for key, rates in document.get("shards", {}).items()
            },
        )


def cluster_read_rates(stats: Sequence[NodeStats], stream_name: str) -> tuple[float, float]:
    """The records and bytes per second read from `stream_name`, summed over the nodes."""
    records = sum(node.reads.get(stream_name, (0.0, 0.0))[0] for node in stats)
    size = sum(node.reads.get(stream_name, (0.0, 0.0))[1] for node in stats)
    return records, size


def shard_key(stream_name: str, shard_id: str) -> str:
    return f"{stream_name}/{shard_id}"


def cluster_shard_rates(
    stats: Sequence[NodeStats], stream_name: str
) -> dict[str, tuple[float, float, float, float]]:
    """Each shard's reads and throttling per second, summed over the nodes, by shard id."""
    prefix = shard_key(stream_name, "")
    summed: dict[str, list[float]] = {}
    for node in stats:
        for key, rates in node.shards.items():
            if key.startswith(prefix):
                totals = summed.setdefault(key.removeprefix(prefix), [0.0, 0.0, 0.0, 0.0])
                for column, value in enumerate(rates):
                    totals[column] += value
    return {shard: (t[0], t[1], t[2], t[3]) for shard, t in summed.items()}


async def fetch(
    http_address: str, *, token: str, header: str, tls: ssl.SSLContext | None
) -> NodeStats | None:
    """One node's statistics from its console, or None when it does not answer in time."""
    scheme = "https" if tls is not None else "http"
    request = urllib.request.Request(
        f"{scheme}://{http_address}/console{PEER_PATH}", headers={header: token}
    )

    def read() -> bytes:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S, context=tls) as answer:
            return bytes(answer.read(STATS_BYTES_MAX))

    try:
        body = await asyncio.wait_for(asyncio.to_thread(read), FETCH_TIMEOUT_S + 0.5)
        return NodeStats.from_json(body)
    except (OSError, TimeoutError, ValueError, KeyError, TypeError):
        return None
