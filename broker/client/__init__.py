"""Python clients of Shoal's native gRPC API (used by the CLI, tests and benchmarks).

They speak only the public API: AWS-shaped dicts in and out, Kinesis errors raised as
`broker.errors.ShoalError` with the Kinesis error name. Later: the producer and the KCL-style
consumer worker.
"""
