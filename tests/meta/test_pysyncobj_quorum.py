"""PysyncobjQuorum on 127.0.0.1: durability across restarts, snapshots, a 3-node cluster;
and DurableJournal on its own (recovery from a torn tail, truncation, compaction).

Every wait has a deadline; waits poll a condition, never sleep for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj

from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import AddTags, Command
from broker.meta.image import StreamMeta
from broker.meta.image_codec import encode_image
from broker.meta.pysyncobj_quorum import (
    JOURNAL_FILE_NAME,
    SNAPSHOT_FILE_NAME,
    Divergence,
    DurableJournal,
    MetadataCorruptionError,
    PysyncobjQuorum,
    keep_held_entries,
    verify_metadata_files,
)
from broker.meta.quorum import QuorumConfig
from tests.meta.factories import create_stream, init_cluster, register_node
from tests.support import free_port

pytestmark = pytest.mark.integration

DEADLINE_S = 20.0


def config(
    data_dir: Path, address: str, peers: tuple[str, ...] = (), **knobs: object
) -> QuorumConfig:
    fields: dict[str, object] = {
        "self_address": address,
        "peer_addresses": peers,
        "data_dir": data_dir,
        "password": "test-password",
        # Faster elections than production so tests finish quickly; same relationships.
        "election_timeout_min_s": 0.2,
        "election_timeout_max_s": 0.5,
        "heartbeat_interval_s": 0.05,
        "connection_timeout_s": 1.0,
        "connection_retry_s": 0.2,
        "propose_timeout_s": DEADLINE_S,
    }
    fields.update(knobs)
    return QuorumConfig(**fields)  # type: ignore[arg-type]


async def wait_until(
    predicate: Callable[[], bool], *, what: str, deadline_s: float = DEADLINE_S
) -> None:
    """Polls `predicate` (pysyncobj offers no event for it) until true or the deadline."""
    poll_interval_s = 0.02
    for _ in range(int(deadline_s / poll_interval_s)):
        if predicate():
            return
        await asyncio.sleep(poll_interval_s)
    pytest.fail(f"timed out after {deadline_s} s waiting for {what}")


def tag(now_ms: int, value: str) -> Command:
    return AddTags(now_ms=now_ms, name="s1", tags=(("k", value),))


# --- A single node --------------------------------------------------------------------------------


async def test_single_node_restarts_with_its_state(tmp_path: Path) -> None:
    """The metadata durability test: what was acknowledged is there after a restart."""
    address = f"127.0.0.1:{free_port()}"
    quorum = PysyncobjQuorum(config(tmp_path, address))
    await quorum.start()
    try:
        assert await quorum.propose(init_cluster("c-1")) == "c-1"
        await quorum.propose(register_node("n1"))
        meta = await quorum.propose(create_stream("s1"))
        assert isinstance(meta, StreamMeta)
        with pytest.raises(ShoalError) as in_use:
            await quorum.propose(create_stream("s1"))
        assert in_use.value.code is ErrorCode.RESOURCE_IN_USE
        await quorum.propose(tag(1, "v1"))
        assert quorum.is_ready()
        statistics = quorum.statistics()
        assert statistics.role == "leader"
        assert statistics.quorum_leader == address
        before = quorum.image()
        assert before.applied_commands == 5
    finally:
        await quorum.stop()

    restarted = PysyncobjQuorum(config(tmp_path, address))
    await restarted.start()
    try:
        after = await restarted.wait_for_image(
            lambda image: image.applied_commands >= 5, timeout_s=DEADLINE_S
        )
        assert encode_image(after) == encode_image(before)
        # And it keeps working: the next command sees the recovered state.
        await wait_until(restarted.is_ready, what="the restarted node to lead")
        assert await restarted.propose(init_cluster("c-2")) == "c-1"
    finally:
        await restarted.stop()


async def test_restart_from_snapshot_and_journal(tmp_path: Path) -> None:
    """After log compaction the image comes back from our JSON snapshot plus the log tail."""
    address = f"127.0.0.1:{free_port()}"
    knobs: dict[str, Any] = {"log_compaction_entries_min": 4}
    quorum = PysyncobjQuorum(config(tmp_path, address, **knobs))
    await quorum.start()
    snapshot = tmp_path / SNAPSHOT_FILE_NAME
    try:
        await quorum.propose(register_node("n1"))
        await quorum.propose(create_stream("s1"))
        for i in range(12):
            await quorum.propose(tag(i, f"v{i}"))
        await wait_until(snapshot.exists, what="a snapshot")
        await quorum.propose(tag(99, "after-snapshot"))
        before = quorum.image()
    finally:
        await quorum.stop()
    document = json.loads(snapshot.read_bytes())  # our JSON, not a pickle
    assert document["v"] == 1
    assert "streams" in document["image"]
    assert document["cluster"] == [address]

    restarted = PysyncobjQuorum(config(tmp_path, address, **knobs))
    await restarted.start()
    try:
        after = await restarted.wait_for_image(
            lambda image: image.applied_commands >= before.applied_commands, timeout_s=DEADLINE_S
        )
        assert encode_image(after) == encode_image(before)
        assert dict(after.streams["s1"].tags)["k"] == "after-snapshot"  # type: ignore[index]
    finally:
        await restarted.stop()


async def test_no_majority_means_unavailable(tmp_path: Path) -> None:
    """One of three voters alone never elects a leader: proposals fail within the deadline."""
    ports = [free_port() for _ in range(3)]
    addresses = [f"127.0.0.1:{port}" for port in ports]
    quorum = PysyncobjQuorum(
        config(tmp_path, addresses[0], tuple(addresses[1:]), propose_timeout_s=0.5)
    )
    await quorum.start()
    try:
        assert not quorum.is_ready()
        with pytest.raises(ShoalError) as unavailable:
            await quorum.propose(init_cluster())
        assert unavailable.value.code is ErrorCode.UNAVAILABLE
        assert "may still be applied" in unavailable.value.message
    finally:
        await quorum.stop()


# --- Three nodes ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def three_voters(tmp_path: Path, **overrides: Any) -> AsyncIterator[list[PysyncobjQuorum]]:
    """Three voters on loopback, started and with a leader; stopped at the end."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    quorums = [
        PysyncobjQuorum(
            config(tmp_path / f"n{i}", a, tuple(b for b in addresses if b != a), **overrides)
        )
        for i, a in enumerate(addresses)
    ]
    for quorum in quorums:
        await quorum.start()
    try:
        await wait_until(lambda: all(q.is_ready() for q in quorums), what="a leader")
        yield quorums
    finally:
        for quorum in quorums:
            await quorum.stop()


