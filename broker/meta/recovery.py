"""Forcing a new metadata quorum from survivors after a majority of voters is lost (pure).

`surviving_image(image, survivors)` is the image the survivors continue from: every node that
did not survive is FENCED (the controller can remove it later, or it registers again when it
comes back empty), and every shard keeps only its replicas on surviving nodes, its leader only
if that leader survived. The controller then elects a leader for each shard among its
remaining replicas (a majority of one is one), so writes resume. The consequences, which the
operator accepts by running the recovery: records acknowledged by the lost nodes but not held by
a surviving replica are gone (a shard's new leader has the longest log among the survivors, not
necessarily every acknowledged record), and shards with no surviving replica stay leaderless
(`lost_shards` names them: delete and recreate their streams, or restore them from a backup).

The Raft side (a new snapshot whose voter set is the survivor alone) is
`pysyncobj_quorum.force_single_voter`; `shoal recover-quorum` (`cli/recovery.py`) drives both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from broker.meta.image import MetadataImage, NodeState
from broker.types import NodeId


def surviving_image(image: MetadataImage, survivors: Collection[NodeId]) -> MetadataImage:
    assert survivors, "at least one node survives"
    nodes = {
        node_id: node
        if node_id in survivors or node.state is NodeState.REMOVED
        else dataclasses.replace(node, state=NodeState.FENCED)
        for node_id, node in image.nodes.items()
    }
    streams = {}
    for key, stream in image.streams.items():
        shards = []
        for shard in stream.shards:
            kept = tuple(n for n in shard.replicas if n in survivors)
            if not kept:
                shards.append(shard)  # nothing survived: leaderless (lost_shards)
                continue
            leader = shard.leader if shard.leader in kept else None
            shards.append(dataclasses.replace(shard, replicas=kept, leader=leader))
        streams[key] = dataclasses.replace(stream, shards=tuple(shards))
    return dataclasses.replace(image, nodes=nodes, streams=streams)


def lost_shards(image: MetadataImage, survivors: Collection[NodeId]) -> list[str]:
    """`stream/shard` of every shard with replicas, none of them on a survivor."""
    return [
        f"{stream.name}/{shard.shard_id}"
        for stream in image.streams.values()
        for shard in stream.shards
        if shard.replicas and not any(n in survivors for n in shard.replicas)
    ]
