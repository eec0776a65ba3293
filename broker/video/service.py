"""The Kinesis Video Streams service of one node: the control plane (`control.VideoControl`)
and the media operations (PutMedia, GetMedia, ListFragments, GetMediaForFragmentList), with
the stream lookups and the archive they share. Both doors call this; neither holds logic.

Built once by `node.py`; loop-bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from broker.caller import Caller
from broker.clock import Clock
from broker.errors import ErrorCode, ShoalError
from broker.meta.frontend import MetadataFrontend
from broker.meta.video_table import VideoStreamMeta, VideoStreamStatus
from broker.service.in_process import LocalKinesis
from broker.video import clips, media, messages
from broker.video.archive import FragmentArchive
from broker.video.channels import SIGNALING_OPERATIONS
from broker.video.control import VideoControl, VideoSettings
from broker.video.hls_service import HlsService
from broker.video.probe import VideoProbe
from broker.video.put_media import PutMediaRequest, PutMediaSession, TimecodeType

MEDIA_OPERATIONS = frozenset({"GetMedia"})
ARCHIVED_MEDIA_OPERATIONS = frozenset(
    {
        "ListFragments",
        "GetMediaForFragmentList",
        "GetHLSStreamingSessionURL",
        "GetClip",
        "GetImages",
        "GetDASHStreamingSessionURL",
    }
)


class VideoService:
    def __init__(
        self,
        *,
        metadata: MetadataFrontend,
        clock: Clock,
        kinesis: LocalKinesis,
        settings: VideoSettings,
        probe: VideoProbe | None = None,
    ) -> None:
        self._probe = probe
        self._metadata = metadata
        self._clock = clock
        self.control = VideoControl(metadata=metadata, clock=clock, settings=settings)
        self.archive = FragmentArchive(kinesis, metadata)
        self.hls = HlsService(
            archive=self.archive,
            metadata=metadata,
            clock=clock,
            data_endpoint=settings.data_endpoint,
        )

    async def call(self, operation: str, request: Mapping[str, Any], caller: Caller) -> Any:
        """A control-plane operation, ListFragments or GetHLSStreamingSessionURL (a response
        dict), GetMedia or
        GetMediaForFragmentList (an async iterator of body bytes)."""
        if operation == "DeleteStream":
            deleted = self.control.find(caller, name=None, arn=request["StreamARN"])
            response = await self.control.call(operation, request, caller)
            await self.archive.delete(deleted)  # its fragments go with it
            return response
        if operation == "UpdateDataRetention":
            response = await self.control.call(operation, request, caller)
            await self.archive.follow_retention(self.stream(request, caller))
            return response
        if operation in VideoControl.OPERATIONS:
            return await self.control.call(operation, request, caller)
        if operation in SIGNALING_OPERATIONS:
            return await self.control.channels.signaling_call(operation, request, caller)
        stream = self.stream(request, caller)
        if operation == "GetMedia":
            chunks = media.get_media(self.archive, stream, request["StartSelector"])
            return self._counted(stream.name, chunks)
        if operation == "ListFragments":
            self._require_retention(stream)
            return await media.list_fragments(self.archive, stream, request)
        if operation == "GetMediaForFragmentList":
            self._require_retention(stream)
            listed = await media.get_media_for_fragment_list(
                self.archive, stream, list(request["Fragments"])
            )
            return self._counted(stream.name, listed)
        if operation == "GetClip":
            self._require_retention(stream)
            clip = await clips.get_clip(self.archive, stream, request["ClipFragmentSelector"])
            return self._counted(stream.name, clip)
        if operation == "GetImages":
            self._require_retention(stream)
            return await clips.get_images(self.archive, stream, request)
        if operation == "GetDASHStreamingSessionURL":
            url = await self.hls.session_url(stream, request, dash=True)
            return {"DASHStreamingSessionURL": url}
        if operation == "GetHLSStreamingSessionURL":
            url = await self.hls.session_url(stream, request)
            return {"HLSStreamingSessionURL": url}
        raise ShoalError(ErrorCode.UNKNOWN_OPERATION)

    async def _counted(self, stream: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks` (one fragment each), counted as they are sent."""
        async for chunk in chunks:
            if self._probe is not None:
                self._probe.sent(stream, fragments=1, count=len(chunk))
            yield chunk

    def stream(self, request: Mapping[str, Any], caller: Caller) -> VideoStreamMeta:
        return self.control.find(
            caller, name=request.get("StreamName"), arn=request.get("StreamARN")
        )

    def _require_retention(self, stream: VideoStreamMeta) -> None:
        if stream.data_retention_hours == 0:
            raise ShoalError(ErrorCode.NO_DATA_RETENTION)

    def put_media(
        self,
        caller: Caller,
        *,
        stream_name: str | None,
        stream_arn: str | None,
        timecode_type: str | None,
        producer_start: str | None,
    ) -> PutMediaSession:
        """A PutMedia session, once its headers checked out (errors raised before any byte
        of the answer is sent)."""
        stream = self.control.find(caller, name=stream_name, arn=stream_arn)
        now_ms = self._clock.wall_ms()
        if stream.status(now_ms=now_ms) is VideoStreamStatus.CREATING:
            raise ShoalError(
                ErrorCode.RESOURCE_IN_USE, messages.stream_still_creating(name=stream.name)
            )
        try:
            kind = TimecodeType(timecode_type or "RELATIVE")
        except ValueError as error:
            raise ShoalError(
                ErrorCode.INVALID_ARGUMENT,
                messages.timecode_type_invalid(timecode_type=timecode_type),
            ) from error
        start_ms = now_ms
        if producer_start is not None:
            try:
                start_ms = round(float(producer_start) * 1000)
            except ValueError as error:
                raise ShoalError(
                    ErrorCode.INVALID_ARGUMENT,
                    messages.producer_start_not_seconds(value=producer_start),
                ) from error
            if start_ms < 0:
                raise ShoalError(ErrorCode.INVALID_ARGUMENT, messages.PRODUCER_START_NEGATIVE)
        arn = stream.arn
        return PutMediaSession(
            PutMediaRequest(stream=stream, timecode_type=kind, producer_start_ms=start_ms),
            archive=self.archive,
            wall_ms=self._clock.wall_ms,
            stream_exists=lambda: self._metadata.image().video.by_arn(arn) is not None,
            probe=self._probe,
        )


class VideoControlPlane:
    """The control-plane operations of a `VideoService` as an `OperationService` (for the
    gRPC door's generic handler): DeleteStream drops the stream's fragments too."""

    def __init__(self, video: VideoService, *, default_caller: Caller) -> None:
        self._video = video
        self._default_caller = default_caller

    @property
    def operations(self) -> frozenset[str]:
        return VideoControl.OPERATIONS

    async def call(
        self, operation: str, request: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]:
        response: dict[str, Any] = await self._video.call(
            operation, request, caller or self._default_caller
        )
        return response
