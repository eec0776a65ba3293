"""`shoal restore`'s wait before the first record of an encrypted stream
(broker/cli/backup.py `_wait_replica_nodes_applied`), over a fake ClusterAdminService.

Goal: the restore writes no record until every node holding a replica of the stream has
applied as many metadata commands as the node that answered StartStreamEncryption (so each
seals what it stores); nodes without a replica of it are not waited on, and a node that never
catches up fails the restore within --timeout instead of hanging.
"""

from __future__ import annotations

import argparse
from typing import Any, ClassVar

import pytest

from broker.api.internal.v1 import internal_pb2 as pb
from broker.cli import backup as backup_cli
from broker.cli.wait import WaitTimeout


class FakeAdmin:
    """Node address -> applied commands (a list: each call takes the next, the last repeats)."""

    applied: ClassVar[dict[str, list[int]]] = {}
    contacted: ClassVar[list[str]] = []

    def __init__(self, target: str, *, credentials: Any = None) -> None:
        self.target = target
        FakeAdmin.contacted.append(target)

    def applied_commands(self) -> int:
        answers = FakeAdmin.applied[self.target]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def cluster_status(self) -> pb.ClusterStatusResponse:
        return pb.ClusterStatusResponse(
            nodes=[
                pb.NodeStatus(node_id=f"n{i}", api_address=f"node-{i}:50051") for i in (1, 2, 3)
            ],
            shards=[
                pb.ShardStatus(stream_name="copy", shard_id="s0", replicas=["n1", "n2"]),
                pb.ShardStatus(stream_name="other", shard_id="s0", replicas=["n3"]),
            ],
        )

    def __enter__(self) -> FakeAdmin:
        return self

    def __exit__(self, *_: object) -> None:
        pass


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> type[FakeAdmin]:
    import broker.client.admin

    monkeypatch.setattr(broker.client.admin, "ClusterAdminClient", FakeAdmin)
    FakeAdmin.contacted = []
    return FakeAdmin


def _args(timeout: float) -> argparse.Namespace:
    return argparse.Namespace(
        endpoint="node-1:50051",
        timeout=timeout,
        tls=False,
        tls_ca_file=None,
        tls_cert_file=None,
        tls_key_file=None,
    )


def test_waits_for_every_replica_node_and_no_other(admin: type[FakeAdmin]) -> None:
    admin.applied = {
        "node-1:50051": [40],  # the node the command talks to: the target count
        "node-2:50051": [38, 39, 40],  # a follower two commands behind
        "node-3:50051": [0],  # holds no replica of "copy": never asked
    }
    backup_cli._wait_replica_nodes_applied(_args(timeout=10), "copy")
    assert admin.applied["node-2:50051"] == [40]  # polled until it caught up
    assert "node-3:50051" not in admin.contacted


def test_a_node_that_never_catches_up_fails_within_the_timeout(admin: type[FakeAdmin]) -> None:
    admin.applied = {"node-1:50051": [40], "node-2:50051": [39]}
    with pytest.raises(WaitTimeout, match="node n2"):
        backup_cli._wait_replica_nodes_applied(_args(timeout=0.2), "copy")
