"""Identifier types shared by every package.

NewTypes keep a shard index from being passed where an offset is wanted; they cost nothing at
run time. Value objects that belong to one package live in that package.
"""

from __future__ import annotations

from typing import NewType

StreamName = NewType("StreamName", str)
"""A Kinesis stream name, unique per account and region (here: per cluster)."""

StreamUid = NewType("StreamUid", int)
"""An internal 64-bit id of one incarnation of a stream; never reused after deletion."""

ShardUid = NewType("ShardUid", int)
"""An internal 64-bit id of one shard; never reused. The RocksDB key prefix of its log."""

ShardIndex = NewType("ShardIndex", int)
"""The number in `shardId-%012d`; unique within one stream incarnation."""

Offset = NewType("Offset", int)
"""The dense position of a record in one shard's log, starting at 0."""

NodeId = NewType("NodeId", str)
"""A node's stable name (for example `shoal-0`)."""
