"""`shoal encryption ...`: the master key file of encryption at rest (broker/crypto/), for
nodes run with `encryption_master_key = file` (the default, `cluster`, needs no file).

    shoal encryption rotate-master-key --key-file /secrets/master-keys.json

Appends a new master key to the file (created if missing, mode 0600): new data keys are
wrapped by it, and the controller's node re-wraps the existing ones within seconds of every
node seeing the new file. Keep the old keys in the file until then. Offline: it edits the file,
it does not talk to a node; copy the file to every node of the cluster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_commands(commands: Any) -> None:
    group = commands.add_parser("encryption", help="encryption at rest: the master key file")
    sub = group.add_subparsers(dest="encryption_command")
    group.set_defaults(run=None, connect=None, group_help=group.print_help)
    rotate = sub.add_parser(
        "rotate-master-key", help="append a new master key to the key file (the current one)"
    )
    rotate.add_argument(
        "--key-file",
        type=Path,
        required=True,
        help="the nodes' encryption_key_file (created if missing; give every node the same)",
    )
    rotate.set_defaults(run=lambda _client, args: _rotate(args), connect=None)


def _rotate(args: argparse.Namespace) -> int:
    from broker.crypto.master_keys import MasterKeyError, create_key_file, rotate_key_file

    path: Path = args.key_file
    try:
        if not path.exists():
            create_key_file(path)
            print(f"created {path} with one master key")
            return 0
        key_id = rotate_key_file(path)
    except (MasterKeyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"added master key {key_id} to {path}; copy the file to every node")
    return 0
