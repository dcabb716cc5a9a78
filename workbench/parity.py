"""Engine parity: what Ibis 12 lacks on polars and datafusion, filled in (issue #3).

- polars: window functions (`polars_windows`), md5 / sha256 `hexdigest` (`hashing`), and
  DuckDB's null rules for `nunique`, `any` and `all`; results are collected with Polars'
  streaming engine.
- datafusion: `hexdigest`, `median` of integers, and sliding window frames left without values;
  its other window functions match DuckDB but for the gaps named in tests/test_windows.py.

The rules are registered with Ibis's own dispatchers when `workbench.connect` opens the engine;
installing twice is harmless. tests/test_parity.py fails when upstream Ibis brings its own.
"""

from __future__ import annotations

from typing import Any

import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import polars as pl
import sqlglot.expressions as sge
from ibis.backends.polars import Backend as PolarsBackend
from ibis.backends.polars.compiler import translate
from ibis.backends.sql.compilers.base import SQLGlotCompiler
from ibis.backends.sql.compilers.datafusion import DataFusionCompiler

from workbench import hashing, polars_windows


def install_polars() -> None:
    """Register the workbench's window and hash translations with Ibis's polars compiler."""
    polars_windows.install()
    hashing.install_polars()
    translate.register(ops.CountDistinct, _polars_count_distinct)
    translate.register(ops.Any, _polars_any_all)
    translate.register(ops.All, _polars_any_all)
    # `has_operation` caches the registry it saw first; let it see the new rules.
    PolarsBackend._get_operations.cache_clear()


def _polars_reduced(op, **kw) -> pl.Expr:
    arg = translate(op.arg, **kw)
    return arg if op.where is None else arg.filter(translate(op.where, **kw))


def _polars_count_distinct(op, **kw) -> pl.Expr:
    """Distinct values without null, as SQL counts them (Ibis 12 counts null as a value)."""
    return _polars_reduced(op, **kw).drop_nulls().n_unique()


def _polars_any_all(op, **kw) -> pl.Expr:
    """`any` / `all` of the non-null values, and null when there are none, as DuckDB's
    bool_or / bool_and (Ibis 12 answers False / True for a group of nulls)."""
    arg = _polars_reduced(op, **kw)
    reduced = arg.any() if isinstance(op, ops.Any) else arg.all()
    return pl.when(arg.count() > 0).then(reduced).otherwise(None)


def install_datafusion() -> None:
    """Register the workbench's hash, median and window fixes with Ibis's datafusion compiler."""
    hashing.install_datafusion()
    DataFusionCompiler.visit_Median = _datafusion_median
    DataFusionCompiler.visit_WindowFunction = _datafusion_window


def _datafusion_median(self, op, *, arg, where):
    """DataFusion's median of integers is an integer (median(0, 1) = 0); DuckDB's is 0.5."""
    if op.arg.dtype.is_integer():
        arg = self.cast(arg, dt.float64)
    return self.agg.median(arg, where=where)


def _datafusion_window(self, op, *, func, **kw):
    """NULL where a sliding frame holds no value: DataFusion 51 answers NaN for AVG and keeps
    the last value for MIN once the values slid out (tests/test_windows.py)."""
    window = SQLGlotCompiler.visit_WindowFunction(self, op, func=func, **kw)
    if op.start is None or not isinstance(op.func, (ops.Mean, ops.Min)):
        return window
    count = func.transform(
        lambda n: sge.Count(this=n.this) if isinstance(n, (sge.Avg, sge.Min)) else n
    )
    count = SQLGlotCompiler.visit_WindowFunction(self, op, func=count, **kw)
    return sge.Case(ifs=[sge.If(this=count > 0, true=window)])


class StreamingPolars(PolarsBackend):
    """Ibis's polars backend, collecting with Polars' streaming engine unless told otherwise.

    Ibis collects with the in-memory engine; the streaming one runs a 10M-row group-by several
    times faster (benchmarks/bench_parity.py), with the same rows (row order is never promised,
    as in SQL).
    `engine="cpu"` (or "gpu") still works per call.
    """

    def execute(self, expr, /, *, engine: Any = "streaming", **kwargs):
        return super().execute(expr, engine=engine, **kwargs)

    def to_polars(self, expr, /, *, engine: Any = "streaming", **kwargs):
        return super().to_polars(expr, engine=engine, **kwargs)

    def _to_pyarrow_table(self, expr, params=None, limit=None, engine: Any = "streaming", **kw):
        # to_pyarrow and to_pyarrow_batches both come through here.
        return super()._to_pyarrow_table(expr, params=params, limit=limit, engine=engine, **kw)


def polars_connection() -> StreamingPolars:
    """A polars connection whose results are collected with Polars' streaming engine."""
    return StreamingPolars().connect()
