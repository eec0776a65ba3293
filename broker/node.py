"""The composition root: the one place that wires real adapters together into a running node.

A node owns, in start order: the RocksDB shard log and its group-commit writer thread, the
metadata quorum (pysyncobj, its own thread; voters from `Config.peers`), its registration in
the metadata (`RegisterNode`), the replication driver with its gRPC transport, the controller
(which acts only while this node's quorum replica is the Raft leader: it checks on every pass,
so leadership changes start and stop it without help), the Kinesis service, one gRPC server
(the public KinesisService and the internal ReplicationService, NodeService and
ClusterAdminService on the same port), the AWS HTTP server, and the background tasks in one
TaskGroup: driver, transport, controller, heartbeats to the controller's node, housekeeping.
`stop()` undoes them in reverse.

Observability: one `NodeMetrics` per node (its own Prometheus registry), created here and
handed to each component as the probe it reports through (no globals): the group-commit writer
(`storage`), both front doors (`gateway`), the shard client and the records API through a
`ShardMeter` (`streams`); the quorum, the metadata image, the replication driver and RocksDB
are read at scrape time (`watch`). `/metrics` is served on `Config.metrics_port` (0 picks a
free port; `metrics_port` tells which). The gRPC port also answers the health checking
protocol: "liveness" (SERVING while the process and its event loop run: the servicer answers
on the loop, so a blocked loop fails the probe; NOT_SERVING once a background task died; never
depends on the quorum), "readiness" (see `readiness_problem`), and "" (the server is up).

Transport security (`broker/tls.py`): with a certificate the gRPC port serves TLS, mutual when
`tls_ca_file` is set (every caller, node or client, presents a certificate the CA signed), and
the node's channels to its peers present its own certificate; `health_port` serves the health
service alone in plaintext for probes that cannot do TLS.

A node is a cluster of one when `peers` is empty: the same code paths run (the shard replica
set is this node, the controller runs here), so single-node behaviour is the cluster's.

SIGTERM (`cli/serve.py`) calls `drain()` before `stop()`: heartbeats then say "shutting down", the
controller moves this node's shard leaderships to other replicas, and if this node leads the
metadata quorum it hands that over too, each wait bounded by `limits.drain_timeout_ms`.

Nothing imports this module except the CLI and tests, which run nodes in-process on 127.0.0.1
with an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import shutil
import ssl
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from broker import error_messages, limits, startup, tls
from broker.analytics.duckdb_engine import DuckDbChecker
from broker.analytics.runner import ApplicationRunner, RunnerSettings
from broker.analytics.service import AnalyticsService, AnalyticsSettings
from broker.analytics.service_v2 import AnalyticsV2Service
from broker.api.analytics.v1 import analytics_pb2
from broker.api.analytics.v2 import analytics_pb2 as analytics_v2_pb2
from broker.api.firehose.v1 import firehose_pb2
from broker.audit.trail import AuditTrail
from broker.caller import Caller
from broker.clock import Clock, SystemClock
from broker.config import DEFAULT_RAFT_PASSWORD, Config, QuorumLayout
from broker.console.app import ConsoleService
from broker.crypto.keyring import Keyring, UnopenableKey
from broker.crypto.master_keys import (
    ClusterMasterKey,
    KmsMasterKeys,
    LocalKeyFile,
    MasterKeyError,
    MasterKeys,
    WithClusterKey,
)
from broker.errors import ErrorCode, ShoalError
from broker.firehose.aws_clients import S3Store
from broker.firehose.channels import CHANNEL_ARN, ChannelOperations
from broker.firehose.runtime import FIREHOSE, FirehoseRuntime
from broker.gateway.access import AccessControl, build_access_control, node_signer
from broker.gateway.backup_key_service import backup_key_handler
from broker.gateway.capacity_service import CapacitySettings, capacity_handler
from broker.gateway.grpc_service import kinesis_handler, operation_handler
from broker.gateway.http_server import HttpServer, start_http_server
from broker.gateway.http_service import AwsHttpApp
from broker.gateway.iam_service import iam_handler
from broker.gateway.lease_service import lease_handler
from broker.gateway.limits_service import limits_handler
from broker.gateway.services import JsonService, RestService
from broker.gateway.sigv4 import SigV4Verifier
from broker.gateway.validation import KINESIS, REGIONAL_MODELS
from broker.gateway.video_grpc import video_handler
from broker.gateway.video_http import SIGNING_NAME as VIDEO_SIGNING_NAME
from broker.gateway.video_http import VideoHttpService
from broker.iam.grpc_client_signing import signing_interceptors
from broker.log.disk_guard import DiskGuard, DiskSpace
from broker.log.group_commit import GroupCommitWriter
from broker.log.retention import trim_expired
from broker.log.rocks_store import RocksLogStore
from broker.log.store import LogStoreError
from broker.meta import commands
from broker.meta.autoscaler import Autoscaler, AutoscalerSettings, policy_from_knobs
from broker.meta.controller import Controller
from broker.meta.controller_core import ControllerSettings, stranded_by_leaving
from broker.meta.frontend import MetadataFrontend
from broker.meta.image import MetadataImage, NodeMeta, NodeState, ShardState
from broker.meta.metadata_format import (
    METADATA_FORMAT_MAX,
    REPLICATION_ADDRESS_LEVEL,
    RESEALED_SECRETS_LEVEL,
)
from broker.meta.pysyncobj_quorum import PysyncobjQuorum
from broker.meta.quorum import ELECTION_TIMEOUT_HEARTBEATS, QuorumConfig
from broker.metrics import ClusterView as MetricsClusterView
from broker.metrics import MetricsServer, NodeMetrics
from broker.metrics import views as metrics_views
from broker.replication.driver import ReplicationDriver
from broker.replication.scrubber import Scrubber, ScrubSettings
from broker.rpc.channels import SERVER_OPTIONS, Channels
from broker.rpc.forwarder import GrpcShardForwarder
from broker.rpc.framed import FramedListener, FramedSettings, FramedTransport
from broker.rpc.node_service import (
    ClusterView,
    admin_handler,
    answer_shard_append,
    node_handler,
)
from broker.rpc.peers import GrpcReplicaControl, send_heartbeat
from broker.rpc.routed import RoutedTransport
from broker.rpc.transport import GrpcTransport, InboundStreams, replication_handler
from broker.service.context import ServiceContext, shard_throttles
from broker.service.in_process import LocalKinesis, LocalLeaseClient
from broker.service.kinesis import KinesisService
from broker.service.shard_load import ShardLoadRecorder, load_recorder, run_reporter
from broker.service.shards import ShardClient
from broker.service.throughput import ShardMeter
from broker.streams.namespaces import Namespace
from broker.streams.subscription_claims import ClaimTable
from broker.types import NodeId, ShardUid, StreamName
from broker.video.channels import ChannelSettings
from broker.video.control import VideoSettings
from broker.video.image_delivery import ImageDelivery
from broker.video.notifications import NotificationDelivery
from broker.video.service import VideoService
from broker.video.sns import SnsPublisher

log = logging.getLogger(__name__)

ANALYTICS = "kinesisanalytics"  # the botocore model of the SQL applications' API
ANALYTICS_V2 = "kinesisanalyticsv2"  # its successor, sharing the applications
_START_RETRY_S = 0.2
_JOIN_WAIT_LOG_INTERVAL_S = 10.0  # node_join_waiting at most this often while waiting
_GRPC_STOP_GRACE_S = 5.0
_HEALTH_INTERVAL_S = 0.5
LIVENESS = "liveness"
READINESS = "readiness"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Node:
    """One Shoal node. Lifecycle: `await start()`, serve, [`await drain()`], `await stop()`.
    Loop-bound."""

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        config.validate()
        self.config = config
        self.node_id = NodeId(config.node_id)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._store: RocksLogStore | None = None
        self._writer: GroupCommitWriter | None = None
        self._quorum: PysyncobjQuorum | None = None
        self._metadata: MetadataFrontend | None = None
        self._marked_format = 0  # the metadata format in the data directory's marker
        self._channels: Channels | None = None
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None  # plaintext health only (tls.py)
        self._tls = tls.node_files(config)
        self._http: HttpServer | None = None
        self.console: ConsoleService | None = None
        self._background: asyncio.Task[None] | None = None
        self._layout: QuorumLayout | None = None
        self._inbound = InboundStreams()
        self._framed_listener: FramedListener | None = None  # with replication_port
        self.driver: ReplicationDriver | None = None
        self.controller: Controller | None = None
        self.autoscaler: Autoscaler | None = None  # on-demand scaling (acts while leading)
        self.shard_load: ShardLoadRecorder | None = None  # this node's led shards' load
        self.service: KinesisService | None = None
        self.video: VideoService | None = None
        self.video_images: ImageDelivery | None = None  # continuous image generation to S3
        self.video_notifications: NotificationDelivery | None = None  # SNS, tagged fragments
        self.access: AccessControl | None = None  # keys, policies, audit (issue 15)
        self.audit: AuditTrail | None = None
        self.analytics: AnalyticsService | None = None  # Kinesis Data Analytics (SQL)
        self.analytics_v2: AnalyticsV2Service | None = None  # the same, kinesisanalyticsv2
        self.applications: ApplicationRunner | None = None  # the SQL applications it runs
        self.firehose: FirehoseRuntime | None = None  # Data Firehose (broker/firehose/)
        self.incarnation = 0
        self.grpc_port = 0
        self.health_port = 0  # the plaintext health port, once started (config.health_port)
        self.http_port = 0
        self.metrics = NodeMetrics(node_id=config.node_id)
        self._metrics_server: MetricsServer | None = None
        self.metrics_port = 0  # 0 until started (or when the port could not be bound)
        self._health: health.aio.HealthServicer | None = None
        self._seen_streams: dict[StreamName, tuple[str, ...]] = {}  # name -> enhanced metrics
        self._draining = False
        # Why this node's master key no longer unwraps the cluster's data keys (a key file
        # replaced, a KMS key disabled while it runs); None while it does.
        self.master_key_problem: str | None = None
        self._liveness_task: asyncio.Future[None] | None = None
        self._shutting_down = False
        self.failed = asyncio.Event()  # a background task died: the process should exit
        self.phase = "not started"  # what start() is doing, for a stop that interrupts it
        # Free space of the data directory (log/disk_guard.py): below the minimum, new
        # records are refused and this node's leaderships move away (heartbeats say so).
        self.disk = DiskGuard(minimum_bytes=config.disk_free_bytes_min)
        self.scrubber: Scrubber | None = None
        self.keyring: Keyring | None = None  # encryption at rest (broker/crypto/)

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    async def start(self) -> None:
        """Raises `startup.StartupError` (one line for the operator) when the node cannot
        start: a port in use, an unusable or foreign data directory, no quorum in time."""
        config = self.config
        self.phase = "checking ports and the data directory"
        startup.check_ports(config)
        marker = startup.prepare_data_dir(config, metadata_format_max=METADATA_FORMAT_MAX)
        self._warn_about_settings()
        (config.data_dir / "meta").mkdir(parents=True, exist_ok=True)
        log_dir = config.data_dir / "log"
        disk_was_empty = not log_dir.exists()
        self.phase = "opening the master keys"
        keyring = self.keyring = Keyring(
            _master_keys(config, self._image_or_empty), self._image_or_empty
        )
        self.phase = "opening the shard log"
        self._store = _open_store(log_dir, config.data_dir, keys=self.keyring)
        self._writer = GroupCommitWriter(self._store, probe=self.metrics.storage)
        self._writer.start()
        self.metrics.storage.watch(self._store.metrics_view)
        self.metrics.storage.watch_disk(config.data_dir)
        self.metrics.storage.watch_disk_guard(self.disk)
        self.check_disk()  # a node starting on a full disk refuses records from the start
        self._serve_metrics()
        layout = self._layout = config.quorum_layout()
        raft_heartbeat_s = config.knobs.raft_heartbeat_ms / 1000
        self._quorum = PysyncobjQuorum(
            QuorumConfig(
                self_address=layout.self_address,
                peer_addresses=layout.peers,
                read_only=layout.read_only,
                # The address the others dial (a DNS name with peers_from_dns) is advertised;
                # the socket listens on listen_host (0.0.0.0 in a pod), or that same host.
                bind_address=config.listen_address(config.raft_port),
                data_dir=config.data_dir / "meta",
                password=config.raft_password,
                heartbeat_interval_s=raft_heartbeat_s,
                election_timeout_min_s=raft_heartbeat_s * ELECTION_TIMEOUT_HEARTBEATS[0],
                election_timeout_max_s=raft_heartbeat_s * ELECTION_TIMEOUT_HEARTBEATS[1],
            )
        )
        self.phase = "opening the metadata journal"
        await self._start_quorum()
        self.metrics.quorum.watch(self._quorum.statistics)
        metadata = self._metadata = MetadataFrontend(self._quorum)
        self.metrics.cluster.watch(lambda: _metrics_cluster_view(metadata.image()))
        self.phase = "waiting for the metadata quorum"
        log.info(
            "node_waiting_for_quorum",
            extra={
                "voters": list(
                    layout.peers if layout.read_only else (layout.self_address, *layout.peers)
                ),
                "voting": not layout.read_only,
            },
        )
        lost_disk = await self._join(metadata, disk_was_empty=disk_was_empty)
        self._marked_format = 0 if marker is None else marker.metadata_format
        await self._mark_metadata_format()
        self.phase = "checking the master key"
        _check_master_key(config, keyring, metadata.image())
        self.phase = "starting the servers"
        self._channels = Channels(
            credentials=None
            if self._tls is None
            else tls.PeerCredentials(self._tls, clock=self.clock),
            # With access control, the gRPC door admits node-to-node calls only when they
            # carry the node signature (broker/gateway/grpc_auth.py).
            interceptors=signing_interceptors(node_signer(config.raft_password, self.clock))
            if config.access_control
            else (),
        )
        framed = self._framed_transport()
        transport = RoutedTransport(
            grpc=GrpcTransport(
                node_id=self.node_id, channels=self._channels, resolve=self._address_of
            ),
            framed=framed,
            framed_address=self._replication_address_of,
        )
        self.driver = ReplicationDriver(
            node_id=self.node_id,
            store=self._store,
            writer=self._writer,
            transport=transport,
            clock=self.clock,
            image=metadata.image,
            tick_ms=config.knobs.replication_tick_ms,
            rejoin_floors=_rejoin_floors(metadata.image(), self.node_id) if lost_disk else None,
            disk=self.disk,
            probe=self.metrics.replication,
        )
        self.driver.apply_image()
        self.metrics.replication.watch(self.driver.metrics_view)
        if config.scrub_bytes_per_second > 0:
            driver = self.driver
            self.scrubber = Scrubber(
                store=self._store,
                replicas=lambda: driver.replica_statistics(frozenset()),
                report_corruption=driver.report_corruption,
                settings=ScrubSettings(
                    bytes_per_second=config.scrub_bytes_per_second,
                    pass_interval_ms=config.knobs.scrub_pass_interval_ms,
                ),
                clock=self.clock,
                probe=self.metrics.replication,
            )
        self.shard_load = load_recorder(
            config, node_id=self.node_id, clock=self.clock, image=metadata.image
        )
        shards = ShardClient(
            node_id=self.node_id,
            clock=self.clock,
            store=self._store,
            local=self.driver,
            throttles=shard_throttles(config, image=metadata.image, clock=self.clock),
            forwarder=GrpcShardForwarder(
                self._channels, framed=framed, node_at=self._framed_node_at
            ),
            meter=ShardMeter(self.metrics.streams, metadata.image),
            load=self.shard_load,
            claims=ClaimTable(takeover_ms=config.knobs.subscription_takeover_ms),
        )
        self.autoscaler = Autoscaler(
            quorum=self._quorum, clock=self.clock, settings=_autoscaler_settings(config)
        )
        metrics_views.watch_node(
            self.metrics,
            image=metadata.image,
            wall_ms=self.clock.wall_ms,
            tls_files=self._tls,
            autoscaler=self.autoscaler,
        )
        self.controller = Controller(
            quorum=self._quorum,
            replicas=GrpcReplicaControl(
                channels=self._channels, resolve=self._address_of, node_id=self.node_id
            ),
            clock=self.clock,
            settings=ControllerSettings(
                node_session_timeout_ms=config.knobs.session_timeout_ms,
                # Two heartbeats missed: worth a TCP connect to see whether it crashed.
                probe_after_ms=2 * config.knobs.heartbeat_interval_ms,
                pass_interval_ms=config.knobs.controller_pass_interval_ms,
                stream_updating_ms=config.knobs.stream_updating_ms,
                absent_node_replace_after_ms=config.knobs.absent_node_replace_after_ms,
                replica_moves_max=config.knobs.replica_moves_max,
                metadata_format_limit=config.knobs.metadata_format_limit,
            ),
            node_id=self.node_id,
        )
        ctx = ServiceContext(
            config=config,
            clock=self.clock,
            metadata=metadata,
            shards=shards,
            master_keys=self.keyring.master,
        )
        self.service = KinesisService(ctx)
        self.audit = AuditTrail(
            kinesis=LocalKinesis(self.service),
            clock=self.clock,
            data_plane=config.audit_data_plane,
            account_id=config.account_id,
            retention_hours=config.audit_retention_hours,
        )
        # Kept whether or not access control is on (who changed what matters either way);
        # its internal stream counts against no account limit (`streams/internal_names.py`).
        self.access = build_access_control(config, self.clock, metadata.image, observer=self.audit)
        self.video = self._video_service(metadata)
        video_store = S3Store(region=config.region)  # boto3; AWS_ENDPOINT_URL_S3 picks a server
        self.video_images = ImageDelivery(
            archive=self.video.archive,
            metadata=metadata,
            clock=self.clock,
            node_id=self.node_id,
            store=lambda: video_store,
        )
        sns = SnsPublisher(region=config.region)  # boto3; AWS_ENDPOINT_URL_SNS picks a server
        self.video_notifications = NotificationDelivery(
            archive=self.video.archive,
            metadata=metadata,
            clock=self.clock,
            node_id=self.node_id,
            publisher=lambda: sns,
        )
        self._start_analytics(metadata)
        self.firehose = FirehoseRuntime(
            config=config,
            clock=self.clock,
            metadata=metadata,
            kinesis=self.service,
            is_controller=lambda: self._controller_node() == self.node_id,
            probe=self.metrics.firehose,
        )
        # Kinesis channels are delivery streams of the Firehose runtime, on the Kinesis doors.
        channels = ChannelOperations(ctx, on_change=self.firehose.lifecycle.kick)
        self.service.add_operations(
            channels.handlers(), resource_arn=CHANNEL_ARN, tagging=channels.tagging()
        )
        await self._start_grpc(shards)
        await self._start_framed_listener(shards)
        await self._start_http()
        self._background = asyncio.create_task(self._run_background(ctx, transport))
        self._background.add_done_callback(self._on_background_done)
        self.phase = "serving"
        log.info(
            "node_started",
            extra={
                "node_id": config.node_id,
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "metrics_port": self.metrics_port,
                "incarnation": self.incarnation,
            },
        )

    async def _join(self, metadata: MetadataFrontend, *, disk_was_empty: bool) -> bool:
        """Initializes the cluster (once, whoever is first) and registers this node; retried
        until a quorum leader answers. Returns whether this node lost its disk: it was
        registered before, yet starts with no shard log (then its replicas must not vote
        until they caught up, replica.py)."""
        config = self.config
        layout = self._layout
        assert layout is not None
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + config.knobs.join_timeout_ms / 1000
        next_log_at = loop.time()
        registered_before = self.node_id in metadata.image().nodes
        while True:
            try:
                if not metadata.image().iterator_secret:
                    cluster_id = str(uuid.uuid4())
                    created = await metadata.propose(
                        commands.InitCluster(
                            now_ms=self.clock.wall_ms(),
                            cluster_id=cluster_id,
                            iterator_secret=secrets.token_bytes(32),
                        )
                    )
                    if created == cluster_id:
                        # A new cluster: every member runs a binary that reads this format
                        # (forming one with several versions is not supported). Should this
                        # fail, the controller raises it once every node has said so.
                        await metadata.propose(
                            commands.SetMetadataFormat(
                                now_ms=self.clock.wall_ms(), level=METADATA_FORMAT_MAX
                            )
                        )
                registered_before = registered_before or self.node_id in metadata.image().nodes
                node = await self._register(metadata)
                self.incarnation = node.incarnation
                # Registered before (the local image may not show it yet: a wiped node gets
                # the metadata back from the leader only after it starts).
                registered_before = registered_before or node.incarnation > 1
                return disk_was_empty and registered_before
            except ShoalError as error:
                if error.code is not ErrorCode.UNAVAILABLE:
                    raise
                if loop.time() > give_up_at:
                    raise _no_quorum(config, layout) from error
                if loop.time() >= next_log_at:
                    log.info("node_join_waiting", extra={"reason": error.message})
                    next_log_at = loop.time() + _JOIN_WAIT_LOG_INTERVAL_S
                await asyncio.sleep(_START_RETRY_S)  # a retry pause, not a synchronisation

    async def _advertised_replication_address(self, metadata: MetadataFrontend) -> str:
        """The framed replication address to register: "" while the port is off, or while the
        cluster's metadata format cannot carry it (peers then reach this node over gRPC; it
        registers the address at its first start after the format is raised)."""
        address = self.config.replication_address
        if address and metadata.image().metadata_format < REPLICATION_ADDRESS_LEVEL:
            # A new cluster's creator sets the format just after InitCluster: a node whose
            # image does not show it yet waits a moment rather than go without for good.
            with contextlib.suppress(ShoalError):
                await metadata.wait_for_image(
                    lambda image: image.metadata_format >= REPLICATION_ADDRESS_LEVEL,
                    timeout_s=limits.replication_address_wait_ms / 1000,
                )
        if address and metadata.image().metadata_format < REPLICATION_ADDRESS_LEVEL:
            log.info(
                "replication_port_not_advertised",
                extra={
                    "metadata_format": metadata.image().metadata_format,
                    "needs": REPLICATION_ADDRESS_LEVEL,
                },
            )
            return ""
        return address

    async def _register(self, metadata: MetadataFrontend) -> NodeMeta:
        """RegisterNode: this node, ACTIVE under a new incarnation (DRAINING stays DRAINING)."""
        config = self.config
        layout = self._layout
        assert layout is not None
        node = await metadata.propose(
            commands.RegisterNode(
                now_ms=self.clock.wall_ms(),
                node_id=self.node_id,
                api_address=config.api_address,
                http_address=config.http_address,
                raft_address="" if layout.read_only else layout.self_address,
                voter=not layout.read_only,
                replication_address=await self._advertised_replication_address(metadata),
            )
        )
        assert isinstance(node, NodeMeta)
        return node

    async def _register_again_if_removed_absent(self) -> None:
        """A node the controller removed as absent while it was alive after all registers
        again, as a restart would: a new incarnation, ACTIVE and holding nothing (the removal
        waited until its replicas had moved). It happens when its API port refused the
        controller's probes through a slow start (it registers before it serves) or when it
        was paused longer than `absent_node_replace_after_ms`; without this it stayed REMOVED,
        and unready, until restarted. An operator's decommission (RemoveNode without
        `absent`) stays final while the process runs."""
        assert self._metadata is not None
        me = self._metadata.image().nodes.get(self.node_id)
        if (
            me is None
            or me.state is not NodeState.REMOVED
            or not me.removed_absent
            or me.incarnation != self.incarnation
            or self._draining
            or self._shutting_down
        ):
            return
        try:
            node = await self._register(self._metadata)
        except ShoalError as error:  # no quorum leader now: the next heartbeat asks again
            log.warning("node_register_again_failed", extra={"error": error.message})
            return
        log.warning(
            "node_registered_again",
            extra={"removed_incarnation": me.incarnation, "incarnation": node.incarnation},
        )
        self.incarnation = node.incarnation

    async def _start_quorum(self) -> None:
        assert self._quorum is not None
        try:
            await self._quorum.start()
        except ShoalError as error:
            if error.code is not ErrorCode.UNAVAILABLE:
                raise
            config = self.config
            raise startup.port_in_use(
                "raft_port", config.bind_host, config.raft_port, OSError(errno.EADDRINUSE, "")
            ) from error

    def _warn_about_settings(self) -> None:
        """Settings that work but should not be left as they are in a real cluster."""
        config = self.config
        layout = config.quorum_layout()
        if config.raft_password == DEFAULT_RAFT_PASSWORD and layout.peers:
            log.warning(
                "raft_password_default",
                extra={
                    "fix": "set raft_password (SHOAL_RAFT_PASSWORD) to a long random secret, "
                    "the same on every node: with the development value anyone who reaches "
                    "the Raft port can read and change the metadata"
                },
            )

    def _framed_transport(self) -> FramedTransport | None:
        """The sender of the framed replication port, when this node has the port."""
        if self.config.replication_port is None:
            return None
        contexts = None if self._tls is None else tls.SslContexts(self._tls, clock=self.clock)
        return FramedTransport(
            node_id=self.node_id,
            resolve=self._replication_address_of,
            settings=FramedSettings(raft_password=self.config.raft_password),
            clock=self.clock,
            ssl_context=None if contexts is None else contexts.dialler,
        )

    def _replication_address_of(self, node_id: NodeId) -> str | None:
        """The peer's framed replication address; None: reach it over gRPC."""
        assert self._metadata is not None
        node = self._metadata.image().nodes.get(node_id)
        if node is None or node.state is NodeState.REMOVED or not node.replication_address:
            return None
        return node.replication_address

    async def _start_framed_listener(self, shards: ShardClient) -> None:
        """The framed replication port (`Config.replication_port`), when set."""
        config = self.config
        if config.replication_port is None:
            return
        assert self.driver is not None
        try:
            contexts = None if self._tls is None else tls.SslContexts(self._tls, clock=self.clock)
        except (OSError, ValueError) as error:
            raise startup.tls_files_unusable(error) from error
        listener = FramedListener(
            self.driver,
            settings=FramedSettings(raft_password=config.raft_password),
            clock=self.clock,
            ssl_context=None if contexts is None else contexts.listener(),
            appends=partial(answer_shard_append, shards),
        )
        try:
            await listener.start(config.bind_host, config.replication_port)
        except OSError as error:
            raise startup.port_in_use(
                "replication_port", config.bind_host, config.replication_port, error
            ) from error
        self._framed_listener = listener

    def _framed_node_at(self, api_address: str) -> NodeId | None:
        """The node at this gRPC address, when a forwarded append to it may take the framed
        connection (it has a framed address); None: the append goes over gRPC."""
        assert self._metadata is not None
        for node_id, node in self._metadata.image().nodes.items():
            if node.api_address == api_address and self._replication_address_of(node_id):
                return node_id
        return None

    def _address_of(self, node_id: NodeId) -> str | None:
        assert self._metadata is not None
        node = self._metadata.image().nodes.get(node_id)
        if node is None or node.state is NodeState.REMOVED:
            return None
        return node.api_address

    def _start_analytics(self, metadata: MetadataFrontend) -> None:
        """Kinesis Data Analytics: the API and the runner of this node's SQL applications."""
        assert self.service is not None
        config = self.config
        settings = AnalyticsSettings(
            region=config.region,
            account_id=config.account_id,
            # STARTING, STOPPING, UPDATING and DELETING last as long as a stream's UPDATING.
            transition_ms=config.knobs.stream_updating_ms,
        )
        self.analytics = AnalyticsService(
            metadata=metadata,
            clock=self.clock,
            settings=settings,
            kinesis=self.service,
            checker=DuckDbChecker(),
        )
        self.analytics_v2 = AnalyticsV2Service(
            metadata=metadata,
            clock=self.clock,
            settings=settings,
            kinesis=self.service,
            checker=DuckDbChecker(),
        )
        self.applications = ApplicationRunner(
            metadata=metadata,
            lease_client=LocalLeaseClient(metadata, self.clock),
            kinesis=self.service,
            delivery_streams=_NodeFirehose(self),
            clock=self.clock,
            worker_id=f"{config.node_id}:{uuid.uuid4()}",
            default_namespace=Namespace(account_id=config.account_id, region=config.region),
            settings=RunnerSettings(failover_ms=config.knobs.analytics_failover_ms),
        )
        runner = self.applications
        self.metrics.analytics.watch(lambda: metrics_views.analytics_views(runner))

    async def _start_grpc(self, shards: ShardClient) -> None:
        assert self.service is not None
        assert self.video is not None
        assert self.analytics is not None
        assert self.analytics_v2 is not None
        assert self.driver is not None
        assert self.controller is not None
        assert self.access is not None
        access = self.access
        server = grpc.aio.server(
            interceptors=[access.interceptor],
            options=[
                ("grpc.max_receive_message_length", limits.grpc_message_bytes_max),
                ("grpc.max_send_message_length", limits.grpc_message_bytes_max),
                *SERVER_OPTIONS,
                *_EXCLUSIVE_PORT,
            ],
        )
        controller = self.controller
        assert self._metadata is not None
        server.add_generic_rpc_handlers(
            (
                kinesis_handler(
                    access.guard(self.service, KINESIS),
                    caller=self._caller(),
                    probe=self.metrics.gateway,
                ),
                replication_handler(self.driver, inbound=self._inbound),
                node_handler(
                    shards,
                    on_heartbeat=lambda beat: controller.on_heartbeat(
                        node_id=beat.node_id,
                        incarnation=beat.incarnation,
                        shutting_down=beat.shutting_down,
                        rejoining=beat.rejoining,
                        disk_full=beat.disk_full,
                        fenced=beat.fenced,
                        metadata_format_max=beat.metadata_format_max,
                    ),
                    controller=self._controller_node,
                ),
                admin_handler(self),
                lease_handler(
                    self._metadata,
                    self.clock,
                    caller=Caller(region=self.config.region, account_id=self.config.account_id),
                ),
                capacity_handler(
                    self._metadata.image,
                    self.clock,
                    CapacitySettings(
                        account_id=self.config.account_id,
                        load_stale_ms=self.config.knobs.load_report_stale_ms,
                    ),
                ),
                limits_handler(self.service.ctx),
                backup_key_handler(self.service.ctx),
                iam_handler(
                    image=self._metadata.image,
                    propose=self._metadata.propose,
                    directory=access.directory,
                    authorizer=access.authorizer,
                    clock=self.clock,
                    region=self.config.region,
                    trail=self.audit,
                ),
                video_handler(
                    self.video,
                    caller=self._caller(),
                    probe=self.metrics.gateway,
                    guard=lambda control: access.guard(control, VIDEO_SIGNING_NAME),
                ),
                operation_handler(
                    analytics_pb2.DESCRIPTOR.services_by_name["KinesisAnalyticsService"],
                    access.guard(self.analytics, ANALYTICS),
                    model=ANALYTICS,
                    caller=self._caller(),
                    probe=self.metrics.gateway,
                ),
                operation_handler(
                    analytics_v2_pb2.DESCRIPTOR.services_by_name["KinesisAnalyticsV2Service"],
                    access.guard(self.analytics_v2, ANALYTICS),
                    model=ANALYTICS_V2,
                    caller=self._caller(),
                    probe=self.metrics.gateway,
                ),
                self._firehose_handler(),
            )
        )
        health_servicer = self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = self.config.listen_address(self.config.grpc_port)
        try:
            self.grpc_port = tls.add_port(server, address, self._tls)
        except RuntimeError:  # grpc's "Failed to bind to address"
            self.grpc_port = 0
        except (OSError, ValueError) as error:  # the certificate files (read here)
            raise startup.tls_files_unusable(error) from error
        has_peers = self._layout is not None and bool(self._layout.peers)
        if self._tls is not None and not self._tls.require_client_auth and has_peers:
            # The internal services share this port: without client certificates anyone who
            # reaches it can call them (broker/tls.py).
            log.warning("tls_without_client_auth", extra={"grpc": address})
        if self.grpc_port == 0:
            raise _bind_failed("grpc_port", self.config.bind_host, self.config.grpc_port)
        await server.start()
        await health_servicer.set("", _SERVING)
        await health_servicer.set(LIVENESS, _SERVING)
        await health_servicer.set(
            READINESS, _SERVING if self.readiness_problem() is None else _NOT_SERVING
        )
        self._server = server
        await self._start_health_port(health_servicer)

    async def _start_health_port(self, servicer: health.aio.HealthServicer) -> None:
        """The health service alone on a plaintext port (`Config.health_port`), for probes that
        cannot do mutual TLS, such as the kubelet's gRPC probe. It tells only SERVING or not."""
        if self.config.health_port is None:
            return
        server = grpc.aio.server(options=list(_EXCLUSIVE_PORT))
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        address = self.config.listen_address(self.config.health_port)
        try:
            self.health_port = server.add_insecure_port(address)
        except RuntimeError:
            self.health_port = 0
        if self.health_port == 0:
            raise _bind_failed("health_port", self.config.bind_host, self.config.health_port)
        await server.start()
        self._health_server = server

    def _firehose_handler(self) -> grpc.GenericRpcHandler:
        assert self.firehose is not None
        assert self.access is not None
        return operation_handler(
            firehose_pb2.DESCRIPTOR.services_by_name["FirehoseService"],
            self.access.guard(self.firehose.service, FIREHOSE),
            model=FIREHOSE,
            caller=self._caller(),
            probe=self.metrics.gateway,
        )

    def _caller(self) -> Caller:
        """The node's own region and account: the `Caller` of calls that carry no other."""
        return Caller(region=self.config.region, account_id=self.config.account_id)

    def _video_service(self, metadata: MetadataFrontend) -> VideoService:
        """Kinesis Video Streams: its fragments in internal streams of this node's Kinesis."""
        assert self.service is not None
        config = self.config
        scheme = "https" if config.tls_cert_file is not None else "http"
        return VideoService(
            metadata=metadata,
            clock=self.clock,
            kinesis=LocalKinesis(self.service),
            settings=VideoSettings(
                data_endpoint=lambda: f"{scheme}://{config.host}:{self.http_port}",
                creating_ms=config.knobs.stream_creating_ms,
                updating_ms=config.knobs.stream_updating_ms,
                channels=ChannelSettings(
                    node_id=self.node_id,
                    data_endpoint=lambda: f"{scheme}://{config.host}:{self.http_port}",
                    tls=config.tls_cert_file is not None,
                    creating_ms=config.knobs.stream_creating_ms,
                    updating_ms=config.knobs.stream_updating_ms,
                    turn_uris=config.video_turn_uris,
                    turn_secret=config.video_turn_secret,
                ),
            ),
            probe=self.metrics.video,
        )

    async def _start_http(self) -> None:
        """The AWS door: the same services behind the AWS wire protocols."""
        assert self.service is not None
        config = self.config
        assert self.analytics is not None
        assert self.analytics_v2 is not None
        assert self.firehose is not None
        assert self.access is not None
        access = self.access
        services = (
            JsonService(KINESIS, access.guard(self.service, KINESIS)),
            JsonService(FIREHOSE, access.guard(self.firehose.service, FIREHOSE)),
            JsonService(ANALYTICS, access.guard(self.analytics, ANALYTICS)),
            JsonService(ANALYTICS_V2, access.guard(self.analytics_v2, ANALYTICS)),
        )
        access_keys = config.access_keys
        verifiers = {
            service.signing_name: SigV4Verifier(
                secret_for=access.directory.secret,
                region=config.region,
                service=service.signing_name,
                # Data streams and SQL applications are namespaced by region: a request signed
                # for any region acts in that region (streams/namespaces.py). The other
                # services keep the node's.
                any_region=service.model in REGIONAL_MODELS,
            )
            for service in services
            if access_keys
        }
        if config.console_enabled:
            self.console = ConsoleService(
                self.service,
                node_id=self.node_id,
                cluster_view=self.cluster_view,
                clock=self.clock,
                region=config.region,
                account_id=config.account_id,
                data_dir=config.data_dir,
                secrets_by_access_key=access_keys,
                metrics=self.metrics.registry,
                video=self.video,
                firehose=self.firehose.service,
                analytics=self.analytics,
                peer_tls=self._console_peer_tls(),
                access=self.access,
            )
        rest: list[RestService] = [self._video_http()]
        if self.console is not None:
            rest.append(self.console)
        app = AwsHttpApp(
            services,
            rest=rest,
            clock=self.clock,
            verifiers=verifiers,
            region=config.region,
            account_id=config.account_id,
            probe=self.metrics.gateway,
            authenticator=access.authenticator,
        )
        try:
            self._http = await start_http_server(
                app,
                host=config.bind_host,
                port=config.http_port,
                certfile=config.tls_cert_file,
                keyfile=config.tls_key_file,
            )
        except ssl.SSLError as error:
            raise startup.tls_files_unusable(error) from error
        except OSError as error:
            if error.filename is not None:  # a certificate file, not the socket
                raise startup.tls_files_unusable(error) from error
            raise startup.port_in_use(
                "http_port", config.bind_host, config.http_port, error
            ) from error
        self.http_port = self._http.port

    def _console_peer_tls(self) -> ssl.SSLContext | None:
        """How this node's console reaches the other nodes' HTTP doors: plain HTTP, or TLS
        verified against the cluster's CA (the system's roots without one), as this node."""
        if self._tls is None:
            return None
        ca = None if self._tls.ca_file is None else str(self._tls.ca_file)
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(self._tls.cert_file, self._tls.key_file)
        return context

    def _video_http(self) -> VideoHttpService:
        assert self.video is not None
        assert self.access is not None
        config = self.config
        verifier = None
        if config.access_keys:
            verifier = SigV4Verifier(
                secret_for=self.access.directory.secret,
                region=config.region,
                service=VIDEO_SIGNING_NAME,
            )
        return VideoHttpService(
            self.video,
            clock=self.clock,
            verifier=verifier,
            region=config.region,
            account_id=config.account_id,
            probe=self.metrics.gateway,
            authenticator=self.access.authenticator,
            authorized=self.access.guard(self.video, VIDEO_SIGNING_NAME),
        )

    # --- Background work ----------------------------------------------------------------------

    async def _run_background(self, ctx: ServiceContext, transport: RoutedTransport) -> None:
        """Owns every background task; they run until stop() cancels this one."""
        assert self.driver is not None
        assert self.controller is not None
        async with asyncio.TaskGroup() as group:
            group.create_task(self.driver.run(), name="replication-driver")
            group.create_task(transport.run(), name="replication-transport")
            group.create_task(self.controller.run(), name="controller")
            assert self.audit is not None
            group.create_task(self.audit.run(), name="audit-trail")
            assert self.autoscaler is not None
            assert self.shard_load is not None
            group.create_task(self.autoscaler.run(), name="autoscaler")
            group.create_task(
                run_reporter(
                    self.shard_load,
                    ctx.metadata.propose,
                    interval_ms=self.config.knobs.load_report_interval_ms,
                    clock=self.clock,
                ),
                name="shard-load-reporter",
            )
            group.create_task(self._run_heartbeats(), name="heartbeats")
            group.create_task(self._run_housekeeping(ctx), name="housekeeping")
            group.create_task(self._run_key_rewraps(ctx), name="key-rewraps")
            group.create_task(self._run_master_key_checks(ctx), name="master-key-checks")
            group.create_task(self._run_disk_checks(), name="disk-checks")
            if self.scrubber is not None:
                group.create_task(self.scrubber.run(), name="scrubber")
            group.create_task(self._run_health(), name="health")
            if self.console is not None:
                group.create_task(self.console.run_sampler(), name="console-rates")
            assert self.applications is not None
            group.create_task(self.applications.run(), name="analytics-applications")
            assert self.firehose is not None
            group.create_task(self.firehose.run(), name="firehose")
            assert self.video_images is not None
            group.create_task(self.video_images.run(), name="video-images")
            assert self.video_notifications is not None
            group.create_task(self.video_notifications.run(), name="video-notifications")

    async def _run_key_rewraps(self, ctx: ServiceContext) -> None:
        """After a master-key rotation, the controller's node re-wraps the data keys an older
        master key wraps (one command per stream; a no-op pass otherwise, and with KMS)."""
        assert self.keyring is not None
        keyring = self.keyring
        while True:
            await asyncio.sleep(self.config.knobs.key_rewrap_interval_ms / 1000)
            if self._controller_node() != self.node_id:
                continue
            image = ctx.image()
            await self._reseal_access_keys(ctx, image)
            if not any(stream.data_keys for stream in image.streams.values()):
                continue
            try:
                commands = await asyncio.to_thread(
                    keyring.rewrap_commands, image, now_ms=self.clock.wall_ms()
                )
            except Exception:  # a KMS or file hiccup must not stop the node: next pass
                log.exception("data_key_rewrap_pass_failed")
                continue
            for command in commands:
                try:
                    await ctx.metadata.propose(command)
                except ShoalError as error:
                    log.warning("data_key_rewrap_failed", extra={"error": str(error)})
                else:
                    log.info(
                        "data_keys_rewrapped",
                        extra={"stream": command.name, "keys": len(command.rewrapped)},
                    )

    async def _reseal_access_keys(self, ctx: ServiceContext, image: MetadataImage) -> None:
        """Access-key secrets a fallback key opens (sealed before metadata format 4 with the
        Raft password alone, or with a previous Raft password) are sealed again with the
        cluster's current IAM key, in one command (`iam/sealing.py`)."""
        if image.metadata_format < RESEALED_SECRETS_LEVEL or not image.iam.keys:
            return
        assert self.access is not None
        box = self.access.directory.box
        resealed = []
        for key in image.iam.keys.values():
            sealed = box.reseal(key.access_key_id, key.sealed_secret)
            if sealed is not None:
                resealed.append((key.access_key_id, sealed))
        if not resealed:
            return
        try:
            await ctx.metadata.propose(
                commands.ResealAccessKeys(now_ms=self.clock.wall_ms(), resealed=tuple(resealed))
            )
        except ShoalError as error:
            log.warning("access_keys_reseal_failed", extra={"error": str(error)})
        else:
            log.info("access_keys_resealed", extra={"keys": len(resealed)})

    async def _run_master_key_checks(self, ctx: ServiceContext) -> None:
        """The start's master-key check, kept up while the node runs: every
        `master_key_check_interval_ms`, and within a second of the key file changing, the
        master key itself (never the cache of unwrapped keys) must still unwrap one data key
        per wrapping in use. A node whose key no longer does is not ready (readiness names
        the stream and the setting), shows `kinesis_encryption_master_key_usable` 0 and logs
        `master_key_unusable` once; it recovers when the key is put back."""
        assert self.keyring is not None
        keyring = self.keyring
        interval_ms = self.config.knobs.master_key_check_interval_ms
        key_file = (
            self.config.encryption_key_file if self.config.encryption_master_key == "file" else None
        )
        loop = asyncio.get_running_loop()  # real time, as the other background passes
        file_seen = _file_stamp(key_file)
        checked_s = loop.time()
        while True:  # infinite on purpose: cancelled by stop()
            await asyncio.sleep(min(1.0, interval_ms / 1000))
            stamp = _file_stamp(key_file)
            due = (loop.time() - checked_s) * 1000 >= interval_ms
            if stamp == file_seen and not due:
                continue
            file_seen = stamp
            checked_s = loop.time()
            image = ctx.image()
            if not any(stream.data_keys for stream in image.streams.values()):
                problem = None
            else:
                try:
                    missing = await asyncio.to_thread(keyring.unopenable, image)
                except Exception:  # a KMS or file hiccup must not stop the node: next pass
                    log.exception("master_key_check_failed")
                    continue
                problem = None if missing is None else _master_key_problem(self.config, missing)
            if problem is not None and self.master_key_problem is None:
                log.error("master_key_unusable", extra={"problem": problem})
            elif problem is None and self.master_key_problem is not None:
                log.info("master_key_usable_again")
            self.master_key_problem = problem
            self.metrics.encryption.master_key_checked(usable=problem is None)

    def _image_or_empty(self) -> MetadataImage:
        """The applied metadata image; an empty one before the quorum is open (the keyring
        then knows no encrypted stream)."""
        return MetadataImage() if self._metadata is None else self._metadata.image()

    def _on_background_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("node_background_failed", exc_info=task.exception())
            self.failed.set()
            if self._health is not None:  # the process is no longer sound: restart it
                self._liveness_task = asyncio.ensure_future(
                    self._health.set(LIVENESS, _NOT_SERVING)
                )

    # --- Metrics and health ---------------------------------------------------------------------

    def _serve_metrics(self) -> None:
        """`/metrics` on `metrics_port`. A port already taken fails the start like any other
        port: a node nobody can scrape would look down to every alert."""
        config = self.config
        try:
            self._metrics_server = self.metrics.serve(
                config.bind_host,
                config.metrics_port,
                basic_auth=config.access_keys if config.access_control else None,
            )
        except OSError as error:
            raise startup.port_in_use(
                "metrics_port", config.bind_host, config.metrics_port, error
            ) from error
        self.metrics_port = self._metrics_server.port

    def readiness_problem(self) -> str | None:
        """Why this node should not take traffic now, or None when it is ready: it knows a
        metadata quorum leader, its image has applied everything its quorum replica knows
        committed ("caught up" for metadata), it is registered ACTIVE, no shard replica of
        its is recovering a lost log ("caught up" for data, `ReplicationDriver.caught_up`),
        and it is not shutting down."""
        if self._draining or self._shutting_down:
            return "shutting down"
        if self._quorum is None or self._metadata is None or self.driver is None:
            return "starting"
        stats = self._quorum.statistics()
        if stats.quorum_leader is None:
            return "no metadata quorum leader"
        if stats.last_applied < stats.commit_index:
            return "metadata not caught up"
        me = self._metadata.image().nodes.get(self.node_id)
        if me is None or me.state is not NodeState.ACTIVE:
            return "not registered ACTIVE"
        if not self.driver.caught_up():
            return "shard replicas recovering"
        if self.master_key_problem is not None:
            return self.master_key_problem
        return None

    async def _run_health(self) -> None:
        """Keeps "readiness" current. Infinite on purpose: cancelled by stop()."""
        ready: bool | None = None
        while True:
            problem = self.readiness_problem()
            if (problem is None) != ready and self._health is not None:
                ready = problem is None
                await self._health.set(READINESS, _SERVING if ready else _NOT_SERVING)
                log.info("node_readiness", extra={"ready": ready, "reason": problem})
            self._forget_stream_series()
            await asyncio.sleep(_HEALTH_INTERVAL_S)

    def _forget_stream_series(self) -> None:
        """Follow streams deleted, and enhanced monitoring changed, through other nodes."""
        assert self._metadata is not None
        now_ms = self.clock.wall_ms()
        live = {
            stream.name: stream.enhanced_metrics
            for stream in self._metadata.image().streams.values()
            if not stream.is_gone(now_ms=now_ms)
        }
        if live == self._seen_streams:
            return
        for name in self._seen_streams.keys() - live.keys():
            self.metrics.streams.stream_deleted(name)
        for name, enhanced in live.items():
            if self._seen_streams.get(name) != enhanced:
                self.metrics.streams.enhanced_monitoring_changed(name, enhanced)
        self._seen_streams = live

    def _controller_node(self) -> NodeId | None:
        """The node running the controller: the metadata quorum's leader, as this node knows."""
        assert self._quorum is not None
        assert self._metadata is not None
        if self._quorum.is_quorum_leader():
            return self.node_id
        address = self._quorum.quorum_leader_address()
        if address is None:
            return None
        node = self._metadata.image().node_by_raft_address(address)
        return None if node is None else node.node_id

    async def _run_heartbeats(self) -> None:
        """Heartbeats to the controller. Infinite on purpose: cancelled by stop()."""
        interval_s = self.config.knobs.heartbeat_interval_ms / 1000
        while True:
            await self._register_again_if_removed_absent()
            await self.heartbeat_once()
            await self._mark_metadata_format()
            await asyncio.sleep(interval_s)

    async def _mark_metadata_format(self) -> None:
        """Records the cluster's metadata format in the data directory's marker once it is
        known or raised: a binary that cannot read it then refuses the directory in one line
        (`startup.prepare_data_dir`) instead of failing on the first newer command."""
        assert self._metadata is not None
        level = self._metadata.image().metadata_format
        if level <= self._marked_format:
            return
        await asyncio.to_thread(
            startup.write_marker,
            self.config.data_dir,
            node_id=self.config.node_id,
            metadata_format=level,
        )
        self._marked_format = level

    async def heartbeat_once(self) -> bool:
        """One heartbeat to the controller's node; whether the controller took it."""
        assert self._quorum is not None
        assert self._metadata is not None
        assert self._channels is not None
        assert self.controller is not None
        rejoining = self.driver.rejoining() if self.driver is not None else []
        fenced = self.driver.fenced_leaderships() if self.driver is not None else []
        disk_full = self.disk.full
        if self._quorum.is_quorum_leader():
            return self.controller.on_heartbeat(
                node_id=self.node_id,
                incarnation=self.incarnation,
                shutting_down=self._shutting_down,
                rejoining=rejoining,
                disk_full=disk_full,
                fenced=fenced,
                metadata_format_max=METADATA_FORMAT_MAX,
            )
        controller = self._controller_node()
        address = self._address_of(controller) if controller is not None else None
        if address is None:
            return False
        try:
            answer = await send_heartbeat(
                self._channels,
                address,
                node_id=self.node_id,
                incarnation=self.incarnation,
                sent_ms=self.clock.wall_ms(),
                shutting_down=self._shutting_down,
                rejoining=rejoining,
                disk_full=disk_full,
                fenced=fenced,
                metadata_format_max=METADATA_FORMAT_MAX,
                timeout_ms=max(self.config.knobs.heartbeat_interval_ms * 2, 200),
            )
        except ShoalError as error:
            log.debug("heartbeat_failed", extra={"controller": controller, "error": error.message})
            return False
        return answer.accepted

    def check_disk(self) -> None:
        """Samples the data directory's free space into the disk guard; logs transitions."""
        try:
            usage = shutil.disk_usage(self.config.data_dir)
        except OSError as error:
            log.warning("disk_check_failed", extra={"error": repr(error)})
            return
        space = DiskSpace(free_bytes=usage.free, total_bytes=usage.total)
        if not self.disk.observe(space):
            return
        if self.disk.full:
            log.error(
                "disk_space_low_records_refused",
                extra={
                    "free_bytes": space.free_bytes,
                    "minimum_bytes": self.disk.minimum_bytes,
                    "data_dir": str(self.config.data_dir),
                },
            )
        else:
            log.warning("disk_space_recovered_records_accepted", extra={"free": space.free_bytes})

    async def _run_disk_checks(self) -> None:
        """Infinite on purpose: cancelled by stop()."""
        interval_s = self.config.knobs.disk_check_interval_ms / 1000
        while True:
            self.check_disk()
            await asyncio.sleep(interval_s)

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
        assert self.driver is not None
        store = self._store
        now_ms = self.clock.wall_ms()
        image = ctx.image()
        if self._controller_node() == self.node_id:
            for stream in list(image.streams.values()):
                if stream.is_gone(now_ms=now_ms):
                    await ctx.metadata.propose(commands.ForgetStream(now_ms=now_ms, uid=stream.uid))
        image = ctx.image()
        self.driver.apply_image()  # drop replicas of deleted shards before their data goes
        # This node's replicas: shards of deleted streams, and replicas moved to other nodes,
        # take their data with them.
        keep = {
            shard.uid
            for stream in image.streams.values()
            for shard in stream.shards
            if self.node_id in shard.replicas
        }
        dropped = [uid for uid in await asyncio.to_thread(store.shard_uids) if uid not in keep]
        for shard_uid in dropped:
            await asyncio.to_thread(store.delete_shard, shard_uid)
        retention = {
            shard.uid: stream.retention_hours
            for stream in image.streams.values()
            for shard in stream.shards
            if shard.uid in keep
        }
        ctx.throttles.retain_only(image.shard_uids())
        await asyncio.to_thread(self._trim, store, retention, now_ms, dropped)

    @staticmethod
    def _trim(
        store: RocksLogStore,
        retention: dict[ShardUid, int],
        now_ms: int,
        dropped: list[ShardUid],
    ) -> None:
        """Trim past retention, then compact the key ranges of the shards trimmed or
        dropped: range tombstones hold their space until a compaction drops them, and only
        those ranges are rewritten (with the memtables and WAL files behind them)."""
        starts_before = {uid: store.log_start(uid) for uid in retention}
        starts_after = trim_expired(store, retention, now_ms=now_ms)
        trimmed = [uid for uid in retention if starts_after[uid] > starts_before[uid]]
        if trimmed or dropped:
            store.compact_shards([*trimmed, *dropped])

    # --- ClusterAdminService (AdminBackend) ---------------------------------------------------

    def cluster_view(self) -> ClusterView:
        assert self._quorum is not None
        return ClusterView(
            node_id=self.node_id,
            image=self._quorum.image(),
            quorum=self._quorum.statistics(),
            controller=self._controller_node(),
        )

    def metadata_image(self, applied_commands: int | None) -> tuple[MetadataImage | None, int]:
        assert self._quorum is not None
        raft_applied = self._quorum.statistics().last_applied
        if applied_commands is None:
            return self._quorum.image(), raft_applied
        return self._quorum.image_after(applied_commands), raft_applied

    async def add_voter(self, raft_address: str) -> None:
        assert self._quorum is not None
        await self._quorum.add_voter(
            raft_address, timeout_s=limits.metadata_propose_timeout_ms / 1000
        )

    async def remove_voter(self, raft_address: str) -> None:
        assert self._quorum is not None
        await self._quorum.remove_voter(
            raft_address, timeout_s=limits.metadata_propose_timeout_ms / 1000
        )

    async def drain(self, node_id: NodeId, *, timeout_ms: int) -> int:
        """Marks `node_id` DRAINING (the controller moves its leaderships and replicas away)
        and waits, bounded, until it leads nothing; returns how many shards it still leads."""
        assert self._metadata is not None
        node = self._metadata.image().nodes.get(node_id)
        if node is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, error_messages.node_not_registered(node_id=node_id)
            )
        if node.state is not NodeState.DRAINING:
            await self._metadata.propose(
                commands.SetNodeState(
                    now_ms=self.clock.wall_ms(),
                    node_id=node_id,
                    state=NodeState.DRAINING,
                    expected_incarnation=node.incarnation,
                )
            )
        return await self._wait_led_by_none(node_id, timeout_ms=timeout_ms)

    async def remove_node(self, node_id: NodeId) -> bool:
        """Decommission's last step: a node that holds no replica leaves the metadata quorum's
        voters (when it is one) and becomes REMOVED. Refused (ResourceInUse) while it holds
        replicas; the state machine checks that again when it applies RemoveNode."""
        assert self._metadata is not None
        assert self._quorum is not None
        node = self._metadata.image().nodes.get(node_id)
        if node is None:
            raise ShoalError(
                ErrorCode.RESOURCE_NOT_FOUND, error_messages.node_not_registered(node_id=node_id)
            )
        held = _replica_count(self._metadata.image(), node_id)
        if held:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE,
                error_messages.node_holds_replicas(node_id=node_id, held=held),
            )
        was_voter = (
            bool(node.raft_address) and node.raft_address in self._quorum.membership().voters
        )
        if was_voter:
            await self.remove_voter(node.raft_address)
        await self._metadata.propose(
            commands.RemoveNode(now_ms=self.clock.wall_ms(), node_id=node_id)
        )
        log.info("node_removed", extra={"node": node_id, "was_voter": was_voter})
        return was_voter

    async def _wait_led_by_none(self, node_id: NodeId, *, timeout_ms: int) -> int:
        assert self._metadata is not None
        with contextlib.suppress(ShoalError):
            await self._metadata.wait_for_image(
                lambda image: _leader_count(image, node_id) == 0, timeout_s=timeout_ms / 1000
            )
        return _leader_count(self._metadata.image(), node_id)

    async def _wait_stranding_none(self, *, timeout_ms: int) -> tuple[str, ...]:
        """Waits, bounded, until leaving strands no shard (`stranded_by_leaving`): the
        controller first adds the replacement a shard short of replicas needs, while this
        node can still promise. Returns the shards still stranded."""
        assert self._metadata is not None

        def stranded(image: MetadataImage) -> tuple[str, ...]:
            return stranded_by_leaving(image, self.node_id, wall_ms=self.clock.wall_ms())

        with contextlib.suppress(ShoalError):
            await self._metadata.wait_for_image(
                lambda image: not stranded(image), timeout_s=timeout_ms / 1000
            )
        return stranded(self._metadata.image())

    # --- Shutdown -------------------------------------------------------------------------------

    async def drain_for_shutdown(self, *, timeout_ms: int = limits.drain_timeout_ms) -> int:
        """Before a SIGTERM stop: hand this node's shard leaderships and, if it leads the
        metadata quorum, that leadership to other nodes (bounded waits). Returns the shard
        leaderships left (0 in a healthy cluster; all of them in a cluster of one)."""
        assert self._metadata is not None
        assert self._quorum is not None
        # Not ready first, so load balancers stop sending before leaderships move.
        self._draining = True
        if self._health is not None:
            await self._health.set(READINESS, _NOT_SERVING)
        image = self._metadata.image()
        others = [n for n in image.nodes.values() if n.node_id != self.node_id and n.is_placeable()]
        if not others:
            return _leader_count(image, self.node_id)
        self._shutting_down = True
        await self.heartbeat_once()
        started_ms = self.clock.monotonic_ms()
        left = await self._wait_led_by_none(self.node_id, timeout_ms=timeout_ms)
        # One bound for both waits (a pod's grace period is one).
        remaining_ms = max(0, timeout_ms - (self.clock.monotonic_ms() - started_ms))
        stranded = await self._wait_stranding_none(timeout_ms=remaining_ms)
        log.info(
            "node_drained",
            extra={"node_id": self.node_id, "leaderships_left": left, "stranded": list(stranded)},
        )
        if self._quorum.is_quorum_leader():
            moved = await self._quorum.transfer_leadership(timeout_s=timeout_ms / 1000)
            log.info("quorum_leadership_handed_over", extra={"moved": moved})
        return left

    async def stop(self) -> None:
        """Every step is bounded; `phase` says which one runs (serve's stop bound names it)."""
        was_serving = self.phase == "serving"
        if self.firehose is not None:
            self.phase = "stopping the delivery streams"
            await self.firehose.stop()  # deliverers hand their leases over while all else runs
        if self.service is not None:
            # Open SubscribeToShard streams would run for minutes and hold both doors' grace
            # periods: end them now (clients resubscribe elsewhere from their continuation).
            self.service.subscriptions.end_all()
        if self.driver is not None:
            self.driver.release_waiting_readers()  # long polls answer now, not in 1-2 s
        if self._http is not None:
            self.phase = "stopping the AWS API server"
            # First: no new AWS calls once stopping, and in-flight ones finish while the
            # service below them is still whole.
            await self._http.stop()
            self._http = None
        if self._server is not None:
            if self.driver is not None:
                self.phase = "answering producers waiting on replicas"
                # Producers waiting on replicas here (after a drain: on leaderships that just
                # moved) get their answers while peers' Appends still arrive; then the
                # replication streams can go.
                left = await self.driver.wait_producers_answered(timeout_s=_GRPC_STOP_GRACE_S)
                if left:
                    log.warning("stopping_with_producers_waiting", extra={"waiting": left})
            self.phase = "stopping the gRPC server"
            self._inbound.close()  # peers' replication streams never end by themselves
            if self._framed_listener is not None:
                await self._framed_listener.close()
                self._framed_listener = None
            await self._server.stop(_GRPC_STOP_GRACE_S)
            self._server = None
        if self._framed_listener is not None:  # a start that failed before the gRPC server
            await self._framed_listener.close()
            self._framed_listener = None
        if self._health_server is not None:
            await self._health_server.stop(None)
            self._health_server = None
        if self._background is not None:
            self.phase = "stopping the background tasks"
            self._background.cancel()
            try:
                await self._background
            except asyncio.CancelledError:
                pass
            except Exception:  # already logged by _on_background_done
                pass
            self._background = None
        if self._channels is not None:
            self.phase = "closing the channels to peers"
            await self._channels.close()
            self._channels = None
        if self._quorum is not None:
            self.phase = "leaving the metadata quorum"
            await self._quorum.stop()
            self._quorum = None
        if self._writer is not None:
            self.phase = "stopping the log writer"
            self._writer.stop()
            self._writer = None
        if self._store is not None:
            self.phase = "closing the store"
            self._store.close()
            self._store = None
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None
        if was_serving:  # a refused start says why in one line, nothing more
            log.info("node_stopped", extra={"node_id": self.config.node_id})
        self.phase = "stopped"

    async def wait_closed(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()


# Each port belongs to one process: with gRPC's default SO_REUSEPORT a second node started on
# a taken port would start silently and the kernel would split connections between the two.
_EXCLUSIVE_PORT = (("grpc.so_reuseport", 0),)


class _NodeFirehose:
    """The node's Firehose service for the SQL applications' outputs (it starts after them)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def call(
        self, operation: str, request: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]:
        firehose = self._node.firehose
        if firehose is None:
            raise ShoalError(ErrorCode.UNAVAILABLE, error_messages.FIREHOSE_NOT_STARTED)
        return await firehose.service.call(operation, request, caller)


def _bind_failed(name: str, host: str, port: int) -> startup.StartupError:
    """gRPC reports a failed bind without its errno: say what is by far the usual cause."""
    return startup.port_in_use(name, host, port, OSError(errno.EADDRINUSE, "in use"))


def _master_keys(config: Config, image: Callable[[], MetadataImage]) -> MasterKeys:
    """The cluster key by default; a configured key file or KMS in front of it otherwise (the
    cluster key then only opens the data keys made before)."""
    cluster = ClusterMasterKey(
        lambda: image().iterator_secret,
        password=config.raft_password,
        previous_passwords=(config.raft_password_previous,)
        if config.raft_password_previous
        else (),
        region=config.region,
        account_id=config.account_id,
    )
    if config.encryption_master_key == "cluster":
        return cluster
    if config.encryption_master_key == "kms":
        return WithClusterKey(KmsMasterKeys.from_environment(region=config.region), cluster)
    path = config.encryption_key_file
    assert path is not None  # Config.validate
    try:
        keys = LocalKeyFile(path, region=config.region, account_id=config.account_id)
    except (MasterKeyError, OSError) as error:
        raise startup.StartupError(
            f"the master key file {str(path)!r} cannot be used ({error}); see "
            "docs/operations.md, Encryption at rest"
        ) from error
    return WithClusterKey(keys, cluster)


def _check_master_key(config: Config, keyring: Keyring, image: MetadataImage) -> None:
    """Refuses the start of a node whose master key cannot unwrap the cluster's data keys
    (another key file than the other nodes', another KMS key, a changed Raft password): it
    could neither store nor serve those streams' sealed batches as a replica."""
    missing = keyring.unopenable(image)
    if missing is None:
        return
    problem = _master_key_problem(config, missing)
    raise startup.StartupError(f"{problem}, then start this node again")


def _master_key_problem(config: Config, missing: UnopenableKey) -> str:
    """One line: which stream's data keys this node's master key cannot unwrap, and the fix."""
    what = (
        f"this node's master key cannot unwrap the data keys of encrypted stream "
        f"{missing.stream!r} (wrapped by {missing.wrapping}: {missing.error})"
    )
    if config.encryption_master_key == "file":
        fix = (
            f"encryption_key_file ({str(config.encryption_key_file)!r}) must be the same key "
            "file on every node: copy the cluster's file (as the other nodes have it) here"
        )
    elif config.encryption_master_key == "kms":
        fix = (
            "encryption_master_key kms must reach the cluster's KMS key: check "
            "AWS_ENDPOINT_URL_KMS and this node's AWS credentials"
        )
    else:
        fix = (
            "encryption_master_key cluster derives the key from raft_password: after a "
            "password change set raft_password_previous to the old one, or use the "
            "cluster's encryption_master_key and encryption_key_file"
        )
    return f"{what}; {fix}"


def _file_stamp(path: Path | None) -> tuple[int, int] | None:
    """When and how big the file was last written (None: no file, or not readable now)."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def _open_store(log_dir: Path, data_dir: Path, *, keys: Keyring) -> RocksLogStore:
    try:
        return RocksLogStore(log_dir, keys=keys)
    except LogStoreError as error:
        if "lock" in str(error).lower():
            raise startup.locked_by_another_process(data_dir) from error
        raise startup.StartupError(
            f"the shard log in {str(log_dir)!r} cannot be opened ({error}); see "
            "docs/operations.md for recovery from the other replicas"
        ) from error


def _no_quorum(config: Config, layout: QuorumLayout) -> startup.StartupError:
    seconds = config.knobs.join_timeout_ms // 1000
    if layout.read_only:
        what = f"the voters it follows ({', '.join(layout.peers)})"
    elif layout.peers:
        what = f"a majority of the voters ({', '.join((layout.self_address, *layout.peers))})"
    else:
        what = "this single node"
    return startup.StartupError(
        f"no metadata quorum leader registered this node within {seconds} s: start {what}, "
        "check that they reach each other on their raft ports with the same raft_password "
        f"(the wait is join_timeout_ms)"
    )


def _rejoin_floors(image: MetadataImage, node_id: NodeId) -> dict[ShardUid, int]:
    """A node that lost its disk: every shard it is a replica of, with the shard's epoch in
    `image`, read after this node's RegisterNode committed, so no later than any Prepare this
    node may have promised before the loss (replica.py, "lost its disk")."""
    return {
        shard.uid: shard.epoch
        for stream in image.streams.values()
        for shard in stream.shards
        if node_id in shard.replicas
    }


def _leader_count(image: MetadataImage, node_id: NodeId) -> int:
    return sum(
        1
        for stream in image.streams.values()
        for shard in stream.shards
        if shard.leader == node_id and shard.state is not ShardState.CLOSED
    )


def _replica_count(image: MetadataImage, node_id: NodeId) -> int:
    return sum(
        1
        for stream in image.streams.values()
        for shard in stream.shards
        if node_id in shard.replicas
    )


def _metrics_cluster_view(image: MetadataImage) -> MetricsClusterView:
    """The metadata image summarised for `/metrics` (`kinesis_cluster_*`, leaderless shards)."""
    nodes: dict[str, int] = {}
    for node in image.nodes.values():
        nodes[node.state.name] = nodes.get(node.state.name, 0) + 1
    open_shards = [s for stream in image.streams.values() for s in stream.open_shards()]
    return MetricsClusterView(
        nodes_by_state=nodes,
        streams=len(image.streams),
        open_shards=len(open_shards),
        leaderless_shards=sum(1 for s in open_shards if s.leader is None),
    )


def _autoscaler_settings(config: Config) -> AutoscalerSettings:
    """The node's autoscaler settings, from its configuration's knobs."""
    knobs = config.knobs
    return AutoscalerSettings(
        policy=policy_from_knobs(
            split_bytes_per_second=knobs.on_demand_split_bytes_per_second,
            split_records_per_second=knobs.on_demand_split_records_per_second,
            merge_percent=knobs.on_demand_merge_percent,
            hot_for_ms=knobs.on_demand_hot_for_ms,
            cold_for_ms=knobs.on_demand_cold_for_ms,
            cooldown_ms=knobs.on_demand_cooldown_ms,
            min_open_shards=knobs.on_demand_min_shards,
            max_open_shards=knobs.on_demand_max_shards,
        ),
        pass_interval_ms=knobs.autoscaler_pass_interval_ms,
        load_stale_ms=knobs.load_report_stale_ms,
        stream_updating_ms=knobs.stream_updating_ms,
        shard_count_per_account_max=config.shard_count_per_account_max,
    )
