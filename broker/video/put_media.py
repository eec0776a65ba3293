"""One PutMedia session: a producer's MKV body in, acknowledgements out.

`PutMediaSession.run(body)` reads the body as it arrives, cuts it into fragments
(`mkv.MkvSplitter`) and yields the acknowledgements in AWS's order: BUFFERING when a fragment
starts, RECEIVED when it is whole, PERSISTED once the archive appended it (durable on a
majority); an ERROR (with AWS's id) ends the session. Reading and persisting overlap: while
fragment N is being replicated, fragment N+1 is already being received, up to
`_PERSIST_QUEUE_MAX` fragments ahead (then reading waits: backpressure on the producer); the
fragments waiting when an append finishes go together in the next one. While
the producer sends nothing, IDLE is sent every `limits.video_ack_idle_interval_ms`, and after
`limits.video_put_media_idle_ms` of silence the session ends, as on AWS.

A stream with no data retention (`DataRetentionInHours` 0) stores nothing: its fragments get
BUFFERING and RECEIVED, never PERSISTED (AWS: "You get this acknowledgement if you configured
the stream to persist the data").

Loop-bound; one instance per request.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

from broker import limits
from broker.errors import ErrorCode, ShoalError
from broker.meta.video_table import VideoStreamMeta
from broker.video.acks import Ack, AckErrorId, AckEventType
from broker.video.archive import FragmentArchive, NewFragment
from broker.video.fragment_records import FragmentMetadata
from broker.video.mkv import FragmentStarted, MkvError, MkvFragment, MkvSplitter
from broker.video.probe import VideoProbe

log = logging.getLogger(__name__)

_PERSIST_QUEUE_MAX = 8
_PERSIST_BATCH_MAX = 8  # fragments in one append
# A received fragment waiting to be persisted: its server timestamp and when it was whole.
_Received = tuple[MkvFragment, int, float]


class TimecodeType(enum.Enum):
    ABSOLUTE = "ABSOLUTE"
    RELATIVE = "RELATIVE"


@dataclass(frozen=True, slots=True, kw_only=True)
class PutMediaRequest:
    stream: VideoStreamMeta
    timecode_type: TimecodeType
    producer_start_ms: int  # for RELATIVE timecodes; the session's start when not given


class _Stop(Exception):
    """Ends the session after an ERROR acknowledgement."""


class PutMediaSession:
    def __init__(
        self,
        request: PutMediaRequest,
        *,
        archive: FragmentArchive,
        wall_ms: Callable[[], int],
        stream_exists: Callable[[], bool],
        probe: VideoProbe | None = None,
    ) -> None:
        self._request = request
        self._archive = archive
        self._wall_ms = wall_ms
        self._stream_exists = stream_exists
        self._session_id = uuid.uuid4()
        self._acks: asyncio.Queue[Ack | None] = asyncio.Queue()
        self._read_error: Ack | None = None
        self._probe = probe
        self._stream_name = request.stream.name
        self.persisted = 0

    async def run(self, body: AsyncIterator[bytes]) -> AsyncGenerator[Ack, None]:
        persist_queue: asyncio.Queue[_Received | None] = asyncio.Queue(_PERSIST_QUEUE_MAX)
        reader = asyncio.create_task(self._read(body, persist_queue))
        persister = asyncio.create_task(self._persist(persist_queue))
        idle_s = limits.video_ack_idle_interval_ms / 1000
        if self._probe is not None:
            self._probe.session_opened()
        try:
            while True:  # ends with the None the persister puts last, or an ERROR
                try:
                    ack = await asyncio.wait_for(self._acks.get(), timeout=idle_s)
                except TimeoutError:
                    yield Ack(event_type=AckEventType.IDLE)
                    continue
                if ack is None:
                    return
                yield ack
                if ack.event_type is AckEventType.ERROR:
                    if self._probe is not None:
                        assert ack.error_id is not None
                        self._probe.error_ack(self._stream_name, ack.error_id.name)
                    return
        finally:
            if self._probe is not None:
                self._probe.session_closed()
            for task in (reader, persister):
                task.cancel()
            await asyncio.gather(reader, persister, return_exceptions=True)

    def _error(self, error_id: AckErrorId, timecode_ms: int | None, message: str) -> None:
        self._acks.put_nowait(_error_ack(error_id, timecode_ms, message))

    def _reading_failed(self, error_id: AckErrorId, message: str) -> None:
        """The body cannot be read further: the fragments already received are still
        persisted (and acknowledged) first, then the ERROR ends the session."""
        self._read_error = _error_ack(error_id, None, message)

    async def _read(
        self,
        body: AsyncIterator[bytes],
        persist_queue: asyncio.Queue[_Received | None],
    ) -> None:
        splitter = MkvSplitter()
        started_ms: int | None = None
        silence_s = limits.video_put_media_idle_ms / 1000
        iterator = aiter(body)
        try:
            while True:  # ends with the body, an error or the producer's silence
                try:
                    chunk = await asyncio.wait_for(anext(iterator), timeout=silence_s)
                except StopAsyncIteration:
                    events = splitter.finish()
                    done = True
                except TimeoutError:
                    self._reading_failed(AckErrorId.STREAM_READ_ERROR, "No data for 30 seconds.")
                    break
                else:
                    events = splitter.feed(chunk)
                    done = False
                    if self._probe is not None:
                        self._probe.received_bytes(self._stream_name, len(chunk))
                for event in events:
                    if isinstance(event, FragmentStarted):
                        started_ms = self._wall_ms()
                        self._acks.put_nowait(
                            Ack(event_type=AckEventType.BUFFERING, timecode_ms=event.timecode_ms)
                        )
                        continue
                    self._acks.put_nowait(
                        Ack(event_type=AckEventType.RECEIVED, timecode_ms=event.timecode_ms)
                    )
                    if self._probe is not None:
                        self._probe.received_fragment(self._stream_name)
                    server_ms = started_ms if started_ms is not None else self._wall_ms()
                    await persist_queue.put((event, server_ms, time.perf_counter()))
                if done:
                    break
        except MkvError as error:
            self._reading_failed(error.error_id, error.message)
        except Exception:
            log.exception("put_media_read_failed")
            self._reading_failed(AckErrorId.STREAM_READ_ERROR, "Error reading the data stream.")
        await persist_queue.put(None)

    async def _persist(self, persist_queue: asyncio.Queue[_Received | None]) -> None:
        """Appends what the reader received, in order: everything waiting goes in one append
        (up to `_PERSIST_BATCH_MAX` fragments), then its PERSISTED acknowledgements."""
        ordinal = 0
        while True:  # ends with the reader's None
            waiting = [await persist_queue.get()]
            while waiting[-1] is not None and len(waiting) < _PERSIST_BATCH_MAX:
                if persist_queue.empty():
                    break
                waiting.append(persist_queue.get_nowait())
            received = [item for item in waiting if item is not None]
            if received and self._request.stream.data_retention_hours > 0:
                if not await self._append(received, first_ordinal=ordinal):
                    return
                ordinal += len(received)
            if waiting[-1] is None:
                if self._read_error is not None:
                    self._acks.put_nowait(self._read_error)
                self._acks.put_nowait(None)
                return

    async def _append(self, received: list[_Received], *, first_ordinal: int) -> bool:
        """Appends `received` and acknowledges each durable fragment; False after an ERROR.
        (A stream with no retention stores nothing and is never called here.)"""
        request = self._request
        fragments = []
        for offset, (fragment, server_ms, _) in enumerate(received):
            producer_ms = fragment.timecode_ms
            if request.timecode_type is TimecodeType.RELATIVE:
                producer_ms += request.producer_start_ms
            fragments.append(
                NewFragment(
                    session_id=self._session_id,
                    ordinal=first_ordinal + offset,
                    metadata=FragmentMetadata(
                        producer_timestamp_ms=producer_ms,
                        server_timestamp_ms=server_ms,
                        timecode_ms=fragment.timecode_ms,
                        duration_ms=fragment.duration_ms,
                        frame_count=fragment.frame_count,
                        notification=fragment.notification,
                    ),
                    header=fragment.header,
                    cluster=fragment.cluster,
                )
            )
        try:
            result = await self._archive.append(request.stream, fragments)
            error = result.error
            numbers = result.numbers
        except ShoalError as raised:
            error, numbers = raised, ()
        now = time.perf_counter()
        for (fragment, _, received_at), number in zip(received, numbers, strict=False):
            self.persisted += 1
            if self._probe is not None:
                self._probe.persisted(now - received_at)
            self._acks.put_nowait(
                Ack(
                    event_type=AckEventType.PERSISTED,
                    timecode_ms=fragment.timecode_ms,
                    fragment_number=number,
                )
            )
        if error is None:
            return True
        failed = received[len(numbers)][0]
        deleted = error.code is ErrorCode.RESOURCE_NOT_FOUND or not self._stream_exists()
        error_id = AckErrorId.STREAM_NOT_ACTIVE if deleted else AckErrorId.ARCHIVAL_ERROR
        self._error(error_id, failed.timecode_ms, error.message)
        return False


def _error_ack(error_id: AckErrorId, timecode_ms: int | None, message: str) -> Ack:
    return Ack(
        event_type=AckEventType.ERROR,
        timecode_ms=timecode_ms,
        error_id=error_id,
        error_message=message,
    )
