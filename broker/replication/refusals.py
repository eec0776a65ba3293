"""Why a node did not take a shard append or read: internal routing outcomes (STYLE B.8).

Never a client error: the service routes again on a newer metadata image (`service/shards.py`),
and clients only see success or, past the retry budget, InternalFailure. Defined here, below the
service layer, because the replication driver (the local path) and the forwarding adapter (the
remote path) raise them alike.
"""

from __future__ import annotations

import enum

from broker.types import NodeId, ShardUid


class RefusalReason(enum.Enum):
    NOT_SHARD_LEADER = "NOT_SHARD_LEADER"  # this node does not lead the shard (now)
    STALE_EPOCH = "STALE_EPOCH"  # routed by an older epoch than the node knows, or fenced
    SHARD_SEALED = "SHARD_SEALED"  # the shard is being sealed by a reshard: route to children
    # The leader's node could not be reached, or refused for now (overloaded): nothing was
    # written, so routing again is safe.
    UNAVAILABLE = "UNAVAILABLE"
    # The append may or may not have been stored: the leader did not answer in time, lost its
    # leadership before the records committed, or the replica was dropped. Appends are NOT
    # routed again (that could store the records twice behind the client's back); the client
    # gets a retryable InternalFailure for them and decides, as on AWS. Reads retry freely.
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"
    # The node's replica cannot read that range back (corruption, being repaired): read it
    # from another replica of the shard (decisions/0002, "Corruption").
    DAMAGED = "DAMAGED"


class ShardRefusedError(Exception):
    """A node refused a shard append or read; the caller re-routes."""

    def __init__(
        self,
        reason: RefusalReason,
        *,
        shard_uid: ShardUid,
        leader: NodeId | None = None,
        epoch: int = 0,
        detail: str = "",
    ) -> None:
        self.reason = reason
        self.shard_uid = shard_uid
        self.leader = leader
        self.epoch = epoch
        super().__init__(f"{reason.value} shard {shard_uid} leader={leader} epoch={epoch} {detail}")
