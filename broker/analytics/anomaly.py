"""KDA's RANDOM_CUT_FOREST and RANDOM_CUT_FOREST_WITH_EXPLANATION over a stream's rows.

Each pump that reads `TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM ...), ...))` has one
`AnomalyDetector`: a random cut forest (AWS's own Rust implementation, through `krcf`) fed the
cursor's numeric columns of every row, in order. Each row is scored before the forest learns it
(the score says how far it is from what the stream showed lately), so the first rows, seen
before the forest holds enough of a sample, score 0, as KDA's do.

As the SQL reference describes them:

- numberOfTrees (default 100), subSampleSize (default 256: the points each tree keeps),
  timeDecay (default 100,000: the forest forgets with a rate of 1/timeDecay per row),
  shingleSize (default 1: a point is the last n rows' numeric columns together);
- only numeric columns (DOUBLE, REAL/FLOAT, INTEGER, BIGINT, SMALLINT, TINYINT) count; other
  columns pass through unscored; DECIMAL is refused (the reference says to cast it to DOUBLE);
  a NULL numeric value counts as 0;
- ANOMALY_SCORE is a DOUBLE; RANDOM_CUT_FOREST_WITH_EXPLANATION adds ANOMALY_EXPLANATION, a JSON
  object with one entry per numeric column: its ATTRIBUTION_SCORE (the columns' scores sum to
  the anomaly score) and, with withDirectionality, its DIRECTION (HIGH or LOW: the side of the
  recent values the column's value lies on, the larger of the forest's two directed
  attributions) and STRENGTH (how much larger: the difference of the two), each number as a
  string with four decimals. With a shingle, a column's attribution is the sum over the
  shingle's rows.

The model lives in memory, from the application's start (KDA: "the algorithm does not use
older records in the stream ... nor statistics from previous executions"). Deterministic for a
given seed (the runner seeds each pump's forest from its name).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import krcf

from broker.analytics import messages

NUMERIC_TYPES = ("DOUBLE", "FLOAT", "REAL", "INTEGER", "BIGINT", "SMALLINT", "TINYINT")
ANOMALY_SCORE = "ANOMALY_SCORE"
ANOMALY_EXPLANATION = "ANOMALY_EXPLANATION"
# The SQL reference's bounds of each parameter (name, default, lowest, highest).
PARAMETERS = (
    ("numberOfTrees", 100, 1, 1_000),
    ("subSampleSize", 256, 10, 1_000),
    ("timeDecay", 100_000, 1, 2**31 - 1),
    ("shingleSize", 1, 1, 30),
)


class AnomalyError(ValueError):
    """Arguments or columns the function cannot run with (the message says why)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ForestParameters:
    number_of_trees: int = 100
    sub_sample_size: int = 256
    time_decay: int = 100_000
    shingle_size: int = 1
    explain: bool = False  # RANDOM_CUT_FOREST_WITH_EXPLANATION
    with_directionality: bool = False


def parameters(function: str, values: Sequence[int | float | bool]) -> ForestParameters:
    """The parameters of a call after its CURSOR, checked against the reference's bounds."""
    explain = function == "RANDOM_CUT_FOREST_WITH_EXPLANATION"
    most = len(PARAMETERS) + (1 if explain else 0)
    if len(values) > most:
        raise AnomalyError(messages.anomaly_too_many_arguments(function=function, most=most))
    numbers: list[int] = []
    for index, (name, default, lowest, highest) in enumerate(PARAMETERS):
        value = values[index] if index < len(values) else default
        if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
            raise AnomalyError(
                messages.anomaly_integer_range(name=name, lowest=lowest, highest=highest)
            )
        numbers.append(value)
    directionality = values[len(PARAMETERS)] if len(values) > len(PARAMETERS) else False
    if not isinstance(directionality, bool):
        raise AnomalyError(messages.ANOMALY_DIRECTIONALITY)
    return ForestParameters(
        number_of_trees=numbers[0],
        sub_sample_size=numbers[1],
        time_decay=numbers[2],
        shingle_size=numbers[3],
        explain=explain,
        with_directionality=directionality,
    )


def numeric_columns(columns: Sequence[tuple[str, str]]) -> list[int]:
    """The positions of the numeric columns among (name, engine type) pairs."""
    positions: list[int] = []
    for index, (name, sql_type) in enumerate(columns):
        base = sql_type.split("(")[0].upper()
        if base == "DECIMAL":
            raise AnomalyError(messages.anomaly_decimal_column(name=name))
        if base in NUMERIC_TYPES:
            positions.append(index)
    if not positions:
        raise AnomalyError(messages.ANOMALY_NO_NUMERIC_COLUMN)
    return positions


class AnomalyDetector:
    """One pump's forest: `score` each row's values (the cursor's columns, in order)."""

    def __init__(
        self,
        settings: ForestParameters,
        columns: Sequence[tuple[str, str]],
        *,
        seed: int,
    ) -> None:
        self._settings = settings
        self._positions = numeric_columns(columns)
        self._names = [columns[index][0] for index in self._positions]
        self._shingle: deque[list[float]] = deque(maxlen=settings.shingle_size)
        options: dict[str, Any] = {
            "dimensions": len(self._positions) * settings.shingle_size,
            "shingle_size": 1,  # the shingle is built here: the forest sees whole points
            "num_trees": settings.number_of_trees,
            "sample_size": settings.sub_sample_size,
            "lambda": 1.0 / settings.time_decay,  # a key no Python TypedDict can declare
            "random_seed": seed,
        }
        self._forest = krcf.RandomCutForest(cast("krcf.RandomCutForestOptions", options))

    def score(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """The row's ANOMALY_SCORE (and ANOMALY_EXPLANATION, for the _WITH_EXPLANATION
        function), then the forest learns the row."""
        self._shingle.append(
            [float(values[i]) if values[i] is not None else 0.0 for i in self._positions]
        )
        explain = self._settings.explain
        if len(self._shingle) < self._settings.shingle_size:
            return (0.0, self._explanation(None)) if explain else (0.0,)
        point = [value for row in self._shingle for value in row]
        score = float(self._forest.score(point))
        explanation = self._explanation(self._forest.attribution(point)) if explain else None
        self._forest.update(point)
        return (score, explanation) if explain else (score,)

    def _explanation(self, attribution: Any) -> str:
        width = len(self._names)
        explained: dict[str, dict[str, str]] = {}
        for column, name in enumerate(self._names):
            high = low = 0.0
            if attribution is not None:
                high = sum(attribution["high"][column::width])
                low = sum(attribution["low"][column::width])
            entry: dict[str, str] = {}
            if self._settings.with_directionality:
                entry["DIRECTION"] = "HIGH" if high >= low else "LOW"
                entry["STRENGTH"] = f"{abs(high - low):.4f}"
            entry["ATTRIBUTION_SCORE"] = f"{high + low:.4f}"
            explained[name] = entry
        return json.dumps(explained, separators=(",", ":"))
