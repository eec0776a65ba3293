"""Shard log replication (decisions/0002): the pure replica core (`replica.py`), its messages
(`messages.py`), and the async driver and transport that run it on a node."""
