"""`scripts/bench --only video`: PutMedia ingest on one node (issue 13 item 6).

One `shoal serve` child (benchmarks/bench.py's `shoal_node`), one run, every figure next to a
baseline measured in the same run on the same bytes:

- the camera: an H.264 clip of noise (so it costs what real video costs: about 2 Mbit/s at
  320x240, 25 fps), encoded once with PyAV; its Clusters are replayed with rewritten timecodes
  as long as a scenario needs (one fragment = one second = one Cluster);
- one stream, as fast as PutMedia takes it: Mbit/s from the first byte sent to the last
  PERSISTED, and persist latency (last byte of a fragment sent -> its PERSISTED read) p50/p99;
- 10 streams at once, each paced at the clip's real-time rate (about 2 Mbit/s each; their
  fragments end a tenth of a second apart, as unsynchronised cameras' do, or all at the same
  instant with `--in-phase`): whether
  all of them were sustained (every fragment PERSISTED, none late by more than a fragment),
  and persist latency p50/p99 across them. Goal: all 10 sustained with p99 under 500 ms;
- baselines: the same fragment bytes appended as Kinesis records (PutRecord over gRPC, one
  1-shard stream on the same node, sequentially: what the archive does underneath) and as
  durable rocksdict writes (one WriteBatch and one synced WAL flush per fragment);
- the live edge: a GetMedia reader following the stream (StartSelector NOW) during the paced
  run, the delay from a fragment's PERSISTED (at the producer) to its chunk arriving at the
  reader, p50/p99; and a LIVE HLS session on another paced stream, its media playlist polled
  every 50 ms, the delay from a fragment's PERSISTED to its segment first listed, p50/p99.

Everything runs on one machine (producer, reader and node share its cores); the report prints
the CPU count. About `--seconds` x 3 + 15 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fractions
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import boto3

from benchmarks.bench import _write_durable_batch, now_s, shoal_node
from broker.client.grpc_client import ShoalClient
from broker.client.video_producer import PutMediaTarget, put_media
from broker.streams.sequence_numbers import decode_sequence_number
from broker.video import ebml, mkv
from broker.video.acks import AckEventType
from broker.video.media_chunks import read_tags, split_chunks
from broker.video.mkv import MkvFragment, MkvSplitter

FPS = 25
WIDTH, HEIGHT = 320, 240
STREAMS_PACED = 10


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def camera_clip(seconds: int) -> tuple[bytes, list[bytes]]:
    """(header, Clusters) of `seconds` one-second fragments of H.264 noise."""
    buffer = io.BytesIO()
    noise = os.urandom(WIDTH * HEIGHT * 2)
    with av.open(buffer, mode="w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = 2_000_000
        stream.options = {
            "g": str(FPS),
            "keyint_min": str(FPS),
            "sc_threshold": "0",
            "bf": "0",
            "preset": "ultrafast",
            "nal-hrd": "cbr",
        }
        for index in range(seconds * FPS):
            frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
            for number, plane in enumerate(frame.planes):
                size = plane.line_size * plane.height
                start = (index * 7919 + number * 104729) % (len(noise) - size)
                plane.update(noise[start : start + size])
            frame.pts = index
            frame.time_base = fractions.Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    fragments = [e for e in MkvSplitter().feed(buffer.getvalue()) if isinstance(e, MkvFragment)]
    return fragments[0].header, [f.cluster for f in fragments]


def retimed(cluster: bytes, timecode_ms: int) -> bytes:
    """`cluster` with its Timecode replaced (block timecodes are relative to it)."""
    header = ebml.read_header(cluster, 0)
    assert header is not None
    children = ebml.children(cluster[header.header_length :])
    body = b"".join(
        ebml.uint_element(mkv.CLUSTER_TIMECODE, timecode_ms)
        if element_id == mkv.CLUSTER_TIMECODE
        else ebml.element(element_id, bytes(payload))
        for element_id, payload in children
    )
    return ebml.element(mkv.CLUSTER, body)


def stream_start(header: bytes) -> bytes:
    first = ebml.read_header(header, 0)
    assert first is not None
    end = first.header_length + first.size
    return header[:end] + ebml.encode_id(mkv.SEGMENT) + ebml.unknown_size() + header[end:]


@dataclass
class Upload:
    fragments: int = 0
    persisted: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] | None = None
    persisted_at: dict[str, float] | None = None  # fragment number -> when PERSISTED was read
    errors: int = 0


async def upload(
    endpoint: str,
    stream: str,
    header: bytes,
    clusters: Sequence[bytes],
    *,
    count: int,
    pace_s: float,
    phase_s: float = 0.0,
) -> Upload:
    """`count` fragments (the clip's Clusters in a loop, timecodes rising), each sent `pace_s`
    after the previous one started (0: as fast as possible), the first after `phase_s`."""
    result = Upload(latencies_ms=[], persisted_at={})
    sent_at: dict[int, float] = {}

    async def body() -> AsyncIterator[bytes]:
        yield stream_start(header)
        started = now_s() + phase_s
        for index in range(count):
            if pace_s:
                await asyncio.sleep(max(0.0, started + index * pace_s - now_s()))
            data = retimed(clusters[index % len(clusters)], index * 1000)
            result.bytes_sent += len(data)
            yield data
            sent_at[index * 1000] = now_s()

    target = PutMediaTarget(endpoint=endpoint, stream_name=stream)
    began = now_s()
    async for ack in put_media(target, body()):
        if ack.event_type is AckEventType.PERSISTED and ack.timecode_ms is not None:
            at = now_s()
            result.persisted += 1
            assert result.persisted_at is not None
            assert result.latencies_ms is not None
            result.persisted_at[ack.fragment_number or ""] = at
            result.latencies_ms.append((at - sent_at.get(ack.timecode_ms, at)) * 1000)
        elif ack.event_type is AckEventType.ERROR:
            result.errors += 1
    result.seconds = now_s() - began
    result.fragments = count
    return result


def quantiles(samples: Sequence[float]) -> tuple[float, float]:
    if len(samples) < 2:
        value = samples[0] if samples else float("nan")
        return value, value
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


def kinesis_baseline(grpc_target: str, payloads: Sequence[bytes]) -> float:
    """Seconds to PutRecord `payloads` one after the other into a 1-shard stream."""
    with ShoalClient(grpc_target, timeout_s=60) as client:
        client.call("CreateStream", {"StreamName": "video-baseline", "ShardCount": 1})
        began = now_s()
        for index, data in enumerate(payloads):
            client.call(
                "PutRecord",
                {"StreamName": "video-baseline", "PartitionKey": str(index), "Data": data},
            )
        return now_s() - began


def rocksdict_baseline(path: Path, payloads: Sequence[bytes]) -> float:
    import rocksdict

    options = rocksdict.Options(raw_mode=True)
    db = rocksdict.Rdict(str(path), options=options)
    try:
        began = now_s()
        for index, data in enumerate(payloads):
            _write_durable_batch(db, [data], index)
        return now_s() - began
    finally:
        db.close()
        rocksdict.Rdict.destroy(str(path), options)


class LiveReader:
    """GetMedia from NOW in a thread: when each fragment's chunk arrived, by timecode."""

    def __init__(self, endpoint: str, stream: str) -> None:
        self.arrived: dict[str, float] = {}  # fragment number -> arrival
        self._endpoint, self._stream = endpoint, stream
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        media = boto3.client(
            "kinesis-video-media",
            endpoint_url=self._endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
        )
        body = media.get_media(StreamName=self._stream, StartSelector={"StartSelectorType": "NOW"})[
            "Payload"
        ]
        pending = b""
        raw = body._raw_stream  # urllib3's response: read1 returns what has arrived
        while data := raw.read1(65536):
            pending += data
            chunks = split_chunks(pending)
            pending = b""
            for index, chunk in enumerate(chunks):
                tags = _complete_tags(chunk)
                if tags is None:  # the last chunk, still arriving
                    pending = b"".join(chunks[index:])
                    break
                self.arrived[tags["AWS_KINESISVIDEO_FRAGMENT_NUMBER"]] = now_s()


class LiveHlsWatcher:
    """A LIVE HLS session in a thread, its media playlist polled every `POLL_S`: when each
    fragment's segment was first listed, by the log offset its segment token names."""

    POLL_S = 0.05

    def __init__(self, endpoint: str, stream: str) -> None:
        self.listed: dict[int, float] = {}  # log offset -> first listed
        self.stop = threading.Event()
        self._endpoint, self._stream = endpoint, stream
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _session_url(self) -> str | None:
        archived = boto3.client(
            "kinesis-video-archived-media",
            endpoint_url=self._endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
        )
        while not self.stop.is_set():  # a LIVE session needs a first fragment
            try:
                answer = archived.get_hls_streaming_session_url(
                    StreamName=self._stream, PlaybackMode="LIVE", Expires=3600
                )
                url: str = answer["HLSStreamingSessionURL"]
                return url
            except archived.exceptions.ResourceNotFoundException:
                time.sleep(self.POLL_S)
        return None

    def _run(self) -> None:
        master_url = self._session_url()
        if master_url is None:
            return
        with urllib.request.urlopen(master_url, timeout=30) as response:
            master = response.read().decode()
        media = next(line for line in master.splitlines() if line and not line.startswith("#"))
        media_url = urllib.parse.urljoin(master_url, media)
        while not self.stop.is_set():
            with urllib.request.urlopen(media_url, timeout=30) as response:
                playlist = response.read().decode()
            seen = now_s()
            for line in playlist.splitlines():
                if line and not line.startswith("#"):
                    offset = _segment_offset(line)
                    self.listed.setdefault(offset, seen)
            time.sleep(self.POLL_S)


def _segment_offset(segment_url: str) -> int:
    """The log offset a segment's token names (its fixed-width middle part, broker/video/
    hls.py), read without the cluster's key."""
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(segment_url).query)["SessionToken"][0]
    slot = token.split(".")[1]
    return int.from_bytes(base64.urlsafe_b64decode(slot + "=" * (-len(slot) % 4)), "big")


