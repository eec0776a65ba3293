"""What Kinesis Video Streams reports to the node's metrics (the probe protocol this layer
owns; `metrics.video.VideoProbe` implements it, node.py connects the two)."""

from __future__ import annotations

from typing import Protocol


class VideoProbe(Protocol):
    """PutMedia sessions and fragments, and what GetMedia sent."""

    def received_bytes(self, stream: str, count: int) -> None: ...

    def received_fragment(self, stream: str) -> None: ...

    def persisted(self, seconds: float) -> None: ...

    def error_ack(self, stream: str, error: str) -> None: ...

    def session_opened(self) -> None: ...

    def session_closed(self) -> None: ...

    def sent(self, stream: str, *, fragments: int, count: int) -> None: ...
