"""`AnalyticsClient`: the kinesisanalyticsv2 service over gRPC
(proto/broker/api/analytics/v2/analytics.proto) for scripts and the `shoal analytics` CLI.
Blocking; one channel to any node; requests and answers are AWS-shaped dicts (the gateway's
codec translates them to and from the messages, which mirror the model's shapes).

    with AnalyticsClient("127.0.0.1:50051") as analytics:
        analytics.call("StartApplication", {"ApplicationName": "tickers"})
        print(analytics.call("DescribeApplication", {"ApplicationName": "tickers"}))

Errors raise `ShoalError` with the AWS error name (ResourceNotFoundException, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from broker.api.analytics.v2 import analytics_pb2 as pb
from broker.tls import open_channel
from broker.wire.codec import dict_to_message, message_to_dict
from broker.wire.error_mapping import error_from_rpc_error

_SERVICE = pb.DESCRIPTOR.services_by_name["KinesisAnalyticsV2Service"]
DEFAULT_TIMEOUT_S = 30.0


class AnalyticsClient:
    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        assert timeout_s > 0
        self._channel = open_channel(target, credentials)
        self._timeout_s = timeout_s

    def __enter__(self) -> AnalyticsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """One kinesisanalyticsv2 operation: the request and answer as AWS documents them."""
        method = _SERVICE.methods_by_name[operation]
        input_class = getattr(pb, method.input_type.name)
        output_class = getattr(pb, method.output_type.name)
        stub: Any = self._channel.unary_unary(
            f"/{_SERVICE.full_name}/{operation}",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=output_class.FromString,
        )
        try:
            answer = stub(dict_to_message(request, input_class), timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc_error(exc) from exc
        return message_to_dict(answer)
