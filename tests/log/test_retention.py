"""trim_expired: each shard keeps what arrived within its own retention period."""

from __future__ import annotations

import pytest

from broker.log.memory_store import MemoryLogStore
from broker.log.retention import retention_cutoff_ms, trim_expired
from broker.types import ShardUid
from tests.log.conformance import batch

HOUR_MS = 3_600_000
BASE_MS = 1_700_000_000_000


def test_trim_expired_uses_each_shards_retention() -> None:
    store = MemoryLogStore()
    short, long_ = ShardUid(1), ShardUid(2)
    for uid in (short, long_):
        store.append([batch(uid, 0, 2, arrival_ms=BASE_MS)])
        store.append([batch(uid, 2, 1, arrival_ms=BASE_MS + 10 * HOUR_MS)])
    now = BASE_MS + 30 * HOUR_MS
    assert trim_expired(store, {short: 24, long_: 48}, now_ms=now) == {short: 2, long_: 0}
    assert trim_expired(store, {short: 24}, now_ms=now + 10 * HOUR_MS) == {short: 3}
    assert store.log_end(short) == 3


def test_cutoff_is_clamped_and_checked() -> None:
    assert retention_cutoff_ms(retention_hours=24, now_ms=5) == 0
    assert retention_cutoff_ms(retention_hours=24, now_ms=BASE_MS) == BASE_MS - 24 * HOUR_MS
    with pytest.raises(AssertionError):
        retention_cutoff_ms(retention_hours=1, now_ms=BASE_MS)
