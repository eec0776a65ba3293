"""`python -m benchmarks.log_micro`: `RocksLogStore` append and read against raw rocksdict.

One group commit = 20 `AppendBatch`es x 500 records x 1 KiB of data with a 16-char partition
key (what the group-commit thread hands the store when 20 PutRecords calls are queued). Measured
in one process, one thread, on scratch DBs under a temp directory that is deleted afterwards:

- raw per-record: a rocksdict `WriteBatch` with one 16-byte key per record (value = 19-byte
  header + key + data, the old layout's size), `write(sync=False)` + `flush_wal(sync=True)`;
  this is the storage ceiling `scripts/bench` prints.
- raw per-batch: the same bytes as one value per 500-record batch (the new layout's shape).
- store append: `RocksLogStore.append` of the 20 batches (encode + WriteBatch + fsync).
- store read: `RocksLogStore.read` of the whole shard in 10 000-record pages (GetRecords' cap),
  against a raw iterator over the per-record DB.

Each figure is the median of `--rounds` rounds; records/s and MiB/s of record data.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.log.records import AppendBatch, NewRecord
from broker.log.rocks_store import RocksLogStore
from broker.types import Offset, ShardUid

BATCHES_PER_COMMIT = 20
RECORDS_PER_BATCH = 500
DATA_BYTES = 1024
PARTITION_KEY_CHARS = 16
OLD_VALUE_HEADER_BYTES = 19
READ_PAGE_RECORDS = 10_000
READ_PAGE_BYTES = 10 * 1024 * 1024
KEY = struct.Struct(">QQ")
MiB = 1024 * 1024


def _records(rng: random.Random) -> tuple[NewRecord, ...]:
    return tuple(
        NewRecord(partition_key=f"{rng.getrandbits(64):016x}", data=rng.randbytes(DATA_BYTES))
        for _ in range(RECORDS_PER_BATCH)
    )


def _commit_batches(
    pools: list[tuple[NewRecord, ...]], shards: int, round_: int
) -> list[AppendBatch]:
    per_shard = BATCHES_PER_COMMIT // shards
    return [
        AppendBatch(
            shard_uid=ShardUid(shard),
            first_offset=Offset((round_ * per_shard + i) * RECORDS_PER_BATCH),
            arrival_ms=1_000 + round_,
            records=pools[(shard * per_shard + i) % len(pools)],
        )
        for shard in range(shards)
        for i in range(per_shard)
    ]


def _timed(rounds: int, body: Callable[[int], None]) -> float:
    """Median seconds of `body(round)` over `rounds` rounds, after one warm-up round."""
    body(0)
    samples = []
    for round_ in range(1, rounds + 1):
        start = time.perf_counter()
        body(round_)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _raw_db(path: Path) -> Any:
    import rocksdict

    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    return rocksdict.Rdict(str(path), options=options)


def _raw_write(db: Any, entries: list[tuple[bytes, bytes]]) -> None:
    import rocksdict

    batch = rocksdict.WriteBatch(raw_mode=True)
    for key, value in entries:
        batch.put(key, value)
    options = rocksdict.WriteOptions()
    options.sync = False
    db.write(batch, options)
    db.flush_wal(sync=True)


def _say(name: str, seconds: float, records: int) -> None:
    mib = records * DATA_BYTES / MiB
    print(
        f"{name:<34} {seconds * 1000:8.2f} ms  {records / seconds:>10,.0f} rec/s"
        f"  {mib / seconds:8.1f} MiB/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--shards", type=int, default=1, choices=(1, 2, 4, 5, 10, 20))
    args = parser.parse_args()
    rng = random.Random(7)
    pools = [_records(rng) for _ in range(4)]
    records = BATCHES_PER_COMMIT * RECORDS_PER_BATCH
    old_values = [
        rng.randbytes(OLD_VALUE_HEADER_BYTES + PARTITION_KEY_CHARS + DATA_BYTES)
        for _ in range(RECORDS_PER_BATCH)
    ]
    batch_value = b"".join(old_values)
    tmp = Path(tempfile.mkdtemp(prefix="shoal-log-micro-"))
    try:
        db = _raw_db(tmp / "raw-record")

        def raw_per_record(round_: int) -> None:
            base = round_ * records
            _raw_write(
                db,
                [
                    (KEY.pack(1, base + i), old_values[i % RECORDS_PER_BATCH])
                    for i in range(records)
                ],
            )

        _say("raw rocksdict, key per record", _timed(args.rounds, raw_per_record), records)

        def raw_read(_round: int) -> None:
            import rocksdict

            iterator = db.iter(rocksdict.ReadOptions())
            iterator.seek_to_first()
            for _ in range(records):
                iterator.key()
                iterator.value()
                iterator.next()
            del iterator

        _say("raw iterator, key per record", _timed(args.rounds, raw_read), records)
        db.close()

        db = _raw_db(tmp / "raw-batch")

        def raw_per_batch(round_: int) -> None:
            base = round_ * BATCHES_PER_COMMIT
            _raw_write(
                db, [(KEY.pack(1, base + i), batch_value) for i in range(BATCHES_PER_COMMIT)]
            )

        _say("raw rocksdict, key per batch", _timed(args.rounds, raw_per_batch), records)
        db.close()

        store = RocksLogStore(tmp / "store")
        _say(
            f"RocksLogStore.append ({args.shards} shard)",
            _timed(args.rounds, lambda r: store.append(_commit_batches(pools, args.shards, r))),
            records,
        )

        def store_read(_round: int) -> None:
            start = Offset(0)
            taken = 0
            while taken < records:
                page = store.read(
                    ShardUid(0),
                    start_offset=start,
                    end_offset=Offset(2**63),
                    records_max=READ_PAGE_RECORDS,
                    bytes_max=READ_PAGE_BYTES,
                )
                assert page
                taken += len(page)
                start = Offset(page[-1].offset + 1)

        _say("RocksLogStore.read (10k pages)", _timed(args.rounds, store_read), records)
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
