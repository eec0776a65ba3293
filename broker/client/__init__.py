"""Python clients of Shoal's native gRPC API (used by the CLI, tests and benchmarks).

They speak only the public API: AWS-shaped dicts in and out, Kinesis errors raised as
`broker.errors.ShoalError` with the Kinesis error name. `grpc_client` is the plain client;
`producer.KinesisProducer` buffers, aggregates (KPL format, `kpl`) and retries like the KPL;
`kpl.deaggregate` is what a consumer calls on every record it reads.
"""
