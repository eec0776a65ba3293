"""The chaos checker: what the producers were told, against what every node returns.

Pure code over two inputs, so it is tested on hand-made histories (`test_chaos.py`):

- `WriteHistory`: every record a producer sent (its data is unique: producer id + counter), how
  many PutRecords calls carried it, and for an acknowledged record where it was acknowledged
  (shard id, offset) and in which call / request position.
- `SourceRead`s: one shard read back from its start by one source. Sources are the public door
  of each node (GetRecords from TRIM_HORIZON, forwarded or served locally) and each node's own
  replica (NodeService.ShardRead below that replica's high watermark).

Anomalies (REFERENCE §3.4, Jepsen's Kafka checker, adapted to Kinesis):

- `lost`: acknowledged, read by no source, though some source read past its offset in that
  shard (Jepsen's lost-write); `unseen`: acknowledged, read by no source and beyond every
  read's end (after healing and waiting for convergence this is a loss too).
- `misplaced`: acknowledged at (shard, offset) but that position holds other data, or the
  data is nowhere at its acknowledged position (the sequence number a client kept is wrong).
- `inconsistent-offsets`: one (shard, offset) with two different data across sources.
- `duplicate`: one data at more positions than calls carried it. The rule, as on AWS: a record
  whose call failed or timed out has an unknown outcome, and a retry may land it again, so a
  record sent in k calls may appear up to k times (at most once per attempt); a record
  acknowledged on its first and only attempt appears exactly once. Two copies of one attempt
  are a duplicate in place, whatever the retries.
- `phantom`: data no producer ever sent (corruption, or a read of garbage).
- `nonmonotonic`: one source returned a shard's offsets out of increasing order.
- `reordered`: for one producer and partition key, record A acknowledged in an earlier call
  than B (so A's acknowledgement preceded B's send), or earlier in the same call, yet A is
  not before B in the shard (Kinesis: sequence numbers increase over time per shard).
- `skipped`: a source's read of a shard lacks an offset that another source returned, below
  the last offset this source returned (a reader jumped over records: poll-skip).
- `diverged` / `behind`: per-node agreement at the end: replicas of a shard whose readable
  ends differ after the healed cluster was given time to converge.
- `metadata-diverged` (added by the workload, not computed here): two voters' metadata
  images differ after the same number of applied commands.

Failed calls are never treated as definite failures (a timed-out or refused call may still
have been applied), so Jepsen's "aborted read" cannot be checked beyond `phantom`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

EXAMPLES_MAX = 5  # per anomaly kind, in the report

KINDS = (
    "lost",
    "unseen",
    "misplaced",
    "inconsistent-offsets",
    "duplicate",
    "phantom",
    "nonmonotonic",
    "reordered",
    "skipped",
    "diverged",
    "behind",
    "metadata-diverged",
    "unavailable",
)


@dataclass(frozen=True, slots=True)
class Ack:
    shard_id: str
    offset: int
    producer: str
    partition_key: str
    call: int  # the producer's call counter: calls are serial per producer
    position: int  # index in that call's request


@dataclass(slots=True)
class WriteHistory:
    attempts: dict[bytes, int] = field(default_factory=dict)  # data -> calls that carried it
    acked: dict[bytes, Ack] = field(default_factory=dict)

    def merge(self, other: WriteHistory) -> None:
        for data, count in other.attempts.items():
            self.attempts[data] = self.attempts.get(data, 0) + count
        self.acked.update(other.acked)

    @property
    def unknown(self) -> int:
        """Records sent but never acknowledged (their outcome is unknown)."""
        return sum(1 for data in self.attempts if data not in self.acked)


@dataclass(frozen=True, slots=True)
class SourceRead:
    source: str  # "gateway node-1" or "replica node-2"
    shard_id: str
    records: tuple[tuple[int, bytes], ...]  # (offset, data) in the order returned
    replica: bool = False  # a node's own replica (its end is that node's high watermark)
    end: int | None = None  # for a replica: the readable end it reported


@dataclass(slots=True)
class Report:
    records_sent: int = 0
    records_acked: int = 0
    records_unknown: int = 0
    records_read: int = 0  # distinct (shard, offset) positions
    sources: int = 0
    anomalies: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, detail: str) -> None:
        assert kind in KINDS, kind
        self.anomalies[kind].append(detail)

    @property
    def ok(self) -> bool:
        return not any(self.anomalies.values())

    def counts(self) -> dict[str, int]:
        return {kind: len(self.anomalies.get(kind, ())) for kind in KINDS}

    def format(self) -> str:
        lines = [
            f"records: {self.records_sent} sent, {self.records_acked} acknowledged, "
            f"{self.records_unknown} unknown outcome; {self.records_read} positions read "
            f"through {self.sources} shard reads",
            "anomalies: "
            + ", ".join(f"{kind}={count}" for kind, count in self.counts().items())
            + ("  => OK" if self.ok else "  => FAILED"),
        ]
        for kind in KINDS:
            details = self.anomalies.get(kind, [])
            lines.extend(f"  {kind}: {detail}" for detail in details[:EXAMPLES_MAX])
            if len(details) > EXAMPLES_MAX:
                lines.append(f"  {kind}: ... {len(details) - EXAMPLES_MAX} more")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def check(
    history: WriteHistory,
    reads: Sequence[SourceRead],
    *,
    unavailable: Iterable[str] = (),
) -> Report:
    report = Report(
        records_sent=len(history.attempts),
        records_acked=len(history.acked),
        records_unknown=history.unknown,
        sources=len(reads),
    )
    for detail in unavailable:
        report.add("unavailable", detail)

    # Per source: order, and duplicates within the source's own read.
    for read in reads:
        offsets = [offset for offset, _ in read.records]
        for before, after in itertools.pairwise(offsets):
            if after <= before:
                report.add(
                    "nonmonotonic",
                    f"{read.source} {read.shard_id}: offset {after} returned after {before}",
                )
                break

    # The union: (shard, offset) -> data -> sources that returned it.
    positions: dict[tuple[str, int], dict[bytes, list[str]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for read in reads:
        for offset, data in read.records:
            positions[(read.shard_id, offset)][data].append(read.source)
    report.records_read = len(positions)
    for (shard_id, offset), values in sorted(positions.items()):
        if len(values) > 1:
            shown = "; ".join(
                f"{data!r} from {', '.join(sorted(set(sources)))}"
                for data, sources in values.items()
            )
            report.add("inconsistent-offsets", f"{shard_id} offset {offset}: {shown}")

    # Where each data was found (distinct positions, across shards).
    found: dict[bytes, set[tuple[str, int]]] = defaultdict(set)
    for (shard_id, offset), values in positions.items():
        for data in values:
            found[data].add((shard_id, offset))
    for data, places in sorted(found.items()):
        if data not in history.attempts:
            report.add("phantom", f"{data!r} at {sorted(places)}")
            continue
        attempts = history.attempts[data]
        if len(places) > attempts:
            ack = history.acked.get(data)
            where = (
                f"acknowledged at offset {ack.offset} on call {ack.call} of {ack.producer}"
                if ack is not None
                else "never acknowledged"
            )
            report.add(
                "duplicate",
                f"{data!r} at {len(places)} positions {sorted(places)} but sent in "
                f"{attempts} call(s); {where}",
            )

    # Acknowledged records: present, at their acknowledged position.
    furthest: dict[str, int] = defaultdict(lambda: -1)
    for shard_id, offset in positions:
        furthest[shard_id] = max(furthest[shard_id], offset)
    for data, ack in sorted(history.acked.items(), key=lambda item: item[1].offset):
        places = found.get(data, set())
        if not places:
            kind = "lost" if furthest[ack.shard_id] > ack.offset else "unseen"
            report.add(
                kind,
                f"{data!r} acknowledged at {ack.shard_id} offset {ack.offset} (call {ack.call} "
                f"of {ack.producer}), read by no source",
            )
        elif (ack.shard_id, ack.offset) not in places:
            held = sorted(positions.get((ack.shard_id, ack.offset), {}))
            report.add(
                "misplaced",
                f"{data!r} acknowledged at {ack.shard_id} offset {ack.offset}, read at "
                f"{sorted(places)}; that position holds {held!r}",
            )

    # Order per producer and partition key, by acknowledgement.
    by_key: dict[tuple[str, str], list[tuple[int, int, bytes, Ack]]] = defaultdict(list)
    for data, ack in history.acked.items():
        by_key[(ack.producer, ack.partition_key)].append((ack.call, ack.position, data, ack))
    for (producer, key), acks in sorted(by_key.items()):
        acks.sort(key=lambda item: (item[0], item[1]))
        for (_, _, data_a, a), (_, _, data_b, b) in itertools.pairwise(acks):
            if a.shard_id == b.shard_id and b.offset <= a.offset:
                report.add(
                    "reordered",
                    f"{producer} key {key!r}: {data_a!r} (call {a.call}) at offset {a.offset} "
                    f"but later {data_b!r} (call {b.call}) at offset {b.offset} in {a.shard_id}",
                )

    # Skips: a source lacks, below its last offset, an offset some other source returned.
    union_by_shard: dict[str, set[int]] = defaultdict(set)
    for shard_id, offset in positions:
        union_by_shard[shard_id].add(offset)
    for read in reads:
        if not read.records:
            continue
        mine = {offset for offset, _ in read.records}
        first, last = min(mine), max(mine)
        missing = sorted(
            offset for offset in union_by_shard[read.shard_id] if first <= offset <= last
        )
        missing = [offset for offset in missing if offset not in mine]
        if missing:
            report.add(
                "skipped",
                f"{read.source} {read.shard_id}: jumped over {len(missing)} offset(s) that "
                f"other sources returned, first {missing[:5]}",
            )
        if first > min(union_by_shard[read.shard_id]):
            report.add(
                "skipped",
                f"{read.source} {read.shard_id}: started at offset {first}, after "
                f"{min(union_by_shard[read.shard_id])} (TRIM_HORIZON read)",
            )

    # Per-node agreement at the end: every replica of a shard holds the same records. Ends are
    # compared by the records they cover (a leader change after the writes stopped appends an
    # epoch-start marker, which readers skip, so a readable end may differ by markers alone).
    replica_offsets: dict[str, dict[str, set[int]]] = defaultdict(dict)
    for read in reads:
        if read.replica:
            replica_offsets[read.shard_id][read.source] = {offset for offset, _ in read.records}
    for shard_id, by_source in sorted(replica_offsets.items()):
        every: set[int] = set().union(*by_source.values())
        for source, held_offsets in sorted(by_source.items()):
            lacking = sorted(every - held_offsets)
            if lacking:
                report.add(
                    "behind",
                    f"{source} {shard_id}: lacks {len(lacking)} record(s) other replicas hold "
                    f"after healing, first offsets {lacking[:5]}",
                )
    replica_contents: dict[str, dict[str, tuple[tuple[int, bytes], ...]]] = defaultdict(dict)
    for read in reads:
        if read.replica:
            replica_contents[read.shard_id][read.source] = read.records
    for shard_id, contents in sorted(replica_contents.items()):
        common = min((len(records) for records in contents.values()), default=0)
        prefixes = {source: records[:common] for source, records in contents.items()}
        if len(set(prefixes.values())) > 1:
            report.add(
                "diverged",
                f"{shard_id}: replicas hold different records in their common prefix "
                f"({common} records): {', '.join(sorted(prefixes))}",
            )
    return report
