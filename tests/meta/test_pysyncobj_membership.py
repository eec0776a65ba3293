"""PysyncobjQuorum as a cluster on 127.0.0.1: leader step-down without a majority, leadership
transfer, adding and removing voters one at a time, read-only members, and acknowledgement
only once a majority holds the entry on disk.

Every wait has a deadline and polls a condition (pysyncobj offers no events for these).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from broker.meta.commands import AddTags
from broker.meta.pysyncobj_quorum import JOURNAL_FILE_NAME, PysyncobjQuorum
from tests.meta.factories import create_stream, register_node
from tests.meta.test_pysyncobj_quorum import DEADLINE_S, config, wait_until
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FALLBACK_S = 1.0  # leader_fallback_timeout_s in these tests (production: 3 s)


def addresses(count: int) -> list[str]:
    return [f"127.0.0.1:{free_port()}" for _ in range(count)]


def voter(tmp_path: Path, address: str, voters: list[str]) -> PysyncobjQuorum:
    others = tuple(a for a in voters if a != address)
    return PysyncobjQuorum(
        config(
            tmp_path / address.replace(":", "_"),
            address,
            others,
            leader_fallback_timeout_s=FALLBACK_S,
        )
    )


async def start_cluster(tmp_path: Path, voters: list[str]) -> list[PysyncobjQuorum]:
    quorums = [voter(tmp_path, address, voters) for address in voters]
    for quorum in quorums:
        await quorum.start()
    await wait_until(lambda: all(q.is_ready() for q in quorums), what="a leader")
    await wait_until(
        lambda: sum(q.is_quorum_leader() for q in quorums) == 1, what="exactly one leader"
    )
    return quorums


def leader_of(quorums: list[PysyncobjQuorum]) -> PysyncobjQuorum:
    (leader,) = [q for q in quorums if q.is_quorum_leader()]
    return leader


async def stop_all(quorums: list[PysyncobjQuorum]) -> None:
    for quorum in quorums:
        await quorum.stop()


async def test_a_leader_cut_off_from_the_majority_steps_down(tmp_path: Path) -> None:
    """The controller runs only on the quorum leader, so a leader that lost its majority must
    stop believing it leads within the fallback timeout (not pysyncobj's default 30 s)."""
    quorums = await start_cluster(tmp_path, addresses(3))
    try:
        leader = leader_of(quorums)
        assert leader.quorum_leader_address() == leader.membership().self_address
        followers = [q for q in quorums if q is not leader]
        assert {f.quorum_leader_address() for f in followers} == {leader.membership().self_address}
        for follower in followers:
            await follower.stop()
        cut_off = time.monotonic()
        await wait_until(
            lambda: not leader.is_quorum_leader(),
            what="the isolated leader to step down",
            deadline_s=FALLBACK_S + 2.0,
        )
        assert time.monotonic() - cut_off < FALLBACK_S + 2.0
    finally:
        await stop_all(quorums)


async def test_an_entry_is_acknowledged_once_on_disk_on_a_majority(tmp_path: Path) -> None:
    """Each replica fsyncs an entry before acknowledging it (DurableJournal.add), and the
    leader answers only after a majority acknowledged; so the journal files of at least two
    of three voters hold every answered command."""
    voters = addresses(3)
    quorums = await start_cluster(tmp_path, voters)
    try:
        leader = leader_of(quorums)
        await leader.propose(register_node("n1"))
        await leader.propose(create_stream("s1"))
        marker = "durable-marker-7f3a"
        await leader.propose(AddTags(now_ms=1, name="s1", tags=(("k", marker),)))
        holding = [
            address
            for address in voters
            if marker.encode()
            in (tmp_path / address.replace(":", "_") / JOURNAL_FILE_NAME).read_bytes()
        ]
        assert len(holding) >= 2
    finally:
        await stop_all(quorums)


async def test_transfer_leadership_hands_over_to_a_caught_up_voter(tmp_path: Path) -> None:
    quorums = await start_cluster(tmp_path, addresses(3))
    try:
        leader = leader_of(quorums)
        await leader.propose(register_node("n1"))
        follower = next(q for q in quorums if q is not leader)
        assert not await follower.transfer_leadership(timeout_s=1.0)  # only a leader can
        assert await leader.transfer_leadership(timeout_s=DEADLINE_S)
        assert not leader.is_quorum_leader()
        await wait_until(lambda: sum(q.is_quorum_leader() for q in quorums) == 1, what="a leader")
        await leader.propose(register_node("n2"))  # the cluster still takes commands
    finally:
        await stop_all(quorums)


async def test_voters_are_added_and_removed_one_at_a_time(tmp_path: Path) -> None:
    voters = addresses(3)
    quorums = await start_cluster(tmp_path, voters)
    try:
        leader = leader_of(quorums)
        await leader.propose(register_node("n1"))
        # Add first, then start the new voter with the current voters as its peers.
        (new,) = addresses(1)
        follower = next(q for q in quorums if q is not leader)
        await follower.add_voter(new, timeout_s=DEADLINE_S)  # forwarded to the leader
        assert new in leader.membership().voters
        await leader.add_voter(new, timeout_s=DEADLINE_S)  # already a voter: a no-op
        quorums.append(voter(tmp_path, new, voters))
        await quorums[-1].start()
        image = await quorums[-1].wait_for_image(
            lambda image: "n1" in image.nodes, timeout_s=DEADLINE_S
        )
        assert image.applied_commands >= 1
        await wait_until(
            lambda: all(len(q.membership().voters) == 4 for q in quorums), what="4 voters"
        )
        # Remove the leader itself: it hands over first.
        old_leader_address = leader.membership().self_address
        await leader.remove_voter(old_leader_address, timeout_s=DEADLINE_S)
        rest = [q for q in quorums if q is not leader]
        await wait_until(
            lambda: all(old_leader_address not in q.membership().voters for q in rest),
            what="the old leader gone from every voter's configuration",
        )
        await leader.stop()
        await wait_until(lambda: sum(q.is_quorum_leader() for q in rest) == 1, what="a leader")
        await rest[0].propose(register_node("n2"))
        assert {len(q.membership().voters) for q in rest} == {3}
    finally:
        await stop_all(quorums)


async def test_a_read_only_member_follows_and_proposes_without_voting(tmp_path: Path) -> None:
    voters = addresses(3)
    quorums = await start_cluster(tmp_path, voters)
    follower_address = f"127.0.0.1:{free_port()}"
    read_only = PysyncobjQuorum(
        config(tmp_path / "ro", follower_address, tuple(voters), read_only=True)
    )
    await read_only.start()
    try:
        leader = leader_of(quorums)
        await leader.propose(register_node("n1"))
        await read_only.wait_for_image(lambda image: "n1" in image.nodes, timeout_s=DEADLINE_S)
        assert not read_only.is_quorum_leader()
        await wait_until(
            lambda: read_only.quorum_leader_address() == leader.membership().self_address,
            what="the read-only member to learn the leader",
        )
        membership = read_only.membership()
        assert membership.read_only
        assert membership.voters == tuple(sorted(voters))
        await asyncio.wait_for(read_only.propose(register_node("n9")), DEADLINE_S)
        await leader.wait_for_image(lambda image: "n9" in image.nodes, timeout_s=DEADLINE_S)
        # It never counts: with two voters gone there is no majority, read-only or not.
        assert len(leader.membership().voters) == 3
    finally:
        await read_only.stop()
        await stop_all(quorums)
