"""One running application's in-application streams and pumps over micro-batches.

`Pipeline` is fed rows of its source streams (`push`) and the watermark (`advance`); it runs
each pump whose source received rows through the `Engine` and routes the rows a pump inserts
into its target stream, which may feed further pumps (a chain of in-application streams).
`drain` hands over the rows every stream received since the last drain; the runner writes the
ones that outputs name to their destinations.

Window state is kept here: a windowed pump buffers its source rows by window (`windows.py`)
and runs its query over one window's rows when the watermark closes it, emitting the result
with the window's end as ROWTIME. A continuous pump runs over each batch at once and its rows
keep their input row's ROWTIME. Rows are tuples in their stream's column order, ROWTIME first.

Pure apart from the injected engine: no I/O, no clock (the watermark is passed in).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.analytics import anomaly, hotspots, sql, windows
from broker.analytics.records import Row, from_timestamp, to_timestamp

APPROXIMATE_ARRIVAL_TIME = "APPROXIMATE_ARRIVAL_TIME"


class Engine(Protocol):
    def run(
        self,
        query: str,
        columns: Sequence[sql.Column],
        rows: Sequence[Row],
        joined: tuple[Sequence[sql.Column], Sequence[Row]] | None = None,
    ) -> list[Row]: ...

    def describe(self, query: str, columns: Sequence[sql.Column]) -> tuple[sql.Column, ...]: ...


def scored_columns(
    cursor: Sequence[sql.Column], scored: sql.ScoredSource
) -> tuple[sql.Column, ...]:
    """The columns of the rows a pump reads from TABLE(RANDOM_CUT_FOREST...(CURSOR(...))):
    ROWTIME, the cursor's columns (its ROWTIME column and the engine's last one, the input
    row's ROWTIME, left out), then ANOMALY_SCORE [and ANOMALY_EXPLANATION]."""
    columns = [sql.Column(sql.ROWTIME, "TIMESTAMP")]
    columns += [column for column in cursor[:-1] if column.name != sql.ROWTIME]
    settings = scored.parameters
    if isinstance(settings, hotspots.HotspotParameters):
        columns.append(sql.Column(hotspots.HOTSPOTS_RESULT, "VARCHAR"))
    else:
        columns.append(sql.Column(anomaly.ANOMALY_SCORE, "DOUBLE"))
        if settings.explain:
            columns.append(sql.Column(anomaly.ANOMALY_EXPLANATION, "VARCHAR"))
    return tuple(columns)


class RowScorer(Protocol):
    def score(self, values: Sequence[Any]) -> tuple[Any, ...]: ...


def row_scorer(pump: sql.Pump, cursor: Sequence[sql.Column]) -> RowScorer:
    """The model of a scoring pump (its cursor's columns without the engine's last one)."""
    assert pump.scored is not None
    settings = pump.scored.parameters
    columns = [(column.name, column.sql_type) for column in cursor[:-1]]
    if isinstance(settings, hotspots.HotspotParameters):
        return hotspots.HotspotDetector(settings, columns)
    return anomaly.AnomalyDetector(settings, columns, seed=zlib.crc32(pump.name.encode()))


def source_streams(inputs: Sequence[Mapping[str, Any]]) -> dict[str, tuple[sql.Column, ...]]:
    """The source in-application streams an application's input descriptions define: ROWTIME,
    APPROXIMATE_ARRIVAL_TIME, then the schema's record columns (KDA's source stream)."""
    streams: dict[str, tuple[sql.Column, ...]] = {}
    for described in inputs:
        columns = [
            sql.Column(sql.ROWTIME, "TIMESTAMP"),
            sql.Column(APPROXIMATE_ARRIVAL_TIME, "TIMESTAMP"),
        ]
        columns.extend(
            sql.Column(str(column["Name"]), sql.parse_sql_type(str(column["SqlType"])))
            for column in described["InputSchema"]["RecordColumns"]
        )
        for name in described.get("InAppStreamNames") or [f"{described['NamePrefix']}_001"]:
            streams[str(name)] = tuple(columns)
    return streams


