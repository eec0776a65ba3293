"""The public gRPC client's connections (broker/client/grpc_client.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from broker.api.kinesis.v1 import kinesis_pb2
from broker.client.grpc_client import ShoalClient
from broker.errors import ShoalError
from tests.support import free_port

_KINESIS = kinesis_pb2.DESCRIPTOR.services_by_name["KinesisService"].full_name


def _empty_answer(request: bytes, context: Any) -> bytes:
    return b""  # an empty ListStreamsOutput


def test_a_new_client_reaches_a_node_that_came_back_while_an_older_client_backs_off() -> None:
    """gRPC shares a process's connection to one address between channels, with its reconnect
    backoff: a new client of a restarted node failed at once with the old 'connection refused'
    (seen in the cluster tests, after a node restart, as a running node refusing)."""
    target = f"127.0.0.1:{free_port()}"
    older = ShoalClient(target, timeout_s=5)
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    try:
        for _ in range(3):  # nothing listens yet: refused, and its connection backs off
            with pytest.raises(ShoalError):
                older.call("ListStreams", {})
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            _empty_answer
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_KINESIS, {"ListStreams": handler}),)
        )
        server.add_insecure_port(target)
        server.start()
        with ShoalClient(target, timeout_s=5) as newer:
            assert newer.call("ListStreams", {}) is not None
    finally:
        server.stop(0)
        older.close()
