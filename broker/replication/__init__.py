"""Shard log replication (decisions/0002): the pure replica core (`replica.py`), its messages
(`messages.py`), the driver that runs it on a node (`driver_core.py`, `driver.py`), and what the
driver needs of the network (`network.py`; the gRPC adapter is `broker/rpc/transport.py`)."""
