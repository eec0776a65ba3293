"""What the metadata layer reports to the node's metrics (the probe protocol this layer owns;
`metrics.catalog.AutoscalerProbe` implements it, node.py connects the two)."""

from __future__ import annotations

from typing import Literal, Protocol

AutoscalerAction = Literal["split", "merge", "hot_key", "refused"]


class AutoscalerProbe(Protocol):
    """The on-demand autoscaler's ceiling and its decisions."""

    def ceiling(self, max_open_shards: int) -> None:
        """The configured most open shards an ON_DEMAND stream is scaled to."""
        ...

    def acted(self, stream: str, action: AutoscalerAction) -> None:
        """One decision proposed: a split or merge the metadata applied, a hot-key notice,
        or a split or merge it refused."""
        ...
