"""Every static limit, with units last. AWS's numbers come from botocore's Kinesis model and
the Kinesis quotas page (../shared/REFERENCE.md §1); internal bounds say why they are what they
are. Module-level asserts tie related limits together, so an edit that breaks a relationship
fails at import time.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB

# --- Records and batches (AWS) -------------------------------------------------------------
record_bytes_max_default = 1 * MiB  # partition key + data, unless UpdateMaxRecordSize raises it
record_size_kib_max = 10 * 1024  # MaxRecordSizeInKiB upper bound in the model
record_size_kib_min = 1024
partition_key_chars_max = 256
put_records_count_max = 500
put_records_bytes_max = 10 * MiB  # whole request, partition keys included
get_records_count_max = 10_000
get_records_bytes_max = 10 * MiB

# --- Hash keys and shards (AWS) -------------------------------------------------------------
hash_key_max = 2**128 - 1
shard_index_max = 2**32 - 1  # what the sequence-number layout can carry (see streams/)
shard_count_per_stream_max = 10_000  # UpdateShardCount's ceiling
shard_count_per_account_default = 20_000  # a self-hosted default; AWS starts accounts at 500
on_demand_streams_per_account_default = 50
on_demand_initial_shard_count = 4  # AWS: 4 MB/s write capacity for a new on-demand stream
update_shard_count_per_day_max = 10
update_stream_mode_per_day_max = 2

# --- Per-shard throughput (AWS defaults; configurable, 0 = unlimited) ------------------------
shard_write_bytes_per_second_default = 1 * MiB
shard_write_records_per_second_default = 1_000
shard_read_calls_per_second_default = 5
shard_read_bytes_per_second_default = 2 * MiB
# The largest rate a stream or the cluster may set (UpdateStreamLimits); far above any disk,
# it only keeps token arithmetic in exact float range.
shard_rate_per_second_max = 2**40
# DescribeLimits' counts and limits are ShardCountObject / OnDemandStreamCountLimitObject in the
# model (at most 1,000,000), so an account limit set at runtime stays within them.
account_limit_max = 1_000_000
# Minimum throughput billing commitment (UpdateAccountSettings): once enabled it cannot end
# before 24 hours have passed (a disable before then is scheduled for that moment).
billing_commitment_ms_min = 24 * 3_600_000
# After a GetRecords call returns this much, AWS throttles the shard's reads for 5 s.
read_penalty_bytes = 10 * MiB
read_penalty_ms = 5_000

# --- Retention (AWS) -----------------------------------------------------------------------
retention_hours_min = 24
retention_hours_max = 8760
retention_hours_default = 24

# --- Time-based (AWS) ----------------------------------------------------------------------
iterator_age_ms_max = 300_000  # a shard iterator is valid for 5 minutes
next_token_age_ms_max = 300_000  # ListShards / ListStreamConsumers tokens
shard_iterator_chars_max = 512
stream_name_chars_max = 128  # the model's StreamName length

# --- Pagination (AWS) ----------------------------------------------------------------------
list_streams_limit_default = 100
list_streams_limit_max = 10_000
list_shards_limit_default = 1_000
list_shards_limit_max = 10_000
describe_stream_limit_default = 100
describe_stream_limit_max = 100  # DescribeStream returns at most 100 shards per page

# --- Tags (AWS) ----------------------------------------------------------------------------
tags_per_stream_max = 50
tags_per_call_max = 50
tag_key_chars_max = 128
tag_value_chars_max = 256

# --- Resource policies, encryption, warm throughput (AWS) ----------------------------------
resource_policy_bytes_max = 20 * KiB  # AWS's quota on one Kinesis resource policy
warm_throughput_mibps_max = 10 * 1024  # on-demand warm throughput up to 10 GiB/s

# --- Internal bounds -----------------------------------------------------------------------
group_commit_bytes_max = 32 * MiB  # one WriteBatch; must hold the largest PutRecords
group_commit_records_max = 20_000
append_queue_batches_max = 4_096  # appends waiting for the writer thread before backpressure
log_writer_idle_check_s = 1.0  # an idle log writer looks this often whether the process exits
# The shard logs' RocksDB WAL (log/rocks_store.py `db_options`). A spent WAL file is kept and
# overwritten instead of deleted (RocksDB's recycle_log_file_num): a sync then flushes data
# blocks only, without the file-size change that makes every fdatasync of a growing file wait for
# a filesystem journal commit. The WAL's total size is capped, so that the small column families
# (shard meta, time index) are flushed and spent WAL files exist to recycle; without a cap they
# pin every WAL until RocksDB's default (4 x every memtable, ~1.5 GiB) and none is ever reused.
rocksdb_wal_files_recycled = 2
rocksdb_wal_bytes_max = 128 * MiB
route_retry_attempts_max = 20  # a put refused by a sealing shard re-resolves at most this often
route_retry_wait_ms_max = 5_000  # total wait for a reshard to publish the children
# A shard append or read refused by its leader (moved, fenced, sealed, unreachable) is routed
# again until this deadline: it must outlast a leader change (session timeout + Prepare +
# SetShardLeader, a few seconds), and stay below the AWS SDKs' 60 s socket timeouts.
route_deadline_ms = 20_000
route_backoff_ms_min = 20  # first wait for a newer metadata image before routing again
route_backoff_ms_max = 1_000
forward_timeout_ms = 5_000  # one ShardAppend/ShardRead to another node (a paused node hangs)
read_retention_skips_max = 4  # reads that land on expired-but-untrimmed records retry this often
# Read-ahead (service/read_ahead.py): a read that stops short of the readable end reads the next
# page at once; at most this many pages are held (each up to get_records_bytes_max, twice that
# with a gRPC reader's records written ahead), each for at most this long unless taken.
read_ahead_pages_max = 4
read_ahead_ms = 1_000
reshard_wait_ms = 10_000  # SplitShard & co. wait this long for the controller to complete them
metadata_propose_timeout_ms = 10_000  # a metadata command not applied by then fails
grpc_message_bytes_max = 64 * MiB  # above the largest request or response we build
read_batch_records_max = get_records_count_max
# The AWS HTTP door. A body is refused with 413 past this, before it is read: it must hold the
# largest PutRecords base64-encoded in JSON (4/3 of 10 MiB) with its keys and punctuation.
http_body_bytes_max = 16 * MiB
# HTTP/2 only: how much of an oversized body is received and dropped so that its 413 can be
# delivered (see gateway/http_service.py); past this the connection is dropped instead.
http2_body_discard_bytes_max = 4 * http_body_bytes_max
http_headers_bytes_max = 64 * KiB  # request line + headers (h11) / header list (h2); SigV4 fits
http_streams_per_connection_max = 100  # concurrent HTTP/2 streams per connection
# Idle keep-alive; above the 60 s idle pools of the AWS SDKs. Also the bound on a connection
# that opens and sends nothing (hypercorn counts it as idle).
http_keep_alive_s = 75
# From the first byte of an HTTP/1.1 request to the end of its headers (slowloris): clients
# send their headers at once, so 20 s is generous (Apache's mod_reqtimeout starts at 20 s).
http_header_read_s = 20.0
assert http_header_read_s < http_keep_alive_s
http_shutdown_grace_s = 5.0  # in-flight requests get this long when the node stops

# --- Consumer leases (the KCL's timings; client/worker_config.py, consumers/balancing.py) ----
# A lease not renewed for this long is expired: another worker may take it (failoverTimeMillis).
lease_failover_ms_default = 10_000
# Renewals come a little before every third of the failover time, so two renewals may fail
# before the lease expires: failover / 3 - this (the KCL's epsilon, CommonCalculations).
lease_renew_epsilon_ms = 25
# Workers look for expired leases this many times per failover time (the default take
# interval): a dead worker's shards are taken within 1.2 failover times. Not the KCL's
# 2 * (failover + epsilon): a scan here is a ListLeases of the node's image, not a table scan.
lease_take_scans_per_failover = 10
# Leases a worker steals from a busier one per scan (the KCL's maxLeasesToStealAtOneTime).
lease_steals_per_scan_default = 1
assert lease_failover_ms_default > 3 * lease_renew_epsilon_ms  # a renewal interval above zero

# --- Enhanced fan-out (SubscribeToShard; service/subscriptions.py) ---------------------------
subscription_bytes_per_second_default = 2 * MiB  # AWS: 2 MB/s per consumer and shard
subscription_lifetime_ms_default = 300_000  # AWS: a subscription lasts 5 minutes
subscription_heartbeat_ms_default = 5_000  # an idle subscription still gets an event this often
# A second SubscribeToShard for the same consumer and shard within this time of a successful
# one is ResourceInUseException; after it, the new call takes over (AWS: 5 s).
subscription_takeover_ms_default = 5_000
# One event holds at most this much (records are sent as they commit, so events are small
# unless a subscriber starts far behind); below the event stream's 24 MiB payload limit.
subscription_event_bytes_max = 1 * MiB
subscription_event_records_max = 10_000
# Events read ahead of the subscriber per subscription; past it the reader waits (bounded
# memory for a slow subscriber: about this many events of `subscription_event_bytes_max`).
subscription_queue_events_max = 2
# A read that finds nothing waits (on the shard's leader) at most this long for new records
# before the subscription checks its timers and its consumer again.
read_wait_ms_max = 1_000
# A new shard leader answers a read only once its epoch's marker has committed (before, its
# HW is the one it had as a follower, possibly short of acknowledged records): it waits this
# long for that, then refuses and the reader's node routes again (`route_deadline_ms`).
new_leader_read_wait_ms = 1_000
subscriptions_per_node_max = 10_000

# --- Shard replication (decisions/0002) --------------------------------------------------------

replication_factor_max = 7  # replicas per shard (config.replication_factor, CreateStream)

# Records in one Append message; must hold the largest PutRecords as one batch.
replication_append_bytes_max = 16 * MiB
replication_inflight_appends_max = 8  # Appends sent to one follower and not yet acknowledged
# Turns of a node's replication driver being persisted at once (driver.py): the next turn's
# appends go to the group commit while the last turn's are fsynced (etcd-raft's asynchronous
# storage writes). 1: one turn at a time.
replication_turns_in_flight_max = 4
# A shard leader refuses proposals (OVERLOADED) while this much it proposed is not committed.
replication_uncommitted_bytes_max = 64 * MiB
# A leader keeps the batches some follower still needs in memory up to this; older ones are
# read back from the log (Ready.reads).
replication_tail_cache_bytes_max = 64 * MiB
replication_heartbeat_ms = 100  # a leader sends a lagging follower an empty Append this often
# ... and a follower that holds everything (log, HW, log start) only this often: an idle shard
# then costs each follower 2 messages per 5 s instead of 20 a second (issue 6: at 1,000 shards
# the 100 ms heartbeats alone took half a core per node). It bounds nothing a client waits
# for: a follower behind, or missing the latest HW, is sent to every `replication_heartbeat_ms`,
# and leader failure is detected by node heartbeats. It bounds how long a follower that lost
# its disk while its shard was idle waits to be found out and caught up.
replication_idle_heartbeat_ms = 5_000
replication_resend_ms = 1_000  # unacknowledged Appends older than this are sent again
replication_read_bytes_max = replication_append_bytes_max  # one catch-up read of the log
# A repair's copy of a damaged range comes in pieces of at most this many bytes, each asked of
# a peer with this deadline; a failed repair is retried after a backoff growing to the max.
replication_repair_fetch_bytes_max = 4 * MiB
replication_fetch_timeout_ms = 10_000
replication_repair_backoff_ms_min = 1_000
replication_repair_backoff_ms_max = 60_000
# One repair pass copies at most this many pieces (4 GiB) before the loop looks at its other
# work; the next pass continues where it stopped.
replication_repair_pieces_max = 1024
# A persist that failed (full disk, broken store) is followed by a pause growing to the max
# while failures repeat, so a node that cannot write does not spin.
replication_persist_backoff_ms_min = 100
replication_persist_backoff_ms_max = 5_000
# A store that failed a write is reopened only with this much free space: closing RocksDB
# flushes its memtables, and blocks while the disk cannot take them.
store_reopen_free_bytes_min = 64 * MiB
# The driver and transport around the replicas (replication/driver.py, transport.py). Inbound
# messages beyond the inbox bound and outbound ones beyond a peer's queue are dropped: the
# replicas resend, so a slow or paused peer costs retransmissions, never unbounded memory.
replication_inbox_messages_max = 10_000
replication_send_queue_max = 1_000  # per peer
replication_reconnect_ms_min = 50  # a broken peer stream is reopened after this, doubling
replication_reconnect_ms_max = 1_000
# The framed replication port (rpc/framed.py): one frame carries one envelope, as large as a
# gRPC message may be; the listener's frames to a dialler (challenge, accept, pongs) are tiny.
# A connection must be admitted (TLS handshake, challenge, signed hello) within the timeout.
replication_frame_bytes_max = 64 * MiB
replication_frame_control_bytes_max = 4 * KiB
# An ANSWER to a forwarded append (framed.py): offsets and throttled positions, or a status whose
# message is bounded (wire/error_mapping._bounded); the dialler reads no larger frame.
replication_frame_answer_bytes_max = 64 * KiB
# Frames smaller than this that a node sends one peer in one loop turn (the acks of one group
# commit, the Appends and heartbeats of one driver turn) go out in one socket write at the end
# of the turn; a larger frame flushes them and itself at once (broker/rpc/framed.py).
replication_frame_coalesce_bytes_max = 64 * KiB
replication_hello_timeout_ms = 5_000
# Connections not yet admitted at once (each held at most the hello timeout, 4 KiB buffered):
# beyond this a new one is closed at once, so unknown diallers cannot pile up sockets.
replication_unadmitted_connections_max = 64
# A node with the port whose metadata image is below the format that carries its address waits
# this long for it before registering without (a new cluster's format is set just after it is
# created; a cluster still below the format costs each such start this much).
replication_address_wait_ms = 3_000
# A producer waits this long for its records to commit on a majority; then its append is an
# unknown outcome (routed again), which happens only while a majority of replicas is away.
replication_commit_timeout_ms = 10_000
replication_hw_flush_ms = 100  # high watermarks are persisted lazily, at most this often
replication_prepare_timeout_ms = 5_000  # a Prepare waits this long for its promise to persist
# SIGTERM and `shoal cluster drain`: how long a node waits for the controller to move its shard
# leaderships away before it stops anyway (its shards then fail over as after a crash).
drain_timeout_ms = 15_000
drain_timeout_ms_max = 600_000  # the most a Drain RPC (`shoal cluster drain --timeout`) may ask
# After the drain: every step of a node's stop is bounded (about 20 s in all); a stop still
# running after this long (a step stuck on a peer or a thread) ends the process at once, as a
# crash would (cli/serve.py). Kubernetes' grace (90 s) covers the drain plus this.
node_stop_timeout_ms = 30_000
replication_seal_wait_ms_max = 1_000  # one Seal call waits this long for the HW to reach the end

# --- Internal RPC channels (rpc/channels.py, rpc/peers.py) ----------------------------------
# Keepalive pings notice a dead peer within ~2 s even when no call is in flight.
rpc_keepalive_ms = 1_000
rpc_keepalive_timeout_ms = 1_000
# The server accepts pings this often (its default policy answers them with GOAWAY).
rpc_ping_interval_ms_min = 500
# Reconnect quickly after a peer restarts (gRPC's default backoff grows to 120 s). While a
# channel backs off, calls on it fail at once: a peer that restarted must be reachable again
# within a fraction of the failover budget (a Prepare to it may be what a leader change waits
# for). A connect attempt every 250 ms to a dead peer costs nothing.
rpc_reconnect_backoff_ms_min = 100
rpc_reconnect_backoff_ms_max = 250
# The public gRPC client (client/grpc_client.py) backs off a little longer: one attempt a
# second to a node that is down, and a restarted node is reached again within a second.
client_reconnect_backoff_ms_max = 1_000
# Channels replaced after a certificate renewal close this long after (calls on them end).
rpc_channel_retire_grace_ms = 5_000
# The controller's crash probe: a dead node's port refuses at once (RST); a slower answer is
# no proof of anything.
rpc_probe_connect_timeout_ms = 250

# --- Request signing (gateway/sigv4.py, iam/grpc_signing.py) ---------------------------------
# Kinesis reports "Signature expired: ... (... - 5 min.)"; the same window bounds the future side,
# for SigV4 on the AWS door and the signature of gRPC requests alike.
signature_clock_skew_ms_max = 5 * 60 * 1000
# AWS refuses presigned URLs valid for more than a week ("X-Amz-Expires must be less than a week").
presigned_expires_s_max = 7 * 24 * 60 * 60
# Real clients sign about ten headers; the bound keeps a hostile list from costing a long loop.
signed_headers_count_max = 64
# One derived key per (secret, day, region, service); old days fall out first.
signing_key_cache_entries_max = 64

# --- Shard load reports and the capacity table (meta/capacity_table.py, shard_load.py) ------
# Scaling events kept per stream in MetadataImage.capacity: enough to see what the controller
# did over a day of a busy stream; the oldest go first.
capacity_events_per_stream_max = 100
# Hot keys carried per shard in a report. Reports cross the metadata quorum: this bounds their
# size (a key is up to 256 characters) whatever the tracker keeps.
load_report_keys_max = 10
# ...and only keys guaranteed (by their lower bound) to carry at least this share of their
# shard's load in the binding dimension. A key below it is not hot by any operator's measure,
# and below ~3 % it is within the trackers' own error (N / 65 per window): reporting the ten
# busiest keys of every shard regardless made a report of 1,000 busy shards with skewed keys
# ~1.2 MB; with this filter it carries the few keys that matter (tests/service/
# test_report_size.py).
load_report_key_share_min_ppm = 50_000
# Shards per report: a node leading more busy shards reports the busiest this many each period.
load_report_shards_max = 2_000
# A shard using less than this share of one shard's write capacity (AWS's 1 MiB/s, 1,000
# records/s) is reported as idle: 1 % is 10 records/s. 1,000 shards trickling a few records a
# second cost the metadata log nothing; the hot-shard view shows them at 0.
load_report_floor_ppm = 10_000
# CapacityService's hot-shard and hot-key lists (`shoal hot-shards`, `hot-keys`): the rows a
# request gets without a Limit, and the most it may ask for.
capacity_list_limit_default = 10
capacity_list_limit_max = 1_000

assert put_records_count_max * 1 <= get_records_count_max
assert replication_append_bytes_max >= put_records_bytes_max + put_records_count_max * KiB
assert grpc_message_bytes_max >= replication_append_bytes_max * 2
assert replication_uncommitted_bytes_max >= replication_append_bytes_max
assert replication_tail_cache_bytes_max >= replication_append_bytes_max
assert replication_resend_ms > replication_heartbeat_ms
assert replication_idle_heartbeat_ms >= replication_heartbeat_ms
assert read_wait_ms_max < forward_timeout_ms  # a long-polled read answers before it times out
assert new_leader_read_wait_ms + read_wait_ms_max < forward_timeout_ms  # the same, both waits
assert subscription_event_bytes_max <= subscription_bytes_per_second_default
assert group_commit_bytes_max >= put_records_bytes_max + put_records_count_max * KiB
assert grpc_message_bytes_max >= put_records_bytes_max * 2  # base64-free, but headers and keys
assert grpc_message_bytes_max >= get_records_bytes_max * 2
assert http_body_bytes_max >= put_records_bytes_max * 4 // 3 + put_records_count_max * KiB
assert retention_hours_min <= retention_hours_default <= retention_hours_max
assert shard_count_per_stream_max <= shard_index_max
assert shard_count_per_account_default <= account_limit_max
assert shard_write_bytes_per_second_default <= shard_rate_per_second_max

# --- Media streams (Kinesis Video Streams, broker/video/) ---------------------------------------
video_fragment_bytes_max = 50 * MiB  # AWS: a fragment over 50 MB gets ERROR 4001
video_fragment_duration_ms_max = 10_000  # AWS: over 10 s gets ERROR 4002
video_tracks_max = 3  # AWS: more tracks get ERROR 4012
# A producer's header elements (EBML header, Info, Tracks) outside Clusters; larger is 4009.
video_header_element_bytes_max = 1 * MiB
# One stored record of a fragment: the log's record limit less room for the partition key and
# the chunk header (`video/fragment_records.py`); larger fragments take several records.
video_record_chunk_bytes_max = record_bytes_max_default - 4 * KiB
video_streams_per_account_max = 10_000  # AccountStreamLimitExceededException past it
video_tags_per_stream_max = 50  # TagsPerResourceExceededLimitException past it
# A fragment's notification tags (AWS_KINESISVIDEO_NOTIFICATION): AWS's MKV tag limits; past
# them PutMedia answers ERROR 4009 (FRAGMENT_METADATA_LIMIT_REACHED).
video_notification_keys_max = 10
video_notification_key_bytes_max = 128
video_notification_value_bytes_max = 256
video_channels_per_account_max = 10_000  # AccountChannelLimitExceededException past it
video_channel_message_ttl_seconds_default = 60  # SingleMasterConfiguration's default (AWS)
video_channel_viewers_max = 10  # AWS: 10 viewers per channel; the 11th is refused
video_channel_pending_messages_max = 100  # undelivered messages held per recipient (TTL'd)
video_channel_pending_recipients_max = 100  # recipients not connected with messages waiting
video_alexa_answer_timeout_ms = 5_000  # SendAlexaOfferToMaster waits this long for the answer
# An edge configuration no Edge Agent acknowledges turns SYNC_FAILED after this long (AWS: the
# connectivity is retried for 15 minutes); ListEdgeAgentConfigurations' default page is 5.
video_edge_sync_timeout_ms = 15 * 60_000
video_edge_list_page_default = 5
video_list_page_max = 10_000  # ListStreams/ListFragments MaxResults ceiling (the model's 10000)
video_put_media_idle_ms = 30_000  # a PutMedia session with no data this long is closed (AWS)
# Tagged fragments' SNS notifications (video/notifications.py): a delivery pass looks for new
# fragments this often; a refused publish is retried on the next pass.
video_notification_pass_interval_ms = 1_000
video_ack_idle_interval_ms = 3_000  # IDLE acknowledgements while a producer sends nothing
video_get_media_poll_ms = 200  # a GetMedia at the live edge looks for new fragments this often
video_get_media_idle_ms = 3_000  # ... and ends its response after this long with none (AWS)
video_read_records_max = 100  # records per internal GetRecords while reading fragments
assert video_get_media_poll_ms < video_get_media_idle_ms
video_clip_fragments_max = 200  # GetClip: fragments in one clip
video_clip_bytes_max = 100 * MiB  # GetClip: bytes in one clip (AWS: 100 MB)

# Queues (CreateQueue, ReceiveQueueRecords, ...). Records a queue holds (in flight, visible
# again or dead-lettered): its delivery state lives in the metadata image, so it is bounded;
# a full queue delivers only what it already holds until acknowledgements make room.
queue_records_held_max = 10_000
queue_receive_limit_max = 10  # the model's ReceiveQueueRecordsInputLimit
queue_receive_wait_s_default = 9  # WaitTimeSeconds when the request names none (AWS)
queue_poll_interval_ms = 200  # a waiting receive looks for records this often
list_queues_page_max = 100  # ListQueues/ListChannels return at most 100 per page (AWS)

# Kinesis channels (CreateChannel ...). A channel is a delivery stream with its stream as the
# source (broker/firehose/channels.py): it shares Firehose's per-region budget of delivery
# streams, and DataFreshnessInSeconds is its buffering interval, in Firehose's range.
channels_per_account_max = 5_000
list_channels_page_max = list_queues_page_max
channel_freshness_s_min = 0
channel_freshness_s_max = 900

# A serving node's young-generation collection threshold (`gc.set_threshold`'s first value;
# CPython's default is 700): collections are rarer, so far fewer writes carry a pause
# (broker/cli/serve.py `_settle_the_heap`; each pause grows with it, about 1 ms at this value).
gc_young_allocations = 20_000
# A serving node's glibc malloc (broker/cli/serve.py `_keep_page_memory`): allocations up to
# the first come from its heap (glibc's largest allowed value), and up to the second of freed
# memory stays there rather than going back to the kernel, so 10 MB pages reuse memory.
malloc_mmap_threshold_bytes = 32 * 2**20
malloc_trim_threshold_bytes = 64 * 2**20
