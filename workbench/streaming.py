"""Micro-batch streaming on a simulated clock, exactly once into Delta.

A `Query` says what to compute (dedup, a stateless transform, a window aggregation or an
interval join); a `Runner` feeds it micro-batches from a replayable source, one per trigger of
a simulated clock, on any Ibis engine. Each batch:

1. plans its offsets and writes them to `ops.<query>_offsets` (the write-ahead log);
2. reads those events, sends rows without event time to `<layer>.<query>_dead_letter`;
3. runs the operators with the watermarks W[k-1] (judges late rows) and W[k] (emits, evicts);
4. writes results, late rows, dead letters and each operator's state, each commit tagged with
   `Transaction(app_id, batch_id)`, and last the commit record `ops.<query>_commits`.

A restart reads the last commit record, replays a planned but uncommitted batch with the same
offsets and the state of the batch before, and skips every table that already holds the
batch's transaction: the tables end up as if the run had never crashed.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import ibis
import pandas as pd
import pyarrow as pa

from workbench import stream_checkpoint as ckpt
from workbench import stream_joins
from workbench import stream_time as tm
from workbench import stream_windows as sw
from workbench.errors import WorkbenchError
from workbench.lakehouse import ENGINE_KEY, Lakehouse
from workbench.stream_joins import enrich
from workbench.stream_plan import Plan
from workbench.stream_source import EventLog, JsonLinesSource
from workbench.stream_windows import Marks, Window, hopping, session, tumbling

__all__ = [
    "EventLog", "JsonLinesSource", "Query", "Runner", "SimulatedCrash", "Window", "enrich",
    "hopping", "session", "tumbling",
]  # fmt: skip

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
END_OF_TIME = tm.to_micros(dt.datetime(9999, 1, 1, tzinfo=dt.UTC))
"""The watermark of `flush()`: every open window closes."""


class SimulatedCrash(RuntimeError):
    """Raised by a fault hook to stop a runner at a chosen point, as a crash would."""


@dataclass(frozen=True)
class Query:
    """What a streaming query computes, and where its tables go (`<layer>.<name>...`)."""

    name: str
    window: Window | None = None
    by: tuple[str, ...] = ()
    aggs: dict | None = None
    mode: Literal["append", "update"] = "append"
    delay: Any = "10 seconds"
    """The watermark delay: how late an event may be and still count."""
    dedup: bool = False
    """Drop events whose event_id was seen within the watermark (first one kept)."""
    transform: Callable[[ibis.Table], ibis.Table] | None = None
    """A stateless, pure step after dedup (filter, enrich); it must keep the event columns."""
    join: Literal["inner", "left"] | None = None
    """Join orders to payments paid within `bound` (instead of a window)."""
    bound: Any = "1 minute"
    layer: str = "silver"

    def __post_init__(self):
        object.__setattr__(self, "by", tuple([self.by] if isinstance(self.by, str) else self.by))
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise WorkbenchError(
                f"Query name {self.name!r} cannot name tables.",
                "Allowed: lowercase letters, digits and underscores, starting with a letter.",
                "e.g. Query('clicks_per_minute', tumbling('1 minute')).",
            )
        if self.window is not None and self.join is not None:
            raise WorkbenchError(
                "A query has either a window or a join, not both.",
                "Allowed: window=..., or join='inner' / 'left'.",
                "run two queries over the same source.",
            )
        if self.mode == "update" and (self.window is None or self.window.kind == "session"):
            raise WorkbenchError(
                f"Update mode needs a tumbling or hopping window, not {self.window or 'none'}.",
                "Allowed: mode='update' with tumbling or hopping windows; sessions and joins "
                "emit in append mode only (as in Spark).",
                "use mode='append'.",
            )
        sw.check_mode(self.mode)
        if self.window is not None:
            sw.check_aggs(self.aggs)
        tm.duration(self.delay, "delay"), tm.duration(self.bound, "bound")

    def table(self, what: str = "") -> str:
        """This query's table: results (''), 'late', 'dead_letter'; ops tables by 'ops:' prefix."""
        if what.startswith("ops:"):
            return f"ops.{self.name}_{what[4:]}"
        return f"{self.layer}.{self.name}" + (f"_{what}" if what else "")

    def operators(self) -> list[tuple[str, Callable]]:
        """The query's steps in order, each `(name, step(state, rows, marks) -> Step)`."""
        delay, bound, w = tm.duration(self.delay), tm.duration(self.bound), self.window

        def dedup(s, r, m):
            return sw.dedup_step(s.get("dedup"), r, delay, m)

        def transform(s, r, m):
            return sw.Step(self.transform(r), {})

        def sessions(s, r, m):
            return sw.session_step(s.get("session"), r, w, m, self.by, self.aggs)

        def windows(s, r, m):
            return sw.window_step(s.get("window"), r, w, m, self.by, self.aggs, self.mode)

        def join(s, r, m):
            return stream_joins.interval_join_step(s, r, bound, m, self.join)

        steps = [("dedup", dedup)] if self.dedup else []
        steps += [("transform", transform)] if self.transform is not None else []
        if w is not None:
            steps.append(("session", sessions) if w.kind == "session" else ("window", windows))
        steps += [("join", join)] if self.join is not None else []
        return steps

    def merge_keys(self) -> list[str] | None:
        """Update mode merges results by window (and keys); append mode appends."""
        return ["window_start", "window_end", *self.by] if self.mode == "update" else None


