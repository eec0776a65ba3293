"""The lease taker's plan (broker/consumers/balancing.py), on virtual time.

Goal: the KCL 2.x balancing properties hold for any fleet: after enough take rounds every
live worker holds within one lease of the average, whoever joined or left; no lease is taken
while its owner keeps renewing (expiry is judged from the observer's own clock only); and a
child shard is never taken before all of its parents are finished.

Method: a small simulation of workers sharing one lease table through the pure operations.
Time is an integer; each worker keeps its own observations, as a real worker does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.consumers import balancing, leases
from broker.consumers.leases import SHARD_END, Lease, LeaseError, LeaseTable, NewLease
from tests.fast_tier import examples

APP = "app"
STREAM = "s"
FAILOVER_MS = 1_000
RENEW_MS = FAILOVER_MS // 3 - 25
TAKE_MS = 2 * (FAILOVER_MS + 25)


@dataclass
class SimWorker:
    worker_id: str
    rng: random.Random
    observations: dict[str, balancing.Observation] = field(default_factory=dict)
    alive: bool = True


@dataclass
class Fleet:
    table: LeaseTable
    workers: dict[str, SimWorker]
    now_ms: int = 0
    takes: list[tuple[str, Lease]] = field(default_factory=list)  # (worker, lease taken)

    def stream(self) -> tuple[Lease, ...]:
        return leases.list_leases(self.table, application=APP, stream_name=STREAM)

    def renew_all(self) -> None:
        """Every live worker renews every lease it owns."""
        for lease in self.stream():
            owner = lease.lease_owner
            if owner is None or not self.workers[owner].alive:
                continue
            self.table, result = leases.renew(
                self.table,
                leases.RenewLease(
                    application=APP,
                    stream_name=STREAM,
                    lease_key=lease.lease_key,
                    owner=owner,
                    expected_counter=lease.lease_counter,
                ),
            )
            assert not isinstance(result, LeaseError)

    def take_round(self, worker: SimWorker) -> balancing.Plan:
        listed = self.stream()
        worker.observations = balancing.observe(worker.observations, listed, now_ms=self.now_ms)
        plan = balancing.plan(
            listed,
            worker_id=worker.worker_id,
            observations=worker.observations,
            failover_ms=FAILOVER_MS,
            now_ms=self.now_ms,
            rng=worker.rng,
            held={lease.lease_key for lease in listed if lease.lease_owner == worker.worker_id},
        )
        by_key = {lease.lease_key: lease for lease in listed}
        for lease in (*plan.take, *plan.steal):
            assert leases.parents_done_in(by_key, lease), "a child is never taken early"
            assert not lease.checkpoint.is_shard_end
            self.table, result = leases.take(
                self.table,
                leases.TakeLease(
                    application=APP,
                    stream_name=STREAM,
                    lease_key=lease.lease_key,
                    owner=worker.worker_id,
                    expected_owner=lease.lease_owner,
                    expected_counter=lease.lease_counter,
                ),
            )
            assert isinstance(result, Lease), "a sequential fleet never races"
            self.takes.append((worker.worker_id, result))
        return plan

    def round(self, rng: random.Random) -> None:
        """One take interval: renews every RENEW_MS, then every live worker's taker in a
        random order (their timers are not synchronized)."""
        for _ in range(TAKE_MS // RENEW_MS):
            self.now_ms += RENEW_MS
            self.renew_all()
        self.now_ms += TAKE_MS % RENEW_MS
        order = [w for w in self.workers.values() if w.alive]
        rng.shuffle(order)
        for worker in order:
            self.take_round(worker)

    def counts(self) -> dict[str, int]:
        counts = {w.worker_id: 0 for w in self.workers.values() if w.alive}
        for lease in self.stream():
            if lease.lease_owner is not None and lease.lease_owner in counts:
                counts[lease.lease_owner] += 1
        return counts


def fleet_of(shard_count: int, worker_count: int, seed: int) -> Fleet:
    table, _ = leases.create_leases(
        leases.EMPTY,
        leases.CreateLeases(
            application=APP,
            stream_name=STREAM,
            leases=tuple([NewLease(shard_id=f"shard-{i:03d}") for i in range(shard_count)]),
        ),
    )
    workers = {
        f"w{i}": SimWorker(worker_id=f"w{i}", rng=random.Random(seed * 100 + i))
        for i in range(worker_count)
    }
    return Fleet(table=table, workers=workers)


def assert_balanced(fleet: Fleet, shard_count: int) -> None:
    counts = fleet.counts()
    assert sum(counts.values()) == shard_count, f"every lease has a live owner: {counts}"
    assert max(counts.values()) - min(counts.values()) <= 1, counts


@settings(max_examples=examples(60), deadline=None)
@given(
    shard_count=st.integers(1, 24),
    worker_count=st.integers(1, 6),
    changes=st.lists(st.tuples(st.booleans(), st.integers(0, 9)), max_size=4),
    seed=st.integers(0, 2**16),
)
def test_workers_end_within_one_of_the_average(
    shard_count: int, worker_count: int, changes: list[tuple[bool, int]], seed: int
) -> None:
    """Start a fleet, let it settle, then let workers join (True) or leave (False, a crash:
    they stop renewing), settling after each change."""
    rng = random.Random(seed)
    fleet = fleet_of(shard_count, worker_count, seed)
    rounds_max = 3 * shard_count + 10
    for _ in range(rounds_max):
        fleet.round(rng)
    assert_balanced(fleet, shard_count)
    for join, which in changes:
        alive = [w for w in fleet.workers.values() if w.alive]
        if join or len(alive) == 1:
            worker_id = f"w{len(fleet.workers)}"
            fleet.workers[worker_id] = SimWorker(worker_id=worker_id, rng=random.Random(which))
        else:
            alive[which % len(alive)].alive = False
        for _ in range(rounds_max):
            fleet.round(rng)
        assert_balanced(fleet, shard_count)


def test_stealing_is_bounded_per_round() -> None:
    """One worker holds all 10 leases; a newcomer needs 5 but steals one at a time (the KCL's
    maxLeasesToStealAtOneTime), or up to the configured bound."""
    fleet = fleet_of(10, 1, seed=1)
    fleet.round(random.Random(1))
    assert fleet.counts() == {"w0": 10}
    newcomer = SimWorker(worker_id="w1", rng=random.Random(2))
    fleet.workers["w1"] = newcomer
    plan = fleet.take_round(newcomer)
    assert (len(plan.take), len(plan.steal), plan.target) == (0, 1, 5)
    listed = fleet.stream()
    newcomer.observations = balancing.observe(newcomer.observations, listed, now_ms=fleet.now_ms)
    plan = balancing.plan(
        listed,
        worker_id="w1",
        observations=newcomer.observations,
        failover_ms=FAILOVER_MS,
        now_ms=fleet.now_ms,
        rng=newcomer.rng,
        max_leases_to_steal_at_one_time=3,
    )
    assert plan.target == 5
    assert len(plan.steal) == 3
    assert all(lease.lease_owner == "w0" for lease in plan.steal)


@settings(max_examples=examples(60), deadline=None)
@given(
    shard_count=st.integers(1, 20),
    worker_count=st.integers(2, 5),
    events=st.lists(
        st.tuples(st.sampled_from(["renew", "scan"]), st.integers(0, 4), st.integers(1, 3_000)),
        min_size=1,
        max_size=80,
    ),
    seed=st.integers(0, 2**16),
)
def test_no_lease_is_taken_while_its_owner_keeps_renewing(
    shard_count: int, worker_count: int, events: list[tuple[str, int, int]], seed: int
) -> None:
    """Leases dealt round-robin (balanced); every owner renews at least every RENEW_MS while
    observers scan at arbitrary times (gaps up to 3 failovers): nothing is ever taken or
    stolen, whatever the observers' timing."""
    fleet = fleet_of(shard_count, worker_count, seed)
    ids = sorted(fleet.workers)
    for i, lease in enumerate(fleet.stream()):
        fleet.table, _ = leases.take(
            fleet.table,
            leases.TakeLease(
                application=APP,
                stream_name=STREAM,
                lease_key=lease.lease_key,
                owner=ids[i % worker_count],
                expected_owner=None,
                expected_counter=0,
            ),
        )
    last_renew_ms = 0
    for kind, who, gap_ms in events:
        target_ms = fleet.now_ms + gap_ms
        # Owners renew on their schedule while time passes to the event.
        while last_renew_ms + RENEW_MS <= target_ms:
            last_renew_ms += RENEW_MS
            fleet.now_ms = last_renew_ms
            fleet.renew_all()
        fleet.now_ms = target_ms
        if kind == "renew":
            fleet.renew_all()
            last_renew_ms = fleet.now_ms
        else:
            plan = fleet.take_round(fleet.workers[ids[who % worker_count]])
            assert plan.take == ()
            assert plan.steal == ()
    assert not fleet.takes