async def test_three_nodes_command_on_a_follower_applies_everywhere(tmp_path: Path) -> None:
    async with three_voters(tmp_path) as quorums:
        leaders = {q.statistics().quorum_leader for q in quorums}
        assert len(leaders) == 1
        follower = next(q for q in quorums if q.statistics().role != "leader")
        await follower.propose(register_node("n1"))
        meta = await follower.propose(create_stream("s1"))
        assert isinstance(meta, StreamMeta)
        # The follower's result is its own apply, so its image already has the stream.
        assert "s1" in follower.image().streams
        images = [
            await q.wait_for_image(lambda image: "s1" in image.streams, timeout_s=DEADLINE_S)
            for q in quorums
        ]
        assert len({encode_image(image) for image in images}) == 1
        # Racing creates from two nodes: exactly one wins.
        others = [q for q in quorums if q is not follower]
        results = await asyncio.gather(
            *(q.propose(create_stream("race", now_ms=5)) for q in others), return_exceptions=True
        )
        assert sum(isinstance(r, StreamMeta) for r in results) == 1
        errors = [r for r in results if isinstance(r, ShoalError)]
        assert [e.code for e in errors] == [ErrorCode.RESOURCE_IN_USE]


async def test_a_voter_that_lost_its_journal_votes_only_once_caught_up(tmp_path: Path) -> None:
    """A voter restarted on an empty disk forgot its log and its vote: with the leader down it
    must not elect the other voter, whose log it cannot judge (it may lack entries this voter
    had helped commit). Once the leader is back it catches up, and then counts again."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    configs = [
        config(tmp_path / f"n{i}", address, tuple(a for a in addresses if a != address))
        for i, address in enumerate(addresses)
    ]
    quorums = [PysyncobjQuorum(c) for c in configs]
    for quorum in quorums:
        await quorum.start()
    try:
        await wait_until(lambda: all(q.is_ready() for q in quorums), what="a leader")
        leader = next(i for i, q in enumerate(quorums) if q.statistics().role == "leader")
        wiped, other = (i for i in range(3) if i != leader)
        await quorums[leader].propose(register_node("n1"))
        await quorums[leader].propose(create_stream("s1"))
        await quorums[wiped].wait_for_image(lambda i: "s1" in i.streams, timeout_s=DEADLINE_S)
        await quorums[wiped].stop()
        shutil.rmtree(configs[wiped].data_dir)
        await quorums[leader].stop()
        quorums[wiped] = PysyncobjQuorum(configs[wiped])
        await quorums[wiped].start()
        # Elections every 0.2-0.5 s: none may succeed with the blank voter's vote.
        for _ in range(60):
            assert not any(q.is_quorum_leader() for q in (quorums[wiped], quorums[other]))
            await asyncio.sleep(0.05)  # observing that nothing happens for a while
        quorums[leader] = PysyncobjQuorum(configs[leader])
        await quorums[leader].start()
        caught_up = await quorums[wiped].wait_for_image(
            lambda i: "s1" in i.streams, timeout_s=DEADLINE_S
        )
        assert encode_image(caught_up) == encode_image(quorums[other].image())
        syncobj = quorums[wiped]._syncobj
        assert syncobj is not None
        await wait_until(lambda: not syncobj._shoal_blank, what="the wiped voter caught up")
    finally:
        for quorum in quorums:
            await quorum.stop()


async def test_every_voter_of_a_new_cluster_counts_once_a_leader_is_elected(
    tmp_path: Path,
) -> None:
    """Every voter of a new cluster starts blank (no journal). Followers leave that state when
    they apply what the leader committed; the first leader itself receives no append_entries,
    and once stayed blank for good: after it lost the leadership it withheld its vote from
    every candidate, so with one other voter cut off no leader could be elected again (the
    isolated-node fencing stall of tests/chaos). Being elected proves its log complete."""
    async with three_voters(tmp_path) as quorums:
        leader = next(q for q in quorums if q.statistics().role == "leader")
        await leader.propose(register_node("n1"))
        syncobjs = [q._syncobj for q in quorums]
        assert all(s is not None for s in syncobjs)
        await wait_until(
            lambda: not any(s is not None and s._shoal_blank for s in syncobjs),
            what="every voter, the first leader included, counting again",
        )
        # And so the two that remain elect a leader when the leader is cut off.
        await leader.stop()
        others = [q for q in quorums if q is not leader]
        await wait_until(lambda: any(q.is_quorum_leader() for q in others), what="a new leader")


async def test_a_follower_past_its_election_timeout_asks_first_and_a_dead_leader_is_replaced(
    tmp_path: Path,
) -> None:
    """Pre-vote: a follower whose election deadline passed while the leader is healthy (what a
    starved CPU or a paused process leaves behind) no longer raises the term, so the leader
    stays; when the leader really stops, the others still elect a new one within seconds.

    Election timeouts of 1-2 s, not the 0.2-0.5 s of the other tests: a leader starved that
    long on a loaded machine is replaced for real (pre-vote cannot and should not prevent
    that), which failed the "the leader stays" check in a parallel run at load 11."""
    async with three_voters(
        tmp_path, election_timeout_min_s=1.0, election_timeout_max_s=2.0, connection_timeout_s=2.0
    ) as quorums:
        leader = next(q for q in quorums if q.statistics().role == "leader")
        await leader.propose(register_node("n1"))
        term = leader.statistics().term
        follower = next(q for q in quorums if q is not leader)
        syncobj = follower._syncobj
        assert syncobj is not None

        def deadline_passed() -> None:  # on the tick thread, as a starved stretch leaves it
            syncobj._SyncObj__raftElectionDeadline = 0.0

        for _ in range(20):  # without pre-vote the first of these starts an election
            syncobj.call_on_tick_thread(deadline_passed)
            await asyncio.sleep(0.05)
        await follower.propose(create_stream("after"))  # the quorum works: the follower follows
        assert leader.is_quorum_leader()
        assert {q.statistics().term for q in quorums} == {term}

        await leader.stop()
        others = [q for q in quorums if q is not leader]
        await wait_until(
            lambda: any(q.is_quorum_leader() for q in others), what="a new leader", deadline_s=10
        )


# pysyncobj (0.3.17, serializer.py getTransmissionData) never closes the snapshot file it
# streams to a follower; the garbage collector does, with a ResourceWarning. Not ours to fix
# here; an fd per snapshot transfer until collection.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_lagging_follower_catches_up_from_a_snapshot(tmp_path: Path) -> None:
    """A follower that missed compacted entries receives the leader's snapshot (our JSON) and
    ends with the same image."""
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    configs = [
        config(
            tmp_path / f"n{i}",
            address,
            tuple(a for a in addresses if a != address),
            log_compaction_entries_min=4,
        )
        for i, address in enumerate(addresses)
    ]
    quorums = [PysyncobjQuorum(c) for c in configs]
    for quorum in quorums:
        await quorum.start()
    try:
        await wait_until(lambda: all(q.is_ready() for q in quorums), what="a leader")
        leader = next(q for q in quorums if q.statistics().role == "leader")
        lagging_at = next(i for i, q in enumerate(quorums) if q is not leader)
        await leader.propose(register_node("n1"))
        await leader.propose(create_stream("s1"))
        await quorums[lagging_at].wait_for_image(
            lambda image: "s1" in image.streams, timeout_s=DEADLINE_S
        )
        await quorums[lagging_at].stop()
        for i in range(12):
            await leader.propose(tag(i, f"v{i}"))
        await wait_until(
            lambda: (leader._config.data_dir / SNAPSHOT_FILE_NAME).exists(),
            what="a snapshot on the leader",
        )
        await leader.propose(tag(99, "last"))
        expected = leader.image()

        quorums[lagging_at] = PysyncobjQuorum(configs[lagging_at])
        await quorums[lagging_at].start()
        caught_up = await quorums[lagging_at].wait_for_image(
            lambda image: image.applied_commands >= expected.applied_commands,
            timeout_s=DEADLINE_S,
        )
        assert encode_image(caught_up) == encode_image(expected)
    finally:
        for quorum in quorums:
            await quorum.stop()


# --- DurableJournal -------------------------------------------------------------------------------


def test_journal_reopens_with_entries_term_and_vote(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    journal = DurableJournal(path)
    for index in range(1, 6):
        journal.add(b"cmd%d" % index, index, 1)
    journal.setCurrentTerm(3, "127.0.0.1:1")
    journal.setRaftCommitIndex(4)
    journal._destroy()

    reopened = DurableJournal(path)
    assert len(reopened) == 5
    assert reopened[-1] == (b"cmd5", 5, 1)
    assert reopened.getCurrentTerm() == 3
    assert reopened.getVotedForNodeId() == "127.0.0.1:1"
    assert reopened.getRaftCommitIndex() == 4
    reopened._destroy()


def test_journal_drops_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    journal = DurableJournal(path)
    journal.add(b"one", 1, 1)
    journal.add(b"two", 2, 1)
    journal._destroy()
    data = path.read_bytes()
    path.write_bytes(data[:-2])  # the last record was being written when the power went
    reopened = DurableJournal(path)
    assert list(reopened[:]) == [(b"one", 1, 1)]
    reopened.add(b"two'", 2, 2)
    reopened._destroy()
    assert list(DurableJournal(path)[:]) == [(b"one", 1, 1), (b"two'", 2, 2)]


def test_journal_refuses_corruption_before_the_tail(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    journal = DurableJournal(path)
    journal.add(b"one", 1, 1)
    journal.add(b"two", 2, 1)
    journal._destroy()
    data = bytearray(path.read_bytes())
    data[12 + 24] ^= 0xFF  # flip a byte of the first record's command
    path.write_bytes(bytes(data))
    with pytest.raises(MetadataCorruptionError, match="corrupt") as refused:
        DurableJournal(path)
    assert "\n" not in str(refused.value)  # one line for the operator
    assert "docs/operations.md" in str(refused.value)


def test_journal_refuses_a_broken_length_before_the_tail(tmp_path: Path) -> None:
    """A length field broken mid-log runs past the file's end like a torn tail would; the
    whole record after it tells them apart (a torn tail has nothing after it)."""
    path = tmp_path / JOURNAL_FILE_NAME
    journal = DurableJournal(path)
    for index in range(1, 4):
        journal.add(b"cmd%d" % index, index, 1)
    journal._destroy()
    data = bytearray(path.read_bytes())
    data[12 + 3] = 0x7F  # the first record's length: far past the end of the file
    path.write_bytes(bytes(data))
    with pytest.raises(MetadataCorruptionError, match="a whole record follows"):
        DurableJournal(path)


def test_a_corrupt_snapshot_or_meta_file_is_refused_before_start(tmp_path: Path) -> None:
    journal = DurableJournal(tmp_path / JOURNAL_FILE_NAME)
    journal.add(b"one", 1, 1)
    journal.setCurrentTerm(2, None)
    journal._destroy()
    verify_metadata_files(tmp_path)  # whole files pass
    (tmp_path / SNAPSHOT_FILE_NAME).write_bytes(b'{"v": 1, "image": {"nope"')
    with pytest.raises(MetadataCorruptionError, match="not a readable snapshot"):
        verify_metadata_files(tmp_path)
    (tmp_path / SNAPSHOT_FILE_NAME).unlink()
    meta = tmp_path / f"{JOURNAL_FILE_NAME}.meta"
    meta.write_bytes(meta.read_bytes()[:-3])
    with pytest.raises(MetadataCorruptionError, match="unreadable"):
        verify_metadata_files(tmp_path)


def test_journal_truncates_suffix_and_compacts_prefix(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE_NAME
    journal = DurableJournal(path)
    for index in range(1, 8):
        journal.add(b"c%d" % index, index, 1)
    journal.deleteEntriesFrom(5)  # keep positions 0..4 (indices 1..5)
    journal.add(b"c6'", 6, 2)
    journal.deleteEntriesTo(2)  # drop indices 1..2
    journal.add(b"c7'", 7, 2)
    assert [entry[1] for entry in journal[:]] == [3, 4, 5, 6, 7]
    journal._destroy()
    reopened = DurableJournal(path)
    assert list(reopened[:]) == [
        (b"c3", 3, 1),
        (b"c4", 4, 1),
        (b"c5", 5, 1),
        (b"c6'", 6, 2),
        (b"c7'", 7, 2),
    ]
    reopened.clear()
    assert len(reopened) == 0
    reopened._destroy()
    assert len(DurableJournal(path)) == 0


# --- Truncation only on conflict (issue 20) ------------------------------------------------------


def _log(*terms: int) -> list[tuple[bytes, int, int]]:
    return [(b"c%d" % i, i, term) for i, term in enumerate(terms, start=1)]


def test_a_lagging_heartbeat_no_longer_cuts_held_entries() -> None:
    journal = _log(1, 2, 2, 2, 2, 2, 2, 2)  # indices 1..8
    heartbeat = {"type": "append_entries", "term": 2, "prevLogIdx": 5, "prevLogTerm": 2}
    rewritten = keep_held_entries({**heartbeat, "entries": []}, journal, applied=6)
    assert isinstance(rewritten, dict)
    assert (rewritten["prevLogIdx"], rewritten["prevLogTerm"], rewritten["entries"]) == (8, 2, [])
    # A resend overlapping what is held keeps only what is new.
    resend = {**heartbeat, "entries": [(b"c%d" % i, i, 2) for i in range(6, 11)]}
    rewritten = keep_held_entries(resend, journal, applied=6)
    assert isinstance(rewritten, dict)
    assert rewritten["prevLogIdx"] == 8
    assert [e[1] for e in rewritten["entries"]] == [9, 10]


def test_entries_of_an_older_term_not_applied_are_still_cut() -> None:
    """Raft's conflict rule: entries of a deposed leader's term past what was applied may
    differ from the new leader's, and go as pysyncobj cuts them."""
    journal = _log(1, 1, 1, 2, 2)  # 4 and 5 from a term-2 leader; the leader is of term 3
    message = {
        "type": "append_entries",
        "term": 3,
        "prevLogIdx": 3,
        "prevLogTerm": 1,
        "entries": [(b"x4", 4, 3)],
    }
    assert keep_held_entries(message, journal, applied=3) is message