def _complete_tags(chunk: bytes) -> dict[str, str] | None:
    """The chunk's tags once it arrived whole (its Tags element, last, ends with the
    continuation token), else None."""
    try:
        tags = read_tags(chunk)
    except (AssertionError, ValueError):
        return None
    return tags if "AWS_KINESISVIDEO_CONTINUATION_TOKEN" in tags else None


def run(seconds: int, *, in_phase: bool = False) -> dict[str, Any]:
    header, clusters = camera_clip(min(seconds, 10))
    clip_bits = sum(len(c) for c in clusters) * 8
    bitrate = clip_bits / len(clusters)
    _say(f"camera clip: {len(clusters)} fragments, {bitrate / 1e6:.2f} Mbit/s")
    report: dict[str, Any] = {"cpus": os.cpu_count(), "clip_mbit_s": bitrate / 1e6}
    with (
        tempfile.TemporaryDirectory(prefix="shoal-bench-video-") as tmp,
        shoal_node(Path(tmp)) as node,
    ):
        kvs = boto3.client(
            "kinesisvideo",
            endpoint_url=node.http_url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
        )
        names = ["fast"] + [f"paced-{i}" for i in range(STREAMS_PACED)]
        for name in names:
            kvs.create_stream(StreamName=name, DataRetentionInHours=24)

        count = max(10, seconds * 4)
        fast = asyncio.run(upload(node.http_url, "fast", header, clusters, count=count, pace_s=0))
        fast_p50, fast_p99 = quantiles(fast.latencies_ms or [])
        report["single"] = {
            "mbit_s": fast.bytes_sent * 8 / fast.seconds / 1e6,
            "fragments": fast.fragments,
            "persisted": fast.persisted,
            "persist_p50_ms": fast_p50,
            "persist_p99_ms": fast_p99,
        }
        payloads = [retimed(clusters[i % len(clusters)], i * 1000) for i in range(count)]
        kinesis_s = kinesis_baseline(node.grpc_target, payloads)
        rocks_s = rocksdict_baseline(Path(tmp) / "rocks", payloads)
        total_bits = sum(len(p) for p in payloads) * 8
        report["baseline"] = {
            "kinesis_put_record_mbit_s": total_bits / kinesis_s / 1e6,
            "rocksdict_durable_mbit_s": total_bits / rocks_s / 1e6,
        }

        reader = LiveReader(node.http_url, "paced-0")
        reader.thread.start()
        hls_watcher = LiveHlsWatcher(node.http_url, "paced-1")
        hls_watcher.thread.start()
        time.sleep(1.0)  # the reader is at the live edge before the first fragment

        async def paced() -> list[Upload]:
            return list(
                await asyncio.gather(
                    *(
                        upload(
                            node.http_url,
                            f"paced-{i}",
                            header,
                            clusters,
                            count=seconds,
                            pace_s=1.0,
                            # Cameras are not phase-locked: their fragments end at different
                            # moments of each second (`--in-phase` sends all at once).
                            phase_s=0.0 if in_phase else i / STREAMS_PACED,
                        )
                        for i in range(STREAMS_PACED)
                    )
                )
            )

        uploads = asyncio.run(paced())
        reader.thread.join(timeout=10)
        time.sleep(2 * LiveHlsWatcher.POLL_S)  # the last fragment's listing
        hls_watcher.stop.set()
        hls_watcher.thread.join(timeout=10)
        latencies = [x for u in uploads for x in (u.latencies_ms or [])]
        p50, p99 = quantiles(latencies)
        sustained = all(u.persisted == u.fragments and not u.errors for u in uploads)
        late = max(latencies, default=0.0) > 1000
        report["paced"] = {
            "streams": STREAMS_PACED,
            "in_phase": in_phase,
            "mbit_s_each": uploads[0].bytes_sent * 8 / seconds / 1e6,
            "sustained": sustained and not late,
            "persist_p50_ms": p50,
            "persist_p99_ms": p99,
            "goal_met": sustained and not late and p99 < 500,
        }
        # Live edge: PERSISTED at the producer -> chunk at the GetMedia reader, matched by
        # fragment number.
        persisted_at = uploads[0].persisted_at or {}
        delays = [
            (arrived - persisted_at[number]) * 1000
            for number, arrived in reader.arrived.items()
            if number in persisted_at
        ]
        d50, d99 = quantiles(delays)
        report["live_edge"] = {"fragments": len(delays), "p50_ms": d50, "p99_ms": d99}
        # PERSISTED at the producer -> segment first listed in the LIVE HLS playlist, matched
        # by log offset (a fragment number encodes its first record's offset).
        hls_persisted = {
            decode_sequence_number(number).offset: at
            for number, at in (uploads[1].persisted_at or {}).items()
            if number
        }
        hls_delays = [
            (listed - hls_persisted[offset]) * 1000
            for offset, listed in hls_watcher.listed.items()
            if offset in hls_persisted
        ]
        h50, h99 = quantiles(hls_delays)
        report["live_hls"] = {"fragments": len(hls_delays), "p50_ms": h50, "p99_ms": h99}
    return report


