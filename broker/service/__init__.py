"""The Kinesis operations, once, behind both front doors.

Each operation takes an AWS-shaped request dict (already validated against botocore's model by
the gateway) and returns an AWS-shaped response dict. Control-plane operations become metadata
commands (`meta.commands`) proposed through the quorum; data-plane operations go through
`shards.ShardClient` to each shard's leader (the local replication driver, or another node).
Kinesis rules themselves live in `streams/` (pure) and in `meta.state_machine`; this package
sequences them and shapes responses.

Must not import: grpc, rocksdict, pysyncobj, the gateway.
"""
