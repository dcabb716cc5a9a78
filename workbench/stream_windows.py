"""Event-time windows, late rows and deduplication with Spark Structured Streaming's rules.

Each operator is a pure function of (its state, this batch's rows, the two watermarks) that
returns Ibis expressions: the rows it emits, its new state, and the rows it judged late. The
runner (workbench.streaming) materializes them; nothing here executes.

The rules, as Spark 4.0 applies them (see design.md, "Event-time streaming"):
- windows are `[start, end)`; a row is late for a window when `end <= late_mark` (the previous
  batch's watermark), whatever its own event time; append mode emits and evicts every window
  with `end <= mark` (this batch's watermark); update mode emits every window this batch changed;
- sessions: a row opens `[t, t + gap)`, sessions that overlap or touch merge, a row is late when
  `t + gap <= late_mark`, a session is emitted when `end <= mark`;
- dedup: a row is late when `t <= late_mark`; the first row of an id (lowest partition, offset)
  is kept; the id is forgotten once `t + delay <= mark`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import ibis

from workbench import stream_time as tm
from workbench.errors import WorkbenchError

tm.install()

EVENT_COLUMNS = ("event_id", "key", "event_time", "kind", "value", "ref", "partition", "offset")
"""What every event carries through the operators (and what a late row keeps)."""
KINDS = ("tumbling", "hopping", "session")
AGGREGATES = ("count", "sum", "min", "max")
_COMBINE = {"count": "sum", "sum": "sum", "min": "min", "max": "max"}
DEFAULT_AGGS = {"events": ("count", None), "value": ("sum", "value")}


@dataclass(frozen=True)
class Marks:
    """The two watermarks a batch uses, in microseconds since the epoch: `late` (W[k-1]) judges
    rows, `evict` (W[k]) emits and evicts. Either an int or an int64 scalar expression."""

    late: int | ibis.Value
    evict: int | ibis.Value


def micros_of(mark: int | ibis.Value) -> ibis.Value:
    """A watermark as int64 µs, to compare with integer event times."""
    return ibis.literal(mark, "int64") if isinstance(mark, int) else mark


def at(mark: int | ibis.Value, plus: int = 0) -> ibis.Value:
    """A watermark (plus `plus` µs) as a UTC timestamp to compare event times with."""
    if isinstance(mark, int):
        return tm.literal(mark + plus)
    return tm.timestamp(mark + plus)


@dataclass(frozen=True)
class Window:
    """A window specification: tumbling(size), hopping(size, slide) or session(gap), in µs."""

    kind: Literal["tumbling", "hopping", "session"]
    size: int = 0
    slide: int = 0
    gap: int = 0

    def __str__(self) -> str:
        s = tm.US
        if self.kind == "session":
            return f"session(gap={self.gap / s:g}s)"
        if self.kind == "tumbling":
            return f"tumbling({self.size / s:g}s)"
        return f"hopping({self.size / s:g}s, slide {self.slide / s:g}s)"


def tumbling(size) -> Window:
    """Back-to-back windows `[k*size, (k+1)*size)`: each event falls in exactly one."""
    size_us = _positive(size, "size")
    return Window("tumbling", size_us, size_us)


def hopping(size, slide) -> Window:
    """Windows of `size` starting every `slide`: each event falls in about size/slide of them."""
    size_us, slide_us = _positive(size, "size"), _positive(slide, "slide")
    if slide_us > size_us:
        raise WorkbenchError(
            f"A hopping window's slide ({slide!r}) is larger than its size ({size!r}).",
            "Allowed: 0 < slide <= size (Spark refuses the same); events between windows "
            "would belong to none.",
            "use tumbling(size) when slide equals size, or a smaller slide.",
        )
    return Window("hopping", size_us, slide_us)


def session(gap) -> Window:
    """Per-key sessions: events closer than `gap` (or exactly `gap`) apart share a session."""
    return Window("session", gap=_positive(gap, "gap"))


def _positive(value, what: str) -> int:
    us = tm.duration(value, what)
    if us <= 0:
        raise WorkbenchError(
            f"A window {what} of {value!r} is not positive.",
            f"Allowed: a {what} greater than zero, e.g. '10 seconds' or '1 minute'.",
            "a window of zero length would hold no event.",
        )
    return us


@dataclass(frozen=True)
class Step:
    """What one operator produced for one batch (all lazy Ibis expressions)."""

    out: ibis.Table
    state: dict[str, ibis.Table]
    """The operator's new state tables, by name (none for a stateless step)."""
    late: ibis.Table | None = None
    shared: ibis.Table | None = None
    """An intermediate the others are built on: a runner may compute it once and reuse it."""


