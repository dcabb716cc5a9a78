"""Window functions for Ibis's polars backend, matching DuckDB row for row (issue #3).

Ibis 12 has no polars translation for `ops.WindowFunction`; `install()` registers one with its
`translate` dispatcher. Every rule builds a Polars expression that runs on one partition sorted
by the window's keys (`Expr.over(partition_by, order_by=...)`), so ties, nulls and frames follow
what Ibis compiles for DuckDB:

- keys sort nulls last unless a key says `nulls_first`, in both directions (DuckDB's default);
- Ibis always writes an explicit frame: no frame means the whole partition, also with an
  `order_by`, and `cumsum()` & co. are `ROWS UNBOUNDED PRECEDING` (ties do not share a value);
  `range=(None, 0)` is the SQL default frame, where ties share the running value;
- aggregates skip nulls, and are null over a frame without values (count is 0);
- NaN sorts after every number: `max` is NaN when a NaN is in the frame, `min` only when all are.

What cannot be matched raises `UnsupportedOperationError` naming the operation.
"""

from __future__ import annotations

import ibis.expr.operations as ops
import polars as pl
from ibis.backends.polars.compiler import translate
from ibis.formats.polars import PolarsType

from workbench.errors import UnsupportedOperationError

_FRAMED = {ops.Sum: "sum", ops.Mean: "mean", ops.Min: "min", ops.Max: "max", ops.Count: "count"}
"""Reductions that run over any row frame; others run over a whole partition only."""

_ORDER_FREE = (
    ops.Sum, ops.Mean, ops.Min, ops.Max, ops.Count, ops.CountStar, ops.CountDistinct,
    ops.Any, ops.All, ops.StandardDev, ops.Variance, ops.Median, ops.Quantile,
    ops.BitAnd, ops.BitOr, ops.BitXor, ops.Covariance, ops.Correlation,
)  # fmt: skip
"""Reductions whose result over a whole partition does not depend on the row order."""

_RANKS = (ops.RowNumber, ops.MinRank, ops.DenseRank, ops.PercentRank, ops.CumeDist, ops.NTile)
_VALUES = (ops.First, ops.Last, ops.NthValue)

SUPPORTED = (
    "row_number, rank, dense_rank, percent_rank, cume_dist, ntile, lag, lead, first, last, "
    "nth; sum, mean, min, max, count over rows frames (any preceding / following) and over "
    "range frames bounded by UNBOUNDED or CURRENT ROW; any reduction over a whole partition"
)

_n = pl.int_range(pl.len(), dtype=pl.Int64)  # the row's position in its sorted partition
_N = pl.len().cast(pl.Int64)  # the partition's size
# Polars divides by a scalar as a multiplication by its inverse (3 / 5 == 0.6000000000000001):
# divide by a column instead, to round as DuckDB does.
_N_rows = pl.repeat(_N, pl.len())


def install() -> None:
    """Register `translate_window` for `ops.WindowFunction` (idempotent)."""
    translate.register(ops.WindowFunction, translate_window)


def translate_window(op: ops.WindowFunction, **kw) -> pl.Expr:
    """A Polars expression for one Ibis window function, or UnsupportedOperationError."""
    func = op.func
    keys = [translate(key.arg, **kw) for key in op.order_by]
    frame = _frame(op)
    if isinstance(func, _RANKS):
        expr = _rank(func, keys, **kw)
    elif isinstance(func, (ops.Lag, ops.Lead)):
        expr = _shift(func, **kw)
    elif isinstance(func, _VALUES):
        expr = _value(func, frame, keys, **kw)
    elif frame == ("rows", None, None) or frame == ("range", None, None):
        expr = _whole_partition(op, **kw)
    elif type(func) in _FRAMED or isinstance(func, ops.CountStar):
        expr = _framed(func, frame, keys, **kw)
    else:
        _refuse_frame(func, frame)
    return _over(expr, op, keys, **kw).cast(PolarsType.from_ibis(op.dtype))


