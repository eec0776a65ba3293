"""KDA's HOTSPOTS: the dense regions of a stream's most recent rows.

`HOTSPOTS(CURSOR(SELECT STREAM ...), windowSize, scanRadius, minimumNumberOfPointsInAHotspot)`
as the SQL reference describes it: each row's numeric columns (as RANDOM_CUT_FOREST's: DECIMAL
refused, NULL as 0) are a point; the last `windowSize` rows (100 to 1,000) form a sliding
window; `scanRadius` is DBSCAN's epsilon (a point's neighbours are the window's points within
that Euclidean distance) and `minimumNumberOfPointsInAHotspot` (2 to windowSize) its minimum
points: a point with at least that many points within the radius (itself included) is a core
point, and a hotspot is a set of core points linked through each other's neighbourhoods, with
the non-core points within the radius of one of them. Each row gets HOTSPOTS_RESULT, the JSON
of every hotspot of the window as of that row, densest first:

    {"hotspots": [{"density": d, "maxValues": [...], "minValues": [...]}, ...]}

`minValues` / `maxValues` are the hotspot's bounds per numeric column, and `density` its
number of rows divided by its size: the volume of those bounds, each side at least
`scanRadius` wide (a hotspot of equal points still has a size).

Kept incrementally: each point's neighbours are found once, when it enters the window (a scan
of the window), and forgotten when it leaves; the hotspots are the components of the core
points, found per row. Pure: no I/O, deterministic.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.analytics import messages
from broker.analytics.anomaly import AnomalyError, numeric_columns

HOTSPOTS_RESULT = "HOTSPOTS_RESULT"
WINDOW_SIZE_MIN, WINDOW_SIZE_MAX = 100, 1_000


@dataclass(frozen=True, slots=True, kw_only=True)
class HotspotParameters:
    window_size: int
    scan_radius: float
    minimum_points: int


def parameters(values: Sequence[int | float | bool]) -> HotspotParameters:
    """The parameters after the CURSOR, checked against the reference's bounds."""
    if len(values) != 3:
        raise AnomalyError(messages.HOTSPOTS_ARGUMENTS)
    window_size, scan_radius, minimum_points = values
    if (
        isinstance(window_size, bool)
        or not isinstance(window_size, int)
        or not WINDOW_SIZE_MIN <= window_size <= WINDOW_SIZE_MAX
    ):
        raise AnomalyError(
            messages.hotspots_window_size(lowest=WINDOW_SIZE_MIN, highest=WINDOW_SIZE_MAX)
        )
    if isinstance(scan_radius, bool) or not scan_radius > 0:
        raise AnomalyError(messages.HOTSPOTS_SCAN_RADIUS)
    if (
        isinstance(minimum_points, bool)
        or not isinstance(minimum_points, int)
        or not 2 <= minimum_points <= window_size
    ):
        raise AnomalyError(messages.HOTSPOTS_MINIMUM_POINTS)
    return HotspotParameters(
        window_size=window_size, scan_radius=float(scan_radius), minimum_points=minimum_points
    )


class HotspotDetector:
    """One pump's window: `score` each row's values (the cursor's columns, in order)."""

    def __init__(self, settings: HotspotParameters, columns: Sequence[tuple[str, str]]) -> None:
        self._settings = settings
        self._positions = numeric_columns(columns)
        self._window: deque[int] = deque()  # the points' ids, oldest first
        self._points: dict[int, tuple[float, ...]] = {}
        self._neighbours: dict[int, set[int]] = {}
        self._next_id = 0

    def score(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """The row's HOTSPOTS_RESULT, after the row joined the window."""
        point = tuple(float(values[i]) if values[i] is not None else 0.0 for i in self._positions)
        if len(self._window) == self._settings.window_size:
            self._forget(self._window.popleft())
        radius_squared = self._settings.scan_radius**2
        new = self._next_id
        self._next_id += 1
        near = {
            other
            for other, position in self._points.items()
            if sum((a - b) ** 2 for a, b in zip(point, position, strict=True)) <= radius_squared
        }
        for other in near:
            self._neighbours[other].add(new)
        self._neighbours[new] = near
        self._points[new] = point
        self._window.append(new)
        return (json.dumps({"hotspots": self._hotspots()}, separators=(",", ":")),)

    def _forget(self, old: int) -> None:
        for other in self._neighbours.pop(old):
            self._neighbours[other].discard(old)
        del self._points[old]

    def _hotspots(self) -> list[dict[str, Any]]:
        minimum = self._settings.minimum_points
        core = {p for p, near in self._neighbours.items() if len(near) + 1 >= minimum}
        assigned: set[int] = set()
        found: list[dict[str, Any]] = []
        for start in sorted(core):
            if start in assigned:
                continue
            members = {start}
            assigned.add(start)
            frontier = [start]
            while frontier:
                for other in self._neighbours[frontier.pop()]:
                    if other in assigned:
                        continue
                    assigned.add(other)
                    members.add(other)
                    if other in core:  # border points join, but do not extend, a hotspot
                        frontier.append(other)
            found.append(self._describe(members))
        found.sort(key=lambda hotspot: -float(hotspot["density"]))
        return found

    def _describe(self, members: set[int]) -> dict[str, Any]:
        points = [self._points[member] for member in members]
        lows = [min(values) for values in zip(*points, strict=True)]
        highs = [max(values) for values in zip(*points, strict=True)]
        radius = self._settings.scan_radius
        size = math.prod(max(high - low, radius) for low, high in zip(lows, highs, strict=True))
        return {"density": len(points) / size, "maxValues": highs, "minValues": lows}
