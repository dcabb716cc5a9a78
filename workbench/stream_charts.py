"""Charts of a running stream: each event's event time against when it was processed, the
watermark as it moved, late events, and windows as they were emitted (altair, < 5000 rows)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from workbench import stream_time as tm

STATUS_COLORS = {"on time": "#1f6f8b", "late": "#e07a5f", "watermark": "#3d405b"}


def timeline(runner, sample: int = 1500, seed: int = 0) -> pd.DataFrame:
    """A sample of the events read so far: event time, processing time (the clock of the batch
    that read it), batch, and whether it was late."""
    log = runner.source.events
    offsets = runner.lake.delta(runner.query.table("ops:offsets")).to_pyarrow_table()
    batch = np.full(log.num_rows, -1)
    clock = np.zeros(log.num_rows, dtype=np.int64)
    part, off = log["partition"].to_numpy(), log["offset"].to_numpy()
    for row in offsets.to_pylist():
        hit = (part == row["partition"]) & (off >= row["start"]) & (off < row["end"])
        batch[hit], clock[hit] = row["batch_id"], tm.to_micros(row["clock"])
    read = log.append_column("batch_id", pa.array(batch)).append_column(
        "processed_at", pa.array(clock).cast(pa.timestamp("us", tz="UTC"))
    )
    read = read.filter(
        pc.and_(pc.greater_equal(read["batch_id"], 0), pc.is_valid(read["event_time"]))
    )
    name = runner.query.table("late")
    late = runner.lake.delta(name).to_pyarrow_table() if runner.lake.exists(name) else None
    if late is None:
        late = pa.table({"partition": pa.array([], pa.int32()), "offset": pa.array([], pa.int64())})
    late = late.select(["partition", "offset"]).to_pandas().drop_duplicates().assign(late=True)
    frame = read.select(["event_time", "processed_at", "batch_id", "kind", "partition", "offset"])
    frame = frame.to_pandas()
    if len(frame) > sample:
        frame = frame.sample(sample, random_state=seed)
    frame = frame.merge(late, on=["partition", "offset"], how="left")
    frame["status"] = np.where(frame["late"].fillna(False).astype(bool), "late", "on time")
    return frame.drop(columns="late").sort_values("event_time").reset_index(drop=True)


def watermarks(runner) -> pd.DataFrame:
    """The watermark each batch used, against the batch's processing time."""
    progress = runner.progress()
    return progress[["batch_id", "clock", "watermark"]].rename(columns={"clock": "processed_at"})


def time_chart(runner, sample: int = 1500, title: str | None = None) -> alt.LayerChart:
    """Event time against processing time, late events in colour, and the watermark line."""
    events = timeline(runner, sample)
    marks = watermarks(runner)
    marks = marks[marks.watermark > marks.watermark.min()] if len(marks) > 1 else marks
    scale = alt.Scale(domain=list(STATUS_COLORS), range=list(STATUS_COLORS.values()))
    dots = (
        alt.Chart(events)
        .mark_circle(size=14, opacity=0.6)
        .encode(
            x=alt.X("processed_at:T", title="processing time (simulated clock)"),
            y=alt.Y("event_time:T", title="event time"),
            color=alt.Color("status:N", scale=scale, title=None),
            tooltip=["event_time:T", "processed_at:T", "batch_id:Q", "kind:N", "status:N"],
        )
    )
    line = (
        alt.Chart(marks.assign(status="watermark"))
        .mark_line(interpolate="step-after", strokeWidth=2)
        .encode(x="processed_at:T", y="watermark:T", color=alt.Color("status:N", scale=scale))
    )
    title = title or f"{runner.query.name}: events as processed, and the watermark"
    return (dots + line).properties(title=title, height=260)


def windows_chart(results: pd.DataFrame, value: str = "events", color: str = "kind") -> alt.Chart:
    """Windows as emitted: one bar per window, the batch that emitted it in the tooltip."""
    enc = {"color": f"{color}:N"} if color in results.columns else {}
    return (
        alt.Chart(results)
        .mark_bar()
        .encode(
            x=alt.X("window_start:T", title="window start"),
            y=alt.Y(f"sum({value}):Q", title=value),
            tooltip=["window_start:T", "window_end:T", "batch_id:Q", f"{value}:Q"],
            **enc,
        )
        .properties(title="Windows, as they were emitted", height=200)
    )