def _over(expr: pl.Expr, op, keys, **kw) -> pl.Expr:
    """Evaluate `expr` on each partition of `op`, sorted by its keys as DuckDB sorts them."""
    partition = [translate(g, **kw) for g in op.group_by] or [pl.lit(0)]
    if not keys:
        return expr.over(partition)
    flags = {(k.descending, k.nulls_first) for k in op.order_by}
    if len(flags) == 1:
        ((descending, nulls_first),) = flags
        return expr.over(
            partition, order_by=keys, descending=descending, nulls_last=not nulls_first
        )
    # Polars takes one direction for all keys: turn each key into an ascending dense rank.
    ranks = []
    for key, sort_key in zip(keys, op.order_by, strict=True):
        rank = key.rank("dense", descending=sort_key.descending)
        ranks.append(rank.fill_null(0) if sort_key.nulls_first else rank)
    return expr.over(partition, order_by=ranks, nulls_last=True)


def _frame(op) -> tuple[str, int | None, int | None]:
    """(how, start, end) with row offsets relative to the current row; None is unbounded."""

    def offset(bound):
        if bound is None:
            return None
        value = bound.value
        if not (isinstance(value, ops.Literal) and value.dtype.is_integer()):
            _refuse(f"a window frame bound that is not an integer literal ({value!r})")
        return -value.value if bound.preceding else value.value

    return op.how, offset(op.start), offset(op.end)


def _refuse_frame(func, frame):
    def bound(offset, unbounded):
        if offset is None:
            return f"UNBOUNDED {unbounded}"
        return (
            f"{abs(offset)} {'PRECEDING' if offset < 0 else 'FOLLOWING'}"
            if offset
            else "CURRENT ROW"
        )

    how, start, end = frame
    frame = f"{how.upper()} BETWEEN {bound(start, 'PRECEDING')} AND {bound(end, 'FOLLOWING')}"
    _refuse(f"{type(func).__name__} over a {frame} frame")


def _refuse(what: str):
    raise UnsupportedOperationError(
        f"The polars engine cannot run {what} with DuckDB's semantics.",
        f"Supported on polars: {SUPPORTED}.",
        "run this step on duckdb or datafusion (wb.connect('duckdb')), or rewrite the window "
        "with a supported frame.",
    )


def _peers(keys) -> pl.Expr:
    """True on the first row of each group of rows with equal keys (ties)."""
    changed = _n == 0
    for key in keys:
        changed = changed | key.ne_missing(key.shift(1))
    return changed


def _peer_start(keys) -> pl.Expr:
    return pl.when(_peers(keys)).then(_n).forward_fill()


def _peer_end(keys) -> pl.Expr:
    return pl.when(_peers(keys).shift(-1, fill_value=True)).then(_n).backward_fill()


