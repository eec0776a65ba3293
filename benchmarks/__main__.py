"""`python -m benchmarks`: the `scripts/bench` run (see benchmarks/bench.py).

An entry module of its own, so that `benchmarks.bench` is imported once under its real name
(not as `__main__`) and `benchmarks.aws_http`, which imports it, shares its classes.

`--only cluster` runs the 3-node figures alone (benchmarks/cluster.py, which also takes
`--kills N`); without `--only`, the single-node run is followed by the cluster one (its
`--json PATH` figures go to PATH with `-cluster` before `.json`). `--only consumers` runs the
KCL-style worker figures (benchmarks/consumers.py: end-to-end latency, worker failover), which
the full run leaves out. `--only scale` runs the 1,000-shard figures (benchmarks/scale.py:
idle CPU and memory, 200-shard CreateStream, pagination; `--shards N`, `--idle-seconds S`),
also left out of the full run. `--only fanout` runs the enhanced fan-out latency figures
(benchmarks/fanout.py: put accepted -> record delivered to a subscriber, one node and a 3-node
cluster; `--records N`, `--gap-ms MS`, `--single-only`), also left out of the full run.
`--only video` runs the PutMedia figures (benchmarks/video.py: one stream unpaced and 10 paced
camera streams next to PutRecord and rocksdict baselines, the live GetMedia edge), also left
out of the full run.
`--only console` measures the web console's pages at 1,000 streams and a 1,000-shard stream
(benchmarks/console.py; `--streams N`, `--shards N`, `--rounds N`), also left out of the full run.
`--only analytics` runs the SQL application figures (benchmarks/analytics.py: a tumbling
window's input records/s next to the engine alone, window close -> output latency; `--records
N`, `--rate R`, `--seconds S`), also left out of the full run.
`--only firehose` runs the delivery stream figures (benchmarks/firehose.py: put -> S3 next to
PutRecords and the object store's ceiling; `--freshness-seconds N`), also left out.
`--only peers` runs issue 18's comparison with NATS JetStream (benchmarks/peers.py: 3-node
clusters with 3 replicas, throughput and single-write ack latency), also left out of the full
run.
`--only disk` runs issue 20's figures (benchmarks/disk.py: the scrubber's CPU per GiB, a wiped
follower's rejoin time and the longest write pause meanwhile), also left out of the full run.
`--only access` runs issue 15's figures (benchmarks/access.py: PutRecords throughput and
PutRecord p50/p99 with access control on next to off), also left out of the full run.
`--only encryption` runs issue 15's encryption-at-rest figures (benchmarks/encryption.py:
PutRecords throughput and PutRecord p99 of an encrypted stream next to a clear one, and the
log store's CPU per GiB with and without a data key), also left out of the full run.
`--only backup` runs the backup figures (benchmarks/backup.py: `shoal backup` and `restore` of
an encrypted stream, sealed, next to a clear one with the same records), also left out.
"""

from __future__ import annotations

import sys

from benchmarks import (
    access,
    analytics,
    backup,
    bench,
    cluster,
    console,
    consumers,
    disk,
    encryption,
    fanout,
    firehose,
    peers,
    scale,
    video,
)


def _without_kills(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--kills":
            skip = True
        elif not arg.startswith("--kills="):
            out.append(arg)
    return out


def _dispatch(argv: list[str]) -> int:
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["video"]:
        at = argv.index("--only")
        return video.main(argv[:at] + argv[at + 2 :])
    if "--only=video" in argv:
        return video.main([a for a in argv if a != "--only=video"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["peers"]:
        at = argv.index("--only")
        return peers.main(argv[:at] + argv[at + 2 :])
    if "--only=peers" in argv:
        return peers.main([a for a in argv if a != "--only=peers"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["console"]:
        at = argv.index("--only")
        return console.main(argv[:at] + argv[at + 2 :])
    if "--only=console" in argv:
        return console.main([a for a in argv if a != "--only=console"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["analytics"]:
        at = argv.index("--only")
        return analytics.main(argv[:at] + argv[at + 2 :])
    if "--only=analytics" in argv:
        return analytics.main([a for a in argv if a != "--only=analytics"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["firehose"]:
        at = argv.index("--only")
        return firehose.main(argv[:at] + argv[at + 2 :])
    if "--only=firehose" in argv:
        return firehose.main([a for a in argv if a != "--only=firehose"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["disk"]:
        at = argv.index("--only")
        return disk.main(argv[:at] + argv[at + 2 :])
    if "--only=disk" in argv:
        return disk.main([a for a in argv if a != "--only=disk"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["backup"]:
        at = argv.index("--only")
        return backup.main(argv[:at] + argv[at + 2 :])
    if "--only=backup" in argv:
        return backup.main([a for a in argv if a != "--only=backup"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["encryption"]:
        at = argv.index("--only")
        return encryption.main(argv[:at] + argv[at + 2 :])
    if "--only=encryption" in argv:
        return encryption.main([a for a in argv if a != "--only=encryption"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["fanout"]:
        at = argv.index("--only")
        return fanout.main(argv[:at] + argv[at + 2 :])
    if "--only=fanout" in argv:
        return fanout.main([a for a in argv if a != "--only=fanout"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["access"]:
        at = argv.index("--only")
        return access.main(argv[:at] + argv[at + 2 :])
    if "--only=access" in argv:
        return access.main([a for a in argv if a != "--only=access"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["scale"]:
        at = argv.index("--only")
        return scale.main(argv[:at] + argv[at + 2 :])
    if "--only=scale" in argv:
        return scale.main([a for a in argv if a != "--only=scale"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["consumers"]:
        at = argv.index("--only")
        return consumers.main(argv[:at] + argv[at + 2 :])
    if "--only=consumers" in argv:
        return consumers.main([a for a in argv if a != "--only=consumers"])
    if "--only" in argv and argv[argv.index("--only") + 1 :][:1] == ["cluster"]:
        at = argv.index("--only")
        return cluster.main(argv[:at] + argv[at + 2 :])
    if "--only=cluster" in argv:
        return cluster.main([a for a in argv if a != "--only=cluster"])
    if any(a == "--only" or a.startswith("--only=") for a in argv):
        return bench.main(_without_kills(argv))
    status = bench.main(_without_kills(argv))
    if status != 0:
        return status
    rest = list(argv)
    if "--json" in rest and rest.index("--json") + 1 < len(rest):
        at = rest.index("--json") + 1
        path = rest[at]
        rest[at] = path[:-5] + "-cluster.json" if path.endswith(".json") else path + "-cluster"
    return cluster.main(rest)


if __name__ == "__main__":
    sys.exit(_dispatch(sys.argv[1:]))
