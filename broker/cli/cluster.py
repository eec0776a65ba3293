"""`shoal cluster status | drain | decommission | add-node | remove-node` (ClusterAdminService).

`drain NODE` marks a node DRAINING: its shard leaderships, then its replicas, move to the
other nodes (`--wait` until it holds none). `decommission NODE...` is the whole way out: drain,
wait until the node holds no replica (with progress), take it out of the metadata quorum's
voters if it is one, and mark it REMOVED; then its pod can be scaled away.
"""

from __future__ import annotations

import argparse
import json
from contextlib import AbstractContextManager
from typing import Any

from broker.cli.common import add_group, print_response
from broker.cli.wait import Progress, add_wait_arguments, wait_until
from broker.tls import credentials_from_arguments


def _admin_client(args: argparse.Namespace) -> AbstractContextManager[Any]:
    from broker.client.admin import ClusterAdminClient  # only the cluster group needs it

    return ClusterAdminClient(args.endpoint, credentials=credentials_from_arguments(args))


def add_commands(commands: Any) -> None:
    """`shoal cluster status | drain | decommission | add-node | remove-node` (ClusterAdminService).

    `drain NODE` marks a node DRAINING: its shard leaderships, then its replicas, move to the
    other nodes (`--wait` until it holds none). `decommission NODE...` is the whole way out: drain,
    wait until the node holds no replica (with progress), take it out of the metadata quorum's
    voters if it is one, and mark it REMOVED; then its pod can be scaled away.
    """
    group = add_group(commands, "cluster", help_text="inspect and change cluster membership")
    status = group.add_parser("status", help="nodes, their states and load, the quorum")
    status.add_argument("--shards", action="store_true", help="list every shard's placement")
    status.set_defaults(run=_cluster_status)
    add = group.add_parser(
        "add-node",
        help="make a Raft address a metadata voter (then start that node with --peers)",
    )
    add.add_argument("raft_address", help="host:raft_port of the new voter")
    add.set_defaults(run=lambda a, args: _done(args, a.add_voter(args.raft_address)))
    remove = group.add_parser(
        "remove-node",
        help="remove a metadata voter (drain the node first; stop it afterwards)",
    )
    remove.add_argument("raft_address", help="host:raft_port of the voter to remove")
    remove.set_defaults(run=lambda a, args: _done(args, a.remove_voter(args.raft_address)))
    drain = group.add_parser(
        "drain",
        help="mark a node DRAINING: its shard leaderships, then its replicas, move away",
    )
    drain.add_argument("node_id")
    add_wait_arguments(drain, what="the node leads no shard and holds no replica")
    drain.set_defaults(run=_cluster_drain)
    decommission = group.add_parser(
        "decommission",
        help="drain nodes, wait until they hold no replica, then remove them from the cluster",
    )
    decommission.add_argument("node_ids", nargs="+", metavar="node_id")
    decommission.add_argument(
        "--timeout", type=float, default=1800.0, help="give up after this many seconds (1800)"
    )
    decommission.set_defaults(run=_cluster_decommission)
    for parser in (status, add, remove, drain, decommission):
        parser.set_defaults(connect=_admin_client)


def _done(args: argparse.Namespace, _: None) -> int:
    return print_response(args, {}, "ok")


def _cluster_status(admin: Any, args: argparse.Namespace) -> int:
    status = admin.cluster_status()
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(status), indent=2))
        return 0
    lines = [
        f"cluster      {status.cluster_id}",
        f"answered by  {status.answered_by}",
        f"quorum       leader {status.quorum_leader or '(none)'}, term {status.raft_term}, "
        f"commit index {status.raft_commit_index}",
        f"controller   {status.controller or '(none)'}",
        f"metadata     format {status.metadata_format or 1} "
        f"({status.answered_by} reads up to {status.metadata_format_max or 1})",
        "",
        f"{'NODE':<16} {'STATE':<9} {'VOTER':<6} {'INC':>4} {'LEADS':>6} {'REPLICAS':>9}  API",
    ]
    lines.extend(
        f"{node.node_id:<16} {node.state:<9} {'yes' if node.voter else 'no':<6} "
        f"{node.incarnation:>4} {node.leader_count:>6} {node.replica_count:>9}  "
        f"{node.api_address}"
        for node in status.nodes
    )
    if args.shards:
        lines.append("")
        lines.extend(
            f"{shard.stream_name}/{shard.shard_id}  {shard.state:<8} epoch {shard.epoch:<4} "
            f"leader {shard.leader or '-':<12} replicas {','.join(shard.replicas)}"
            for shard in status.shards
        )
    print("\n".join(lines))
    return 0


def _holdings(admin: Any, node_id: str) -> tuple[int, int, str]:
    """(leaderships, replicas, state) of `node_id` as the answering node sees it."""
    for node in admin.cluster_status().nodes:
        if node.node_id == node_id:
            return node.leader_count, node.replica_count, node.state
    return 0, 0, "unknown"


def _wait_drained(admin: Any, node_id: str, *, timeout_s: float, progress: Progress) -> None:
    def check() -> tuple[bool, str]:
        leads, replicas, _ = _holdings(admin, node_id)
        return leads == 0 and replicas == 0, f"leads {leads} shards, holds {replicas} replicas"

    wait_until(check, timeout_s=timeout_s, what=f"draining {node_id}", progress=progress)


def _cluster_drain(admin: Any, args: argparse.Namespace) -> int:
    admin.drain(args.node_id, timeout_ms=1)  # marks it DRAINING; the wait is ours
    if args.wait:
        _wait_drained(admin, args.node_id, timeout_s=args.timeout, progress=Progress())
    leads, replicas, state = _holdings(admin, args.node_id)
    if args.json:
        print(json.dumps({"State": state, "Leaderships": leads, "Replicas": replicas}))
    elif leads or replicas:
        print(
            f"{args.node_id} is {state}: it still leads {leads} shards and holds {replicas} "
            "replicas, which move to the other nodes (--wait to wait)"
        )
    else:
        print(f"{args.node_id} is {state} and holds nothing")
    return 0


def _cluster_decommission(admin: Any, args: argparse.Namespace) -> int:
    for node_id in args.node_ids:  # all drain at once: their moves overlap
        admin.drain(node_id, timeout_ms=1)
    progress = Progress()
    for node_id in args.node_ids:
        _wait_drained(admin, node_id, timeout_s=args.timeout, progress=progress)
        was_voter = admin.remove_node(node_id)
        if args.json:
            print(json.dumps({"NodeId": node_id, "Removed": True, "WasVoter": was_voter}))
        else:
            voter = " and left the metadata quorum's voters" if was_voter else ""
            print(f"{node_id} holds nothing{voter}: REMOVED; its process can be stopped")
    return 0
