"""Hash keys: partition key → 128-bit hash key, parsing, uniform ranges and shard lookup.

Kinesis routes a record by a 128-bit hash key: MD5 of the partition key's UTF-8 bytes read as an
unsigned big-endian integer, unless the producer passes `ExplicitHashKey` (a decimal string).
Every non-closed shard (OPEN or SEALING) owns an inclusive range of the space, and together those
ranges tile [0, 2^128-1] exactly, without gaps or overlap. That invariant is asserted wherever
shard sets are built, so a lookup can never miss.

`ShardRouter` is the O(log n) lookup: built once per stream incarnation and image (the caller
caches it), then queried per record. `find_shard` is the convenience form for one-off lookups.
Pure code: no I/O, no clock.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from broker import error_messages, limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.image import ShardMeta, ShardState, StreamMeta

try:
    # CPython's own MD5 (HACL*) is about twice as fast as OpenSSL's for the short keys Kinesis
    # hashes (OpenSSL sets up an EVP context per call), and the put path hashes every record.
    from _md5 import md5 as _builtin_md5  # type: ignore[import-not-found]

    _md5: Callable[[bytes], Any] = _builtin_md5
except ImportError:  # pragma: no cover - a Python built without its own MD5
    _md5 = hashlib.md5

HASH_KEY_SPACE = 2**128
assert limits.hash_key_max == HASH_KEY_SPACE - 1

# The AWS model's HashKey pattern. ASCII digits only: `str.isdigit` would accept other scripts'
# digits, which `int()` then happily converts.
_HASH_KEY_PATTERN = re.compile(r"0|[1-9][0-9]{0,38}")


def partition_key_hash(partition_key: str) -> int:
    """The hash key Kinesis derives from a partition key (MD5, unsigned 128-bit big-endian)."""
    return partition_key_bytes_hash(partition_key.encode("utf-8"))


def partition_key_bytes_hash(partition_key_utf8: bytes) -> int:
    """`partition_key_hash` of an already encoded key (the put path encodes it once)."""
    digest = _md5(partition_key_utf8).digest()
    return int.from_bytes(digest, "big", signed=False)  # 16 bytes: always within 0..2^128-1


_digest = operator.methodcaller("digest")


def partition_keys_bytes_hashes(partition_keys_utf8: Iterable[bytes]) -> Iterator[int]:
    """`partition_key_bytes_hash` of each key, column-wise: MD5, its digest and the digest as
    an int each a `map`, so a PutRecords' 500 keys take no Python step per key."""
    digests = map(_digest, map(_md5, partition_keys_utf8))
    big: itertools.repeat[Literal["big"]] = itertools.repeat("big")
    return map(int.from_bytes, digests, big)


def parse_hash_key(text: str, *, field: str) -> int:
    """A client-supplied decimal hash key (`ExplicitHashKey`, `NewStartingHashKey`, ...).

    Raises InvalidArgumentException naming `field` when `text` is not a canonical decimal (the
    model's pattern: no sign, no leading zeros) or lies outside [0, 2^128-1].
    """
    # The length bound in the pattern also keeps `int()` away from huge inputs.
    if _HASH_KEY_PATTERN.fullmatch(text) is not None:
        value = int(text)
        if value <= limits.hash_key_max:
            return value
    raise ShoalError(
        ErrorCode.INVALID_ARGUMENT,
        error_messages.hash_key_out_of_range(field=field, text=text),
    )


def uniform_ranges(count: int) -> list[tuple[int, int]]:
    """`count` inclusive ranges tiling [0, 2^128-1], boundary i at (i * 2^128) // count.

    This is how CreateStream lays out shards, and what UpdateShardCount(UNIFORM_SCALING) aims
    for; resharding compares existing shards against these exact boundaries.
    """
    assert count >= 1
    assert count <= limits.shard_index_max
    starts = [(i * HASH_KEY_SPACE) // count for i in range(count)]
    ends = [start - 1 for start in starts[1:]] + [limits.hash_key_max]
    ranges = list(zip(starts, ends, strict=True))
    assert tiles_hash_space(ranges)
    return ranges


def tiles_hash_space(ranges: Iterable[tuple[int, int]]) -> bool:
    """True when the inclusive ranges, in any order, cover [0, 2^128-1] exactly once."""
    expected_start = 0
    for start, end in sorted(ranges):
        if start != expected_start or end < start:
            return False
        expected_start = end + 1
    return expected_start == HASH_KEY_SPACE


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardRouter:
    """The non-closed shards of one stream, sorted by hash range, for bisect lookups.

    Immutable, so one router can be shared by every request that sees the same image.
    """

    starts: tuple[int, ...]  # hash_key_start of each entry of `shards`, ascending
    shards: tuple[ShardMeta, ...]

    @classmethod
    def for_stream(cls, stream: StreamMeta) -> ShardRouter:
        return cls.for_shards(stream.shards)

    @classmethod
    def for_shards(cls, shards: Iterable[ShardMeta]) -> ShardRouter:
        live = sorted(
            (s for s in shards if s.state is not ShardState.CLOSED),
            key=lambda s: s.hash_key_start,
        )
        # A gap would make some keys unroutable, an overlap would make routing ambiguous; both
        # mean a resharding bug, never a client mistake.
        assert tiles_hash_space((s.hash_key_start, s.hash_key_end) for s in live)
        return cls(starts=tuple(s.hash_key_start for s in live), shards=tuple(live))

    def find(self, hash_key: int) -> ShardMeta:
        """The OPEN or SEALING shard whose range contains `hash_key`."""
        assert 0 <= hash_key <= limits.hash_key_max
        position = bisect.bisect_right(self.starts, hash_key) - 1
        assert position >= 0  # the first range starts at 0
        shard = self.shards[position]
        assert shard.hash_key_start <= hash_key <= shard.hash_key_end
        return shard


def find_shard(shards: Sequence[ShardMeta], hash_key: int) -> ShardMeta:
    """The OPEN or SEALING shard whose range contains `hash_key`.

    Builds a router per call (O(n log n)); hot paths should cache `ShardRouter.for_stream`.
    """
    return ShardRouter.for_shards(shards).find(hash_key)
