"""The Kinesis Video Streams control plane on the gRPC door: `VideoStreamsService`
(`proto/broker/api/video/v1/video.proto`) served by the generic operation handler, validated
against botocore's `kinesisvideo` model, as the Kinesis service is against its own."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from broker.api.video.v1 import video_pb2
from broker.caller import Caller
from broker.gateway.grpc_service import operation_handler
from broker.gateway.probe import GatewayProbe
from broker.gateway.services import OperationService
from broker.video.service import VideoControlPlane, VideoService

MODEL = "kinesisvideo"


def video_handler(
    video: VideoService,
    *,
    caller: Caller,
    probe: GatewayProbe | None = None,
    guard: Callable[[OperationService], OperationService] | None = None,
) -> grpc.GenericRpcHandler:
    """`guard` wraps the operations in access control (`broker/gateway/access.py`)."""
    descriptor = video_pb2.DESCRIPTOR.services_by_name["VideoStreamsService"]
    control: OperationService = VideoControlPlane(video, default_caller=caller)
    return operation_handler(
        descriptor,
        guard(control) if guard is not None else control,
        model=MODEL,
        caller=caller,
        probe=probe,
    )
