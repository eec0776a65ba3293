"""Consumer leases: how a fleet of KCL-style workers shares a stream's shards.

`leases` holds the lease table's rules (create, take, renew, release, steal, checkpoint, delete)
as pure functions over an immutable `LeaseTable`, made to live inside the replicated metadata
image and be applied by the metadata state machine; `balancing` decides, from one worker's own
observations, which leases that worker should take or steal. Both are sync and read no clock:
time comes in as `now_ms`, observed on the worker's own monotonic clock, never compared across
machines (../shared/REFERENCE.md §2.2).

Must not import asyncio, grpc, pysyncobj or rocksdict, nor anything from `broker.client`.
The worker that drives these rules is `broker/client/worker.py`.
"""
