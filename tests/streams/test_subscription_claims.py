"""The claim table (streams/subscription_claims.py): one subscription per consumer and shard on
a shard's leader, on virtual time (every call gets its `now_ms`)."""

from __future__ import annotations

from broker.streams.subscription_claims import Claim, ClaimTable, Verdict

ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/fan:1"
SHARD = 7
TAKEOVER_MS = 5_000
TTL_MS = 3_000


def _claim(subscription_id: str, started_ms: int, arn: str = ARN) -> Claim:
    return Claim(consumer_arn=arn, subscription_id=subscription_id, started_ms=started_ms)


def _table() -> ClaimTable:
    return ClaimTable(takeover_ms=TAKEOVER_MS, ttl_ms=TTL_MS)


def test_the_first_claim_holds_and_its_reads_renew_it() -> None:
    table = _table()
    first = _claim("a", started_ms=1_000_000)
    assert table.claim(first, SHARD, now_ms=0) is Verdict.HELD
    for now_ms in range(1_000, 60_000, 1_000):  # a read per second, far past the ttl
        assert table.claim(first, SHARD, now_ms=now_ms, wait_ms=1_000) is Verdict.HELD
    assert table.holder(ARN, SHARD, now_ms=59_000) == first


def test_another_subscription_is_refused_while_the_claim_is_live() -> None:
    table = _table()
    first, second = _claim("a", 1_000_000), _claim("b", 1_000_000 + TAKEOVER_MS - 1)
    assert table.claim(first, SHARD, now_ms=0, wait_ms=1_000) is Verdict.HELD
    assert table.claim(second, SHARD, now_ms=10) is Verdict.REFUSED
    # The refusal took nothing from the holder.
    assert table.holder(ARN, SHARD, now_ms=10) == first
    assert table.claim(first, SHARD, now_ms=20) is Verdict.HELD


def test_an_expired_claim_frees_the_slot() -> None:
    table = _table()
    first, second = _claim("a", 1_000_000), _claim("b", 1_000_001)
    assert table.claim(first, SHARD, now_ms=0, wait_ms=1_000) is Verdict.HELD
    # Expires at now + wait + ttl: refused up to then, held from then on.
    assert table.claim(second, SHARD, now_ms=1_000 + TTL_MS - 1) is Verdict.REFUSED
    assert table.holder(ARN, SHARD, now_ms=1_000 + TTL_MS) is None
    assert table.claim(second, SHARD, now_ms=1_000 + TTL_MS) is Verdict.HELD
    # The old subscription coming back (its reader was parked) is refused now: it ends.
    assert table.claim(first, SHARD, now_ms=1_000 + TTL_MS + 1) is Verdict.REFUSED


def test_a_subscription_older_than_the_takeover_time_is_taken_over() -> None:
    table = _table()
    first, second = _claim("a", 1_000_000), _claim("b", 1_000_000 + TAKEOVER_MS)
    assert table.claim(first, SHARD, now_ms=0, wait_ms=1_000) is Verdict.HELD
    assert table.claim(second, SHARD, now_ms=100) is Verdict.TOOK_OVER
    assert table.holder(ARN, SHARD, now_ms=100) == second
    # The older one is refused at its next read (and never takes the slot back).
    assert table.claim(first, SHARD, now_ms=200) is Verdict.REFUSED
    assert table.claim(second, SHARD, now_ms=300) is Verdict.HELD


def test_with_no_takeover_time_only_a_newer_subscription_takes_over() -> None:
    table = ClaimTable(takeover_ms=0, ttl_ms=TTL_MS)
    first, same_start, newer = _claim("a", 1_000), _claim("b", 1_000), _claim("c", 1_001)
    assert table.claim(first, SHARD, now_ms=0) is Verdict.HELD
    assert table.claim(same_start, SHARD, now_ms=1) is Verdict.REFUSED
    assert table.claim(newer, SHARD, now_ms=2) is Verdict.TOOK_OVER
    assert table.claim(first, SHARD, now_ms=3) is Verdict.REFUSED


def test_claims_are_per_consumer_and_shard() -> None:
    table = _table()
    other_arn = ARN.replace("fan", "other")
    assert table.claim(_claim("a", 0), SHARD, now_ms=0) is Verdict.HELD
    assert table.claim(_claim("b", 0), SHARD + 1, now_ms=0) is Verdict.HELD
    assert table.claim(_claim("c", 0, arn=other_arn), SHARD, now_ms=0) is Verdict.HELD
    assert len(table) == 3


def test_expired_claims_are_removed() -> None:
    """Bounded: a sweep (at most once per ttl) drops every expired entry, so the table holds
    about the live subscriptions only, however many came and went."""
    table = _table()
    for n in range(1_000):
        table.claim(_claim(f"s{n}", 0), n, now_ms=n)
    assert len(table) <= 1_000
    live = _claim("live", 0)
    now_ms = 1_000 + 2 * TTL_MS
    table.claim(live, 5_000, now_ms=now_ms)
    assert len(table) == 1
    assert table.holder(ARN, 5_000, now_ms=now_ms) == live


def test_a_release_frees_the_slot_at_once_but_only_its_own() -> None:
    table = _table()
    first, second = _claim("a", 1_000), _claim("b", 1_001)
    assert table.claim(first, SHARD, now_ms=0, wait_ms=1_000) is Verdict.HELD
    # Another subscription's release (say, one taken over meanwhile) frees nothing.
    assert not table.release(second, SHARD)
    assert table.holder(ARN, SHARD, now_ms=1) == first
    assert table.release(first, SHARD)
    assert len(table) == 0
    assert table.claim(second, SHARD, now_ms=2) is Verdict.HELD
    assert not table.release(first, SHARD)  # late: the slot is the second's now
    assert table.holder(ARN, SHARD, now_ms=3) == second
