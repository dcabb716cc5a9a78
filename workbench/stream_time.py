"""Event time as integer microseconds on every engine, and durations written like "10 seconds".

Window starts and session ends are integer arithmetic on microseconds since the epoch. Ibis 12
spells that `ts.delta(EPOCH, unit="microsecond")`, which compiles on DuckDB only; `install()`
gives polars and datafusion the same rule (microseconds only, the one unit whose meaning is a
plain difference on every engine).
"""

from __future__ import annotations

import datetime as dt
import re

import ibis
import ibis.expr.operations as ops
import polars as pl
import sqlglot.expressions as sge
from ibis.backends.polars.compiler import translate
from ibis.backends.sql.compilers.datafusion import DataFusionCompiler
from ibis.backends.sql.compilers.duckdb import DuckDBCompiler

from workbench.errors import UnsupportedOperationError, WorkbenchError

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
US = 1_000_000
_UNITS = {
    "us": 1, "microsecond": 1, "ms": 1_000, "millisecond": 1_000, "s": US, "sec": US,
    "second": US, "m": 60 * US, "min": 60 * US, "minute": 60 * US, "h": 3600 * US,
    "hour": 3600 * US, "d": 86_400 * US, "day": 86_400 * US,
}  # fmt: skip
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([a-z]+)\s*$")


def duration(value: str | float | dt.timedelta, what: str = "duration") -> int:
    """Microseconds in `value`: "10 seconds", "1 minute", "250 ms", a timedelta, or seconds."""
    if isinstance(value, dt.timedelta):
        return value // dt.timedelta(microseconds=1)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(value * US)
    match = _DURATION.match(value.lower()) if isinstance(value, str) else None
    unit = match and (_UNITS.get(match[2]) or _UNITS.get(match[2].removesuffix("s")))
    if not match or not unit:
        raise WorkbenchError(
            f"{what}={value!r} is not a duration.",
            "Allowed: a number of seconds, a datetime.timedelta, or text such as '10 seconds', "
            "'1 minute', '250 ms', '2 hours'.",
            "Spark spells durations the same way: window(event_time, '10 minutes').",
        )
    return round(float(match[1]) * unit)


def to_datetime(us: int) -> dt.datetime:
    """The UTC datetime `us` microseconds after the epoch."""
    return EPOCH + dt.timedelta(microseconds=us)


def to_micros(when: dt.datetime) -> int:
    """Microseconds since the epoch of a datetime (naive ones are taken as UTC)."""
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return (when - EPOCH) // dt.timedelta(microseconds=1)


def literal(us: int) -> ibis.Value:
    """A UTC timestamp literal `us` microseconds after the epoch, to compare event times with."""
    return ibis.literal(to_datetime(us), type="timestamp('UTC', 6)")


def micros(ts: ibis.Value) -> ibis.Value:
    """Microseconds since the epoch of a timestamp column, as int64 (null stays null)."""
    return ts.delta(ibis.literal(EPOCH, type="timestamp('UTC', 6)"), unit="microsecond")


def timestamp(us: ibis.Value) -> ibis.Value:
    """The UTC timestamp of an int64 column of microseconds since the epoch."""
    return ibis.literal(EPOCH, type="timestamp('UTC', 6)") + us.as_interval("us")


def install() -> None:
    """Teach Ibis's polars and datafusion compilers `TimestampDelta` in microseconds, and DuckDB
    a fast one (idempotent)."""
    translate.register(ops.TimestampDelta, _polars_delta)
    DataFusionCompiler.visit_TimestampDelta = _datafusion_delta
    if not getattr(DuckDBCompiler.visit_TimestampDelta, "_workbench", False):
        DuckDBCompiler.visit_TimestampDelta = _duckdb_delta(DuckDBCompiler.visit_TimestampDelta)
    from ibis.backends.polars import Backend

    Backend._get_operations.cache_clear()  # it caches the rules it saw first


def _unit(op) -> str:
    unit = getattr(op.part, "value", None)
    if unit != "microsecond":
        raise UnsupportedOperationError(
            f"Timestamp differences in {unit!r} have no translation matching DuckDB here.",
            "Supported: unit='microsecond' (an exact difference on every engine).",
            "take the difference in microseconds and divide it yourself.",
        )
    return unit


def _polars_delta(op, **kw) -> pl.Expr:
    _unit(op)
    left, right = (translate(side, **kw).dt.cast_time_unit("us") for side in (op.left, op.right))
    return (left - right).dt.total_microseconds()


def _duckdb_delta(original):
    """DuckDB's date_diff on TIMESTAMPTZ goes through its calendar (0.6 s per million rows);
    `epoch_us` is exact and a hundred times faster. Other units keep Ibis's rule."""

    def visit(self, op, *, part, left, right):
        if getattr(op.part, "value", None) != "microsecond":
            return original(self, op, part=part, left=left, right=right)
        return self.f.epoch_us(left) - self.f.epoch_us(right)

    visit._workbench = True
    return visit


def _datafusion_delta(self, op, *, part, left, right):
    _unit(op)

    def as_int(side, dtype):
        tz = f'Some("{dtype.timezone}")' if dtype.timezone else "None"
        micro = self.f.arrow_cast(side, sge.convert(f"Timestamp(Microsecond, {tz})"))
        return self.cast(micro, ibis.dtype("int64"))

    return as_int(left, op.left.dtype) - as_int(right, op.right.dtype)
