"""The MetadataQuorum seam: propose a command, read the latest image, wait for a condition.

Implementations:
- `PysyncobjQuorum` (`pysyncobj_quorum.py`): the real one, Raft over TCP with a durable log.
- `LocalQuorum` (here): applies each command inline in the calling task; for unit tests of the
  layers above and as the reference behaviour of the protocol.
- `SimMetadataQuorum` (`broker/sim/`, later): deterministic, with injected faults.

Every implementation applies commands through `state_machine.apply`, so results and errors are
the same whichever is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta import state_machine
from broker.meta.commands import Command
from broker.meta.image import MetadataImage


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumStatistics:
    """A snapshot of one node's view of the quorum (Trio-style `statistics()`)."""

    role: str  # "leader", "follower" or "candidate"
    term: int  # the Raft term
    commit_index: int
    last_applied: int
    quorum_leader: str | None  # the address of the leader this node knows, if any
    applied_commands: int  # MetadataImage.applied_commands of the local image


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumMembership:
    """The voters of the metadata quorum as this node knows them (pysyncobj's configuration,
    which lives in its Raft log, not in the MetadataImage)."""

    self_address: str
    voters: tuple[str, ...]  # sorted Raft addresses, this node included when it votes
    read_only: bool  # this node follows the log without voting (QuorumConfig.read_only)


# The election timeout's range in heartbeats, as pysyncobj's defaults (0.1 s; 0.4-1.4 s) have
# it: above 3 heartbeats, so a follower that misses one or two does not stand for election.
ELECTION_TIMEOUT_HEARTBEATS = (4, 14)


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumConfig:
    """How one node joins the metadata quorum. Timing defaults are pysyncobj's settings as
    chosen for Shoal; each says why.

    A voter lists the other voters in `peer_addresses`. A read-only member (`read_only`)
    lists the voters it follows: it receives the log and proposes through the leader but never
    votes or stands for election, and it listens on no Raft port (pysyncobj's read-only node,
    `selfNode=None`). Voters change one at a time through `add_voter`/`remove_voter`
    (pysyncobj's dynamic membership); the configuration then lives in the Raft log and its
    snapshots, so on restart it overrides the configured peers."""

    self_address: str  # "host:port" other voters reach this node at, e.g. "127.0.0.1:7100"
    peer_addresses: tuple[str, ...]  # the other voters; empty for a single-node cluster
    read_only: bool = False
    data_dir: Path  # journal, its meta file and the snapshot live here
    password: str  # encrypts Raft traffic; pysyncobj unpickles what arrives, so never optional
    # Listen on exactly this address. pysyncobj would bind 0.0.0.0 for an IPv4 self address,
    # exposing its pickle-speaking port on every interface.
    bind_address: str | None = None  # None: self_address
    # Raft election timeout range (s). pysyncobj's default; must exceed 3 heartbeats.
    election_timeout_min_s: float = 0.4
    election_timeout_max_s: float = 1.4
    heartbeat_interval_s: float = 0.1  # appendEntriesPeriod, pysyncobj's default
    # A leader cut off from a majority steps down after this long. pysyncobj's 30 s lets a
    # partitioned leader answer stale reads for half a minute; 3 s bounds that window.
    leader_fallback_timeout_s: float = 3.0
    # Peer connection declared dead after this silence; must be >= election_timeout_max_s.
    connection_timeout_s: float = 3.5
    connection_retry_s: float = 1.0  # reconnect to a lost peer quickly after a restart
    # Pod IPs change on reschedule; pysyncobj caches DNS for 600 s by default.
    dns_cache_s: float = 2.0
    dns_fail_cache_s: float = 2.0
    # Snapshot (full dump) and compact the log after this many entries or seconds. Snapshots
    # are serialized on the tick thread (no fork: gRPC is not fork-safe), so keep them rare.
    log_compaction_entries_min: int = 5_000
    log_compaction_interval_s: float = 300.0
    # Commands waiting for a leader; past this a proposal fails at once (UNAVAILABLE).
    commands_queue_max: int = 1_000
    bind_attempts_max: int = 10  # port still taken after this many 1 s attempts: fail start
    # Upper bound on one proposal inside the quorum; the frontend applies its own deadline.
    propose_timeout_s: float = 10.0

    def validate(self) -> None:
        assert self.password, "the Raft port must be encrypted"
        assert self.self_address not in self.peer_addresses
        if self.read_only:
            assert self.peer_addresses, "a read-only member needs voters to follow"
        assert self.election_timeout_min_s > 3 * self.heartbeat_interval_s
        assert self.election_timeout_max_s > self.election_timeout_min_s
        assert self.connection_timeout_s >= self.election_timeout_max_s
        assert self.leader_fallback_timeout_s > self.heartbeat_interval_s
        assert self.log_compaction_entries_min >= 2
        assert self.commands_queue_max > 0
        assert self.bind_attempts_max > 0
        assert self.propose_timeout_s > 0


