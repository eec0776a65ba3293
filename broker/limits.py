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

# --- Internal bounds -----------------------------------------------------------------------
group_commit_bytes_max = 32 * MiB  # one WriteBatch; must hold the largest PutRecords
group_commit_records_max = 20_000
append_queue_batches_max = 4_096  # appends waiting for the writer thread before backpressure
route_retry_attempts_max = 20  # a put refused by a sealing shard re-resolves at most this often
route_retry_wait_ms_max = 5_000  # total wait for a reshard to publish the children
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
http_keep_alive_s = 75  # idle keep-alive; above the 60 s idle pools of the AWS SDKs
http_shutdown_grace_s = 5.0  # in-flight requests get this long when the node stops

assert put_records_count_max * 1 <= get_records_count_max
assert group_commit_bytes_max >= put_records_bytes_max + put_records_count_max * KiB
assert grpc_message_bytes_max >= put_records_bytes_max * 2  # base64-free, but headers and keys
assert grpc_message_bytes_max >= get_records_bytes_max * 2
assert http_body_bytes_max >= put_records_bytes_max * 4 // 3 + put_records_count_max * KiB
assert retention_hours_min <= retention_hours_default <= retention_hours_max
assert shard_count_per_stream_max <= shard_index_max
