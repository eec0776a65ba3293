"""`shoal cluster status | add-node | remove-node | drain` (ClusterAdminService)."""

from __future__ import annotations

import argparse
import json
from contextlib import AbstractContextManager
from typing import Any

from broker.cli.common import add_group, print_response
from broker.tls import credentials_from_arguments


def _admin_client(args: argparse.Namespace) -> AbstractContextManager[Any]:
    from broker.client.admin import ClusterAdminClient  # only the cluster group needs it

    return ClusterAdminClient(args.endpoint, credentials=credentials_from_arguments(args))


def add_commands(commands: Any) -> None:
    """`shoal cluster status | add-node | remove-node | drain` (ClusterAdminService)."""
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
    drain.add_argument("--timeout-ms", type=int, default=30_000, help="how long to wait")
    drain.set_defaults(run=_cluster_drain)
    for parser in (status, add, remove, drain):
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


def _cluster_drain(admin: Any, args: argparse.Namespace) -> int:
    left = admin.drain(args.node_id, timeout_ms=args.timeout_ms)
    if args.json:
        print(json.dumps({"LeadershipsLeft": left}))
    elif left:
        print(f"{args.node_id} is DRAINING; it still leads {left} shards (try again later)")
    else:
        print(f"{args.node_id} is DRAINING and leads no shard")
    return 0 if left == 0 else 1