class MetadataQuorum(Protocol):
    """The replicated metadata. A node view: `image()` is what this node has applied.

    Lifecycle: `start()` once, then any number of calls from the event loop's thread, then
    `stop()`. Not thread-safe: call it from the loop that started it."""

    async def propose(self, command: Command) -> object:
        """Replicates and applies `command`; returns `Applied.result`.

        Raises the ShoalError that `state_machine.apply` produced for it, or
        ShoalError(UNAVAILABLE) when there is no leader, the queue is full, or the deadline
        passes. UNAVAILABLE is an *unknown outcome*: the command may still be applied later
        (it may already sit in the leader's log). Callers retry only commands that are safe
        to apply twice (the state machine makes its own commands idempotent where it can)."""
        ...

    def image(self) -> MetadataImage:
        """The latest image applied on this node; may lag the leader (not linearizable)."""
        ...

    async def wait_for_image(
        self, predicate: Callable[[MetadataImage], bool], *, timeout_s: float
    ) -> MetadataImage:
        """The first local image for which `predicate` holds (possibly the current one).

        Raises ShoalError(UNAVAILABLE) after `timeout_s`."""
        ...

    async def start(self) -> None:
        """Opens storage, recovers the image and joins the cluster; does not wait for a
        leader (see `is_ready`)."""
        ...

    async def stop(self) -> None:
        """Leaves the cluster; pending proposals fail with UNAVAILABLE (unknown outcome)."""
        ...

    def is_ready(self) -> bool:
        """A leader is known and this node has applied everything it committed at start."""
        ...

    def statistics(self) -> QuorumStatistics: ...

    def is_quorum_leader(self) -> bool:
        """This node's replica believes it is the Raft leader (it may be deposed and not know
        yet, for at most the leader fallback timeout). The controller runs only here."""
        ...

    def quorum_leader_address(self) -> str | None:
        """The Raft address of the leader this node last heard from, if any. Map it to a node
        with `MetadataImage.node_by_raft_address`."""
        ...


class QuorumAdmin(Protocol):
    """Membership changes of the metadata quorum (the admin RPCs call these).

    One change at a time: a change proposed while another is uncommitted is refused
    (RESOURCE_IN_USE, retry later). Call from the event loop that started the quorum."""

    def membership(self) -> QuorumMembership: ...

    async def add_voter(self, address: str, *, timeout_s: float) -> None:
        """Adds `address` to the voters; returns once the change is committed. Add first, then
        start the new node with the voters as `peers`: until it runs, the cluster counts it
        missing. Already a voter: returns at once."""
        ...

    async def remove_voter(self, address: str, *, timeout_s: float) -> None:
        """Removes `address` from the voters; returns once the change is committed. Removing
        the leader first hands leadership to a caught-up voter. Not a voter: returns at once.
        Stop the removed node afterwards: it no longer hears from the quorum."""
        ...

    async def transfer_leadership(self, *, timeout_s: float, to: str | None = None) -> bool:
        """Hands Raft leadership to a caught-up voter (`to`, or the most caught-up one) if this
        node leads; returns once another node leads (True), or False if this node did not lead
        or nobody took over within `timeout_s`. For drains and pod preStop hooks."""
        ...


class LocalQuorum:
    """A one-replica MetadataQuorum that applies each command inline, in proposal order.

    Deterministic and synchronous underneath (no threads, no timers): propose returns once the
    command is applied. For unit tests of the frontend, the gateway and the controller."""

    def __init__(self, image: MetadataImage | None = None) -> None:
        self._image = image if image is not None else MetadataImage()
        self._changed = asyncio.Event()
        self._started = False

    async def propose(self, command: Command) -> object:
        if not self._started:
            raise ShoalError(ErrorCode.UNAVAILABLE, error_messages.METADATA_QUORUM_NOT_STARTED)
        applied = state_machine.apply(self._image, command)
        self._set_image(applied.image)
        if applied.error is not None:
            raise applied.error
        return applied.result

    def image(self) -> MetadataImage:
        return self._image

    async def wait_for_image(
        self, predicate: Callable[[MetadataImage], bool], *, timeout_s: float
    ) -> MetadataImage:
        return await wait_for_image_change(
            lambda: self._image, lambda: self._changed, predicate, timeout_s=timeout_s
        )

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._started = False

    def is_ready(self) -> bool:
        return self._started

    def statistics(self) -> QuorumStatistics:
        return QuorumStatistics(
            role="leader" if self._started else "follower",
            term=1,
            commit_index=self._image.applied_commands,
            last_applied=self._image.applied_commands,
            quorum_leader="local" if self._started else None,
            applied_commands=self._image.applied_commands,
        )

    def is_quorum_leader(self) -> bool:
        return self._started

    def quorum_leader_address(self) -> str | None:
        return "local" if self._started else None

    def membership(self) -> QuorumMembership:
        return QuorumMembership(self_address="local", voters=("local",), read_only=False)

    async def add_voter(self, address: str, *, timeout_s: float) -> None:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.LOCAL_QUORUM_ONE_VOTER)

    async def remove_voter(self, address: str, *, timeout_s: float) -> None:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.LOCAL_QUORUM_ONE_VOTER)

    async def transfer_leadership(self, *, timeout_s: float, to: str | None = None) -> bool:
        return False

    def _set_image(self, image: MetadataImage) -> None:
        self._image = image
        # Wake every waiter, then start a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()


async def wait_for_image_change(
    current: Callable[[], MetadataImage],
    changed: Callable[[], asyncio.Event],
    predicate: Callable[[MetadataImage], bool],
    *,
    timeout_s: float,
) -> MetadataImage:
    """Shared loop of `wait_for_image`: re-check the predicate after every image change.

    `changed()` returns the event that the next change will set; it is read in the same step
    as the image (no await between), so a change cannot slip in unnoticed."""
    assert timeout_s >= 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                image = current()
                if predicate(image):
                    return image
                await changed().wait()
    except TimeoutError as exc:
        raise ShoalError(
            ErrorCode.UNAVAILABLE,
            error_messages.metadata_state_not_reached(timeout_s=timeout_s),
        ) from exc
