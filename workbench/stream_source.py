"""Replayable stream sources: a seeded, partitioned event log and a folder of JSON-lines files.

A source is read by offsets, like a Kafka topic: `end_offsets(clock)` says how far each
partition can be read at a simulated processing time, `read(start, end)` returns those events.
Reading the same offsets again returns the same rows, which is what makes a restarted
micro-batch produce exactly what the crashed one would have.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import duckdb
import ibis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench import datasets
from workbench import stream_time as tm
from workbench.errors import WorkbenchError

_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("event_id", pa.int64()),
        ("key", pa.int64()),
        ("event_time", _TS),
        ("kind", pa.string()),
        ("value", pa.float64()),
        ("ref", pa.int64()),
        ("arrival_time", _TS),
        ("error", pa.string()),
        ("raw", pa.string()),
    ]
)
"""Every source's rows: where they sit in the log, the event, when it arrived, parse errors."""


@dataclass(frozen=True)
class Settings:
    """How the simulated stream misbehaves: rate, disorder, lateness, duplicates, bad rows."""

    rate: float = 100.0
    """Events per second of event time (the clickstream's day is squeezed or stretched to it)."""
    disorder: int = 2 * tm.US
    """Every event arrives up to this long (uniformly) after it happened: out-of-orderness."""
    late_fraction: float = 0.02
    """The fraction of events that arrive `late_by` later still (mobile clients, retries)."""
    late_by: int = 60 * tm.US
    """How much later the late events arrive."""
    duplicates: float = 0.01
    """The fraction of events delivered twice (at-least-once delivery), the copy a bit later."""
    bad: float = 0.0
    """The fraction of events whose event time is missing (they go to the dead-letter table)."""
    partitions: int = 4
    """Events are spread over partitions by key, as a topic keyed by customer would."""
    payment_delay: int = 20 * tm.US
    """Median time from an order to its payment (lognormal)."""
    unpaid: float = 0.1
    """The fraction of orders never paid."""


class EventLog:
    """A seeded, replayable, partitioned log of click, order and payment events."""

    def __init__(self, events: pa.Table):
        keys = [("partition", "ascending"), ("offset", "ascending")]
        self.events = events.sort_by(keys).combine_chunks()
        parts = self.events["partition"].to_numpy()
        self.partitions = int(parts.max()) + 1 if len(parts) else 1
        self._begin = np.searchsorted(parts, np.arange(self.partitions + 1), side="left")
        arrival = pc.cast(self.events["arrival_time"], pa.int64()).to_numpy(zero_copy_only=False)
        self._arrival = [
            arrival[b:e] for b, e in zip(self._begin[:-1], self._begin[1:], strict=True)
        ]

    def __repr__(self) -> str:
        return f"EventLog({self.events.num_rows:,} events, {self.partitions} partitions)"

    @classmethod
    def generate(
        cls,
        scale: float = 0.001,
        seed: int = 42,
        rate: float = 100.0,
        disorder="2 seconds",
        late_fraction: float = 0.02,
        late_by="1 minute",
        duplicates: float = 0.01,
        bad: float = 0.0,
        partitions: int = 4,
        payment_delay="20 seconds",
        unpaid: float = 0.1,
    ) -> EventLog:
        """The datasets' clickstream at `(scale, seed)`, plus an order per purchase and its
        payment, arriving with the given disorder, lateness, duplicates and bad rows."""
        settings = Settings(
            rate, tm.duration(disorder, "disorder"), late_fraction,
            tm.duration(late_by, "late_by"), duplicates, bad, partitions,
            tm.duration(payment_delay, "payment_delay"), unpaid,
        )  # fmt: skip
        _check(settings)
        clicks = datasets.table("click_events", scale, seed)
        return cls(_build(clicks, settings, np.random.default_rng([seed, 6, 0])))

    def start_clock(self) -> int:
        """The simulated processing time (µs) of the first arrival."""
        arrival = pc.min(pc.cast(self.events["arrival_time"], pa.int64())).as_py()
        return 0 if arrival is None else arrival

    def end_offsets(self, clock: int) -> list[int]:
        """Per partition, how many events have arrived by simulated time `clock` (µs)."""
        return [int(np.searchsorted(a, clock, side="right")) for a in self._arrival]

    def sizes(self) -> list[int]:
        """Events per partition."""
        return [len(a) for a in self._arrival]

    def read(self, start: list[int], end: list[int]) -> pa.Table:
        """The events at offsets `[start[p], end[p])` of each partition p."""
        pieces = [
            self.events.slice(self._begin[p] + s, e - s)
            for p, (s, e) in enumerate(zip(start, end, strict=True))
            if e > s
        ]
        return pa.concat_tables(pieces) if pieces else SCHEMA.empty_table()


