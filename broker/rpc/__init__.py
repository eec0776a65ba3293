"""Internal RPC between nodes: the NodeService and ClusterAdminService servers and the forwarder
that calls them (`node_service.py`), the replication transport's gRPC adapter and the shared
channel pool (`transport.py`), the controller's unary calls to replicas (`peers.py`), and the
protobuf translation of replication messages (`replication_codec.py`)."""
