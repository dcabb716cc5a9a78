"""A streaming query's checkpoint in the lakehouse's `ops` layer: planned offsets and commits.

`ops.<query>_offsets` is the write-ahead log: before a batch reads anything, its offsets,
clock and watermarks are written. `ops.<query>_commits` gets one row once every other table of
the batch is written: its watermarks, counts and the version of each state table. Both are
written with `Transaction(app_id, batch_id)`, so writing them again on replay is a no-op.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from workbench import stream_time as tm
from workbench.lakehouse import Lakehouse

_TS = pa.timestamp("us", tz="UTC")
OFFSETS = pa.schema(
    [("batch_id", pa.int64()), ("partition", pa.int32()), ("start", pa.int64()),
     ("end", pa.int64()), ("clock", _TS), ("watermark", _TS), ("late_watermark", _TS)]
)  # fmt: skip
COMMITS = pa.schema(
    [("batch_id", pa.int64()), ("clock", _TS), ("late_watermark", _TS), ("watermark", _TS),
     ("next_watermark", _TS), ("max_event_time", _TS), ("input_rows", pa.int64()),
     ("dead_rows", pa.int64()), ("late_rows", pa.int64()), ("duplicates", pa.int64()),
     ("emitted_rows", pa.int64()), ("state_rows", pa.int64()), ("state_versions", pa.string()),
     ("seconds", pa.float64())]
)  # fmt: skip


@dataclass(frozen=True)
class Saved:
    """Where a query resumes: the next batch, its offsets, watermarks and state versions."""

    batch_id: int = 0
    clock: int = 0
    offsets: list[int] | None = None
    late: int = 0
    mark: int = 0
    max_event: int | None = None
    versions: dict[str, int] | None = None
    planned: tuple[int, list[int], int, int] | None = None
    """A batch logged but not committed: its clock, end offsets and watermarks, to replay."""


def plan(k: int, clock: int, start, end, marks) -> pa.Table:
    """Batch k's row(s) of the write-ahead log: its offsets, clock and watermarks."""
    n = len(start)
    rows = {
        "batch_id": [k] * n, "partition": list(range(n)), "start": list(start), "end": list(end),
        "clock": [clock] * n, "watermark": [marks.evict] * n, "late_watermark": [marks.late] * n,
    }  # fmt: skip
    return _table(rows, OFFSETS)


def commit(k, clock, marks, following, max_event, versions, counts, seconds) -> dict:
    """Batch k's commit record: watermarks, counts, state versions (the batch's last write)."""
    return {
        "batch_id": k, "clock": clock, "late_watermark": marks.late, "watermark": marks.evict,
        "next_watermark": following, "max_event_time": max_event,
        "input_rows": counts["input_rows"], "dead_rows": counts["dead_rows"],
        "late_rows": counts["late_rows"], "duplicates": counts.get("duplicates", 0),
        "emitted_rows": counts["emitted_rows"], "state_rows": counts["state_rows"],
        "state_versions": json.dumps(versions, sort_keys=True), "seconds": seconds,
    }  # fmt: skip


def record_table(record: dict) -> pa.Table:
    """A commit record as the one-row table `ops.<query>_commits` appends."""
    return _table({name: [value] for name, value in record.items()}, COMMITS)


def restore(lake: Lakehouse, query, partitions: int) -> Saved:
    """The checkpoint's resume point, or a fresh start when there is none."""
    offsets = _read(lake, query.table("ops:offsets"), OFFSETS)
    commits = _read(lake, query.table("ops:commits"), COMMITS)
    zero = [0] * partitions
    if commits.num_rows == 0:
        return Saved(offsets=zero, versions={}, planned=_planned(offsets, 0))
    last = commits.sort_by([("batch_id", "descending")]).slice(0, 1).to_pylist()[0]
    k = last["batch_id"]
    us = {
        c: None if last[c] is None else tm.to_micros(last[c]) for c in COMMITS.names if c in _TIMES
    }
    return Saved(
        batch_id=k + 1,
        clock=us["clock"],
        offsets=_ends(offsets, k) or zero,
        late=us["watermark"],
        mark=us["next_watermark"],
        max_event=us["max_event_time"],
        versions=json.loads(last["state_versions"]),
        planned=_planned(offsets, k + 1),
    )


_TIMES = {"clock", "late_watermark", "watermark", "next_watermark", "max_event_time"}


def _ends(offsets: pa.Table, k: int) -> list[int] | None:
    rows = offsets.filter(pc.equal(offsets["batch_id"], k)).sort_by("partition")
    return rows["end"].to_pylist() or None


def _planned(offsets: pa.Table, k: int) -> tuple[int, list[int], int, int] | None:
    rows = offsets.filter(pc.equal(offsets["batch_id"], k)).sort_by("partition")
    if rows.num_rows == 0:
        return None
    first = {c: tm.to_micros(rows[c][0].as_py()) for c in ("clock", "late_watermark", "watermark")}
    return first["clock"], rows["end"].to_pylist(), first["late_watermark"], first["watermark"]


def _read(lake: Lakehouse, table: str, schema: pa.Schema) -> pa.Table:
    return lake.delta(table).to_pyarrow_table() if lake.exists(table) else schema.empty_table()


def _table(columns: dict, schema: pa.Schema) -> pa.Table:
    arrays = []
    for field in schema:
        values = columns[field.name]
        if field.type == _TS:
            arrays.append(pa.array(values, pa.int64()).cast(_TS))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)
