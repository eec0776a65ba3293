"""`RoutingShoalClient`: a blocking client that sends each record straight to its shard leader.

Any node serves any request (it forwards a shard's records to the shard's leader), so routing is
only an optimisation: it saves the forwarding hop. The client learns the map from the public
`ListShards` (hash key ranges of the open shards) and `ClusterAdminService.ClusterStatus`
(each shard's leader and each node's address), caches it for `map_ttl_s`, and refreshes it
when a node does not answer. `PutRecords` is split by leader node, sent concurrently, and the
per-record results are merged back in request order; everything else goes to the first node
that answers. Safe to share between threads, like `ShoalClient`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from broker.client.admin import ClusterAdminClient
from broker.client.grpc_client import DEFAULT_TIMEOUT_S, ShoalClient
from broker.clock import Clock, SystemClock
from broker.errors import ErrorCode, ShoalError
from broker.streams.hash_keys import parse_hash_key, partition_key_bytes_hash


@dataclass(frozen=True, slots=True, kw_only=True)
class _Route:
    start: int
    end: int  # inclusive
    address: str | None  # the leader's gRPC address, None while it has none


@dataclass(frozen=True, slots=True, kw_only=True)
class _StreamMap:
    routes: tuple[_Route, ...]
    fetched_ms: int

    def address_for(self, hash_key: int) -> str | None:
        for route in self.routes:
            if route.start <= hash_key <= route.end:
                return route.address
        return None


class RoutingShoalClient:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        map_ttl_s: float = 5.0,
        concurrency_max: int = 8,
        clock: Clock | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        assert endpoints, "at least one node"
        self._credentials = credentials  # TLS for every node (broker.tls.client_credentials)
        self._endpoints = list(endpoints)
        self._timeout_s = timeout_s
        self._map_ttl_s = map_ttl_s
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._clients: dict[str, ShoalClient] = {}
        self._maps: dict[str, _StreamMap] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=concurrency_max)

    def call(self, operation: str, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
        request = request or {}
        if operation == "PutRecords" and "StreamName" in request:
            return self._put_records(request)
        if operation == "PutRecord" and "StreamName" in request:
            address = self._route(request["StreamName"], request)
            if address is not None:
                try:
                    return self._client(address).call(operation, request)
                except ShoalError as error:
                    if error.code is not ErrorCode.UNAVAILABLE:
                        raise
                    self._forget(request["StreamName"])
        return self._any(operation, request)

    def leader_address(self, stream: str, record: Mapping[str, Any]) -> str | None:
        """The gRPC address of the leader of the shard `record` (a PutRecords entry:
        PartitionKey, optional ExplicitHashKey) maps to; None while that shard has none."""
        return self._route(stream, record)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> RoutingShoalClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- Routing ----------------------------------------------------------------------------

    def _client(self, address: str) -> ShoalClient:
        with self._lock:
            client = self._clients.get(address)
            if client is None:
                client = self._clients[address] = ShoalClient(
                    address, timeout_s=self._timeout_s, credentials=self._credentials
                )
            return client

    def _any(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """The first node that answers (UNAVAILABLE moves on to the next)."""
        last: ShoalError | None = None
        for address in self._endpoints:
            try:
                return self._client(address).call(operation, request)
            except ShoalError as error:
                if error.code is not ErrorCode.UNAVAILABLE:
                    raise
                last = error
        assert last is not None
        raise last

    def _forget(self, stream: str) -> None:
        with self._lock:
            self._maps.pop(stream, None)

    def _stream_map(self, stream: str) -> _StreamMap:
        with self._lock:
            cached = self._maps.get(stream)
        if (
            cached is not None
            and self._clock.monotonic_ms() - cached.fetched_ms < self._map_ttl_s * 1000
        ):
            return cached
        shards = self._any("ListShards", {"StreamName": stream})["Shards"]
        status = None
        for address in self._endpoints:
            try:
                with ClusterAdminClient(
                    address, timeout_s=self._timeout_s, credentials=self._credentials
                ) as admin:
                    status = admin.cluster_status()
                break
            except ShoalError:
                continue
        leaders: dict[str, str] = {}
        if status is not None:
            addresses = {node.node_id: node.api_address for node in status.nodes}
            leaders = {
                s.shard_id: addresses[s.leader]
                for s in status.shards
                if s.stream_name == stream and s.leader in addresses
            }
        routes = tuple(
            _Route(
                start=int(shard["HashKeyRange"]["StartingHashKey"]),
                end=int(shard["HashKeyRange"]["EndingHashKey"]),
                address=leaders.get(shard["ShardId"]),
            )
            for shard in shards
            if "EndingSequenceNumber" not in shard.get("SequenceNumberRange", {})
        )
        fresh = _StreamMap(routes=routes, fetched_ms=self._clock.monotonic_ms())
        with self._lock:
            self._maps[stream] = fresh
        return fresh

    def _route(self, stream: str, record: Mapping[str, Any]) -> str | None:
        explicit = record.get("ExplicitHashKey")
        hash_key = (
            parse_hash_key(explicit, field="ExplicitHashKey")
            if explicit is not None
            else partition_key_bytes_hash(record["PartitionKey"].encode())
        )
        return self._stream_map(stream).address_for(hash_key)

    def _put_records(self, request: Mapping[str, Any]) -> dict[str, Any]:
        stream = request["StreamName"]
        records = request["Records"]
        groups: dict[str | None, list[int]] = {}
        for position, record in enumerate(records):
            groups.setdefault(self._route(stream, record), []).append(position)

        def send(address: str | None, positions: list[int]) -> dict[str, Any]:
            part = {**request, "Records": [records[p] for p in positions]}
            if address is not None:
                try:
                    return self._client(address).call("PutRecords", part)
                except ShoalError as error:
                    if error.code is not ErrorCode.UNAVAILABLE:
                        raise
                    self._forget(stream)
            return self._any("PutRecords", part)  # any node forwards to the leaders

        futures = {
            address: self._pool.submit(send, address, positions)
            for address, positions in groups.items()
        }
        results: list[dict[str, Any] | None] = [None] * len(records)
        failed = 0
        for address, future in futures.items():
            answer = future.result()
            failed += answer["FailedRecordCount"]
            for position, result in zip(groups[address], answer["Records"], strict=True):
                results[position] = result
        assert all(result is not None for result in results)
        return {"FailedRecordCount": failed, "Records": results, "EncryptionType": "NONE"}
