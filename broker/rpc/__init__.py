"""Internal RPC between nodes, in one place: what every call shares (`channels.py`: service
names, the channel pool, options, unary helpers), the NodeService and ClusterAdminService
servers (`node_service.py`) and the forwarder that calls NodeService (`forwarder.py`), routing
refusals on the wire (`refusals.py`), NodeService's values (`shard_codec.py`), the replication
transport's gRPC adapter and ReplicationService handlers (`transport.py`), the controller's
calls to replicas and heartbeats (`peers.py`), and replication messages as protobuf
(`replication_codec.py`)."""
