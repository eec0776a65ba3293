"""The services a node serves on its doors, as the doors see them.

Every service of the Kinesis family (Data Streams, and the others as they arrive) is an
`OperationService`: a set of operation names of its botocore model and one `call` taking the
AWS-shaped request dict and the `Caller`. The doors do the rest from the model:

- `JsonService` puts one on the AWS door's `POST /` under its `X-Amz-Target` prefix (the JSON
  1.1 protocol: Kinesis, Firehose, Kinesis Analytics v1 and v2), decoded, validated and signed
  as its botocore model says (`targetPrefix`, `signingName`);
- `RestService` is a REST-JSON service (the Kinesis Video APIs), which routes by method and
  path and handles the ASGI exchange itself (streamed bodies both ways);
- `grpc_service.operation_handler` puts one on the gRPC server from its proto service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.caller import Caller
from broker.gateway.validation import service_model

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class OperationService(Protocol):
    """One service's operations, once, for every door."""

    @property
    def operations(self) -> frozenset[str]: ...

    async def call(
        self, operation: str, request: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]:
        """Run one validated operation. Raises ShoalError for every client-visible failure."""
        ...


@dataclass(frozen=True, slots=True)
class JsonService:
    """An AWS JSON-protocol service on the HTTP door: `model` is its botocore service name
    ("kinesis", "firehose", ...); the target prefix and signing name come from the model."""

    model: str
    service: OperationService
    target_prefix: str = field(init=False)
    signing_name: str = field(init=False)

    def __post_init__(self) -> None:
        metadata = service_model(self.model).metadata
        object.__setattr__(self, "target_prefix", metadata["targetPrefix"])
        object.__setattr__(
            self, "signing_name", metadata.get("signingName") or metadata["endpointPrefix"]
        )

    @property
    def operations(self) -> frozenset[str]:
        return self.service.operations


class RestService(Protocol):
    """A REST-JSON service on the HTTP door. `handles` is asked first for every request that
    is not the JSON protocol's `POST /`; the first service that claims it gets the whole
    ASGI exchange (body read, signature check, answer)."""

    def handles(self, method: str, path: str) -> bool: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...
