"""Fault points in the style of FoundationDB's BUGGIFY: rare paths made common under test.

Production code asks `buggify("name")` where a rare event can happen on its own (an ack lost
on the wire, a metadata image that arrives late, a slow fsync, a leader change in the middle
of a seal) and, when it answers True, takes that path on purpose. In production the answer
is always False (the points are disabled and cost one attribute read); the simulator
(`broker/sim`) enables them with a seeded random stream, so a seed replays its faults
exactly, and each point fires, when enabled, with its own probability drawn once per run
(FoundationDB's "some points are hot in this run").

Pure: no I/O, no clock. Not thread-safe (the simulator runs on one thread; production never
enables it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# The fault points, with what taking them means. A point not listed here is a typo.
POINTS: dict[str, str] = {
    "driver.drop_ack": "an AppendAck the driver sends is lost (the leader resends)",
    "driver.step_late": (
        "messages that arrive while a turn waits for its fsync are stepped late, sometimes "
        "only by the next turn"
    ),
    "driver.hw_after_fsync": (
        "a turn's high watermarks written beside its appends land after their fsync (they "
        "ride the next one)"
    ),
    "driver.stale_image": "a turn keeps the previous metadata image (a late image delivery)",
    "disk.slow_fsync": "a group commit's fsync takes much longer than usual",
    "node.crash_before_fsync": (
        "a node crashes after sending a turn's Appends, before their fsync (its followers "
        "may hold records it lost)"
    ),
    "controller.change_during_seal": "a leader change starts while a shard is sealing",
}


@dataclass(slots=True)
class _Buggify:
    rng: random.Random | None = None  # None: disabled (production)
    hot: dict[str, float] = field(default_factory=dict)  # point -> probability this run
    fired: dict[str, int] = field(default_factory=dict)


_STATE = _Buggify()


def buggify(point: str, *, rate: float = 0.05) -> bool:
    """Whether to take the rare path at `point` now (always False unless enabled). `rate`:
    how often the point fires in a run where it is hot (FoundationDB's BUGGIFY_WITH_PROB),
    for a point asked so seldom (once a seal) that the usual rate would hardly ever fire."""
    state = _STATE
    if state.rng is None:
        return False
    assert point in POINTS, point
    probability = state.hot.get(point)
    if probability is None:
        # Like FoundationDB: a quarter of the points are active in a run, each at its own rate.
        probability = state.rng.choice((0.0, 0.0, 0.0, rate))
        state.hot[point] = probability
    if probability and state.rng.random() < probability:
        state.fired[point] = state.fired.get(point, 0) + 1
        return True
    return False


def enable(rng: random.Random) -> None:
    """Turns the fault points on, drawing from `rng` (the simulator's seeded stream)."""
    _STATE.rng = rng
    _STATE.hot = {}
    _STATE.fired = {}


def disable() -> None:
    """Back to production behaviour (every point False)."""
    _STATE.rng = None
    _STATE.hot = {}


def fired() -> dict[str, int]:
    """How often each point fired since `enable` (for run summaries)."""
    return dict(_STATE.fired)
