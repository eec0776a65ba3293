"""`ClusterAdminClient`: the cluster administration RPCs (ClusterAdminService) for scripts and
the `shoal cluster` CLI. Blocking; one channel; responses are the protobuf messages of
`proto/broker/api/internal/v1/internal.proto` (node, shard and quorum status)."""

from __future__ import annotations

from typing import Any

import grpc

from broker.api.internal.v1 import internal_pb2 as pb
from broker.tls import open_channel
from broker.wire.error_mapping import error_from_rpc_error

_SERVICE = "broker.api.internal.v1.ClusterAdminService"
DEFAULT_TIMEOUT_S = 30.0


class ClusterAdminClient:
    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._channel = open_channel(target, credentials)
        self._timeout_s = timeout_s

    def _call(
        self, method: str, request: Any, response: Any, *, timeout_s: float | None = None
    ) -> Any:
        stub: Any = self._channel.unary_unary(
            f"/{_SERVICE}/{method}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response.FromString,
        )
        try:
            return stub(request, timeout=timeout_s or self._timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc

    def cluster_status(self) -> pb.ClusterStatusResponse:
        status: pb.ClusterStatusResponse = self._call(
            "ClusterStatus", pb.ClusterStatusRequest(), pb.ClusterStatusResponse
        )
        return status

    def applied_commands(self) -> int:
        """How many metadata commands this node has applied (its current image's count)."""
        answer: pb.MetadataDigestResponse = self._call(
            "MetadataDigest", pb.MetadataDigestRequest(), pb.MetadataDigestResponse
        )
        return answer.applied_commands

    def add_voter(self, raft_address: str) -> None:
        self._call("AddVoter", pb.AddVoterRequest(raft_address=raft_address), pb.AddVoterResponse)

    def remove_voter(self, raft_address: str) -> None:
        self._call(
            "RemoveVoter", pb.RemoveVoterRequest(raft_address=raft_address), pb.RemoveVoterResponse
        )

    def drain(self, node_id: str, *, timeout_ms: int = 30_000) -> int:
        """Marks the node DRAINING and waits (bounded) until it leads no shard; returns how
        many shard leaderships it still holds."""
        answer: pb.DrainResponse = self._call(
            "Drain",
            pb.DrainRequest(node_id=node_id, timeout_ms=timeout_ms),
            pb.DrainResponse,
            timeout_s=timeout_ms / 1000 + self._timeout_s,
        )
        return answer.leaderships_left

    def remove_node(self, node_id: str) -> bool:
        """Takes a drained node (no replicas left) out of the cluster; whether it was a voter."""
        answer: pb.RemoveNodeResponse = self._call(
            "RemoveNode", pb.RemoveNodeRequest(node_id=node_id), pb.RemoveNodeResponse
        )
        return answer.was_voter

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ClusterAdminClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
