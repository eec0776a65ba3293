"""The composition root: the one place that wires real adapters together into a running node.

A node owns, in start order: the RocksDB shard log and its group-commit writer thread, the
metadata quorum (pysyncobj, its own thread), the Kinesis service, the gRPC server, the AWS
HTTP server (JSON/CBOR, same service), and a housekeeping task. `stop()` undoes them in
reverse. Nothing imports this module except the CLI
and tests, which run a node in-process on 127.0.0.1 with an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from broker import limits
from broker.clock import Clock, SystemClock
from broker.config import Config
from broker.gateway.grpc_service import kinesis_handler
from broker.gateway.http_server import HttpServer, start_http_server
from broker.gateway.http_service import AwsHttpApp
from broker.gateway.sigv4 import SigV4Verifier
from broker.log.group_commit import GroupCommitWriter
from broker.log.retention import trim_expired
from broker.log.rocks_store import RocksLogStore
from broker.log.shard_writer import ShardWriters
from broker.meta import commands
from broker.meta.frontend import MetadataFrontend
from broker.meta.pysyncobj_quorum import PysyncobjQuorum
from broker.meta.quorum import QuorumConfig
from broker.service.context import ServiceContext
from broker.service.kinesis import KinesisService
from broker.service.reshard import complete_pending_reshards
from broker.types import ShardUid

log = logging.getLogger(__name__)

_QUORUM_READY_TIMEOUT_S = 30.0  # a single voter elects itself in well under a second
_GRPC_STOP_GRACE_S = 5.0


class Node:
    """One Shoal node. Lifecycle: `await start()`, serve, `await stop()`. Loop-bound."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        config.validate()
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._store: RocksLogStore | None = None
        self._writer: GroupCommitWriter | None = None
        self._quorum: PysyncobjQuorum | None = None
        self._server: grpc.aio.Server | None = None
        self._http: HttpServer | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self.service: KinesisService | None = None
        self.grpc_port = 0
        self.http_port = 0

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    async def start(self) -> None:
        config = self.config
        (config.data_dir / "meta").mkdir(parents=True, exist_ok=True)
        self._store = RocksLogStore(config.data_dir / "log")
        self._writer = GroupCommitWriter(self._store)
        self._writer.start()
        writers = ShardWriters(store=self._store, writer=self._writer)
        self._quorum = PysyncobjQuorum(
            QuorumConfig(
                self_address=config.raft_address,
                peer_addresses=config.peers,
                data_dir=config.data_dir / "meta",
                password=config.raft_password,
            )
        )
        await self._quorum.start()
        metadata = MetadataFrontend(self._quorum)
        await metadata.wait_for_image(lambda image: True, timeout_s=_QUORUM_READY_TIMEOUT_S)
        if not metadata.image().iterator_secret:
            await metadata.propose(
                commands.InitCluster(
                    now_ms=self.clock.wall_ms(),
                    cluster_id=str(uuid.uuid4()),
                    iterator_secret=secrets.token_bytes(32),
                )
            )
        ctx = ServiceContext(
            config=config, clock=self.clock, metadata=metadata, writers=writers, store=self._store
        )
        self.service = KinesisService(ctx)
        await complete_pending_reshards(ctx)
        await self._start_grpc()
        await self._start_http()
        self._housekeeping = asyncio.create_task(self._run_housekeeping(ctx))
        log.info(
            "node_started",
            extra={
                "node_id": config.node_id,
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
            },
        )

    async def _start_grpc(self) -> None:
        assert self.service is not None
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
                ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
            ]
        )
        server.add_generic_rpc_handlers((kinesis_handler(self.service),))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = f"{self.config.host}:{self.config.grpc_port}"
        self.grpc_port = server.add_insecure_port(address)
        if self.grpc_port == 0:
            raise OSError(f"cannot listen on {address}")
        await server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server = server

    async def _start_http(self) -> None:
        """The AWS door: the same KinesisService behind Kinesis's own wire protocol."""
        assert self.service is not None
        config = self.config
        access_keys = config.access_keys
        verifier = (
            SigV4Verifier(secrets_by_access_key=access_keys, region=config.region)
            if access_keys
            else None
        )
        app = AwsHttpApp(self.service, clock=self.clock, verifier=verifier)
        self._http = await start_http_server(
            app,
            host=config.host,
            port=config.http_port,
            certfile=config.tls_cert_file,
            keyfile=config.tls_key_file,
        )
        self.http_port = self._http.port

    async def _run_housekeeping(self, ctx: ServiceContext) -> None:
        """Trim past retention, forget deleted streams, drop their data. Runs until stop()."""
        interval_s = self.config.knobs.housekeeping_interval_ms / 1000
        while True:  # infinite on purpose: cancelled by stop()
            try:
                await self.housekeeping_pass(ctx)
            except Exception:
                log.exception("housekeeping_failed")
            await asyncio.sleep(interval_s)

    async def housekeeping_pass(self, ctx: ServiceContext) -> None:
        assert self._store is not None
        store = self._store
        now_ms = self.clock.wall_ms()
        image = ctx.image()
        for stream in list(image.streams.values()):
            if stream.is_gone(now_ms=now_ms):
                await ctx.metadata.propose(commands.ForgetStream(now_ms=now_ms, uid=stream.uid))
        image = ctx.image()
        keep = image.shard_uids()
        for shard_uid in await asyncio.to_thread(store.shard_uids):
            if shard_uid not in keep:
                ctx.writers.forget(shard_uid)
                await asyncio.to_thread(store.delete_shard, shard_uid)
        retention = {
            shard.uid: stream.retention_hours
            for stream in image.streams.values()
            for shard in stream.shards
        }
        await asyncio.to_thread(self._trim, store, retention, now_ms)

    @staticmethod
    def _trim(store: RocksLogStore, retention: dict[ShardUid, int], now_ms: int) -> None:
        """Trim past retention; compact only when something was trimmed, since range
        tombstones hold their space until a compaction drops them."""
        starts_before = {uid: store.log_start(uid) for uid in retention}
        starts_after = trim_expired(store, retention, now_ms=now_ms)
        if any(starts_after[uid] > starts_before[uid] for uid in retention):
            store.compact()

    async def stop(self) -> None:
        if self._http is not None:
            # First: no new AWS calls once stopping, and in-flight ones finish while the
            # service below them is still whole.
            await self._http.stop()
            self._http = None
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        if self._server is not None:
            await self._server.stop(_GRPC_STOP_GRACE_S)
            self._server = None
        if self._quorum is not None:
            await self._quorum.stop()
            self._quorum = None
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        if self._store is not None:
            self._store.close()
            self._store = None
        log.info("node_stopped", extra={"node_id": self.config.node_id})

    async def wait_closed(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()
