"""Command builders for the metadata tests: AWS-like defaults, overridable by keyword."""

from __future__ import annotations

from typing import Any

from broker.meta.commands import CreateStream, InitCluster
from broker.meta.image import StreamMode

ACCOUNT = "123456789012"
REGION = "eu-west-1"
CREATING_MS = 1_000


def arn(name: str) -> str:
    return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"


def create_stream(name: str = "s1", *, now_ms: int = 0, **overrides: Any) -> CreateStream:
    fields: dict[str, Any] = {
        "now_ms": now_ms,
        "name": name,
        "arn": arn(name),
        "shard_count": 2,
        "mode": StreamMode.PROVISIONED,
        "retention_hours": 24,
        "max_record_size_kib": 1024,
        "tags": (),
        "creating_ms": CREATING_MS,
        "shard_count_per_account_max": 100,
        "on_demand_streams_max": 2,
    }
    fields.update(overrides)
    return CreateStream(**fields)


def init_cluster(cluster_id: str = "c-1", *, now_ms: int = 0) -> InitCluster:
    return InitCluster(now_ms=now_ms, cluster_id=cluster_id, iterator_secret=b"\x00\x01secret")
