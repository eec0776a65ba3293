"""Sequence numbers across the upgrade to AWS's layout, with a real node process.

A data directory written below metadata format 3 (the node held at the first format, as a
cluster of the previous release is) holds a stream whose consumers stored numbers of the 0x3
layout. Restarted without the hold, the node raises the format; that stream keeps its layout
(its numbers, old and new, keep comparing as before, and its children too), while a stream
created afterwards gets AWS's layout (streams/sequence_numbers.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.client.grpc_client import ShoalClient
from broker.meta.metadata_format import METADATA_FORMAT_MAX
from broker.streams.sequence_numbers import decode_sequence_number, is_aws_layout
from tests.cluster.helpers import cluster_status
from tests.support import NodeProcess, serving, wait_until

pytestmark = [pytest.mark.process]


def _put(client: ShoalClient, stream: str, data: bytes) -> str:
    # Hash key 0: shard 0, whatever the count.
    record = {"StreamName": stream, "PartitionKey": "k", "ExplicitHashKey": "0", "Data": data}
    response = client.call("PutRecord", record)
    number: str = response["SequenceNumber"]
    return number


def _starts(client: ShoalClient, stream: str) -> list[str]:
    shards = client.call("ListShards", {"StreamName": stream})["Shards"]
    return [shard["SequenceNumberRange"]["StartingSequenceNumber"] for shard in shards]


def _read_after(client: ShoalClient, stream: str, number: str) -> list[tuple[str, bytes]]:
    iterator = client.call(
        "GetShardIterator",
        {
            "StreamName": stream,
            "ShardId": "shardId-000000000000",
            "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
            "StartingSequenceNumber": number,
        },
    )["ShardIterator"]
    records = client.call("GetRecords", {"ShardIterator": iterator})["Records"]
    return [(record["SequenceNumber"], record["Data"]) for record in records]


def test_a_stream_keeps_its_layout_across_the_upgrade_and_new_streams_get_awss(
    tmp_path: Path,
) -> None:
    node = NodeProcess(tmp_path / "node", extra_env={"SHOAL_METADATA_FORMAT_LIMIT": "1"})
    node.start()
    try:
        wait_until(lambda: serving(node.endpoint), deadline_s=60, what="node to serve")
        assert cluster_status(node.endpoint).metadata_format == 1
        with ShoalClient(node.endpoint) as client:
            client.call("CreateStream", {"StreamName": "before", "ShardCount": 1})
            first = _put(client, "before", b"a")
            starts_before = _starts(client, "before")
        assert not is_aws_layout(first)
        assert len(first) == 56

        node.terminate()
        node.extra_env = {}
        node.start()
        wait_until(
            lambda: (
                serving(node.endpoint)
                and cluster_status(node.endpoint).metadata_format == METADATA_FORMAT_MAX
            ),
            deadline_s=60,
            what=f"the restarted node to raise the metadata format to {METADATA_FORMAT_MAX}",
        )
        with ShoalClient(node.endpoint) as client:
            # The old stream: same numbers, new ones in its layout and above the stored ones.
            assert _starts(client, "before") == starts_before
            second = _put(client, "before", b"b")
            assert not is_aws_layout(second)
            assert int(second) > int(first)
            assert _read_after(client, "before", first) == [(second, b"b")]
            client.call(
                "SplitShard",
                {
                    "StreamName": "before",
                    "ShardToSplit": "shardId-000000000000",
                    "NewStartingHashKey": str(2**127),
                },
            )
            children = _starts(client, "before")[1:]
            assert len(children) == 2
            assert all(not is_aws_layout(n) and int(n) > int(second) for n in children)

            # A stream created now: AWS's layout, shards 2**144 + 16 apart.
            client.call("CreateStream", {"StreamName": "after", "ShardCount": 2})
            starts = _starts(client, "after")
            assert all(is_aws_layout(n) and len(n) == 56 for n in starts)
            assert int(starts[1]) - int(starts[0]) == 2**144 + 16
            third = _put(client, "after", b"c")
            assert is_aws_layout(third)
            fourth = _put(client, "after", b"d")
            assert int(fourth) > int(third)
            assert decode_sequence_number(fourth).offset == decode_sequence_number(third).offset + 1
            assert _read_after(client, "after", third) == [(fourth, b"d")]
    finally:
        node.terminate()