# -- late rows ----------------------------------------------------------------------------------


def late_rows(rows: ibis.Table, operator: str, watermark, start=None, end=None) -> ibis.Table:
    """The late-events table's rows: the event, the operator, the window and watermark it missed."""
    ts = "timestamp('UTC', 6)"
    return rows.select(
        operator=ibis.literal(operator),
        window_start=(start if start is not None else ibis.null(ts)).cast(ts),
        window_end=(end if end is not None else ibis.null(ts)).cast(ts),
        watermark=at(watermark),
        **{c: rows[c] for c in EVENT_COLUMNS},
    )


# -- tumbling and hopping windows ---------------------------------------------------------------


def assign(rows: ibis.Table, window: Window) -> ibis.Table:
    """One row per (event, window containing it), with `window_start` and `window_end`.

    A hopping event belongs to the windows starting at its last window start and every slide
    before it while the window still covers it (Spark's formula); a union of those copies.
    """
    spans = _assign(rows, window)
    return spans.mutate(
        window_start=tm.timestamp(spans._ws), window_end=tm.timestamp(spans._we)
    ).drop("_ws", "_we")


def _assign(rows: ibis.Table, window: Window) -> ibis.Table:
    """`assign` with the window bounds as µs since the epoch (`_ws`, `_we`): integer arithmetic,
    so that no timestamp is built per row (DuckDB's time-zone-aware timestamp arithmetic is
    about a hundred times slower than its integers)."""
    t = tm.micros(rows.event_time)
    last = t - (((t % window.slide) + window.slide) % window.slide)  # floor, also before 1970
    copies = []
    for i in range(math.ceil(window.size / window.slide)):
        start = last - i * window.slide
        copy = rows.mutate(_ws=start, _we=start + window.size)
        # A copy whose window ends at or before the event does not contain it (size % slide != 0).
        copies.append(copy if i == 0 else copy.filter(start + window.size > t))
    return copies[0] if len(copies) == 1 else ibis.union(*copies, distinct=False)


def window_step(
    state: ibis.Table | None,
    rows: ibis.Table,
    window: Window,
    marks: Marks,
    by: tuple[str, ...] = (),
    aggs: dict | None = None,
    mode: Literal["append", "update"] = "append",
) -> Step:
    """One batch of a tumbling or hopping aggregation: merge into the open windows, emit, evict."""
    aggs = check_aggs(aggs)
    assigned = _assign(rows, window)
    is_late = assigned._we <= micros_of(marks.late)
    gone = assigned.filter(is_late)
    late = late_rows(gone, "window", marks.late, tm.timestamp(gone._ws), tm.timestamp(gone._we))
    fresh = assigned.filter(~is_late)
    keys = ["_ws", "_we", *by]
    partial = fresh.group_by(keys).agg(**_partials(fresh, aggs), _new=ibis.literal(1, "int8"))
    merged = _combine(state, partial, keys, aggs)
    return _emit(merged, marks, mode, late, "window")


def _partials(rows: ibis.Table, aggs: dict) -> dict:
    out = {}
    for name, (how, column) in aggs.items():
        if how == "count":
            out[name] = rows.count() if column is None else rows[column].count()
        else:
            out[name] = getattr(rows[column], how)()
    return out