def test_a_dead_workers_leases_expire_after_the_failover_time() -> None:
    """Observed from w1: w0's lease is live until its counter has stood still for more than
    FAILOVER_MS on w1's clock, measured from when w1 first saw that counter."""
    fleet = fleet_of(2, 2, seed=3)
    observer = fleet.workers["w1"]
    for key, owner in [("shard-000", "w0"), ("shard-001", "w1")]:
        fleet.table, _ = leases.take(
            fleet.table,
            leases.TakeLease(
                application=APP,
                stream_name=STREAM,
                lease_key=key,
                owner=owner,
                expected_owner=None,
                expected_counter=0,
            ),
        )
    fleet.workers["w0"].alive = False
    fleet.now_ms = 5_000
    assert fleet.take_round(observer).take == ()  # first sight: just changed
    fleet.now_ms += FAILOVER_MS
    assert fleet.take_round(observer).take == ()  # not more than the failover time yet
    fleet.now_ms += 1
    plan = fleet.take_round(observer)
    assert [lease.lease_key for lease in plan.take] == ["shard-000"]
    assert fleet.counts() == {"w1": 2}


def test_expired_leases_come_before_unowned_ones() -> None:
    listed = [
        Lease(application=APP, stream_name=STREAM, lease_key="a", lease_owner=None,
              lease_counter=0, checkpoint=leases.TRIM_HORIZON),
        Lease(application=APP, stream_name=STREAM, lease_key="b", lease_owner="dead",
              lease_counter=7, checkpoint=leases.TRIM_HORIZON),
    ]  # fmt: skip
    observations = {
        "b": balancing.Observation(lease_owner="dead", lease_counter=7, changed_ms=0),
    }
    for seed in range(10):
        plan = balancing.plan(
            listed,
            worker_id="me",
            observations=observations,
            failover_ms=FAILOVER_MS,
            now_ms=FAILOVER_MS + 1,
            rng=random.Random(seed),
        )
        assert [lease.lease_key for lease in plan.take] == ["b", "a"]