class JsonLinesSource:
    """Replays a recorded stream: one JSON-lines file per micro-batch, in file-name order.

    Each line is an object with event_id, key, event_time (ISO 8601), kind, value and ref.
    Lines that are not JSON objects, or whose event time is missing or unparseable, are kept
    with an `error` and their `raw` text, for the dead-letter table.
    """

    partitions = 1
    max_per_batch = 1

    def __init__(self, folder: str | Path, pattern: str = "*.jsonl"):
        self.folder = Path(folder)
        self.pattern = pattern
        self._lines: dict[Path, int] = {}

    def __repr__(self) -> str:
        return f"JsonLinesSource({str(self.folder)!r}, {len(self.files())} files)"

    def files(self) -> list[Path]:
        """The files in replay order."""
        return sorted(self.folder.glob(self.pattern))

    def start_clock(self) -> int:
        return 0

    def end_offsets(self, clock: int) -> list[int]:
        return [len(self.files())]

    def sizes(self) -> list[int]:
        return [len(self.files())]

    def read(self, start: list[int], end: list[int]) -> pa.Table:
        files = self.files()
        tables, line = [], sum(self._count(f) for f in files[: start[0]])
        for path in files[start[0] : end[0]]:
            tables.append(parse_json_lines(path.read_text(encoding="utf-8"), first_offset=line))
            line += self._count(path)
        return pa.concat_tables(tables) if tables else SCHEMA.empty_table()

    def _count(self, path: Path) -> int:
        if path not in self._lines:
            self._lines[path] = len(_lines(path.read_text(encoding="utf-8")))
        return self._lines[path]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]  # blank lines hold no event


def parse_json_lines(text: str, first_offset: int = 0, partition: int = 0) -> pa.Table:
    """Events from JSON lines, parsed at the edge by DuckDB (Ibis's polars and datafusion have
    no JSON functions); every line becomes a row, bad ones with an `error`."""
    lines = pa.table({"line": pa.array(_lines(text), pa.string())})
    lines = lines.append_column("n", pa.array(np.arange(lines.num_rows), pa.int64()))
    con = _duckdb()
    con.register("lines", lines)
    got = con.execute(
        f"""
        WITH p AS (
          SELECT n, line, coalesce(try(json_type(line)) = 'OBJECT', false) AS ok FROM lines
        ), f AS (
          SELECT *, CASE WHEN ok THEN line->>'event_time' END AS t FROM p
        )
        SELECT {int(partition)}::INTEGER AS partition, ({int(first_offset)} + n)::BIGINT AS offset,
          TRY_CAST(CASE WHEN ok THEN line->>'event_id' END AS BIGINT) AS event_id,
          TRY_CAST(CASE WHEN ok THEN line->>'key' END AS BIGINT) AS key,
          TRY_CAST(t AS TIMESTAMPTZ) AS event_time,
          CASE WHEN ok THEN line->>'kind' END AS kind,
          TRY_CAST(CASE WHEN ok THEN line->>'value' END AS DOUBLE) AS value,
          TRY_CAST(CASE WHEN ok THEN line->>'ref' END AS BIGINT) AS ref,
          NULL::TIMESTAMPTZ AS arrival_time,
          CASE WHEN NOT ok THEN 'not a JSON object'
               WHEN t IS NULL THEN 'event_time is null'
               WHEN TRY_CAST(t AS TIMESTAMPTZ) IS NULL THEN 'event_time is not a timestamp: ' || t
          END AS error,
          line AS raw
        FROM f ORDER BY n
        """
    ).fetch_arrow_table()
    con.unregister("lines")
    return got.cast(SCHEMA)


