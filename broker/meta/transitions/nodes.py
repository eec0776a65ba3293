"""Nodes and shard placement: RegisterNode (a new incarnation per start), SetNodeState,
SetShardLeader (compare-and-set on the shard's epoch, one replica in or out per epoch) and
RemoveNode (only once it holds no replica), plus the replication-factor check CreateStream uses.
"""

from __future__ import annotations

import dataclasses

from broker import error_messages
from broker.errors import ErrorCode, ShoalError
from broker.meta.commands import RegisterNode, RemoveNode, SetNodeState, SetShardLeader
from broker.meta.image import MetadataImage, NodeMeta, NodeState, ShardMeta
from broker.meta.transitions.common import with_stream
from broker.types import NodeId


def check_replication_factor(image: MetadataImage, replication_factor: int) -> None:
    if replication_factor < 1:
        raise ShoalError(
            ErrorCode.VALIDATION,
            error_messages.replication_factor_too_small(replication_factor=replication_factor),
        )
    active = len(image.active_node_ids())
    if replication_factor > active:
        # Retryable: a node that is restarting or being unfenced brings the count back.
        raise ShoalError(
            ErrorCode.LIMIT_EXCEEDED,
            error_messages.too_few_active_nodes(
                replication_factor=replication_factor, active=active
            ),
        )


def _node(image: MetadataImage, node_id: NodeId) -> NodeMeta:
    node = image.nodes.get(node_id)
    if node is None:
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND, error_messages.node_not_registered(node_id=node_id)
        )
    return node


def _with_node(image: MetadataImage, node: NodeMeta) -> MetadataImage:
    nodes = dict(image.nodes)
    nodes[node.node_id] = node
    return dataclasses.replace(image, nodes=nodes)


def register_node(image: MetadataImage, command: RegisterNode) -> tuple[MetadataImage, object]:
    if not command.node_id or not command.api_address:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.NODE_ID_AND_ADDRESS_REQUIRED)
    for other in image.nodes.values():
        if other.node_id == command.node_id or other.state is NodeState.REMOVED:
            continue
        if other.api_address == command.api_address:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                error_messages.api_address_in_use(
                    node_id=other.node_id, api_address=command.api_address
                ),
            )
    previous = image.nodes.get(command.node_id)
    incarnation = 1 if previous is None else previous.incarnation + 1
    draining = previous is not None and previous.state is NodeState.DRAINING
    node = NodeMeta(
        node_id=command.node_id,
        api_address=command.api_address,
        http_address=command.http_address,
        raft_address=command.raft_address,
        voter=command.voter,
        state=NodeState.DRAINING if draining else NodeState.ACTIVE,
        incarnation=incarnation,
        registered_ms=command.now_ms,
    )
    return _with_node(image, node), node


def set_node_state(image: MetadataImage, command: SetNodeState) -> tuple[MetadataImage, object]:
    node = _node(image, command.node_id)
    if command.state is NodeState.REMOVED:
        raise ShoalError(ErrorCode.INVALID_ARGUMENT, error_messages.USE_REMOVE_NODE)
    if node.state is NodeState.REMOVED:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.node_was_removed(node_id=node.node_id),
        )
    if node.incarnation != command.expected_incarnation:
        # Decided about an earlier (or later) incarnation: the node restarted meanwhile.
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.node_incarnation_mismatch(
                node_id=node.node_id,
                incarnation=node.incarnation,
                expected_incarnation=command.expected_incarnation,
            ),
        )
    if node.state is command.state:
        return image, node
    changed = dataclasses.replace(node, state=command.state)
    return _with_node(image, changed), changed


def set_shard_leader(image: MetadataImage, command: SetShardLeader) -> tuple[MetadataImage, object]:
    meta = image.stream_by_uid(command.stream_uid)
    if meta is None or meta.is_gone(now_ms=command.now_ms):
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            error_messages.stream_uid_not_found(stream_uid=command.stream_uid),
        )
    shard = meta.shard_by_index(command.shard_index)
    if shard is None:
        raise ShoalError(
            ErrorCode.RESOURCE_NOT_FOUND,
            error_messages.shard_index_not_found(shard_index=command.shard_index, name=meta.name),
        )
    if shard.epoch != command.expected_epoch:
        # Compare-and-set: someone else changed the shard since the caller looked.
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.shard_epoch_mismatch(
                shard_id=shard.shard_id,
                name=meta.name,
                epoch=shard.epoch,
                expected_epoch=command.expected_epoch,
            ),
        )
    if command.epoch <= command.expected_epoch:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.epoch_not_raised(
                expected_epoch=command.expected_epoch, epoch=command.epoch
            ),
        )
    _check_replica_set(image, shard, command)
    # A new leader's throttles start empty at this moment (streams/throttling.py); the same
    # leader in a new epoch (a replica set change) keeps its buckets.
    since_ms = shard.leader_since_ms if command.leader == shard.leader else command.now_ms
    changed = dataclasses.replace(
        shard,
        replicas=command.replicas,
        leader=command.leader,
        epoch=command.epoch,
        leader_since_ms=since_ms,
    )
    shards = tuple(changed if s.index == shard.index else s for s in meta.shards)
    return with_stream(image, dataclasses.replace(meta, shards=shards)), changed


def _check_replica_set(image: MetadataImage, shard: ShardMeta, command: SetShardLeader) -> None:
    replicas = command.replicas
    if not replicas or len(set(replicas)) != len(replicas):
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.bad_replica_set(replicas=list(replicas)),
        )
    for node_id in replicas:
        node = image.nodes.get(node_id)
        if node is None or node.state is NodeState.REMOVED:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT, error_messages.replica_not_registered(node_id=node_id)
            )
    changed = set(replicas) ^ set(shard.replicas)
    if shard.replicas and len(changed) > 1:
        # One node in or out per epoch: any majority of the old set then overlaps any
        # majority of the new one (Raft's single-server membership change).
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.replica_set_changes_too_much(
                shard_id=shard.shard_id, current=list(shard.replicas), proposed=list(replicas)
            ),
        )
    if command.leader is None:
        return
    if command.leader not in replicas:
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT, error_messages.leader_not_a_replica(leader=command.leader)
        )
    # DRAINING may lead: the controller avoids it, but a leaving node that holds the only
    # complete log must lead until the others caught up (choose_leader never picks a
    # shorter log). FENCED and REMOVED nodes never lead.
    state = image.nodes[command.leader].state
    if state not in (NodeState.ACTIVE, NodeState.DRAINING):
        raise ShoalError(
            ErrorCode.INVALID_ARGUMENT,
            error_messages.node_cannot_lead(leader=command.leader, state=state.value),
        )


def remove_node(image: MetadataImage, command: RemoveNode) -> tuple[MetadataImage, object]:
    node = _node(image, command.node_id)
    if node.state is NodeState.REMOVED:
        return image, node  # a retry after an unknown outcome
    now_ms = command.now_ms
    for name in sorted(image.streams):
        stream = image.streams[name]
        if stream.is_gone(now_ms=now_ms):
            continue
        for shard in stream.shards:
            if shard.is_expired(now_ms=now_ms, retention_hours=stream.retention_hours):
                continue
            if node.node_id in shard.replicas:
                raise ShoalError(
                    ErrorCode.RESOURCE_IN_USE,
                    error_messages.node_still_holds_replica(
                        node_id=node.node_id, shard_id=shard.shard_id, name=stream.name
                    ),
                )
    removed = dataclasses.replace(node, state=NodeState.REMOVED, removed_absent=command.absent)
    return _with_node(image, removed), removed
