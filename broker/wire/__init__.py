"""Wire translations shared by the server's doors and the Python client: protobuf messages as
AWS-shaped dicts (`codec.py`), Kinesis errors to and from gRPC statuses (`error_mapping.py`),
lease values to and from the lease API's messages (`lease_codec.py`)."""
