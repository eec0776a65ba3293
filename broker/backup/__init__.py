"""Logical backup and restore of streams through the public API (`shoal backup`/`restore`).

A backup is a set of objects under one root, in a directory or an S3-compatible bucket
(`store.py`): per stream a manifest (settings with the encryption type and KeyId, tags,
resource policies, consumers, leases, the shard lineage, and per shard its segments and the
last sequence number copied) and segments of records (JSON lines:
sequence number, partition key, arrival time, data; an encrypted stream's sealed with AES-GCM
under data keys its master key wraps, `sealing.py`). Everything is read and written through
the Kinesis operations (`logical.py`) and the native Lease and BackupKey services, never the
metadata image or RocksDB, so a backup survives changes to either. Must not import node
internals (meta, log, replication).
"""
