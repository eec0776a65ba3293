"""Client interceptors adding the gRPC door's signed metadata to every call.

`SigningInterceptors(metadata_for)` is one interceptor for each of grpc.aio's four call kinds
(a channel takes the ones matching its calls); `metadata_for(method)` returns the pairs to
add: `grpc_signing.signed_metadata` for an access key, or the node signature a node adds to
its calls to other nodes. The signature covers the method and the time, so it is computed
per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

MetadataFor = Callable[[str], tuple[tuple[str, str], ...]]


def _signed(details: Any, metadata_for: MetadataFor) -> Any:
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    for key, value in metadata_for(method):
        metadata.add(key, value)
    return details._replace(metadata=metadata)


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, metadata_for: MetadataFor) -> None:
        self._metadata_for = metadata_for

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_signed(details, self._metadata_for), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, metadata_for: MetadataFor) -> None:
        self._metadata_for = metadata_for

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_signed(details, self._metadata_for), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, metadata_for: MetadataFor) -> None:
        self._metadata_for = metadata_for

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_signed(details, self._metadata_for), requests)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, metadata_for: MetadataFor) -> None:
        self._metadata_for = metadata_for

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(_signed(details, self._metadata_for), requests)


def signing_interceptors(metadata_for: MetadataFor) -> tuple[grpc.aio.ClientInterceptor, ...]:
    return (
        _UnaryUnary(metadata_for),
        _UnaryStream(metadata_for),
        _StreamUnary(metadata_for),
        _StreamStream(metadata_for),
    )