def format_report(report: dict[str, Any]) -> str:
    single, base, paced, live = (
        report["single"],
        report["baseline"],
        report["paced"],
        report["live_edge"],
    )
    return "\n".join(
        [
            f"PutMedia on one node ({report['cpus']} CPUs; camera clip "
            f"{report['clip_mbit_s']:.2f} Mbit/s, 1 s fragments)",
            f"  one stream, unpaced:    {single['mbit_s']:8.1f} Mbit/s  "
            f"({single['persisted']}/{single['fragments']} persisted; persist p50 "
            f"{single['persist_p50_ms']:.1f} ms, p99 {single['persist_p99_ms']:.1f} ms)",
            f"    same bytes as PutRecord (gRPC, 1 shard): {base['kinesis_put_record_mbit_s']:8.1f}"
            f" Mbit/s  -> PutMedia at {single['mbit_s'] / base['kinesis_put_record_mbit_s']:.2f}x",
            f"    same bytes as durable rocksdict writes:  {base['rocksdict_durable_mbit_s']:8.1f}"
            f" Mbit/s  -> PutMedia at {single['mbit_s'] / base['rocksdict_durable_mbit_s']:.2f}x",
            f"  {paced['streams']} streams at {paced['mbit_s_each']:.2f} Mbit/s each"
            f"{' (in phase)' if paced['in_phase'] else ''}: sustained "
            f"{'yes' if paced['sustained'] else 'NO'}; persist p50 "
            f"{paced['persist_p50_ms']:.1f} ms, p99 {paced['persist_p99_ms']:.1f} ms "
            "(goal p99 < 500 ms: "
            f"{'met' if paced['goal_met'] else 'NOT met'})",
            f"  live edge, PERSISTED -> GetMedia reader: p50 {live['p50_ms']:.1f} ms, p99 "
            f"{live['p99_ms']:.1f} ms over {live['fragments']} fragments",
            f"  live edge, PERSISTED -> LIVE HLS playlist (polled every 50 ms): p50 "
            f"{report['live_hls']['p50_ms']:.1f} ms, p99 {report['live_hls']['p99_ms']:.1f} ms "
            f"over {report['live_hls']['fragments']} fragments",
        ]
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench --only video")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--in-phase",
        action="store_true",
        help="the 10 paced streams send their fragments at the same instant (worst case)",
    )
    args = parser.parse_args(argv)
    report = run(max(3, args.seconds), in_phase=args.in_phase)
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0
