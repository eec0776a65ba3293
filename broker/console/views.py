"""What the console's pages show, computed from one metadata image: pure values, no I/O.

Every function takes the image (and the clock reading `now_ms`) and returns frozen view
values the templates render; nothing here calls a service or reads a disk. Internal streams
(`streams.internal_names`) are never shown: the console is an outside caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from broker.consumers.leases import Lease
from broker.meta.capacity_table import ReportedLoad, ScalingEvent
from broker.meta.image import (
    MetadataImage,
    NodeMeta,
    NodeState,
    ShardMeta,
    ShardState,
    StreamMeta,
)
from broker.streams.internal_names import is_internal
from broker.types import NodeId, ShardIndex

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 200
HASH_KEY_SPACE = 2**128


# --- Cluster overview -------------------------------------------------------------------------


class QuorumFacts(Protocol):
    """What the overview shows of `meta.quorum.QuorumStatistics` (not imported: this module
    stays free of the quorum's I/O)."""

    @property
    def role(self) -> str: ...
    @property
    def term(self) -> int: ...
    @property
    def commit_index(self) -> int: ...
    @property
    def quorum_leader(self) -> str | None: ...
    @property
    def applied_commands(self) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRow:
    node_id: str
    state: str
    role: str  # "quorum leader", "voter" or "read-only"
    is_controller: bool
    is_this_node: bool
    api_address: str
    http_address: str
    incarnation: int
    leaders: int
    replicas: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardProblem:
    stream_name: str
    shard_id: str
    replicas: tuple[str, ...]
    leader: str | None
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Overview:
    cluster_id: str
    answered_by: str
    quorum_role: str  # this node's Raft role
    quorum_leader: str | None  # a node id where known, else the Raft address
    quorum_term: int
    commit_index: int
    applied_commands: int
    controller: str | None
    nodes: tuple[NodeRow, ...]
    stream_count: int
    open_shard_count: int
    leaderless: tuple[ShardProblem, ...]
    under_replicated: tuple[ShardProblem, ...]


def visible_streams(image: MetadataImage, *, now_ms: int) -> list[StreamMeta]:
    """The streams an outside caller sees, by name."""
    return [
        image.streams[name]
        for name in sorted(image.streams)
        if not is_internal(name) and not image.streams[name].is_gone(now_ms=now_ms)
    ]


def overview(
    image: MetadataImage,
    *,
    this_node: NodeId,
    quorum: QuorumFacts,
    controller: NodeId | None,
    now_ms: int,
) -> Overview:
    leaders: dict[str, int] = {}
    replicas: dict[str, int] = {}
    leaderless: list[ShardProblem] = []
    under_replicated: list[ShardProblem] = []
    streams = visible_streams(image, now_ms=now_ms)
    open_shards = 0
    for stream in (image.streams[name] for name in sorted(image.streams)):
        if stream.is_gone(now_ms=now_ms):
            continue
        shown = not is_internal(stream.name)
        for shard in stream.shards:
            for node_id in shard.replicas:
                replicas[node_id] = replicas.get(node_id, 0) + 1
            if shard.leader is not None:
                leaders[shard.leader] = leaders.get(shard.leader, 0) + 1
            if shard.state is ShardState.CLOSED or not shown:
                continue
            open_shards += 1
            problem = _shard_problem(image, stream, shard)
            if problem is None:
                continue
            (leaderless if problem.leader is None else under_replicated).append(problem)
    quorum_leader = quorum.quorum_leader
    leader_node = None if quorum_leader is None else image.node_by_raft_address(quorum_leader)
    leader_id = leader_node.node_id if leader_node is not None else quorum_leader
    if quorum_leader == "local":  # a single node's in-process quorum
        leader_id = this_node
    nodes = tuple(
        _node_row(
            node,
            leader_id=leader_id,
            controller=controller,
            this_node=this_node,
            leaders=leaders.get(node.node_id, 0),
            replicas=replicas.get(node.node_id, 0),
        )
        for _, node in sorted(image.nodes.items())
    )
    return Overview(
        cluster_id=image.cluster_id,
        answered_by=this_node,
        quorum_role=quorum.role,
        quorum_leader=leader_id,
        quorum_term=quorum.term,
        commit_index=quorum.commit_index,
        applied_commands=quorum.applied_commands,
        controller=controller,
        nodes=nodes,
        stream_count=len(streams),
        open_shard_count=open_shards,
        leaderless=tuple(leaderless),
        under_replicated=tuple(under_replicated),
    )


def _shard_problem(
    image: MetadataImage, stream: StreamMeta, shard: ShardMeta
) -> ShardProblem | None:
    if shard.leader is None:
        detail = "no leader: writes and reads to this shard fail until one is elected"
    else:
        healthy = [
            node_id
            for node_id in shard.replicas
            if (node := image.nodes.get(node_id)) is not None and node.state is NodeState.ACTIVE
        ]
        if len(healthy) >= stream.replication_factor:
            return None
        detail = f"{len(healthy)} of {stream.replication_factor} replicas on active nodes"
    return ShardProblem(
        stream_name=stream.name,
        shard_id=shard.shard_id,
        replicas=tuple(shard.replicas),
        leader=shard.leader,
        detail=detail,
    )


def _node_row(
    node: NodeMeta,
    *,
    leader_id: str | None,
    controller: NodeId | None,
    this_node: NodeId,
    leaders: int,
    replicas: int,
) -> NodeRow:
    if node.node_id == leader_id:
        role = "quorum leader"
    elif node.voter:
        role = "voter"
    else:
        role = "read-only"
    return NodeRow(
        node_id=node.node_id,
        state=node.state.value,
        role=role,
        is_controller=node.node_id == controller,
        is_this_node=node.node_id == this_node,
        api_address=node.api_address,
        http_address=node.http_address,
        incarnation=node.incarnation,
        leaders=leaders,
        replicas=replicas,
    )


# --- Streams list -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamRow:
    name: str
    mode: str
    status: str
    open_shards: int
    retention_hours: int
    encryption: str
    records_per_second: float
    bytes_per_second: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamPage:
    rows: tuple[StreamRow, ...]
    query: str
    page: int  # 1-based
    page_count: int
    total: int  # streams matching the query
    page_size: int


def stream_page(
    image: MetadataImage,
    *,
    query: str,
    page: int,
    page_size: int,
    now_ms: int,
    shown: Callable[[str], bool] = lambda key: True,
) -> StreamPage:
    """One page of the streams whose name contains `query` (case-insensitive), by name, of
    those whose key `shown` keeps (the visitor's namespace)."""
    needle = query.strip().lower()
    matching = [
        stream
        for stream in visible_streams(image, now_ms=now_ms)
        if shown(stream.name) and needle in stream.display_name.lower()
    ]
    page_size = max(1, min(page_size, PAGE_SIZE_MAX))
    page_count = max(1, -(-len(matching) // page_size))
    page = max(1, min(page, page_count))
    chosen = matching[(page - 1) * page_size : page * page_size]
    rates = stream_rates(image, {stream.uid for stream in chosen})
    rows = tuple(
        StreamRow(
            name=stream.display_name,
            mode=stream.mode.value,
            status=stream.status(now_ms=now_ms).value,
            open_shards=len(stream.open_shards()),
            retention_hours=stream.retention_hours,
            encryption=_encryption(stream),
            records_per_second=rates.get(stream.uid, (0.0, 0.0))[0],
            bytes_per_second=rates.get(stream.uid, (0.0, 0.0))[1],
        )
        for stream in chosen
    )
    return StreamPage(
        rows=rows,
        query=query,
        page=page,
        page_count=page_count,
        total=len(matching),
        page_size=page_size,
    )


def stream_rates(
    image: MetadataImage, uids: set[int] | None = None
) -> dict[int, tuple[float, float]]:
    """(records/s, bytes/s) written per stream uid, from the shard leaders' load reports in the
    image (only shards above the reporting floor appear there)."""
    rates: dict[int, tuple[float, float]] = {}
    for load in image.capacity.loads:
        if uids is not None and load.stream_uid not in uids:
            continue
        records, size = rates.get(load.stream_uid, (0.0, 0.0))
        rates[load.stream_uid] = (
            records + load.records_per_second,
            size + load.bytes_per_second,
        )
    return rates


# --- One stream -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardView:
    shard_id: str
    state: str
    hash_key_start: int
    hash_key_end: int
    parents: tuple[str, ...]
    children: tuple[str, ...]
    leader: str | None
    replicas: tuple[str, ...]
    epoch: int
    # Where the shard sits on the hash-key space, in percent (for the drawing).
    left_percent: float
    width_percent: float
    records_per_second: float
    bytes_per_second: float
    hot_key: str | None
    hot_key_share_percent: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseView:
    application: str
    shard_id: str
    owner: str | None
    counter: int
    checkpoint: str
    pending_checkpoint: str | None
    checkpoint_sequence: str  # the raw sequence number or sentinel, for the lag reading


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingView:
    time_ms: int
    kind: str
    shard_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HotKeyView:
    shard_id: str
    partition_key: str
    records_per_second: float  # upper bounds: the tracker's counts are bounds (KeyLoad)
    bytes_per_second: float
    share_percent: float  # of its shard's records


HOT_KEYS_SHOWN = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamView:
    name: str
    arn: str
    status: str
    mode: str
    retention_hours: int
    created_ms: int
    replication_factor: int
    max_record_size_kib: int
    enhanced_metrics: tuple[str, ...]
    tags: tuple[tuple[str, str], ...]
    open_shards: tuple[ShardView, ...]
    closed_shards: tuple[ShardView, ...]
    # The generations of the lineage: shards grouped by depth from the stream's first shards.
    generations: tuple[tuple[ShardView, ...], ...]
    leases: tuple[LeaseView, ...]
    scaling_events: tuple[ScalingView, ...]
    hot_keys: tuple[HotKeyView, ...]  # the heaviest partition keys the leaders reported
    encryption: str  # "NONE", or "KMS" and the key, as DescribeStream reports it


def _encryption(stream: StreamMeta) -> str:
    if stream.encryption_type == "NONE" or not stream.key_id:
        return stream.encryption_type
    return f"{stream.encryption_type} ({stream.key_id})"


def stream_view(
    image: MetadataImage, stream: StreamMeta, *, now_ms: int, key: str | None = None
) -> StreamView:
    """`key`: the stream's key in the image when `stream` carries the name clients see (a
    stream outside the default namespace); its leases are found by it."""
    loads = {
        load.shard_index: load for load in image.capacity.loads if load.stream_uid == stream.uid
    }
    children: dict[int, list[str]] = {}
    for shard in stream.shards:
        for parent in (shard.parent_index, shard.adjacent_parent_index):
            if parent is not None:
                children.setdefault(parent, []).append(shard.shard_id)
    shards = [
        _shard_view(stream, shard, tuple(children.get(shard.index, ())), loads.get(shard.index))
        for shard in stream.shards
    ]
    depth: dict[int, int] = {}
    for shard in stream.shards:  # parents always have lower indexes
        parent_depths = [
            depth[p]
            for p in (shard.parent_index, shard.adjacent_parent_index)
            if p is not None and p in depth
        ]
        depth[shard.index] = 1 + max(parent_depths) if parent_depths else 0
    generation_count = 1 + max(depth.values(), default=0)
    generations = tuple(
        tuple(
            view
            for shard, view in zip(stream.shards, shards, strict=True)
            if depth[shard.index] == level
        )
        for level in range(generation_count)
    )
    return StreamView(
        name=stream.name,
        arn=stream.arn,
        status=stream.status(now_ms=now_ms).value,
        mode=stream.mode.value,
        retention_hours=stream.retention_hours,
        created_ms=stream.created_ms,
        replication_factor=stream.replication_factor,
        max_record_size_kib=stream.max_record_size_kib,
        enhanced_metrics=stream.enhanced_metrics,
        tags=stream.tags,
        open_shards=tuple(v for v in shards if v.state != ShardState.CLOSED.value),
        closed_shards=tuple(v for v in shards if v.state == ShardState.CLOSED.value),
        generations=generations,
        leases=_leases(image, stream.name if key is None else key),
        scaling_events=_scaling(image, stream),
        hot_keys=_hot_keys(stream, loads),
        encryption=_encryption(stream),
    )


def _hot_keys(
    stream: StreamMeta, loads: Mapping[ShardIndex, ReportedLoad]
) -> tuple[HotKeyView, ...]:
    keys = [
        HotKeyView(
            shard_id=stream.shards[index].shard_id,
            partition_key=key.partition_key,
            records_per_second=key.records * 1000 / load.span_ms,
            bytes_per_second=key.size_bytes * 1000 / load.span_ms,
            share_percent=100 * key.records / load.records if load.records else 0.0,
        )
        for index, load in loads.items()
        if index < len(stream.shards)
        for key in load.top_keys
    ]
    keys.sort(key=lambda key: (-key.records_per_second, key.partition_key))
    return tuple(keys[:HOT_KEYS_SHOWN])


def _shard_view(
    stream: StreamMeta,
    shard: ShardMeta,
    children: tuple[str, ...],
    load: ReportedLoad | None,
) -> ShardView:
    parents = tuple(
        stream.shards[p].shard_id
        for p in (shard.parent_index, shard.adjacent_parent_index)
        if p is not None
    )
    return ShardView(
        shard_id=shard.shard_id,
        state=shard.state.value,
        hash_key_start=shard.hash_key_start,
        hash_key_end=shard.hash_key_end,
        parents=parents,
        children=children,
        leader=shard.leader,
        replicas=tuple(shard.replicas),
        epoch=shard.epoch,
        left_percent=round(100 * shard.hash_key_start / HASH_KEY_SPACE, 3),
        width_percent=round(
            100 * (shard.hash_key_end - shard.hash_key_start + 1) / HASH_KEY_SPACE, 3
        ),
        records_per_second=load.records_per_second if load is not None else 0.0,
        bytes_per_second=load.bytes_per_second if load is not None else 0.0,
        hot_key=load.hot_key if load is not None else None,
        hot_key_share_percent=(load.hot_key_share_ppm / 10_000) if load is not None else 0.0,
    )


def _leases(image: MetadataImage, stream_name: str) -> tuple[LeaseView, ...]:
    leases: list[Lease] = []
    for application in image.leases.application_names():
        leases.extend(image.leases.stream_leases(application, stream_name).values())
    return lease_views(leases)


def lease_views(leases: Iterable[Lease]) -> tuple[LeaseView, ...]:
    """The leases as the pages show them, by application and shard."""
    return tuple(
        LeaseView(
            application=lease.application,
            shard_id=lease.lease_key,
            owner=lease.lease_owner,
            counter=lease.lease_counter,
            checkpoint=_checkpoint_text(lease.checkpoint),
            checkpoint_sequence=lease.checkpoint.sequence_number,
            pending_checkpoint=None
            if lease.pending_checkpoint is None
            else _checkpoint_text(lease.pending_checkpoint),
        )
        for lease in sorted(leases, key=lambda lease: (lease.application, lease.lease_key))
    )


def _checkpoint_text(checkpoint: object) -> str:
    sequence = getattr(checkpoint, "sequence_number", "")
    sub = getattr(checkpoint, "sub_sequence_number", 0)
    return f"{sequence}" if not sub else f"{sequence}/{sub}"


def _scaling(image: MetadataImage, stream: StreamMeta) -> tuple[ScalingView, ...]:
    events: list[ScalingEvent] = []
    for log in image.capacity.scaling_logs:
        if log.stream_uid == stream.uid:
            events.extend(log.events)
    return tuple(
        ScalingView(
            time_ms=event.time_ms,
            kind=event.kind.value,
            shard_ids=event.shard_ids,
            reason=event.reason,
        )
        for event in sorted(events, key=lambda event: event.time_ms, reverse=True)
    )
