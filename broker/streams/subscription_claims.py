"""The claim table on a shard's leader: one SubscribeToShard per (consumer, shard), cluster-wide.

Every subscription reads its shard from the shard's leader (long-polls, forwarded over
`NodeService.ShardRead` from other nodes; `service/subscriptions.py`), so each read carries a
`Claim` (consumer ARN, subscription id, the subscription's start in wall-clock ms) and the
leader keeps, per (consumer ARN, shard uid), the claim that holds it and until when:

- No live claim, or the same subscription: the read's claim holds (again), until
  `now + wait_ms + ttl_ms` (renewed by every read; a read waits at most `wait_ms`).
- Another subscription holds it: the read is refused (`Verdict.REFUSED`), unless the read's
  subscription started at least `takeover_ms` after the holder's (AWS's takeover rule): then it
  takes over (`Verdict.TOOK_OVER`) and the holder's next read is refused, which ends it.
- A subscription that ends sends one last read with `release` set: its claim goes at once
  (`release`; a no-op when another subscription holds the slot by then).

Expired claims are removed (that key's next claim, and a sweep of the whole table at most once
per `ttl_ms`), so the table holds about one entry per live subscription of the shards led
here. A release that is lost (its node died, the leader was unreachable) leaves the slot held
until the claim expires (at most `wait_ms + ttl_ms`; AWS refuses a new call for 5 s after a
successful one anyway). A new leader starts with an empty table: after a failover, two
subscriptions may each get one read before the first renewal orders them. Pure: the caller
passes the time (its monotonic clock for expiries); loop only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

SUBSCRIPTION_CLAIM_TTL_MS = 3_000  # a live subscription reads at least every read_wait_ms (1 s)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    consumer_arn: str
    subscription_id: str
    started_ms: int  # wall clock of the subscribing node: compared across nodes (takeover)
    release: bool = False  # the subscription ended: free its slot (module docstring)


class Verdict(enum.Enum):
    HELD = "held"  # no live claim, or the same subscription's: it holds (renewed)
    TOOK_OVER = "took_over"  # a subscription older than takeover_ms lost the slot to this one
    REFUSED = "refused"  # another subscription holds it (and is not old enough to take over)


@dataclass(slots=True)
class _Entry:
    claim: Claim
    expires_ms: int


class ClaimTable:
    """(consumer ARN, shard uid) -> the claim that holds it, on a shard's leader."""

    def __init__(self, *, takeover_ms: int, ttl_ms: int = SUBSCRIPTION_CLAIM_TTL_MS) -> None:
        assert takeover_ms >= 0
        assert ttl_ms > 0
        self.takeover_ms = takeover_ms
        self.ttl_ms = ttl_ms
        self._entries: dict[tuple[str, int], _Entry] = {}
        self._next_sweep_ms: int | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def holder(self, consumer_arn: str, shard_uid: int, *, now_ms: int) -> Claim | None:
        entry = self._entries.get((consumer_arn, shard_uid))
        if entry is None or entry.expires_ms <= now_ms:
            return None
        return entry.claim

    def claim(self, claim: Claim, shard_uid: int, *, now_ms: int, wait_ms: int = 0) -> Verdict:
        """One read of `claim`'s subscription, which may wait up to `wait_ms` (module doc)."""
        self._sweep(now_ms)
        key = (claim.consumer_arn, shard_uid)
        expires_ms = now_ms + max(0, wait_ms) + self.ttl_ms
        entry = self._entries.get(key)
        if entry is None or entry.expires_ms <= now_ms:
            self._entries[key] = _Entry(claim, expires_ms)
            return Verdict.HELD
        if entry.claim.subscription_id == claim.subscription_id:
            entry.expires_ms = max(entry.expires_ms, expires_ms)
            return Verdict.HELD
        age_ms = claim.started_ms - entry.claim.started_ms
        if age_ms > 0 and age_ms >= self.takeover_ms:  # strictly newer: no two take turns
            self._entries[key] = _Entry(claim, expires_ms)
            return Verdict.TOOK_OVER
        return Verdict.REFUSED

    def release(self, claim: Claim, shard_uid: int) -> bool:
        """The subscription ended: its slot is free at once (False: it held none)."""
        key = (claim.consumer_arn, shard_uid)
        entry = self._entries.get(key)
        if entry is None or entry.claim.subscription_id != claim.subscription_id:
            return False
        del self._entries[key]
        return True

    def _sweep(self, now_ms: int) -> None:
        if self._next_sweep_ms is not None and now_ms < self._next_sweep_ms:
            return
        self._next_sweep_ms = now_ms + self.ttl_ms
        expired = [key for key, entry in self._entries.items() if entry.expires_ms <= now_ms]
        for key in expired:
            del self._entries[key]
