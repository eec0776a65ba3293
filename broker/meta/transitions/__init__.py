"""The metadata state machine's transitions, one module per domain.

`broker.meta.state_machine.apply` is the only entry point: it dispatches each command to one
function here and turns a raised ShoalError into `Applied.error`. These modules share its
contract (pure, deterministic, every time from `command.now_ms`, every precondition checked
against the image at apply time) and return `(next_image, result)` or raise ShoalError; they
never count `applied_commands`, which `apply` does once per command.

    common.py            stream lookup, storing a changed stream, the account named in errors
    stream_lifecycle.py  InitCluster, CreateStream, DeleteStream, ForgetStream
    stream_settings.py   retention, tags, enhanced monitoring, capacity mode, max record size
    reshards.py          BeginReshard, CompleteReshard (split, merge, UpdateShardCount)
    nodes.py             RegisterNode, SetNodeState, SetShardLeader, RemoveNode
    stream_consumers.py  consumer leases (KCL) and enhanced fan-out consumers
    account_limits.py    the account's shard and on-demand limits, per-stream and account limits
    stream_features.py   resource policies, encryption settings, warm throughput, record
                         distribution (the operations AWS added since 2023)
    video_streams.py     video streams (Kinesis Video Streams): create, delete, update, tags
    analytics_applications.py  Kinesis Data Analytics SQL applications (rules in broker.analytics)
    delivery_streams.py  Data Firehose delivery streams (create, activate, delete, update, tags)
    queues.py            Kinesis queues: create, update, delete, receive claims, settlements

Capacity loads and scaling events live in `broker.meta.capacity`, which predates this package.
"""