@st.composite
def lineages(draw: st.DrawFn) -> list[NewLease]:
    """A random reshard history: root shards, then splits of one open shard and merges of two
    open shards, each closing its parents."""
    roots = draw(st.integers(1, 4))
    shards = [NewLease(shard_id=f"shard-{i:03d}") for i in range(roots)]
    open_ids = [s.shard_id for s in shards]
    for _ in range(draw(st.integers(0, 8))):
        index = len(shards)
        if len(open_ids) >= 2 and draw(st.booleans()):
            i = draw(st.integers(0, len(open_ids) - 2))
            parents = (open_ids[i], open_ids[i + 1])
            child = NewLease(shard_id=f"shard-{index:03d}", parent_shard_ids=parents)
            open_ids[i : i + 2] = [child.shard_id]
            shards.append(child)
        else:
            i = draw(st.integers(0, len(open_ids) - 1))
            parent = open_ids[i]
            children = [
                NewLease(shard_id=f"shard-{index + k:03d}", parent_shard_ids=(parent,))
                for k in range(2)
            ]
            open_ids[i : i + 1] = [c.shard_id for c in children]
            shards += children
    return shards


@settings(max_examples=examples(60), deadline=None)
@given(lineage=lineages(), worker_count=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_children_are_never_taken_before_their_parents(
    lineage: list[NewLease], worker_count: int, seed: int
) -> None:
    """Workers take what the plan says; a worker finishes (SHARD_END, then releases) every
    closed shard it holds at its next round. Every take of a child comes after all of its
    parents finished, and eventually every closed shard finishes."""
    rng = random.Random(seed)
    fleet = fleet_of(0, worker_count, seed)
    fleet.table, _ = leases.create_leases(
        fleet.table, leases.CreateLeases(application=APP, stream_name=STREAM, leases=tuple(lineage))
    )
    closed = {parent for shard in lineage for parent in shard.parent_shard_ids}
    finished_at: dict[str, int] = {}
    for step in range(3 * len(lineage) + 10):
        for lease in fleet.stream():
            owner = lease.lease_owner
            if owner is None or lease.lease_key not in closed or lease.checkpoint.is_shard_end:
                continue
            fleet.table, done = leases.checkpoint(
                fleet.table,
                leases.CheckpointLease(
                    application=APP,
                    stream_name=STREAM,
                    lease_key=lease.lease_key,
                    owner=owner,
                    expected_counter=lease.lease_counter,
                    checkpoint=SHARD_END,
                ),
            )
            assert isinstance(done, Lease)
            fleet.table, _ = leases.release(
                fleet.table,
                leases.ReleaseLease(
                    application=APP,
                    stream_name=STREAM,
                    lease_key=lease.lease_key,
                    owner=owner,
                    expected_counter=done.lease_counter,
                ),
            )
            finished_at[lease.lease_key] = step
        taken_before = len(fleet.takes)
        fleet.round(rng)
        for _, lease in fleet.takes[taken_before:]:
            for parent in lease.parent_shard_ids:
                assert finished_at.get(parent, step + 1) <= step, (lease.lease_key, parent)
    assert set(finished_at) == closed
