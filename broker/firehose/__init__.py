"""Data Firehose: delivery streams on Shoal's nodes (issue 11; DESIGN §8, "a room per service").

    buffering.py      pure: when a buffer is delivered (BufferingHints: size or interval first)
    object_keys.py    pure: S3 object keys (AWS's YYYY/MM/DD/HH/ layout and object names,
                      `!{timestamp:...}` / `!{firehose:...}` prefix expressions)
    retry.py          pure: the backoff schedule of a delivery and when to give up
    destinations.py   pure: destination configurations (create, update merge, the checks)
    describe.py       DeliveryStreamDescription in AWS's shape, from botocore's model (adapter)
    processing.py     pure: processors, the Firehose-to-Lambda event and result contract
    compression.py    UNCOMPRESSED, GZIP, ZIP, Snappy, HADOOP_SNAPPY (adapter: cramjam)
    conversion.py     JSON records to Apache Parquet / ORC with a Glue table's schema (pyarrow)
    aws_clients.py    S3 objects, Lambda Invoke, Glue table schemas (adapter: boto3)
    http_endpoint.py  HttpEndpoint delivery in AWS's request/response format (stdlib HTTP)
    service.py        the Firehose operations behind both doors (FirehoseService)
    lifecycle.py      CREATING -> ACTIVE / CREATING_FAILED, DELETING -> gone (the reconciler)
    delivery.py       the record processor that buffers, compresses, writes and checkpoints
    deliverers.py     per node: one KCL-style worker per delivery stream, leased cluster-wide

Records of a DirectPut delivery stream are appended to its internal Kinesis stream before the
put is acknowledged (replicated like any shard log); the deliverer is a consumer application of
that stream (or of the user's stream, for KinesisStreamAsSource), so its leases and checkpoints
live in the metadata quorum and a dead node's work moves to another node. Delivery is at least
once: a record is checkpointed only after the object holding it was written.
"""
