"""Which leases one worker should take or steal: the KCL 2.x lease taker, as a pure function.

The worker scans its application's leases every take interval and feeds them here with its own
observations (`observe`): for each lease, when *this* worker last saw its (owner, counter)
change, on *its* monotonic clock. A lease is expired when it is unowned, or when its counter has
not moved for more than `failover_ms` in this worker's eyes; no clocks are compared across
machines (../shared/REFERENCE.md §2.2). A lease first seen owned counts as just changed, so a
worker that starts up waits a full failover time before taking leases from anyone.

`plan` follows DynamoDBLeaseTaker.computeLeasesToTake:

* Only *workable* leases count: not finished (checkpoint SHARD_END) and not blocked (every
  parent finished or gone: `leases.parents_done_in`). A blocked child is never taken, so no
  worker processes a child before its parents.
* Workers are the owners of unexpired workable leases, plus this worker. target =
  ceil(workable / workers), capped by `max_leases_for_worker`.
* Below target, take expired leases first (a dead worker's shards, which are behind), then
  unowned ones (new shards, handed-off shards), up to the shortfall.
* Only when nothing is expired or unowned, steal from the most loaded worker: as many as it is
  above target (at most the shortfall), or one if it is at target while we need two or more;
  never more than `max_leases_to_steal_at_one_time`.

At the fixpoint every worker holds target or target - 1 leases (tests/consumers/test_balancing.py
checks it): a worker below target - 1 would steal from one at target, and one at target - 1
would steal from one above target.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from broker import limits
from broker.consumers.leases import Lease, parents_done_in

MAX_LEASES_TO_STEAL_AT_ONE_TIME_DEFAULT = limits.lease_steals_per_scan_default


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """What one worker last saw of one lease, and when it last saw it change (its own
    monotonic milliseconds)."""

    lease_owner: str | None
    lease_counter: int
    changed_ms: int


def observe(
    previous: Mapping[str, Observation], leases: Iterable[Lease], *, now_ms: int
) -> dict[str, Observation]:
    """The observations after a scan at `now_ms`: a lease whose owner or counter moved (or
    that is new) changed now; leases no longer listed are forgotten."""
    observations: dict[str, Observation] = {}
    for lease in leases:
        seen = previous.get(lease.lease_key)
        if (
            seen is not None
            and seen.lease_owner == lease.lease_owner
            and seen.lease_counter == lease.lease_counter
        ):
            assert seen.changed_ms <= now_ms, "the observer's clock is monotonic"
            observations[lease.lease_key] = seen
        else:
            observations[lease.lease_key] = Observation(
                lease_owner=lease.lease_owner,
                lease_counter=lease.lease_counter,
                changed_ms=now_ms,
            )
    return observations


def is_expired(
    lease: Lease, observation: Observation | None, *, failover_ms: int, now_ms: int
) -> bool:
    """Unowned, or unchanged for more than `failover_ms` in this observer's eyes. A lease
    never observed (or observed at another counter) is not expired: it just changed."""
    if lease.lease_owner is None:
        return True
    if (
        observation is None
        or observation.lease_owner != lease.lease_owner
        or observation.lease_counter != lease.lease_counter
    ):
        return False
    return now_ms - observation.changed_ms > failover_ms


def is_workable(leases: Mapping[str, Lease], lease: Lease) -> bool:
    """Not finished, and every parent finished or gone."""
    return not lease.checkpoint.is_shard_end and parents_done_in(leases, lease)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to do now. `take`: expired or unowned leases, to take expecting the owner and
    counter they carry. `steal`: live leases of the most loaded worker, likewise."""

    take: tuple[Lease, ...] = ()
    steal: tuple[Lease, ...] = ()
    target: int = 0
    worker_count: int = 1


def plan(
    leases: Sequence[Lease],
    *,
    worker_id: str,
    observations: Mapping[str, Observation],
    failover_ms: int,
    now_ms: int,
    rng: random.Random,
    held: Collection[str] = (),
    max_leases_to_steal_at_one_time: int = MAX_LEASES_TO_STEAL_AT_ONE_TIME_DEFAULT,
    max_leases_for_worker: int | None = None,
) -> Plan:
    """Which of one application+stream's `leases` `worker_id` should take or steal now.

    `held` are the lease keys the worker processes at the moment; they are never proposed
    (a lease owned by `worker_id` but not held, as after a restart, expires like any other).
    """
    assert failover_ms > 0
    assert max_leases_to_steal_at_one_time >= 0
    if max_leases_for_worker is not None:
        assert max_leases_for_worker >= 1
    by_key = {lease.lease_key: lease for lease in leases}
    assert len(by_key) == len(leases), "one lease per shard"
    workable = [lease for lease in leases if is_workable(by_key, lease)]
    live: list[Lease] = []
    expired: list[Lease] = []
    unowned: list[Lease] = []
    for lease in workable:
        if lease.lease_owner is None:
            unowned.append(lease)
        elif is_expired(
            lease, observations.get(lease.lease_key), failover_ms=failover_ms, now_ms=now_ms
        ):
            expired.append(lease)
        else:
            live.append(lease)
    counts = Counter(lease.lease_owner for lease in live if lease.lease_owner is not None)
    counts.setdefault(worker_id, 0)
    target = math.ceil(len(workable) / len(counts))
    if max_leases_for_worker is not None:
        target = min(target, max_leases_for_worker)
    needed = target - counts[worker_id]
    if needed <= 0:
        return Plan(target=target, worker_count=len(counts))
    available = [lease for lease in expired if lease.lease_key not in held]
    rng.shuffle(available)
    fresh = [lease for lease in unowned if lease.lease_key not in held]
    rng.shuffle(fresh)
    available += fresh
    if available:
        return Plan(take=tuple(available[:needed]), target=target, worker_count=len(counts))
    steal = _choose_leases_to_steal(
        live,
        counts=counts,
        worker_id=worker_id,
        needed=needed,
        target=target,
        steal_max=max_leases_to_steal_at_one_time,
        rng=rng,
    )
    return Plan(steal=steal, target=target, worker_count=len(counts))


def _choose_leases_to_steal(
    live: Sequence[Lease],
    *,
    counts: Mapping[str, int],
    worker_id: str,
    needed: int,
    target: int,
    steal_max: int,
    rng: random.Random,
) -> tuple[Lease, ...]:
    """KCL's chooseLeasesToSteal: from the most loaded other worker (ties: the smallest id,
    so every thief agrees on the victim)."""
    others = [(count, owner) for owner, count in counts.items() if owner != worker_id]
    if not others:
        return ()
    victim_count, victim = min(others, key=lambda item: (-item[0], item[1]))
    if victim_count < target:
        return ()
    steal_count = min(needed, victim_count - target)
    if needed > 1 and steal_count == 0:
        steal_count = 1
    steal_count = min(steal_count, steal_max)
    if steal_count <= 0:
        return ()
    candidates = sorted(
        (lease for lease in live if lease.lease_owner == victim), key=lambda lease: lease.lease_key
    )
    assert len(candidates) == victim_count
    return tuple(rng.sample(candidates, steal_count))