def _combine(state: ibis.Table | None, partial: ibis.Table, keys: list[str], aggs: dict):
    """Union the open windows with this batch's partial aggregates and fold them together."""
    if state is not None:
        old = _spans(state).mutate(_new=ibis.literal(0, "int8")).select(*partial.columns)
        partial = ibis.union(old.cast(partial.schema()), partial, distinct=False)
        folded = {name: getattr(partial[name], _COMBINE[how])() for name, (how, _) in aggs.items()}
        partial = partial.group_by(keys).agg(**folded, _new=partial._new.max())
    return partial


def _spans(state: ibis.Table) -> ibis.Table:
    """Open windows or sessions (kept with readable timestamps) with their bounds in µs."""
    return state.mutate(_ws=tm.micros(state.window_start), _we=tm.micros(state.window_end))


def _emit(merged: ibis.Table, marks: Marks, mode: str, late: ibis.Table, name: str) -> Step:
    """Split the merged windows: the ones to emit, and the open ones kept as state."""
    check_mode(mode)
    merged = merged.mutate(
        window_start=tm.timestamp(merged._ws), window_end=tm.timestamp(merged._we)
    )
    closed = merged._we <= micros_of(marks.evict)
    out = merged.filter(closed) if mode == "append" else merged.filter(merged._new == 1)
    columns = [
        c for c in merged.columns if c not in ("_ws", "_we", "_new", "window_start", "window_end")
    ]
    tidy = ["window_start", "window_end", *columns]
    state = merged.filter(~closed).select(*tidy)
    return Step(out=out.select(*tidy), state={name: state}, late=late, shared=merged)


def check_mode(mode: str) -> None:
    """Refuse an output mode other than append and update."""
    if mode not in ("append", "update"):
        raise WorkbenchError(
            f"Unknown output mode {mode!r}.",
            "Allowed: 'append' (a window once, when the watermark passes its end) or 'update' "
            "(every window a batch changed, each batch).",
            "Spark's 'complete' mode keeps every window forever; it is not offered.",
        )


def check_aggs(aggs: dict | None) -> dict[str, tuple[str, str | None]]:
    """Aggregates as {name: (how, column)}, refusing what cannot be merged across batches."""
    aggs = DEFAULT_AGGS if aggs is None else aggs
    out = {}
    for name, spec in aggs.items():
        how, column = (spec, None) if isinstance(spec, str) else tuple(spec)
        if how not in AGGREGATES or (how != "count" and column is None):
            raise WorkbenchError(
                f"Aggregate {name}={spec!r} cannot be kept as streaming state.",
                f"Allowed: 'count', or (how, column) with how one of {', '.join(AGGREGATES)}: "
                "aggregates whose partial results merge across batches.",
                "a mean is sum / count: keep both and divide the results.",
            )
        out[name] = (how, column)
    return out


# -- session windows ----------------------------------------------------------------------------


def session_step(
    state: ibis.Table | None,
    rows: ibis.Table,
    window: Window,
    marks: Marks,
    by: tuple[str, ...],
    aggs: dict | None = None,
) -> Step:
    """One batch of session windows: each row opens `[t, t + gap)`, overlapping or touching
    sessions of a key merge (with the open ones too), closed sessions are emitted and evicted."""
    if not by:
        raise WorkbenchError(
            "Session windows need at least one key column (by=...).",
            "Sessions are per key, e.g. per customer; Spark requires a key column as well.",
            "pass by=('key',).",
        )
    aggs = check_aggs(aggs)
    t = tm.micros(rows.event_time)
    is_late = t + window.gap <= micros_of(marks.late)
    gone = rows.filter(is_late)
    end = tm.timestamp(tm.micros(gone.event_time) + window.gap)
    late = late_rows(gone, "session", marks.late, gone.event_time, end)
    fresh = rows.filter(~is_late)
    # A row is its own one-event session; merging folds partials exactly like windows do.
    start = tm.micros(fresh.event_time)
    singles = fresh.select(
        *by, _ws=start, _we=start + window.gap, **_single(fresh, aggs), _new=ibis.literal(1, "int8")
    )
    if state is not None:
        old = _spans(state).mutate(_new=ibis.literal(0, "int8")).select(*singles.columns)
        singles = ibis.union(old.cast(singles.schema()), singles, distinct=False)
    merged = _merge_sessions(singles, list(by), aggs)
    return _emit(merged, marks, "append", late, "session")