def reference_tables(
    references: Sequence[Mapping[str, Any]],
) -> dict[str, tuple[sql.Column, ...]]:
    """The in-application reference tables an application's reference data source
    descriptions define, named as given (the code quotes them): the schema's record columns
    (a table has no ROWTIME)."""
    return {
        str(described["TableName"]): tuple(
            sql.Column(str(column["Name"]), sql.parse_sql_type(str(column["SqlType"])))
            for column in described["ReferenceSchema"]["RecordColumns"]
        )
        for described in references
    }


@dataclass(slots=True)
class _JoinSide:
    """One side of a stream-to-stream join: the rows it keeps, their ids, and (outer joins)
    the ids ON matched."""

    rows: list[Row] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    matched: set[int] = field(default_factory=set)


class Pipeline:
    """Module docstring. Single-threaded; one per running application."""

    def __init__(
        self,
        program: sql.Program,
        sources: Mapping[str, tuple[sql.Column, ...]],
        engine: Engine,
        *,
        watermark_ms: int = 0,
    ) -> None:
        self._program = program
        self._engine = engine
        self._columns: dict[str, tuple[sql.Column, ...]] = dict(sources)
        for stream in program.streams:
            self._columns[stream.name] = stream.columns
        self._pumps: dict[str, list[sql.Pump]] = defaultdict(list)
        # Per stream: the stream-to-stream joins it is the right side of.
        self._right_of: dict[str, list[sql.Pump]] = defaultdict(list)
        for pump in program.pumps:
            self._pumps[pump.source].append(pump)
            if pump.join is not None:
                self._right_of[pump.join.right].append(pump)
        # Per join pump: the (left, right) rows later rows of the other side may pair with.
        self._joined: dict[str, tuple[_JoinSide, _JoinSide]] = {
            pump.name: (_JoinSide(), _JoinSide()) for pump in program.pumps if pump.join is not None
        }
        self._next_row_id = 0
        # Per windowed pump: window start -> the source rows buffered for it.
        self._open: dict[str, dict[int, list[Row]]] = {
            pump.name: {} for pump in program.pumps if pump.window is not None
        }
        # Per sliding-window pump: the source rows later rows may still be computed over.
        self._history: dict[str, list[Row]] = {
            pump.name: [] for pump in program.pumps if pump.sliding is not None
        }
        # Per stagger-window pump: key -> its open windows (opening ROWTIME in ms, rows).
        self._staggered: dict[str, dict[tuple[Any, ...], list[tuple[int, list[Row]]]]] = {
            pump.name: {} for pump in program.pumps if pump.stagger is not None
        }
        # Per scoring pump: its forest and the columns of its scored rows (made at its first
        # rows: the cursor's columns are the engine's to tell).
        self._detectors: dict[str, tuple[RowScorer, tuple[sql.Column, ...]]] = {}
        self._kept_cursor_columns: dict[str, list[int]] = {}
        self._received: dict[str, list[Row]] = defaultdict(list)
        self.watermark_ms = watermark_ms
        self.late_rows = 0

    def open_windows(self) -> dict[str, dict[int, list[Row]]]:
        """The window state: per windowed pump, the rows of each open window (a copy)."""
        return {
            name: {start: list(rows) for start, rows in open_.items()}
            for name, open_ in self._open.items()
        }

    def push(self, stream: str, rows: Sequence[Row]) -> None:
        """Rows arriving on `stream` (a source, or a pump's target)."""
        if not rows:
            return
        self._received[stream].extend(rows)
        for pump in self._pumps.get(stream, ()):
            if pump.window is not None:
                self._buffer(pump, rows)
            elif pump.stagger is not None:
                self._buffer_staggered(pump, rows)
            elif pump.sliding is not None:
                self._run_sliding(pump, rows)
            elif pump.join is not None:
                self._run_join(pump, rows, left=True)
            elif pump.scored is not None:
                self._run_scored(pump, rows)
            else:
                self._run_continuous(pump, rows)
        for pump in self._right_of.get(stream, ()):
            self._run_join(pump, rows, left=False)

    def advance(self, watermark_ms: int) -> None:
        """Moves the watermark (never backwards) and emits every window it closes."""
        if watermark_ms <= self.watermark_ms:
            return
        self.watermark_ms = watermark_ms
        for pump in self._program.pumps:
            window = pump.window
            if window is None:
                continue
            open_ = self._open[pump.name]
            for start in windows.closed(open_, window.size_ms, watermark_ms):
                rows = open_.pop(start)
                self._emit_window(pump, start + window.size_ms, rows)
        for pump in self._program.pumps:
            if pump.stagger is not None:
                self._close_staggered(pump, pump.stagger.range_ms, watermark_ms)
            if pump.join is not None:
                self._close_joined(pump)

    def closes_a_window(self, watermark_ms: int) -> bool:
        """Whether moving the watermark to `watermark_ms` would close (emit) a window."""
        if watermark_ms <= self.watermark_ms:
            return False
        for pump in self._program.pumps:
            if pump.window is not None and any(
                start + pump.window.size_ms <= watermark_ms for start in self._open[pump.name]
            ):
                return True
            if pump.stagger is not None and any(
                opened[0][0] + pump.stagger.range_ms <= watermark_ms
                for opened in self._staggered[pump.name].values()
            ):
                return True
        return False

    def next_close_ms(self) -> int | None:
        """The lowest watermark that closes (emits) an open window; None with none open."""
        ends = []
        for pump in self._program.pumps:
            if pump.window is not None and self._open[pump.name]:
                ends.append(min(self._open[pump.name]) + pump.window.size_ms)
            if pump.stagger is not None:
                ends.extend(
                    opened[0][0] + pump.stagger.range_ms
                    for opened in self._staggered[pump.name].values()
                )
        return min(ends) if ends else None

    def _buffer_staggered(self, pump: sql.Pump, rows: Sequence[Row]) -> None:
        """Each row joins its key's open window (ending after the row's ROWTIME), or opens
        one; a row whose window would already have closed is late."""
        stagger = pump.stagger
        assert stagger is not None
        keys = self._engine.run(stagger.key_query, self._columns[pump.source], rows)
        by_key = self._staggered[pump.name]
        for row, key in zip(rows, keys, strict=True):
            time_ms = from_timestamp(row[0])
            if time_ms + stagger.range_ms <= self.watermark_ms:
                self.late_rows += 1
                continue
            opened = by_key.setdefault(tuple(key), [])
            if opened and time_ms < opened[-1][0] + stagger.range_ms:
                opened[-1][1].append(row)
            else:
                opened.append((time_ms, [row]))

    def _close_staggered(self, pump: sql.Pump, range_ms: int, watermark_ms: int) -> None:
        by_key = self._staggered[pump.name]
        closing: list[tuple[int, list[Row]]] = []
        for key in list(by_key):
            opened = by_key[key]
            while opened and opened[0][0] + range_ms <= watermark_ms:
                closing.append(opened.pop(0))
            if not opened:
                del by_key[key]
        for opened_ms, rows in sorted(closing, key=lambda window: window[0]):
            self._emit_window(pump, opened_ms + range_ms, rows)

    def drain(self) -> dict[str, list[Row]]:
        """The rows each stream received since the last drain."""
        received = dict(self._received)
        self._received.clear()
        return received

    def columns(self, stream: str) -> tuple[sql.Column, ...]:
        return self._columns[stream]

    def _run_continuous(self, pump: sql.Pump, rows: Sequence[Row]) -> None:
        result = self._engine.run(pump.query, self._columns[pump.source], rows)
        self.push(
            pump.target, [self._target_row(pump, values[-1], values[:-1]) for values in result]
        )

    def _run_sliding(self, pump: sql.Pump, rows: Sequence[Row]) -> None:
        """The batch's rows, each computed over the history before it (ROWTIME is every
        stream's first column), then the history pruned to what later rows may need."""
        sliding = pump.sliding
        assert sliding is not None
        history = self._history[pump.name]
        source = self._columns[pump.source]
        batch = [(*row, False) for row in history] + [(*row, True) for row in rows]
        result = self._engine.run(pump.query, pump.input_columns(source), batch)
        self.push(
            pump.target, [self._target_row(pump, values[-1], values[:-1]) for values in result]
        )
        history.extend(rows)
        if sliding.range_ms is not None:
            newest = max(row[0] for row in history)
            oldest_ms = from_timestamp(newest) - sliding.range_ms
            history[:] = [row for row in history if from_timestamp(row[0]) >= oldest_ms]
        elif sliding.prune_query is not None:
            history[:] = self._engine.run(sliding.prune_query, source, history)

    def _run_scored(self, pump: sql.Pump, rows: Sequence[Row]) -> None:
        """The cursor's rows, each scored then learnt by the pump's forest in order, read by
        the pump's query."""
        scored = pump.scored
        assert scored is not None
        source = self._columns[pump.source]
        if pump.name not in self._detectors:
            cursor = self._engine.describe(scored.cursor_query, source)
            detector = row_scorer(pump, cursor)
            keep = [i for i, c in enumerate(cursor[:-1]) if c.name != sql.ROWTIME]
            self._detectors[pump.name] = (detector, scored_columns(cursor, scored))
            self._kept_cursor_columns[pump.name] = keep
        detector, columns = self._detectors[pump.name]
        keep = self._kept_cursor_columns[pump.name]
        scored_rows: list[Row] = []
        for values in self._engine.run(scored.cursor_query, source, rows):
            extra = detector.score(values[:-1])
            scored_rows.append((values[-1], *(values[i] for i in keep), *extra))
        result = self._engine.run(pump.query, columns, scored_rows)
        self.push(
            pump.target, [self._target_row(pump, values[-1], values[:-1]) for values in result]
        )

    def _run_join(self, pump: sql.Pump, rows: Sequence[Row], *, left: bool) -> None:
        """New rows of one side paired with the rows the other side kept (each pair is
        emitted once: when its later row arrives); an outer join also notes which rows ON
        matched. Then the side keeps the rows, and rows whose window passed are closed."""
        join = pump.join
        assert join is not None
        left_side, right_side = self._joined[pump.name]
        ids = list(range(self._next_row_id, self._next_row_id + len(rows)))
        self._next_row_id += len(rows)
        left_columns, right_columns = self._columns[pump.source], self._columns[join.right]
        left_rows, right_rows = (rows, right_side.rows) if left else (left_side.rows, rows)
        result = self._engine.run(pump.query, left_columns, left_rows, (right_columns, right_rows))
        self.push(
            pump.target, [self._target_row(pump, values[-1], values[:-1]) for values in result]
        )
        if join.match_query is not None:
            left_ids, right_ids = (ids, right_side.ids) if left else (left_side.ids, ids)
            row_id = sql.Column(sql.ROW_ID, "BIGINT")
            pairs = self._engine.run(
                join.match_query,
                (*left_columns, row_id),
                [(*row, i) for row, i in zip(left_rows, left_ids, strict=True)],
                (
                    (*right_columns, row_id),
                    [(*row, i) for row, i in zip(right_rows, right_ids, strict=True)],
                ),
            )
            for left_id, right_id in pairs:
                left_side.matched.add(left_id)
                right_side.matched.add(right_id)
        side = left_side if left else right_side
        side.rows.extend(rows)
        side.ids.extend(ids)
        self._close_joined(pump)

    def _close_joined(self, pump: sql.Pump) -> None:
        """Closes the kept rows no later row can pair with (rows of the other side arriving
        from now on have a ROWTIME at or after the watermark; earlier ones are late): an outer
        side's unmatched ones are emitted with NULLs for the other side, then all are
        dropped."""
        join = pump.join
        assert join is not None
        left_side, right_side = self._joined[pump.name]
        outer_left, outer_right = join.outer_sides()
        sides = (
            (left_side, join.left_range_ms, join.left_rows, outer_left, True),
            (right_side, join.right_range_ms, join.right_rows, outer_right, False),
        )
        for side, range_ms, last_rows, outer, is_left in sides:
            if last_rows is not None:  # a ROWS window: the side's last rows, by arrival
                del side.rows[: max(0, len(side.rows) - last_rows)]
                del side.ids[: max(0, len(side.ids) - last_rows)]
                continue
            open_ = [from_timestamp(row[0]) + range_ms >= self.watermark_ms for row in side.rows]
            if all(open_):
                continue
            if outer and join.outer_query is not None:
                unmatched = [
                    row
                    for row, row_id, is_open in zip(side.rows, side.ids, open_, strict=True)
                    if not is_open and row_id not in side.matched
                ]
                if unmatched:
                    none: list[Row] = []
                    left_rows, right_rows = (unmatched, none) if is_left else (none, unmatched)
                    result = self._engine.run(
                        join.outer_query,
                        self._columns[pump.source],
                        left_rows,
                        (self._columns[join.right], right_rows),
                    )
                    self.push(
                        pump.target,
                        [self._target_row(pump, values[-1], values[:-1]) for values in result],
                    )
            side.matched.difference_update(
                row_id for row_id, is_open in zip(side.ids, open_, strict=True) if not is_open
            )
            side.rows = [row for row, is_open in zip(side.rows, open_, strict=True) if is_open]
            side.ids = [i for i, is_open in zip(side.ids, open_, strict=True) if is_open]

    def _buffer(self, pump: sql.Pump, rows: Sequence[Row]) -> None:
        window = pump.window
        assert window is not None
        index = self._column_index(pump.source, window.column)
        open_ = self._open[pump.name]
        # Rows come in runs sharing one time (a batch's ROWTIMEs are a few arrival times):
        # each distinct time is placed once, its run appended to its window's rows.
        last_time: Any = None
        bucket: list[Row] | None = None  # the last time's window rows (None: late)
        for row in rows:
            time = row[index]
            if time is None:
                self.late_rows += 1  # no time: it belongs to no window (KDA drops it too)
                continue
            if time is not last_time and time != last_time:
                last_time = time
                time_ms = from_timestamp(time)
                if windows.is_late(time_ms, window.size_ms, self.watermark_ms):
                    bucket = None
                else:
                    start = windows.window_start(time_ms, window.size_ms)
                    bucket = open_.setdefault(start, [])
            if bucket is None:
                self.late_rows += 1
                continue
            bucket.append(row)

    def _emit_window(self, pump: sql.Pump, end_ms: int, rows: Sequence[Row]) -> None:
        result = self._engine.run(pump.query, self._columns[pump.source], rows)
        rowtime = to_timestamp(end_ms)
        self.push(pump.target, [self._target_row(pump, rowtime, values) for values in result])

    def _target_row(self, pump: sql.Pump, rowtime: Any, values: Sequence[Any]) -> Row:
        """The values inserted into the target's columns: by position, or into the columns
        the INSERT names (the others NULL)."""
        names = [column.name for column in self._columns[pump.target][1:]]
        if pump.target_columns is None:
            padded = list(values[: len(names)]) + [None] * (len(names) - len(values))
            return (rowtime, *padded)
        by_name = dict(zip(pump.target_columns, values, strict=False))
        return (rowtime, *(by_name.get(name) for name in names))

    def _column_index(self, stream: str, name: str) -> int:
        for index, column in enumerate(self._columns[stream]):
            if column.name == name:
                return index
        raise KeyError(f"{stream} has no column {name}")
