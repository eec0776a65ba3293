"""`UnaryServiceClient`: the blocking base of the small admin clients (`LimitsClient`,
`CapacityClient`, `BackupKeyClient`): one channel to any node, one unary call per method of one
service of a generated module, signed and addressed to a region like `ShoalClient`'s calls,
refusals raised as `ShoalError` with the Kinesis error name.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Self

import grpc
from google.protobuf.message import Message

from broker.iam.grpc_signing import SigningKey, call_metadata
from broker.tls import open_channel
from broker.wire.error_mapping import error_from_rpc_error


class UnaryServiceClient:
    """Subclasses name their generated module, service and default deadline, and add one
    method per call."""

    _MODULE: ModuleType
    _SERVICE_NAME: str
    DEFAULT_TIMEOUT_S: float

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        signing_key: SigningKey | None = None,
        region: str | None = None,
    ) -> None:
        """`signing_key` and `region` as `broker.client.grpc_client.ShoalClient`'s: the calls
        act in that region's namespace (None: the node's), signed with the key if one is given;
        `timeout_s` bounds each call (None: the class's DEFAULT_TIMEOUT_S)."""
        if timeout_s is None:
            timeout_s = self.DEFAULT_TIMEOUT_S
        assert timeout_s > 0
        self._service = self._MODULE.DESCRIPTOR.services_by_name[self._SERVICE_NAME]
        self._signing_key = signing_key
        self._region = region
        self._channel = open_channel(target, credentials)
        self._timeout_s = timeout_s

    def _call(self, method: str, request: Message) -> Any:
        descriptor = self._service.methods_by_name[method]
        output_class = getattr(self._MODULE, descriptor.output_type.name)
        path = f"/{self._service.full_name}/{method}"
        stub: Any = self._channel.unary_unary(
            path,
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=output_class.FromString,
        )
        try:
            return stub(
                request,
                timeout=self._timeout_s,
                metadata=call_metadata(path, region=self._region, key=self._signing_key),
            )
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
