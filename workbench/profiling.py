"""Profiling: per column null share, distinct count, min, max, quantiles and top values.

Quantiles are exact and discrete, the "lower" definition (numpy's `method="lower"`, Polars'
`interpolation="lower"`): the value at 0-based position floor((n - 1) * q) of the sorted non-null
values. Engines disagree on the built-in ones: DuckDB and Polars interpolate (`quantile_cont`),
DataFusion has only an approximate t-digest (`approx_percentile_cont`) and Ibis's `approx_quantile`
gives three answers on three engines. A rank over the sorted column gives one answer everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import ibis
import pandas as pd

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def quantile_exprs(table: ibis.Table, column: str, qs: Sequence[float]) -> ibis.Table:
    """One row: the exact lower quantiles `q_<q>` of `column`, from one sort (a pure pipeline)."""
    col = table[column]
    # Row numbers over the column sort nulls last on every engine, so the first n positions
    # are the non-null values in order.
    ranked = table.select(
        _v=col,
        _r=ibis.row_number().over(order_by=col),
        _n=col.count().over(ibis.window()),
    )
    idx = {q: ((ranked._n - 1) * q).floor().cast("int64") for q in qs}
    return ranked.aggregate(
        **{_qname(q): ranked._v.max(where=ranked._r == i) for q, i in idx.items()}
    )


def quantiles(
    table: ibis.Table, column: str, qs: Sequence[float] = QUANTILES
) -> dict[float, object]:
    """The exact lower quantiles of `column`, as a dict {q: value} (None when all are null)."""
    row = quantile_exprs(table, column, qs).to_pyarrow().to_pylist()[0]
    return {q: row[_qname(q)] for q in qs}


def top_values(table: ibis.Table, column: str, k: int = 5) -> ibis.Table:
    """The `k` most frequent non-null values with their counts; ties broken by value."""
    col = table[column]
    counts = table.filter(col.notnull()).group_by(value=col).agg(count=ibis._.count())
    return counts.order_by([ibis.desc("count"), "value"]).limit(k)


def profile(
    table: ibis.Table,
    columns: Sequence[str] | None = None,
    qs: Sequence[float] = (0.25, 0.5, 0.75),
    top: int = 5,
) -> pd.DataFrame:
    """One row per column: type, rows, nulls, null share, distinct, min, max, quantiles (numeric
    and temporal columns) and the top values, from one aggregate scan plus a sort per column."""
    columns = list(columns or table.columns)
    metrics = {"__rows": table.count()}
    for i, c in enumerate(columns):
        col = table[c]
        metrics[f"nulls_{i}"] = col.isnull().cast("int64").sum()
        # Ibis's polars backend counts null as a distinct value: count the non-null ones only.
        metrics[f"distinct_{i}"] = col.nunique(where=col.notnull())
        if not (col.type().is_boolean() or col.type().is_nested()):
            metrics[f"min_{i}"], metrics[f"max_{i}"] = col.min(), col.max()
    agg = table.aggregate(**metrics).to_pyarrow().to_pylist()[0]
    rows = agg["__rows"] or 0
    records = []
    for i, c in enumerate(columns):
        dtype = table[c].type()
        nulls = agg[f"nulls_{i}"] or 0
        record = {
            "column": c,
            "type": str(dtype),
            "rows": rows,
            "nulls": nulls,
            "null_share": nulls / rows if rows else 0.0,
            "distinct": agg[f"distinct_{i}"],
            "min": agg.get(f"min_{i}"),
            "max": agg.get(f"max_{i}"),
        }
        if dtype.is_numeric() or dtype.is_temporal():
            record |= {_qname(q): v for q, v in quantiles(table, c, qs).items()}
        tops = top_values(table, c, top).to_pyarrow().to_pylist()
        record["top_values"] = ", ".join(f"{t['value']} ({t['count']})" for t in tops)
        records.append(record)
    return pd.DataFrame(records)


def _qname(q: float) -> str:
    return f"q{round(q * 100):02d}"


def profile_charts(
    table: ibis.Table, profile_frame: pd.DataFrame, top: int = 5
) -> alt.VConcatChart:
    """Charts of a profile: null share and distinct count per column, and the top values of
    each low-cardinality column."""
    # Only plain columns go into the chart's inline data (min and max mix types).
    frame = profile_frame[["column", "nulls", "null_share", "distinct"]].astype({"distinct": float})
    nulls = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("null_share:Q", title="null share", axis=alt.Axis(format="%")),
            y=alt.Y("column:N", sort=None, title=None),
            tooltip=["column", "nulls", "null_share"],
        )
        .properties(title="Nulls per column", width=260)
    )
    distinct = (
        alt.Chart(frame)
        .mark_bar(color="#e07a5f")
        .encode(
            x=alt.X("distinct:Q", title="distinct values (log)", scale=alt.Scale(type="symlog")),
            y=alt.Y("column:N", sort=None, axis=None),
            tooltip=["column", "distinct"],
        )
        .properties(title="Distinct values", width=260)
    )
    small = frame.loc[frame["distinct"] <= 20, "column"].tolist()
    tops = [
        top_values(table, c, top).to_pandas().assign(column=c, value=lambda d: d.value.astype(str))
        for c in small
    ]
    chart = alt.hconcat(nulls, distinct)
    if not tops:
        return alt.vconcat(chart)
    values = (
        alt.Chart(pd.concat(tops, ignore_index=True))
        .mark_bar(color="#81b29a")
        .encode(
            x=alt.X("count:Q"),
            y=alt.Y("value:N", sort="-x", title=None),
            tooltip=["column", "value", "count"],
        )
        .properties(width=160, height=90)
        .facet(facet=alt.Facet("column:N", title="Top values"), columns=3)
        .resolve_scale(y="independent", x="independent")
    )
    return alt.vconcat(chart, values)
