"""Anomalies: volume and freshness outliers over the results history, and drift between versions.

Outliers use the robust z-score of Iglewicz and Hoaglin against the previous `window` runs:
z = (x - median) / (1.4826 * MAD), flagged when |z| > 3.5. When more than half of the history is
one value (MAD = 0), the mean absolute deviation stands in (scaled by 1.2533, as IBM SPSS does);
when every past value is equal, any other value is flagged (z is infinite, recorded as null).

Drift is the population stability index between two versions of a table read with time travel:
PSI = sum over bins of (current - base) * ln(current / base), with shares of at least 1e-4 so an
empty bin does not give an infinite index; above 0.2 is a significant shift. Numeric and temporal
columns are binned at the base version's exact deciles (`profiling.quantiles`), others by value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import altair as alt
import ibis
import numpy as np
import pandas as pd

from workbench.lakehouse import Lakehouse
from workbench.profiling import quantiles

WINDOW = 14
"""Past runs an outlier is judged against."""
THRESHOLD = 3.5
"""|robust z| above which a run is flagged (Iglewicz and Hoaglin)."""
MIN_HISTORY = 5
"""Past runs needed before a run can be flagged at all."""
PSI_THRESHOLD = 0.2
"""PSI above which a column has drifted (0.1 to 0.2: a moderate shift)."""
PSI_FLOOR = 1e-4
MAX_CATEGORIES = 50
"""Columns of other types with more distinct values than this are not binned by value."""


def robust_z(
    series: ibis.Table,
    value: str,
    order_by: str | Sequence[str],
    group_by: Sequence[str] = (),
    window: int = WINDOW,
    threshold: float = THRESHOLD,
    min_history: int = MIN_HISTORY,
) -> ibis.Table:
    """`series` with `median`, `mad`, `history` (past runs used), `z` and `anomaly`, each row
    judged against the `window` rows before it in its group (a pure pipeline)."""
    keys = list(group_by)
    s = series.mutate(
        _i=ibis.row_number().over(group_by=keys or None, order_by=_list(order_by)),
        _x=series[value],
    )
    # Pair each row with its `window` predecessors by an equi-join on position - offset:
    # Ibis's polars backend has no inequality joins.
    offsets = ibis.memtable({"_k": list(range(1, window + 1))})
    past = s.select(*keys, _j=s._i, _p=s._x)
    want = s.select(*keys, "_i").cross_join(offsets).mutate(_j=ibis._._i - ibis._._k)
    pairs = want.join(past, [*keys, "_j"]).select(*keys, "_i", "_p")
    centre = pairs.group_by([*keys, "_i"]).agg(median=pairs._p.median(), history=pairs.count())
    dev = pairs.join(centre, [*keys, "_i"]).mutate(_d=(ibis._._p - ibis._.median).abs())
    spread = dev.group_by([*keys, "_i"]).agg(mad=dev._d.median(), mean_ad=dev._d.mean())
    out = s.left_join(centre, [*keys, "_i"]).select(s, "median", "history")
    out = out.left_join(spread, [*keys, "_i"]).select(out, "mad", "mean_ad")
    scale = ibis.cases(
        (out.mad > 0, out.mad * 1.4826),
        (out.mean_ad > 0, out.mean_ad * 1.2533),
        else_=ibis.null("float64"),
    )
    diff = out._x.cast("float64") - out.median
    z = ibis.ifelse(
        scale.notnull(), diff / scale, ibis.ifelse(diff == 0, 0.0, ibis.null("float64"))
    )
    enough = out.history.fill_null(0) >= min_history
    anomaly = enough & ibis.ifelse(z.isnull(), diff != 0, z.abs() > threshold).fill_null(False)
    return out.mutate(history=out.history.fill_null(0), z=z, anomaly=anomaly).drop(
        "_i", "_x", "mean_ad"
    )


def volume_anomalies(results: ibis.Table, **options) -> ibis.Table:
    """Per table and run: rows checked, judged against the table's previous runs."""
    runs = results.group_by(["table", "run_id"]).agg(
        run_time=results.run_time.max(), rows=results.total_rows.max()
    )
    return robust_z(runs, "rows", ["run_time", "run_id"], ["table"], **options)


def freshness_anomalies(results: ibis.Table, **options) -> ibis.Table:
    """Per table, freshness check and run: the age of the newest row (seconds), judged against
    that check's previous runs."""
    fresh = results.filter(results.kind == "freshness").select(
        "table", "check", "run_id", "run_time", age_seconds=results.observed
    )
    return robust_z(fresh, "age_seconds", ["run_time", "run_id"], ["table", "check"], **options)