class Runner:
    """Runs a `Query` over a source, one micro-batch per trigger of a simulated clock."""

    def __init__(
        self,
        lake: Lakehouse,
        con: ibis.BaseBackend,
        source: EventLog | JsonLinesSource,
        query: Query,
        trigger: Any = "10 seconds",
        no_data_batches: bool = True,
        fault: Callable[[str, int], None] | None = None,
    ):
        self.lake, self.con, self.source, self.query = lake, con, source, query
        self.trigger = tm.duration(trigger, "trigger")
        self.no_data_batches = no_data_batches
        self.fault = fault
        self.delay = tm.duration(query.delay, "delay")
        self._restore()

    def __repr__(self) -> str:
        return (
            f"Runner({self.query.name!r}, next batch {self.batch_id}, "
            f"watermark {tm.to_datetime(self.watermark):%Y-%m-%d %H:%M:%S})"
        )

    # -- public ------------------------------------------------------------------------------

    @property
    def exhausted(self) -> bool:
        """True when every event has been read and no batch is pending."""
        done = self.offsets == self.source.sizes()
        return done and self._planned is None and not self._pending_no_data()

    def run(self, triggers: int | None = None) -> pd.DataFrame:
        """Run `triggers` triggers (until the source is exhausted when None); the progress."""
        count = 0
        while (triggers is None and not self.exhausted) or (
            triggers is not None and count < triggers
        ):
            self.step()
            count += 1
        return self.progress()

    def step(self) -> dict | None:
        """One trigger of the clock: a micro-batch if there is data (or a watermark to act
        on), else nothing. Returns the batch's progress record, or None when idle."""
        if self._planned is not None:  # logged before a crash: replay it exactly
            clock, end, late, mark = self._planned
            return self._batch(clock, end, Marks(late, mark))
        clock = self.clock + self.trigger
        end = self._end_offsets(clock)
        if end == self.offsets and not self._pending_no_data():
            self.clock = clock
            return None
        return self._batch(clock, end, Marks(self.late_mark, self.watermark))

    def flush(self) -> dict:
        """Emit every window still open, as if the input had ended (Spark never does: opt-in)."""
        return self._batch(self.clock, list(self.offsets), Marks(self.watermark, END_OF_TIME))

    def progress(self) -> pd.DataFrame:
        """One row per committed batch: offsets, clock, watermarks, row counts, seconds."""
        table = self.query.table("ops:commits")
        if not self.lake.exists(table):
            return ckpt.COMMITS.empty_table().to_pandas()
        return self.lake.delta(table).to_pyarrow_table().sort_by("batch_id").to_pandas()

    def results(self) -> ibis.Table:
        """The results table on this runner's engine."""
        return self.lake.table(self.query.table(), self.con)

    def late(self) -> ibis.Table:
        """The late-events table on this runner's engine."""
        return self.lake.table(self.query.table("late"), self.con)

    # -- one micro-batch -------------------------------------------------------------------

    def _batch(self, clock: int, end: list[int], marks: Marks) -> dict:
        k, q, started = self.batch_id, self.query, time.perf_counter()
        if self._planned is None:
            self._write(q.table("ops:offsets"), ckpt.plan(k, clock, self.offsets, end, marks))
        self._fault("planned")
        raw = self.source.read(self.offsets, end)
        batch = self.plan.run(raw, marks, self.states)
        counts = {"input_rows": raw.num_rows, "dead_rows": batch.dead.num_rows}
        lates, states, before = [], {}, batch.valid_rows
        for name, result in batch.outputs:
            if result.late is not None:
                lates.append(result.late)
            if name == "dedup":
                counts["duplicates"] = before - result.late.num_rows - result.rows
            before = result.rows
            states |= result.states
        rows = batch.outputs[-1][1].out if batch.outputs else None
        late = pa.concat_tables(lates) if lates else None
        counts["late_rows"] = 0 if late is None else late.num_rows
        counts["emitted_rows"] = before
        counts["state_rows"] = sum(t.num_rows for t in states.values())
        self._write(q.table(), _tagged(rows, k), q.merge_keys())
        if late is not None:
            self._write(q.table("late"), _tagged(late, k))
        self._write(q.table("dead_letter"), _tagged(batch.dead, k))
        versions = {}
        for key, table in states.items():
            versions[key] = self._write(q.table(f"ops:state_{key}"), table, overwrite=True)
        self.max_event = _max(self.max_event, batch.latest)
        following = marks.evict
        if self.max_event is not None:  # Spark keeps event time stats in whole milliseconds
            following = max(following, self.max_event // 1000 * 1000 - self.delay)
        self._fault("before_commit")
        seconds = time.perf_counter() - started
        record = ckpt.commit(k, clock, marks, following, self.max_event, versions, counts, seconds)
        self._write(q.table("ops:commits"), ckpt.record_table(record))
        self._fault("committed")
        self.batch_id, self.clock, self.offsets = k + 1, clock, list(end)
        self.late_mark, self.watermark, self.states = marks.evict, following, states
        self._planned = None
        return record

    def _write(self, table: str, data: pa.Table, merge_on=None, overwrite=False) -> int | None:
        """One commit tagged (app_id, batch_id); an empty append only creates the table."""
        k = self.batch_id
        self._fault(f"before:{table}")
        if data.num_rows == 0 and not overwrite:
            return None  # nothing to add; the table exists since the runner started
        txn = (f"{self.query.name}@{table}", k)
        reader = self._reader(data, table)
        if merge_on:
            self.lake.merge(table, reader, on=merge_on, transaction=txn)
            version = None
        else:
            mode = "overwrite" if overwrite else "append"
            meta = {ENGINE_KEY: self.con.name}  # the engine computed the rows; Arrow carried them
            version = self.lake.write(table, reader, mode=mode, transaction=txn, metadata=meta)
        self._fault(f"after:{table}")
        return version

    def _reader(self, data: pa.Table, table: str) -> pa.RecordBatchReader:
        """The rows as a stream, with the fault hook called after the first batch ("during")."""
        if self.fault is None:
            return data.to_reader()

        def batches() -> Iterator[pa.RecordBatch]:
            for i, batch in enumerate(data.to_batches(max_chunksize=max(1, data.num_rows // 2))):
                yield batch
                if i == 0:
                    self._fault(f"during:{table}")

        return pa.RecordBatchReader.from_batches(data.schema, batches())

    def _fault(self, point: str) -> None:
        if self.fault is not None:
            self.fault(point, self.batch_id)

    # -- clock, offsets, restart -----------------------------------------------------------

    def _end_offsets(self, clock: int) -> list[int]:
        end = self.source.end_offsets(clock)
        cap = getattr(self.source, "max_per_batch", None)
        return [min(e, s + cap) if cap else e for s, e in zip(self.offsets, end, strict=True)]

    def _pending_no_data(self) -> bool:
        return self.no_data_batches and self.watermark > self.late_mark

    def _restore(self) -> None:
        """Resume from the checkpoint in the ops layer (or start afresh)."""
        saved = ckpt.restore(self.lake, self.query, self.source.partitions)
        self.batch_id, self.clock, self.offsets = saved.batch_id, saved.clock, saved.offsets
        if saved.batch_id == 0:
            start = self.source.start_clock()
            self.clock = start - start % self.trigger  # triggers fall on whole intervals
        self.late_mark, self.watermark, self.max_event = saved.late, saved.mark, saved.max_event
        self._planned = saved.planned
        self.plan = Plan(self.con, self.query.name, self.query.operators(), repr(self.query))
        self._create_tables()
        self.states = {
            key: self.lake.delta(self.query.table(f"ops:state_{key}"), version).to_pyarrow_table()
            for key, version in saved.versions.items()
        }

    def _create_tables(self) -> None:
        """Create the query's tables, empty, before the first batch: readers always find them,
        and each checkpoints its Delta log every few commits."""
        q, plan = self.query, self.plan
        schemas = {
            q.table(): _with_batch(plan.out_schema),
            q.table("dead_letter"): _with_batch(plan.dead_schema),
            q.table("ops:offsets"): ckpt.OFFSETS,
            q.table("ops:commits"): ckpt.COMMITS,
        }
        if plan.late_schema is not None:
            schemas[q.table("late")] = _with_batch(plan.late_schema)
        for key, schema in plan.state_schemas.items():
            schemas[q.table(f"ops:state_{key}")] = schema
        for name, schema in schemas.items():
            if not self.lake.exists(name):
                self.lake.write(name, schema.empty_table())
                interval = {"delta.checkpointInterval": CHECKPOINT_INTERVAL}
                self.lake.delta(name).alter.set_table_properties(interval)


CHECKPOINT_INTERVAL = "10"
"""Delta checkpoints every 10 commits: a table written every batch stays quick to open."""


def _tagged(data: pa.Table, k: int) -> pa.Table:
    return data.append_column("batch_id", pa.array([k] * data.num_rows, pa.int64()))


def _with_batch(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field("batch_id", pa.int64()))


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