@functools.cache
def _duckdb() -> duckdb.DuckDBPyConnection:
    """One private DuckDB connection for parsing at the edge (opening one costs ~30 ms)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


# -- the validation every batch starts with (pure Ibis) ------------------------------------------


def _problem(events: ibis.Table) -> ibis.Value:
    return ibis.cases(
        (events.error.notnull(), events.error),
        (events.event_time.isnull(), "event_time is null"),
        (events.event_id.isnull(), "event_id is null"),
        else_=ibis.null("string"),
    )


def dead_letters(events: ibis.Table) -> ibis.Table:
    """Rows that cannot be processed (no event time, no id, not parseable), with the reason."""
    flagged = events.mutate(reason=_problem(events))
    return flagged.filter(flagged.reason.notnull())


def valid(events: ibis.Table) -> ibis.Table:
    """Rows with an event time and an id: what the stateful operators see."""
    return events.filter(_problem(events).isnull()).drop("error", "raw")


# -- building the simulated log (vectorized, seeded) ---------------------------------------------


def _check(s: Settings) -> None:
    fractions = dict(late_fraction=s.late_fraction, duplicates=s.duplicates, bad=s.bad,
                     unpaid=s.unpaid)  # fmt: skip
    for name, value in fractions.items():
        if not 0 <= value <= 1:
            raise WorkbenchError(
                f"{name}={value!r} is not a fraction.",
                "Allowed: a number from 0 to 1.",
                f"{name}=0.05 means 5% of events.",
            )
    if not s.rate > 0 or s.partitions < 1 or min(s.disorder, s.late_by, s.payment_delay) < 0:
        raise WorkbenchError(
            f"Invalid stream settings: rate={s.rate!r}, partitions={s.partitions!r}, "
            f"disorder={s.disorder}us, late_by={s.late_by}us.",
            "Allowed: rate > 0 events per second, partitions >= 1, durations >= 0.",
            "the defaults are rate=100, partitions=4, disorder='2 seconds', late_by='1 minute'.",
        )


def _build(clicks: pa.Table, s: Settings, rng: np.random.Generator) -> pa.Table:
    n = clicks.num_rows
    t = pc.cast(clicks["event_time"], pa.int64()).to_numpy()
    t0, t1 = int(t.min()), int(t.max())
    span = n / s.rate * tm.US  # the stream lasts n / rate seconds of event time
    t = t0 + np.round((t - t0) * (span / max(t1 - t0, 1))).astype(np.int64)
    customer = clicks["customer_id"].to_numpy()
    value = clicks["value"].to_numpy(zero_copy_only=False)
    ids = clicks["event_id"].to_numpy()
    # An order per purchase click; a payment for most orders, a lognormal delay later.
    bought = np.flatnonzero(
        pc.equal(clicks["event_type"], "purchase").to_numpy(zero_copy_only=False)
    )
    orders = n + 1 + np.arange(len(bought))
    paid = bought[rng.random(len(bought)) >= s.unpaid]
    paid_orders = orders[np.isin(bought, paid)]
    delay = rng.lognormal(np.log(max(s.payment_delay, 1)), 0.8, len(paid)).astype(np.int64)
    payments = n + len(bought) + 1 + np.arange(len(paid))
    event_id = np.concatenate([ids, orders, payments])
    key = np.concatenate([customer, customer[bought], customer[paid]])
    event_time = np.concatenate([t, t[bought], t[paid] + delay])
    kind = np.repeat(["click", "order", "payment"], [n, len(bought), len(paid)])
    amount = np.concatenate([value, value[bought], value[paid]])
    ref = np.concatenate([np.full(n + len(bought), -1), paid_orders])
    # Arrival: up to `disorder` after the event, `late_by` more for the late ones.
    m = len(event_id)
    arrival = event_time + (rng.random(m) * s.disorder).astype(np.int64)
    arrival += np.where(rng.random(m) < s.late_fraction, s.late_by, 0)
    # At-least-once delivery: some events come twice, the copy up to a second or `disorder` later.
    again = np.flatnonzero(rng.random(m) < s.duplicates)
    resent = arrival[again] + (rng.random(len(again)) * max(s.disorder, tm.US)).astype(np.int64)
    rows = np.concatenate([np.arange(m), again])
    arrival = np.concatenate([arrival, resent])
    missing = rng.random(len(rows)) < s.bad
    partition = (key[rows] % s.partitions).astype(np.int32)
    order = np.lexsort((event_id[rows], arrival, partition))  # by partition, then arrival
    rows, arrival, missing, partition = (
        rows[order],
        arrival[order],
        missing[order],
        partition[order],
    )
    offset = np.arange(len(rows)) - np.searchsorted(partition, partition, side="left")
    return pa.table(
        {
            "partition": partition,
            "offset": offset.astype(np.int64),
            "event_id": event_id[rows],
            "key": key[rows],
            "event_time": pa.array(event_time[rows], _TS, mask=missing),
            "kind": pa.array(kind[rows], pa.string()),
            "value": amount[rows],
            "ref": pa.array(ref[rows], pa.int64(), mask=ref[rows] < 0),
            "arrival_time": pa.array(arrival, _TS),
            "error": pa.array(np.where(missing, "event_time is null", None), pa.string()),
            "raw": pa.nulls(len(rows), pa.string()),
        },
        schema=SCHEMA,
    )


def files_from_log(log: EventLog, folder: str | Path, trigger) -> list[Path]:
    """Record a log as JSON-lines files, one per trigger that has arrivals, named in order:
    what a runner with that trigger reads in each batch (to replay it with JsonLinesSource)."""
    folder, step = Path(folder), tm.duration(trigger, "trigger")
    folder.mkdir(parents=True, exist_ok=True)
    start = log.start_clock() - log.start_clock() % step  # as the runner aligns its clock
    arrival = pc.cast(log.events["arrival_time"], pa.int64()).to_numpy()
    batch = np.maximum(-(-(arrival - start) // step) - 1, 0)  # read at the end of its trigger
    con = _duckdb()
    con.register("events", log.events.append_column("batch", pa.array(batch)))
    written = []
    for b in np.unique(batch).tolist():  # one file per batch, not per row
        path = folder / f"batch-{b:06d}.jsonl"
        con.execute(
            "COPY (SELECT event_id, key, strftime(event_time, '%Y-%m-%dT%H:%M:%S.%fZ') AS "
            'event_time, kind, value, ref FROM events WHERE batch = ? ORDER BY "partition", "offset")'
            f" TO '{_sql_path(path)}' (FORMAT json)",
            [b],
        )
        written.append(path)
    con.unregister("events")
    return written


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