def _single(rows: ibis.Table, aggs: dict) -> dict:
    out = {}
    for name, (how, column) in aggs.items():
        if how == "count":
            one = ibis.literal(1, "int64")
            out[name] = one if column is None else rows[column].notnull().cast("int64")
        else:
            out[name] = rows[column]
    return out


def _merge_sessions(spans: ibis.Table, by: list[str], aggs: dict) -> ibis.Table:
    """Gaps and islands: a span starts a new session when it begins after every earlier span of
    its key has ended; ties in start land in the same session whatever order the engine picks."""
    order = [spans._ws, spans._we]
    upto = ibis.window(group_by=by, order_by=order, preceding=None, following=0)
    reach = spans.mutate(_reach=spans._we.max().over(upto))
    before = reach._reach.lag().over(ibis.window(group_by=by, order_by=order))
    flagged = reach.mutate(_first=(before.isnull() | (reach._ws > before)).cast("int64"))
    running = ibis.window(
        group_by=by, order_by=[flagged._ws, flagged._we], preceding=None, following=0
    )
    numbered = flagged.mutate(_session=flagged._first.sum().over(running))
    folded = {name: getattr(numbered[name], _COMBINE[how])() for name, (how, _) in aggs.items()}
    merged = numbered.group_by([*by, "_session"]).agg(
        _ws=numbered._ws.min(), _we=numbered._we.max(), **folded, _new=numbered._new.max()
    )
    return merged.select("_ws", "_we", *by, *aggs, "_new")


# -- deduplication ------------------------------------------------------------------------------

_ORDER_SCALE = 1 << 40  # offsets stay below 2**40 (a trillion events per partition)


def dedup_step(state: ibis.Table | None, rows: ibis.Table, delay: int, marks: Marks) -> Step:
    """Drop rows whose `event_id` was seen within the watermark (Spark's
    dropDuplicatesWithinWatermark): late rows out, first row per id kept, ids expire.

    The state is (event_id, expires_us): an id is forgotten once `expires_us <= mark`.
    """
    is_late = rows.event_time <= at(marks.late)
    late = late_rows(rows.filter(is_late), "dedup", marks.late)
    fresh = rows.filter(~is_late)
    unseen = fresh if state is None else fresh.anti_join(state, "event_id")
    ordered = unseen.mutate(_order=unseen.partition.cast("int64") * _ORDER_SCALE + unseen.offset)
    # Few ids repeat within a batch: one aggregation finds them and their first row, and a row
    # is kept unless its id repeats and it is not that first row. (A semi-join back on every
    # (id, order) pair would hash the whole batch a second time; this join's table is small.)
    counted = ordered.group_by("event_id").agg(_first=ordered._order.min(), _n=ordered.count())
    repeated = counted.filter(counted._n > 1).select(_id="event_id", _first="_first")
    joined = ordered.left_join(repeated, ordered.event_id == repeated._id)
    first = joined._first.isnull() | (joined._order == joined._first)
    kept = joined.filter(first).select(*unseen.columns)
    remembered = kept.select("event_id", expires_us=tm.micros(kept.event_time) + delay)
    if state is not None:
        remembered = ibis.union(state.cast(remembered.schema()), remembered, distinct=False)
    alive = remembered.filter(remembered.expires_us > micros_of(marks.evict))
    return Step(out=kept, state={"dedup": alive}, late=late, shared=kept)