def test_an_applied_entry_replaced_by_another_is_a_divergence() -> None:
    journal = _log(1, 1, 2, 2)
    message = {
        "type": "append_entries",
        "term": 3,
        "prevLogIdx": 2,
        "prevLogTerm": 1,
        "entries": [(b"other", 3, 3)],
    }
    assert isinstance(keep_held_entries(message, journal, applied=3), Divergence)


async def test_a_stale_heartbeat_truncated_applied_entries_and_no_longer_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reproduction: a follower that applied entries gets a heartbeat whose prevLogIdx
    lags (as after a nextIndex rewind). pysyncobj's own handler cuts the applied entries with
    its CRITICAL warning (they come back identical, so the images agree); through our handler
    nothing is cut."""
    async with three_voters(tmp_path) as quorums:
        leader = next(q for q in quorums if q.statistics().role == "leader")
        await leader.propose(register_node("n1"))
        for i in range(6):
            await leader.propose(create_stream(f"s{i}"))
        follower = next(q for q in quorums if q is not leader)
        await follower.wait_for_image(lambda i: "s5" in i.streams, timeout_s=DEADLINE_S)
        syncobj = follower._syncobj
        assert syncobj is not None
        journal = syncobj._SyncObj__raftLog

        def stale_heartbeat() -> dict[str, Any]:
            prev = journal[-1][1] - 4
            return {
                "type": "append_entries",
                "term": syncobj.raftCurrentTerm,
                "commit_index": syncobj.raftCommitIndex,
                "prevLogIdx": prev,
                "prevLogTerm": journal[prev - journal[0][1]][2],
                "entries": [],
            }

        leader_node = syncobj._getLeader()
        done = asyncio.get_running_loop().create_future()

        def on_tick(handler: Callable[..., None]) -> None:
            before = len(journal)
            handler(leader_node, stale_heartbeat())
            follower._state.call_in_loop(done.set_result, before - len(journal))  # type: ignore[union-attr]

        syncobj.call_on_tick_thread(lambda: on_tick(syncobj._SyncObj__onMessageReceived))
        assert await asyncio.wait_for(done, DEADLINE_S) == 0  # ours: nothing cut
        assert "truncating already-applied" not in caplog.text
        done = asyncio.get_running_loop().create_future()
        original = functools.partial(SyncObj._SyncObj__onMessageReceived, syncobj)
        syncobj.call_on_tick_thread(lambda: on_tick(original))
        assert await asyncio.wait_for(done, DEADLINE_S) == 4  # pysyncobj's: 4 entries cut
        assert "truncating already-applied log entries" in caplog.text
        # They come back from the leader, identical: the images still agree.
        await leader.propose(create_stream("after"))
        images = [
            await q.wait_for_image(lambda i: "after" in i.streams, timeout_s=DEADLINE_S)
            for q in quorums
        ]
        assert len({encode_image(image) for image in images}) == 1