def psi_bins(base: ibis.Table, current: ibis.Table, column: str, bins: int = 10) -> pd.DataFrame:
    """Shares of `column` per bin in `base` and `current`, and each bin's PSI term."""
    dtype = base[column].type()
    if dtype.is_numeric() or dtype.is_temporal():
        qs = [i / bins for i in range(1, bins)]
        edges = sorted({v for v in quantiles(base, column, qs).values() if v is not None})
        labels = [f"<= {_fmt(e)}" for e in edges] + [f"> {_fmt(edges[-1])}" if edges else "all"]

        def binned(t: ibis.Table) -> ibis.Value:
            col = t[column]
            cases = [(col <= e, i) for i, e in enumerate(edges)]
            return ibis.cases(*cases, else_=len(edges)) if cases else ibis.literal(0)

        def counts(t):
            b = t.filter(t[column].notnull()).select(bin=binned(t))
            return b.group_by("bin").agg(n=b.count()).to_pandas()

        order = pd.DataFrame({"bin": range(len(labels)), "label": labels})
    else:

        def counts(t):
            c = t.filter(t[column].notnull()).group_by(bin=t[column].cast("string"))
            return c.agg(n=ibis._.count()).to_pandas()

        order = None
    a, b = counts(base), counts(current)
    merged = a.merge(b, on="bin", how="outer", suffixes=("_base", "_current")).fillna(0)
    nulls = [(t[column].isnull().cast("int64").sum(), t.count()) for t in (base, current)]
    null_row = {"bin": "null"}
    for (n_null, _), side in zip(nulls, ("base", "current"), strict=True):
        null_row[f"n_{side}"] = int(n_null.to_pyarrow().as_py() or 0)
    merged = pd.concat([merged, pd.DataFrame([null_row])], ignore_index=True)
    if order is not None:
        merged = merged.merge(order, on="bin", how="left").fillna({"label": "null"})
        merged["_o"] = pd.to_numeric(merged["bin"], errors="coerce").fillna(len(order))
        merged = merged.sort_values("_o").drop(columns="_o")
    else:
        merged["label"] = merged["bin"].astype(str)
        merged = merged.sort_values("n_base", ascending=False, kind="stable")
    for side in ("base", "current"):
        total = merged[f"n_{side}"].sum()
        merged[f"share_{side}"] = merged[f"n_{side}"] / total if total else 0.0
    a_share = np.maximum(merged.share_base, PSI_FLOOR)
    b_share = np.maximum(merged.share_current, PSI_FLOOR)
    merged["psi"] = (b_share - a_share) * np.log(b_share / a_share)
    merged = merged[(merged.n_base > 0) | (merged.n_current > 0)]
    merged = merged.astype({"n_base": "int64", "n_current": "int64"})
    return merged[
        ["label", "n_base", "n_current", "share_base", "share_current", "psi"]
    ].reset_index(drop=True)


def drift(
    lake: Lakehouse,
    name: str,
    base_version: int | dt.datetime,
    version: int | dt.datetime | None = None,
    columns: Sequence[str] | None = None,
    con: ibis.BaseBackend | None = None,
    bins: int = 10,
    threshold: float = PSI_THRESHOLD,
) -> pd.DataFrame:
    """PSI per column between two versions of table `name` (time travel), flagged above `threshold`."""
    base = lake.table(name, con, version=base_version)
    current = lake.table(name, con, version=version)
    records = []
    for c in columns or _binnable(base):
        psi = float(psi_bins(base, current, c, bins).psi.sum())
        records.append({"column": c, "psi": psi, "drifted": psi > threshold})
    return pd.DataFrame(records, columns=["column", "psi", "drifted"])


def _binnable(t: ibis.Table) -> list[str]:
    """Numeric and temporal columns, and others with few distinct values (ids are left out)."""
    out = []
    for c, dtype in t.schema().items():
        if dtype.is_numeric() or dtype.is_temporal():
            if not c.endswith("_id"):
                out.append(c)
        elif dtype.is_string() or dtype.is_boolean():
            if t[c].nunique(where=t[c].notnull()).to_pyarrow().as_py() <= MAX_CATEGORIES:
                out.append(c)
    return out


def drift_chart(bins_frame: pd.DataFrame, column: str) -> alt.Chart:
    """Base and current shares per bin, side by side, titled with the PSI."""
    psi = bins_frame.psi.sum()
    long = bins_frame.melt(
        id_vars="label",
        value_vars=["share_base", "share_current"],
        var_name="version",
        value_name="share",
    ).replace({"share_base": "base", "share_current": "current"})
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("label:N", sort=list(bins_frame.label), title=column),
            y=alt.Y("share:Q", axis=alt.Axis(format="%")),
            color=alt.Color("version:N"),
            xOffset="version:N",
            tooltip=["label", "version", alt.Tooltip("share:Q", format=".1%")],
        )
        .properties(
            title=f"Drift of {column}: PSI {psi:.3f}"
            + (" (drifted)" if psi > PSI_THRESHOLD else "")
        )
    )


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return str(v)


def _list(x) -> list[str]:
    return [x] if isinstance(x, str) else list(x)
