"""One typed configuration for a node: defaults < config file (TOML) < environment < flags.

`Config` is frozen and built once (`load_config`) by `shoal serve` (`cli/serve.py`); it is
passed down explicitly, and no other module reads `os.environ`. `Knobs` holds timing values with
production defaults; every default is commented with its reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker import arns, limits
from broker.consumers.registry import CONSUMERS_PER_STREAM_DEFAULT
from broker.meta.metadata_format import METADATA_FORMAT_MAX

# The development value of `raft_password`; a node with peers warns when it still uses it.
DEFAULT_RAFT_PASSWORD = "shoal-development-only"
# The framed replication port's default (`Config.replication_port`): clear of the gRPC API
# (50051), Raft (50052) and the health ports the deployment files use (50053, 50054).
DEFAULT_REPLICATION_PORT = 50055
# What turns the framed replication port off (SHOAL_REPLICATION_PORT=off, or "off" in the file).
REPLICATION_PORT_OFF = "off"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True, kw_only=True)
class Knobs:
    """Timing and sizing values. Tests shorten them; production keeps the defaults."""

    # How long a stream shows CREATING / UPDATING / DELETING. AWS takes minutes; we take well
    # under a second by default, so clients that watch states (boto3 waiters, Terraform) see
    # them, yet tests and scripts are not slowed. 0 is allowed.
    stream_creating_ms: int = 200
    stream_updating_ms: int = 200
    stream_deleting_ms: int = 200
    # Likewise for an enhanced fan-out consumer (RegisterStreamConsumer / Deregister...).
    consumer_creating_ms: int = 200
    consumer_deleting_ms: int = 200
    # Retention trimming and removal of deleted streams' data run this often; retention is
    # enforced on reads at once, so this only bounds how long disk space stays used.
    housekeeping_interval_ms: int = 30_000
    # The controller's node looks this often for data keys an older master key wraps (after a
    # key-file rotation or a Raft password change) and re-wraps them.
    key_rewrap_interval_ms: int = 5_000
    # Every node checks this often (and within a second of its master key file changing) that
    # its master key still unwraps the cluster's data keys; a node whose key no longer does
    # reports it in readiness and `kinesis_encryption_master_key_usable`.
    master_key_check_interval_ms: int = 60_000
    # Cluster liveness. A node heartbeats the controller this often; the controller fences a
    # node silent for `session_timeout_ms` and moves its shard leaderships (0002). Several
    # heartbeats fit in a session, so one lost or late heartbeat never fences a live node;
    # the session bounds how long a dead leader's shards refuse writes (plus Prepare and one
    # metadata command, well under a second on a LAN).
    heartbeat_interval_ms: int = 250
    session_timeout_ms: int = 2_000
    # The metadata quorum's Raft heartbeat (pysyncobj's appendEntriesPeriod); the election
    # timeout is drawn from 4 to 14 heartbeats (pysyncobj's defaults: 0.1 s, 0.4-1.4 s). A
    # single-voter test node shortens it: it elects itself after one election timeout.
    raft_heartbeat_ms: int = 100
    # The replication driver's timer: replicas resend unacknowledged appends and leaders
    # heartbeat their high watermark on ticks (etcd-raft's tick).
    replication_tick_ms: int = 50
    # The controller (on the metadata leader) looks at the cluster this often: leader changes,
    # reshard completion, rebalancing. A reshard waits up to one pass to complete.
    controller_pass_interval_ms: int = 100
    # Enhanced fan-out (SubscribeToShard): a subscription ends normally after its lifetime
    # (AWS: 5 minutes; the client subscribes again from its ContinuationSequenceNumber); an
    # idle one still gets an empty event this often; a second subscribe for the same consumer
    # and shard is refused within the takeover time of the first and takes over after it.
    subscription_lifetime_ms: int = limits.subscription_lifetime_ms_default
    subscription_heartbeat_ms: int = limits.subscription_heartbeat_ms_default
    subscription_takeover_ms: int = limits.subscription_takeover_ms_default
    # Shard load (issue 6). Each shard leader measures its shards' writes over a sliding
    # window of `load_window_count` windows of `load_window_ms` (the last 50-60 s) and reports
    # the shards that carry load every `load_report_interval_ms` (one metadata command per node
    # per period; idle shards are reported once, when they turn idle, then never). A report
    # older than `load_report_stale_ms` is not trusted (its node stopped reporting).
    load_window_ms: int = 10_000
    load_window_count: int = 6
    load_report_interval_ms: int = 5_000
    load_report_stale_ms: int = 30_000
    # On-demand auto-scaling (meta/autoscaler.py, streams/autoscaling.py). A shard writing more
    # than the split rates for `on_demand_hot_for_ms` is split where its traffic halves; two
    # neighbours writing together less than `on_demand_merge_percent` of one shard's capacity
    # for `on_demand_cold_for_ms` are merged; at most one of either per stream per
    # `on_demand_cooldown_ms`, between `on_demand_min_shards` and `on_demand_max_shards` open
    # shards. The defaults are AWS's behaviour (split near half a shard's 1 MiB/s and 1,000
    # records/s, never below the 4 shards a new on-demand stream gets, at most 200 shards).
    on_demand_split_bytes_per_second: int = 512 * 1024
    on_demand_split_records_per_second: int = 500
    on_demand_merge_percent: int = 25
    on_demand_hot_for_ms: int = 120_000
    on_demand_cold_for_ms: int = 900_000
    on_demand_cooldown_ms: int = 30_000
    on_demand_min_shards: int = limits.on_demand_initial_shard_count
    on_demand_max_shards: int = 200
    autoscaler_pass_interval_ms: int = 1_000
    # A starting node waits this long for a metadata quorum leader to register it, then gives
    # up with an error (and is restarted by its supervisor). Long enough for the voters of a
    # new cluster to start minutes apart (pods waiting for volumes); below the 15 minutes the
    # Kubernetes startup probe allows.
    join_timeout_ms: int = 300_000
    # Membership (meta/controller_core.py). A node fenced and silent this long is taken for
    # gone (a StatefulSet scaled down, a host lost): its shards get replicas on other nodes to
    # keep their replication factor, and a non-voting node is then removed from the metadata.
    # Ten minutes ride out a rolling restart or a rescheduled pod many times over; 0: never
    # (only `shoal cluster decommission` moves replicas).
    absent_node_replace_after_ms: int = 600_000
    # Shards moving a replica at once to even out replica counts (a node that joined takes
    # its share): each move copies a shard's log. 0: no replica balancing.
    replica_moves_max: int = 2
    # The highest metadata format the controller raises the cluster to once every node reads
    # it (broker/meta/metadata_format.py); 0: the highest they all read, as soon as they do.
    # Set it to the current format before a rolling upgrade to keep a rollback possible, and
    # back to 0 (or the new format) once the new version is kept.
    metadata_format_limit: int = 0
    # Data Firehose (issue 11). A delivery stream's deliverer holds its shards' leases for
    # `firehose_failover_ms` without renewing before another node takes them over (the KCL's
    # failover time); it polls its source every `firehose_poll_interval_ms` when idle. The
    # internal stream of a DirectPut delivery stream has `firehose_internal_shards` shards
    # (deliveries run in parallel per shard). The lifecycle reconciler (CREATING -> ACTIVE,
    # DELETING -> gone) runs on the controller's node every `firehose_reconcile_interval_ms`.
    firehose_failover_ms: int = 10_000
    firehose_poll_interval_ms: int = 200
    firehose_internal_shards: int = 2
    firehose_reconcile_interval_ms: int = 250
    # SQL applications (issue 12): a running application's node holds its placement lease,
    # and its reader its input shards' leases, for `analytics_failover_ms` without renewing
    # before another node takes the application over (the KCL's failover time).
    analytics_failover_ms: int = 10_000
    # A DirectPut delivery stream's write limits (AWS's defaults in us-east-1: 5 MiB/s and
    # 5,000 records/s; 0 = off). Enforced by its internal stream's shard leaders (each shard
    # gets an even share), answered with ServiceUnavailableException as AWS does.
    firehose_write_bytes_per_second: int = 5 * 1024 * 1024
    firehose_write_records_per_second: int = 5_000
    # Disk (issue 20). The free space of the data directory's file system is checked this
    # often (a statvfs, microseconds): appends are refused within this long of crossing
    # `disk_free_bytes_min`, and resume within this long of space coming back.
    disk_check_interval_ms: int = 1_000
    # The scrubber starts a pass over every replica at most this often (a pass at the default
    # 4 MiB/s reads 14 GiB an hour); a pass that takes longer starts the next at once.
    scrub_pass_interval_ms: int = 3_600_000

    def validate(self) -> None:
        for name in (
            "stream_creating_ms",
            "stream_updating_ms",
            "stream_deleting_ms",
            "consumer_creating_ms",
            "consumer_deleting_ms",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 600_000:
                raise ValueError(f"{name} must be within 0..600000, got {value}")
        if self.absent_node_replace_after_ms and (
            self.absent_node_replace_after_ms <= self.session_timeout_ms
        ):
            raise ValueError("absent_node_replace_after_ms must be 0 or above session_timeout_ms")
        if not 0 <= self.replica_moves_max <= 64:
            raise ValueError("replica_moves_max must be within 0..64")
        if not 0 <= self.metadata_format_limit <= METADATA_FORMAT_MAX:
            raise ValueError(
                f"metadata_format_limit must be 0 (none) or a format up to {METADATA_FORMAT_MAX}"
            )
        if not 1_000 <= self.join_timeout_ms <= 86_400_000:
            raise ValueError("join_timeout_ms must be within 1000..86400000")
        if not 100 <= self.housekeeping_interval_ms <= 3_600_000:
            raise ValueError("housekeeping_interval_ms must be within 100..3600000")
        if not 10 <= self.heartbeat_interval_ms <= 60_000:
            raise ValueError("heartbeat_interval_ms must be within 10..60000")
        if self.session_timeout_ms < 3 * self.heartbeat_interval_ms:
            raise ValueError("session_timeout_ms must be at least 3 heartbeat intervals")
        if not 10 <= self.raft_heartbeat_ms <= 1_000:
            raise ValueError("raft_heartbeat_ms must be within 10..1000")
        if not 1 <= self.replication_tick_ms <= 10_000:
            raise ValueError("replication_tick_ms must be within 1..10000")
        if not 10 <= self.controller_pass_interval_ms < self.session_timeout_ms:
            raise ValueError("controller_pass_interval_ms must be within 10..session_timeout_ms")
        if not 100 <= self.subscription_lifetime_ms <= 3_600_000:
            raise ValueError("subscription_lifetime_ms must be within 100..3600000")
        if not 10 <= self.subscription_heartbeat_ms <= self.subscription_lifetime_ms:
            raise ValueError("subscription_heartbeat_ms must be within 10..lifetime")
        if not 0 <= self.subscription_takeover_ms <= self.subscription_lifetime_ms:
            raise ValueError("subscription_takeover_ms must be within 0..lifetime")
        self._validate_capacity()

    def _validate_capacity(self) -> None:
        """The load and on-demand knobs (issue 6)."""
        if not 100 <= self.load_window_ms <= 600_000 or not 2 <= self.load_window_count <= 60:
            raise ValueError("load_window_ms must be within 100..600000, load_window_count 2..60")
        if not 50 <= self.load_report_interval_ms <= 600_000:
            raise ValueError("load_report_interval_ms must be within 50..600000")
        if self.load_report_stale_ms < 2 * self.load_report_interval_ms:
            raise ValueError("load_report_stale_ms must be at least 2 load report intervals")
        if self.on_demand_split_bytes_per_second < 1 or self.on_demand_split_records_per_second < 1:
            raise ValueError("on-demand split rates must be positive")
        # A merged pair must not be hot at once, or the autoscaler would flap.
        merge = self.on_demand_merge_percent
        if not 0 <= merge < 100 or (
            merge * limits.shard_write_bytes_per_second_default
            >= 100 * self.on_demand_split_bytes_per_second
            or merge * limits.shard_write_records_per_second_default
            >= 100 * self.on_demand_split_records_per_second
        ):
            raise ValueError(
                "on_demand_merge_percent of one shard's capacity (1 MiB/s, 1000 records/s) "
                "must stay below the on-demand split rates"
            )
        for name in ("on_demand_hot_for_ms", "on_demand_cold_for_ms", "on_demand_cooldown_ms"):
            if not 0 <= getattr(self, name) <= 86_400_000:
                raise ValueError(f"{name} must be within 0..86400000")
        if not 1 <= self.on_demand_min_shards <= self.on_demand_max_shards:
            raise ValueError("on_demand_min_shards must be within 1..on_demand_max_shards")
        if self.on_demand_max_shards > limits.shard_count_per_stream_max:
            raise ValueError(
                f"on_demand_max_shards must be at most {limits.shard_count_per_stream_max}"
            )
        if not 10 <= self.autoscaler_pass_interval_ms <= 600_000:
            raise ValueError("autoscaler_pass_interval_ms must be within 10..600000")
        if not 10 <= self.disk_check_interval_ms <= 60_000:
            raise ValueError("disk_check_interval_ms must be within 10..60000")
        if not 0 <= self.scrub_pass_interval_ms <= 7 * 86_400_000:
            raise ValueError("scrub_pass_interval_ms must be within 0..604800000 (a week)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a node needs to start. See `shoal serve --help` for each setting."""

    node_id: str = "shoal-0"
    data_dir: Path = Path("data")
    # The address this node advertises: what clients and the other nodes dial to reach its
    # gRPC API, AWS door and Raft port (on Kubernetes the pod's stable DNS name). It must
    # resolve to this node from every peer. Also where it listens, unless `listen_host` is set.
    host: str = "127.0.0.1"
    # Where every port listens (gRPC, AWS door, Raft, metrics, health). Empty: `host`.
    # `0.0.0.0` listens on every interface, so a pod advertising its DNS name still answers
    # `kubectl port-forward` and `kubectl exec ... shoal ...` on 127.0.0.1.
    listen_host: str = ""
    grpc_port: int = 50051
    raft_port: int = 50052
    # The AWS wire protocol (JSON 1.1 and CBOR over HTTP/1.1 and HTTP/2). 4567 is where local
    # Kinesis setups (kinesalite, LocalStack) already point. With a certificate it serves TLS
    # (ALPN h2 and http/1.1); without one, cleartext HTTP/1.1 and h2c with prior knowledge.
    http_port: int = 4567
    # Prometheus `/metrics` (plain HTTP, on `host`); 0 picks a free port (tests), which the
    # node reports as `Node.metrics_port`.
    metrics_port: int = 9464
    # This node's certificate and key (PEM). Set: the AWS door serves HTTPS and the gRPC port
    # serves TLS (broker/tls.py). `tls_ca_file`: the CA bundle that signs the cluster's
    # certificates; nodes verify each other against it and, with `tls_client_auth = "require"`
    # (the default), every gRPC caller must present a certificate it signed (mutual TLS; the
    # internal services share the port). "none": server-side TLS only.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_client_auth: str = "require"
    # A plaintext gRPC port serving only the health checking protocol (liveness, readiness),
    # for probes that cannot speak (mutual) TLS such as the kubelet's gRPC probe. None: off.
    health_port: int | None = None
    # The framed replication port (broker/rpc/framed.py): the other nodes send this node their
    # Append/AppendAck messages over one persistent TCP connection each (TLS with the files
    # above, and the node signature of `raft_password`) instead of the gRPC Replicate stream.
    # Advertised in the node's registration; a peer reaches a node that advertises none (or
    # a cluster below the metadata format that carries it) over gRPC. On by default
    # (DEFAULT_REPLICATION_PORT); None (the setting's value "off"): off, gRPC to every peer.
    replication_port: int | None = DEFAULT_REPLICATION_PORT
    # SigV4 access keys as "ACCESS_KEY_ID:SECRET" pairs. Empty: requests are not
    # authenticated (the development default of `scripts/serve`); any key: every request must
    # be signed by one of them.
    aws_credentials: tuple[str, ...] = ()
    # The metadata quorum (see `quorum_layout`); set at most one of the three.
    # `peers`: the other voters as host:raft_port (this node votes); empty for a single node.
    # `join`: the voters to follow as a non-voting (read-only) member: it receives the
    # metadata and serves like any node, but neither votes nor listens on a Raft port.
    # `peers_from_dns`: a StatefulSet pattern whose `{first..last}` range names the voters,
    # e.g. `shoal-{0..2}.shoal-headless.ns.svc.cluster.local:50052`. This node's own address is
    # the pattern at its ordinal (the number ending its node_id, `shoal-4` is 4, counted from
    # `first`); inside the range it votes, beyond it it joins as a non-voting member, so
    # scaling the StatefulSet up needs no other step (docs/operations.md "Scaling").
    peers: tuple[str, ...] = ()
    join: tuple[str, ...] = ()
    peers_from_dns: str = ""
    # Replicas per shard for new streams (DESIGN §4): 3 survives one failed node with a
    # majority left. A stream created while fewer nodes are ACTIVE starts on those and the
    # controller adds the rest as nodes join; a node started alone (no peers, nothing to
    # join) keeps factor 1.
    replication_factor: int = 3
    # Encrypts and authenticates Raft traffic (pysyncobj pickles its messages: without a
    # password anyone reaching the Raft port could run code). Set a real secret in production.
    raft_password: str = DEFAULT_RAFT_PASSWORD
    # The Raft password before the last change, while data keys are still wrapped by the
    # cluster master key derived from it (encryption at rest, `encryption_master_key`
    # "cluster"); the controller's node re-wraps them within seconds, after which it may go.
    raft_password_previous: str = ""
    region: str = "us-east-1"
    account_id: str = "000000000000"
    # Access control (issue 15): when on, every request on both doors must be signed by a
    # known key (or come with a client certificate mapped to a principal) and is allowed only
    # by policies (default deny; the `aws_credentials` keys are the account's root user). Off
    # by default, as `scripts/serve` runs it: callers are still identified and audited (the
    # audit trail is kept either way).
    access_control: bool = False
    # The cluster's IAM key sealing access-key secrets in the metadata (32 bytes, raw or 64
    # hex digits, the same file on every node); unset: derived from `raft_password`.
    iam_key_file: Path | None = None
    # Audit data-plane calls (PutRecord(s), GetRecords, GetShardIterator, SubscribeToShard...)
    # too; control-plane calls and every refused call are always audited.
    audit_data_plane: bool = False
    # How long the audit trail keeps its events (the retention of its internal stream, which
    # bounds its size; AWS's retention range). Export with `shoal audit` to keep them longer.
    audit_retention_hours: int = 168
    shard_count_per_account_max: int = limits.shard_count_per_account_default
    on_demand_streams_max: int = limits.on_demand_streams_per_account_default
    # Enhanced fan-out consumers per stream (RegisterStreamConsumer); AWS's default quota.
    consumers_per_stream_max: int = CONSUMERS_PER_STREAM_DEFAULT
    # Per-shard throughput, enforced where the shard is written and read. AWS's numbers by
    # default, so code tested against Shoal sees the throttling it will see on AWS; 0 lifts
    # a limit (self-hosters who want a shard to take what the disk can).
    shard_write_bytes_per_second: int = limits.shard_write_bytes_per_second_default
    shard_write_records_per_second: int = limits.shard_write_records_per_second_default
    shard_read_calls_per_second: int = limits.shard_read_calls_per_second_default
    shard_read_bytes_per_second: int = limits.shard_read_bytes_per_second_default
    # Enhanced fan-out has its own budget, per subscription (consumer and shard): AWS's
    # 2 MB/s by default, independent of the shard's read limits; 0 lifts it.
    subscription_bytes_per_second: int = limits.subscription_bytes_per_second_default
    # The web console at /console on the AWS HTTP port (broker/console); false turns it off.
    console_enabled: bool = True
    # The TURN servers GetIceServerConfig hands WebRTC peers of signaling channels, as
    # `turn:host:port?transport=udp` URIs, and the shared secret they check time-limited
    # credentials with (coturn's `use-auth-secret`/`static-auth-secret`, the "TURN REST API"):
    # each answer carries a username `<expiry>:<client>` and its HMAC-SHA1 password. Empty:
    # no TURN server; peers connect with host and STUN candidates only.
    video_turn_uris: tuple[str, ...] = ()
    video_turn_secret: str = ""
    # Logs on stderr: `text` (`time LEVEL logger event key=value ...`) or `json` (one object
    # per line with `time`, `level`, `logger`, `event`, `node_id` and the event's fields, for
    # Loki, Elasticsearch or any collector that reads JSON lines); at `log_level` and above.
    log_format: str = "text"
    log_level: str = "info"
    # Below this much free space on the data directory's file system the node refuses new
    # records (retryable; reads, metadata and leadership moves go on) and resumes by itself
    # above it plus a margin (issue 20; Redpanda's storage_min_free_bytes does the same).
    # What it keeps free is for RocksDB's own flushes and compactions, the metadata journal
    # and the small replication state writes, so the node never meets a full disk. 0: off.
    disk_free_bytes_min: int = 256 * limits.MiB
    # The scrubber reads every replica's committed log at most this fast, verifying RocksDB's
    # block checksums and every batch's CRC, and has damaged ranges repaired from a healthy
    # replica (decisions/0002, "Corruption"). 0: off.
    scrub_bytes_per_second: int = 4 * limits.MiB
    # Encryption at rest (StartStreamEncryption; docs/operations.md "Encryption at rest"):
    # what wraps the streams' data keys. "cluster" (the default): a master key derived from the
    # cluster's secret (in the metadata quorum) and `raft_password`, so every node of a cluster
    # has it with no setup. "file": the master keys in `encryption_key_file`, a 0600 JSON file
    # the operator gives every node (`shoal encryption rotate-master-key` makes one). "kms": a
    # KMS-compatible service through boto3 (endpoint AWS_ENDPOINT_URL_KMS, credentials from
    # the usual AWS variables), which makes each data key under the stream's KeyId.
    encryption_master_key: str = "cluster"
    encryption_key_file: Path | None = None
    knobs: Knobs = field(default_factory=Knobs)

    def validate(self) -> None:
        if not self.node_id:
            raise ValueError("node_id must not be empty")
        for name in ("grpc_port", "raft_port", "http_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65_535:
                raise ValueError(f"{name} must be a TCP port, got {port}")
        self._validate_distinct_ports()
        if not self.host:
            raise ValueError("host must not be empty (the address other nodes reach this one at)")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_ca_file needs tls_cert_file and tls_key_file")
        if self.tls_client_auth not in ("require", "none"):
            raise ValueError("tls_client_auth must be require or none")
        if self.health_port is not None and not 0 <= self.health_port <= 65_535:
            raise ValueError(f"health_port must be a TCP port, got {self.health_port}")
        if self.replication_port is not None and not 1 <= self.replication_port <= 65_535:
            # Advertised before it is bound: 0 (any free port) cannot be told to the others.
            raise ValueError(
                f"replication_port must be a TCP port from 1, got {self.replication_port}"
            )
        for pair in self.aws_credentials:
            key_id, _, secret = pair.partition(":")
            if not key_id or not secret:
                raise ValueError("aws_credentials entries must look like ACCESS_KEY_ID:SECRET")
        if not self.raft_password:
            raise ValueError("raft_password must not be empty")
        if self.encryption_master_key not in ("cluster", "file", "kms"):
            raise ValueError("encryption_master_key must be cluster, file or kms")
        if (self.encryption_master_key == "file") != (self.encryption_key_file is not None):
            raise ValueError(
                "encryption_key_file and encryption_master_key = file go together (a key file "
                f"is used only with file; this node has {self.encryption_master_key!r})"
            )
        if len(self.account_id) != 12 or not self.account_id.isdigit():
            raise ValueError("account_id must be 12 digits, as in an AWS ARN")
        if not self.region:
            raise ValueError("region must not be empty")
        if self.access_control and not self.aws_credentials:
            raise ValueError(
                "access_control needs aws_credentials (the bootstrap administrator's keys)"
            )
        if sum(map(bool, (self.peers, self.join, self.peers_from_dns))) > 1:
            raise ValueError("set at most one of peers, join and peers_from_dns")
        self.quorum_layout()  # raises ValueError for a pattern this node is not part of
        if not 1 <= self.replication_factor <= limits.replication_factor_max:
            raise ValueError(
                f"replication_factor must be within 1..{limits.replication_factor_max}"
            )
        if (
            not limits.retention_hours_min
            <= self.audit_retention_hours
            <= limits.retention_hours_max
        ):
            raise ValueError(
                f"audit_retention_hours must be within {limits.retention_hours_min}.."
                f"{limits.retention_hours_max}, got {self.audit_retention_hours}"
            )
        if self.shard_count_per_account_max < 1 or self.on_demand_streams_max < 0:
            raise ValueError("account limits must be positive")
        if self.consumers_per_stream_max < 1:
            raise ValueError("consumers_per_stream_max must be positive")
        for name in (
            "shard_write_bytes_per_second",
            "shard_write_records_per_second",
            "shard_read_calls_per_second",
            "shard_read_bytes_per_second",
            "subscription_bytes_per_second",
            "disk_free_bytes_min",
            "scrub_bytes_per_second",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (off or unlimited) or positive")
        self.knobs.validate()

    def _validate_distinct_ports(self) -> None:
        """Two of this node's own listeners on one port: refused here, not at bind time."""
        named = [
            (name, getattr(self, name))
            for name in (
                "grpc_port",
                "raft_port",
                "http_port",
                "metrics_port",
                "health_port",
                "replication_port",
            )
        ]
        seen: dict[int, str] = {}
        for name, port in named:
            if not port:
                continue  # unset, or 0: any free port
            if port in seen:
                raise ValueError(f"{seen[port]} and {name} must differ (both are {port})")
            seen[port] = name

    @property
    def bind_host(self) -> str:
        """Where this node's ports listen: `listen_host`, or `host` when that is unset."""
        return self.listen_host or self.host

    def listen_address(self, port: int) -> str:
        """host:port to listen on (IPv6 literals in brackets, as gRPC wants them)."""
        host = self.bind_host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def access_keys(self) -> dict[str, str]:
        """SigV4 secrets by access key id; empty when authentication is off."""
        return dict(pair.partition(":")[::2] for pair in self.aws_credentials)

    def quorum_layout(self) -> QuorumLayout:
        """This node's place in the metadata quorum, from `peers`, `join` or `peers_from_dns`."""
        if self.peers_from_dns:
            voters = expand_peer_pattern(self.peers_from_dns)
            self_address = pattern_member(self.peers_from_dns, node_ordinal(self.node_id))
            read_only = self_address not in voters
            peers = voters if read_only else tuple(a for a in voters if a != self_address)
            return QuorumLayout(self_address=self_address, peers=peers, read_only=read_only)
        if self.join:
            return QuorumLayout(self_address=self.raft_address, peers=self.join, read_only=True)
        peers = tuple(a for a in self.peers if a != self.raft_address)
        return QuorumLayout(self_address=self.raft_address, peers=peers, read_only=False)

    @property
    def raft_address(self) -> str:
        return f"{self.host}:{self.raft_port}"

    @property
    def api_address(self) -> str:
        """Where clients and other nodes reach this node's gRPC API."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def replication_address(self) -> str:
        """Where the other nodes reach this node's framed replication port ("" when off)."""
        if self.replication_port is None:
            return ""
        return f"{self.host}:{self.replication_port}"

    @property
    def http_address(self) -> str:
        return f"{self.host}:{self.http_port}"

    def stream_arn(self, stream_name: str) -> str:
        return arns.regional("kinesis", self.region, self.account_id, f"stream/{stream_name}")


@dataclass(frozen=True, slots=True, kw_only=True)
class QuorumLayout:
    """Where this node sits in the metadata quorum (feeds `meta.quorum.QuorumConfig`)."""

    self_address: str  # this node's Raft address as the others know it
    peers: tuple[str, ...]  # the other voters, or the voters followed when read-only
    read_only: bool


_PATTERN_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_peer_pattern(pattern: str) -> tuple[str, ...]:
    """`shoal-{0..2}.svc:50052` -> (`shoal-0.svc:50052`, `shoal-1.svc:50052`, ...), in ordinal
    order; exactly one `{first..last}` range, first <= last, at most 64 members."""
    ranges = _PATTERN_RANGE.findall(pattern)
    if len(ranges) != 1:
        raise ValueError(f"peers_from_dns needs exactly one {{first..last}} range: {pattern!r}")
    first, last = (int(bound) for bound in ranges[0])
    if not 0 <= first <= last or last - first >= 64:
        raise ValueError(f"bad ordinal range in peers_from_dns: {pattern!r}")
    members = tuple(_PATTERN_RANGE.sub(str(i), pattern) for i in range(first, last + 1))
    for member in members:
        host, _, port = member.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"peers_from_dns must expand to host:port, got {member!r}")
    return members


def pattern_member(pattern: str, ordinal: int) -> str:
    """The address of the pod with `ordinal` in a `peers_from_dns` pattern: the range replaced
    by `first + ordinal` (`shoal-{0..2}.svc:7`, 4 -> `shoal-4.svc:7`; `127.0.0.{2..4}:7`, 0 ->
    `127.0.0.2:7`), inside the range or beyond it."""
    (first, _last), *_ = _PATTERN_RANGE.findall(pattern)
    return _PATTERN_RANGE.sub(str(int(first) + ordinal), pattern)


def node_ordinal(node_id: str) -> int:
    """The StatefulSet ordinal a pod name ends with (`shoal-3` -> 3)."""
    digits = re.search(r"(\d+)$", node_id)
    if digits is None:
        raise ValueError(f"node_id {node_id!r} does not end with an ordinal")
    return int(digits.group(1))


# Settings that can come from a file, the environment (SHOAL_<NAME>) or a flag (--<name>).
_SETTINGS: dict[str, type] = {
    "node_id": str,
    "data_dir": Path,
    "host": str,
    "listen_host": str,
    "grpc_port": int,
    "raft_port": int,
    "http_port": int,
    "metrics_port": int,
    "tls_cert_file": Path,
    "tls_key_file": Path,
    "tls_ca_file": Path,
    "tls_client_auth": str,
    "health_port": int,
    "replication_port": int,
    "aws_credentials": tuple,
    "peers": tuple,
    "join": tuple,
    "peers_from_dns": str,
    "replication_factor": int,
    "raft_password": str,
    "raft_password_previous": str,
    "region": str,
    "account_id": str,
    "access_control": bool,
    "iam_key_file": Path,
    "audit_data_plane": bool,
    "audit_retention_hours": int,
    "shard_count_per_account_max": int,
    "on_demand_streams_max": int,
    "consumers_per_stream_max": int,
    "shard_write_bytes_per_second": int,
    "shard_write_records_per_second": int,
    "shard_read_calls_per_second": int,
    "shard_read_bytes_per_second": int,
    "subscription_bytes_per_second": int,
    "console_enabled": bool,
    "video_turn_uris": tuple,
    "video_turn_secret": str,
    "log_format": str,
    "log_level": str,
    "disk_free_bytes_min": int,
    "scrub_bytes_per_second": int,
    "encryption_master_key": str,
    "encryption_key_file": Path,
}
_KNOB_SETTINGS = {f.name: int for f in dataclasses.fields(Knobs)}


# Variables with the SHOAL_ prefix that are not node settings: the CLI's endpoint and key.
_OTHER_VARIABLES = frozenset({"SHOAL_ENDPOINT", "SHOAL_ACCESS_KEY_ID", "SHOAL_SECRET_ACCESS_KEY"})

_HELP = {
    "host": "the address this node advertises to clients and peers (and listens on, unless "
    "--listen-host is set)",
    "listen_host": "where every port listens, e.g. 0.0.0.0 for all interfaces (default: --host)",
    "peers": "comma-separated host:raft_port of the other voters",
    "join": "comma-separated host:raft_port of the voters to follow as a non-voting member",
    "peers_from_dns": "a StatefulSet pattern whose range names the voters, e.g. "
    "shoal-{0..2}.shoal-headless.ns.svc.cluster.local:50052; this node is the ordinal ending "
    "its node id and votes inside the range, follows beyond it",
    "log_format": "text (default) or json: one JSON object per line",
    "log_level": "debug, info (default), warning or error",
    "join_timeout_ms": "how long a starting node waits for a metadata quorum leader",
    "encryption_master_key": "what wraps the encrypted streams' data keys: cluster (default: "
    "derived from the cluster's secret and raft_password), file (--encryption-key-file) or kms "
    "(a KMS-compatible service at AWS_ENDPOINT_URL_KMS)",
    "encryption_key_file": "the master key file with encryption_master_key=file (mode 0600; "
    "the same file on every node; make one with `shoal encryption rotate-master-key`)",
    "raft_password_previous": "the raft_password before the last change, until the data keys "
    "wrapped by the master key derived from it are re-wrapped",
    "replication_port": "the framed replication port other nodes send this node's replicas "
    f"their appends on ({DEFAULT_REPLICATION_PORT}); off: gRPC only",
}


def setting_source(name: str) -> str:
    """How an operator sets `name`: its flag and its variable, for error messages."""
    return f"--{name.replace('_', '-')} or SHOAL_{name.upper()}"


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per `SHOAL_*` variable that names no setting (a typo is otherwise silently
    ignored and its default used), with the closest setting when one is near."""
    known = {f"SHOAL_{name.upper()}" for name in (*_SETTINGS, *_KNOB_SETTINGS)}
    lines = []
    for variable in sorted(environ):
        if not variable.startswith("SHOAL_") or variable in known | _OTHER_VARIABLES:
            continue
        close = difflib.get_close_matches(variable, sorted(known), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"{variable} is not a Shoal setting and is ignored{hint}")
    return lines


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The `shoal serve` flags; every flag defaults to None so that lower layers show through."""
    parser.add_argument("--config", type=Path, help="a TOML file with settings")
    for name in (*_SETTINGS, *_KNOB_SETTINGS):
        flag = "--" + name.replace("_", "-")
        if name in _HELP:
            parser.add_argument(flag, help=_HELP[name])
        elif name == "tls_client_auth":
            parser.add_argument(
                flag,
                choices=("require", "none"),
                help="with --tls-ca-file: require a client certificate from every gRPC caller "
                "(require, the default) or not (none: server-side TLS only)",
            )
        elif name == "aws_credentials":
            parser.add_argument(
                flag, help="comma-separated ACCESS_KEY_ID:SECRET pairs; turns SigV4 checks on"
            )
        else:
            parser.add_argument(flag, help=f"overrides SHOAL_{name.upper()}")


def _convert(name: str, kind: type, raw: Any) -> Any:
    if name == "replication_port" and str(raw).strip().lower() == REPLICATION_PORT_OFF:
        return None
    if kind is tuple:
        if isinstance(raw, str):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        return tuple(str(item) for item in raw)
    if kind is bool:
        return _boolean(name, raw)
    if kind is int:
        try:
            return int(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be an integer, got {raw!r}") from exc
    return kind(raw)


def _boolean(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def load_config(
    *,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None = None,
) -> Config:
    """Build and validate a Config; raises ValueError with a readable message."""
    layered: dict[str, Any] = {}
    if config_file is not None:
        with config_file.open("rb") as handle:
            file_values = tomllib.load(handle)
        unknown = set(file_values) - set(_SETTINGS) - set(_KNOB_SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings in {config_file}: {', '.join(sorted(unknown))}")
        layered.update(file_values)
    layered.update(
        {
            name: environ[f"SHOAL_{name.upper()}"]
            for name in (*_SETTINGS, *_KNOB_SETTINGS)
            if f"SHOAL_{name.upper()}" in environ
        }
    )
    layered.update(
        {
            name: value
            for name, value in flags.items()
            if value is not None and (name in _SETTINGS or name in _KNOB_SETTINGS)
        }
    )
    settings = {
        name: _convert(name, kind, layered[name])
        for name, kind in _SETTINGS.items()
        if name in layered
    }
    knob_values = {
        name: _convert(name, int, layered[name]) for name in _KNOB_SETTINGS if name in layered
    }
    config = Config(**settings, knobs=Knobs(**knob_values))
    config.validate()
    return config


def config_from_environment(argv_flags: Mapping[str, Any], config_path: Path | None) -> Config:
    """`load_config` with the process environment; used by the CLI only."""
    return load_config(flags=argv_flags, environ=os.environ, config_file=config_path)
