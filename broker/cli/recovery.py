"""`shoal recover-quorum`: force a new metadata quorum from a survivor after a majority of the
voters is lost for good (their disks gone). Offline: run it on a stopped node's data directory.

    shoal recover-quorum --data-dir /data --node-id shoal-0 [--survivors shoal-0] --yes

It keeps a copy of the metadata directory (`meta.before-recovery-<time>`), replays the node's
journal (committed or not) into the latest image, drops the lost nodes from every shard's
replica set (`meta/recovery.py`) and makes the node the only voter. Then start it with no
peers; it elects itself and elects shard leaders among the surviving replicas. Records that
only the lost nodes held are gone; the command names the shards that had no surviving replica.
Settings as for `shoal serve` (the data directory, node id, host and raft port).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from typing import Any

from broker.config import add_serve_arguments, config_from_environment
from broker.types import NodeId


def add_commands(commands: Any) -> None:
    recover = commands.add_parser(
        "recover-quorum",
        help="after losing a majority of voters: make this stopped node the only voter",
    )
    add_serve_arguments(recover)
    recover.add_argument(
        "--survivors",
        help="comma-separated node ids whose disks survived (default: this node)",
    )
    recover.add_argument(
        "--yes", action="store_true", help="I accept losing what only the lost nodes held"
    )
    recover.set_defaults(run=lambda _client, args: _recover(args), connect=None)


def _recover(args: argparse.Namespace) -> int:
    from broker.log.rocks_store import RocksLogStore
    from broker.log.store import LogStoreError
    from broker.meta.pysyncobj_quorum import force_single_voter
    from broker.meta.recovery import lost_shards, surviving_image

    try:
        config = config_from_environment(vars(args), args.config)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.yes:
        print("error: this discards what only the lost nodes held; add --yes", file=sys.stderr)
        return 2
    meta_dir = config.data_dir / "meta"
    if not meta_dir.is_dir():
        print(f"error: {meta_dir} holds no metadata journal", file=sys.stderr)
        return 1
    try:
        RocksLogStore(config.data_dir / "log").close()  # its lock: the node must be stopped
    except LogStoreError:
        print(f"error: {config.data_dir} is in use: stop the node first", file=sys.stderr)
        return 1
    survivors = {NodeId(n.strip()) for n in (args.survivors or config.node_id).split(",") if n}
    kept = meta_dir.with_name(f"meta.before-recovery-{int(time.time())}")  # noqa: TID251
    shutil.copytree(meta_dir, kept)
    self_address = config.quorum_layout().self_address
    before, _ = force_single_voter(
        meta_dir,
        self_address=self_address,
        transform=lambda image: surviving_image(image, survivors),
    )
    lost = lost_shards(before, survivors)
    fenced = sorted(n for n in before.nodes if n not in survivors)
    print(
        f"{config.node_id} is now the only voter ({self_address}); "
        f"the old metadata is kept in {kept}"
    )
    print(f"nodes fenced: {', '.join(fenced) or '(none)'}")
    print(
        "shards without a surviving replica (their records are lost): "
        f"{', '.join(lost) or '(none)'}"
    )
    print(
        "next: start this node with no peers; add voters back one at a time "
        "(shoal cluster add-node, then start them with --peers naming this node) or start "
        "non-voting members with --join"
    )
    return 0