def _rank(func, keys, **kw) -> pl.Expr:
    """Ranking functions, 0-based like Ibis (row_number, rank, dense_rank, ntile)."""
    if isinstance(func, ops.RowNumber):
        return _n
    if isinstance(func, ops.MinRank):
        return _peer_start(keys)
    if isinstance(func, ops.DenseRank):
        return _peers(keys).cum_sum() - 1
    if isinstance(func, ops.PercentRank):
        return pl.when(_N > 1).then(_peer_start(keys) / (_N_rows - 1)).otherwise(0.0)
    if isinstance(func, ops.CumeDist):
        return (_peer_end(keys) + 1) / _N_rows
    # NTile: DuckDB's split, the first `N % buckets` tiles get one row more.
    if not isinstance(func.buckets, ops.Literal) or (func.buckets.value or 0) < 1:
        _refuse(f"ntile with buckets {func.buckets!r} (a positive integer literal works)")
    buckets = pl.min_horizontal(pl.lit(func.buckets.value, dtype=pl.Int64), _N)
    size = _N // buckets
    large = _N - buckets * size
    small_end = large * (size + 1)
    return (
        pl.when(_n < small_end).then(_n // (size + 1)).otherwise(large + (_n - small_end) // size)
    )


def _shift(func, **kw) -> pl.Expr:
    """lag / lead by a literal offset; `default` fills only rows shifted in from outside."""
    offset = 1
    if func.offset is not None:
        if not (isinstance(func.offset, ops.Literal) and func.offset.dtype.is_integer()):
            _refuse(f"{type(func).__name__.lower()} with offset {func.offset!r}")
        offset = func.offset.value
    offset = offset if isinstance(func, ops.Lag) else -offset
    shifted = translate(func.arg, **kw).shift(offset)
    if func.default is None:
        return shifted
    # Not `shift(fill_value=)`: DuckDB's default may be a column, Polars' fill only a scalar.
    default = translate(func.default, **kw).cast(PolarsType.from_ibis(func.arg.dtype))
    inside = (_n - offset >= 0) & (_n - offset < _N)
    return pl.when(inside).then(shifted).otherwise(default)


def _value(func, frame, keys, **kw) -> pl.Expr:
    """first / last / nth value of the frame; like DuckDB's FIRST_VALUE, nulls count."""
    if getattr(func, "where", None) is not None or getattr(func, "order_by", ()):
        _refuse(f"{type(func).__name__} with `where` or `order_by` in a window")
    arg = translate(func.arg, **kw)
    how, start, end = frame
    if how == "range" and not {start, end} <= {None, 0}:
        _refuse_frame(func, frame)
    if isinstance(func, ops.NthValue) and not (
        isinstance(func.nth, ops.Literal) and func.nth.dtype.is_integer()
    ):
        _refuse(f"nth with a position that is not an integer literal ({func.nth!r})")
    # Row positions of the frame's ends, as columns (a scalar would not gather per row).
    zero, last = pl.repeat(0, pl.len(), dtype=pl.Int64), _N_rows - 1
    if how == "rows":
        lo = zero if start is None else pl.max_horizontal(_n + start, 0)
        hi = last if end is None else pl.min_horizontal(_n + end, _N - 1)
    else:
        lo = zero if start is None else _peer_start(keys)
        hi = last if end is None else _peer_end(keys)
    if isinstance(func, ops.First):
        index = lo
    elif isinstance(func, ops.Last):
        index = hi
    else:
        index = lo + func.nth.value
    found = (index >= lo) & (index <= hi)
    return pl.when(found).then(arg.gather(index.clip(0, _N - 1)))


def _whole_partition(op, **kw) -> pl.Expr:
    """A reduction over the whole partition: Ibis's own aggregate rule, broadcast to each row."""
    func = op.func
    if type(func) in _FRAMED:  # our own, for DuckDB's NaN semantics in min / max
        return _framed(func, ("rows", None, None), [], **kw)
    if op.order_by and not isinstance(func, _ORDER_FREE):
        _refuse(f"{type(func).__name__} over an ordered window")
    if isinstance(func, (ops.CountDistinct, ops.Any, ops.All)):
        # Ibis's polars rules count null as a value and answer False / True for no values;
        # DuckDB skips nulls and answers NULL.
        arg = translate(func.arg, **kw)
        if func.where is not None:
            arg = arg.filter(translate(func.where, **kw))
        if isinstance(func, ops.CountDistinct):
            return arg.drop_nulls().n_unique()
        return pl.when(arg.count() > 0).then(arg.any() if isinstance(func, ops.Any) else arg.all())
    return translate(func, **kw)


def _framed(func, frame, keys, **kw) -> pl.Expr:
    """sum / mean / min / max / count(*) over a rows frame or a range frame up to the peers."""
    how, start, end = frame
    kind = _FRAMED.get(type(func), "count")
    dtype = None if isinstance(func, ops.CountStar) else func.arg.dtype
    arg = _n if dtype is None else translate(func.arg, **kw)  # count(*): a never-null column
    if dtype is not None and dtype.is_boolean():
        arg = arg.cast(pl.Int64)
    sliding = (start, end) != (None, None)
    if sliding and kind in ("min", "max") and not (dtype.is_numeric() or dtype.is_temporal()):
        _refuse_frame(func, frame)  # Polars has no rolling min / max of strings
    if func.where is not None:
        arg = pl.when(translate(func.where, **kw)).then(arg)
    if how == "range" and sliding:
        if not {start, end} <= {None, 0} or start == end == 0:
            _refuse_frame(func, frame)
        # The running value of the last peer (start unbounded) or the first peer (end unbounded).
        rows = ("rows", None, 0) if start is None else ("rows", 0, None)
        index = _peer_end(keys) if start is None else _peer_start(keys)
        return _agg(kind, arg, rows, dtype).gather(index)
    return _agg(kind, arg, frame, dtype)


def _agg(kind, arg, frame, dtype) -> pl.Expr:
    """`kind` of `arg` over a rows frame, NaN handled as DuckDB does for floats."""
    if kind == "mean":
        total, count = _agg("sum", arg, frame, dtype), _agg("count", arg, frame, dtype)
        return pl.when(count > 0).then(total / count)
    if kind in ("min", "max") and dtype is not None and dtype.is_floating():
        # Polars' min / max skip NaN; DuckDB sorts NaN above every number.
        plain = _rows(kind, pl.when(~arg.is_nan()).then(arg), frame)
        nans = _rows("count", pl.when(arg.is_nan()).then(arg), frame)
        if kind == "max":
            return pl.when(nans > 0).then(float("nan")).otherwise(plain)
        return pl.when(plain.is_null() & (nans > 0)).then(float("nan")).otherwise(plain)
    return _rows(kind, arg, frame)


def _rows(kind, arg, frame) -> pl.Expr:
    """`kind` of `arg` over rows [i + start, i + end] of the sorted partition, clipped to it.

    T(j) aggregates the w rows ending at j, L(j) the w rows starting at j (w = end - start + 1,
    unbounded for a running aggregate); the frame is T(i + end) when it stays inside the
    partition at the end, L(i + start) when it does at the start, else the whole partition.
    """
    _, start, end = frame
    whole = _whole(kind, arg)
    if start is None and end is None:
        return whole
    empty = pl.lit(0, dtype=pl.Int64) if kind == "count" else pl.lit(None)
    if start is not None and end is not None and start > end:
        return empty
    width = None if start is None or end is None else end - start + 1
    cond = pl.lit(False)
    if end is not None:
        cond = cond | (_n + end < 0)
    if start is not None:
        cond = cond | (_n + start > _N - 1)
    expr = pl.when(cond).then(empty)
    if end is not None:
        expr = expr.when(_n + end < _N).then(_trailing(kind, arg, width).shift(-end))
    if start is not None:
        leading = _trailing(kind, arg.reverse(), width).reverse()
        expr = expr.when(_n + start >= 0).then(leading.shift(-start))
    return expr.otherwise(whole)


def _whole(kind, arg) -> pl.Expr:
    if kind == "count":
        return arg.count().cast(pl.Int64)
    if kind == "sum":
        return pl.when(arg.count() > 0).then(arg.sum())
    return getattr(arg, kind)()


def _trailing(kind, arg, width) -> pl.Expr:
    """`kind` over the `width` rows ending at each row (all rows so far when width is None)."""
    if kind == "count":
        arg = arg.is_not_null().cast(pl.Int64)
        return arg.cum_sum() if width is None else arg.rolling_sum(width, min_samples=1)
    if width is None:
        # cum_* keep a null row null; the running value carries over it in SQL.
        return getattr(arg, f"cum_{kind}")().forward_fill()
    return getattr(arg, f"rolling_{kind}")(width, min_samples=1)
