"""Profiling, outliers over the results history, and drift between versions, on every engine."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench import anomalies, profiling
from workbench import quality as q

# Each example runs queries on an engine: a twelfth of the profile's examples (8 by default,
# more under a deep profile).
EXAMPLES = max(5, settings.default.max_examples // 12)


def _sample() -> pa.Table:
    rng = np.random.default_rng(3)
    n = 500
    x = rng.normal(50, 10, n).round(1)
    mask = rng.random(n) < 0.1
    return pa.table({
        "x": pa.array(x, mask=mask),
        "k": pa.array(rng.integers(0, 40, n)),
        "s": pa.array(rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]), mask=rng.random(n) < 0.05),
        "ts": pa.array(1_790_000_000_000_000 + rng.integers(0, 10**11, n), pa.timestamp("us", tz="UTC")),
    })  # fmt: skip


def test_profile_matches_pyarrow_and_numpy(con):
    data = _sample()
    t = con.create_table("sample", data, overwrite=True)
    prof = profiling.profile(t, qs=(0.1, 0.5, 0.9)).set_index("column")
    for c in data.column_names:
        col = data[c]
        row = prof.loc[c]
        assert row.rows == data.num_rows
        assert row.nulls == col.null_count
        assert row.null_share == col.null_count / data.num_rows
        assert row.distinct == pc.count_distinct(col, mode="only_valid").as_py()
        assert (row["min"], row["max"]) == (pc.min(col).as_py(), pc.max(col).as_py())
        counts = pc.value_counts(pc.drop_null(col)).to_pylist()
        top = sorted(counts, key=lambda d: (-d["counts"], d["values"]))[:5]
        assert row.top_values == ", ".join(f"{d['values']} ({d['counts']})" for d in top)
    for c in ("x", "k"):
        values = pc.drop_null(data[c]).to_numpy()
        expected = np.quantile(values, [0.1, 0.5, 0.9], method="lower")
        assert [prof.loc[c, k] for k in ("q10", "q50", "q90")] == list(expected)
    ts = np.sort(pc.drop_null(data["ts"]).cast(pa.int64()).to_numpy())
    assert prof.loc["ts", "q50"].timestamp() * 1e6 == ts[(len(ts) - 1) // 2]
    assert math.isnan(prof.loc["s", "q50"])


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=1, max_size=40),
    st.sampled_from([0.0, 0.3, 0.5, 0.99, 1.0]),
)
def test_quantiles_are_numpy_lower_on_any_data(backend, values, qv):
    from workbench import backends

    con = backends.connect(backend)
    t = con.create_table("qs", pa.table({"v": pa.array(values, pa.int64())}), overwrite=True)
    got = profiling.quantiles(t, "v", [qv])[qv]
    present = [v for v in values if v is not None]
    assert got == (np.quantile(present, qv, method="lower") if present else None)


# -- outliers ---------------------------------------------------------------------------


def _reference_z(x, window=14, min_history=5):
    """Robust z-scores computed with numpy, row by row (the independent method)."""
    out = []
    for i in range(len(x)):
        h = np.array(x[max(0, i - window) : i], dtype=float)
        if len(h) == 0:
            out.append((None, False))
            continue
        med = np.median(h)
        dev = np.abs(h - med)
        scale = 1.4826 * np.median(dev) if np.median(dev) > 0 else 1.2533 * dev.mean()
        d = x[i] - med
        z = d / scale if scale > 0 else (0.0 if d == 0 else None)
        flagged = len(h) >= min_history and (d != 0 if z is None else abs(z) > 3.5)
        out.append((z, bool(flagged)))
    return out


def test_robust_z_matches_numpy(con):
    rng = np.random.default_rng(1)
    a = list(rng.normal(1000, 20, 30).round())
    a[20] = 1500  # a spike
    b = [5.0] * 10 + [6.0, 5.0]  # a flat history: MAD and mean deviation are 0
    c = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0, 1.0]  # MAD 0, mean deviation not
    series = pa.table({"g": ["a"] * 30 + ["b"] * 12 + ["c"] * 10,
                       "t": list(range(30)) + list(range(12)) + list(range(10)),
                       "v": a + b + c})  # fmt: skip
    t = con.create_table("series", series, overwrite=True)
    got = anomalies.robust_z(t, "v", "t", ["g"]).order_by(["g", "t"]).to_pandas()
    expected = _reference_z(a) + _reference_z(b) + _reference_z(c)
    for (z, flagged), row in zip(expected, got.itertuples(), strict=True):
        assert row.anomaly == flagged, row
        if z is None:
            assert row.z is None or math.isnan(row.z), row
        else:
            assert row.z == pytest.approx(z, rel=1e-12), row
    assert list(got.loc[got.anomaly, "t"]) == [20, 10, 8]  # the spike; off a flat history


def test_volume_and_freshness_anomalies_over_the_results_history(con, lake):
    schema = pa.schema({"id": pa.int64(), "ts": pa.timestamp("us", tz="UTC")})
    suite = q.Suite(ibis_schema(schema), [
        q.not_null("id"), q.freshness("ts", max_age=dt.timedelta(days=2)),
    ], name="silver.events")  # fmt: skip
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    sizes = [100, 104, 98, 101, 99, 103, 97, 100, 102, 10]
    for day, n in enumerate(sizes):
        now = start + dt.timedelta(days=day)
        lag = dt.timedelta(hours=30 if day == 7 else 1 + day % 3)
        rows = pa.table({"id": list(range(n)), "ts": [now - lag] * n}, schema=schema)
        data = con.create_table("events_in", rows, overwrite=True)
        q.run(lake, "silver.events", data, suite, stage=False, now=now, run_time=now,
              run_id=f"day{day:02d}")  # fmt: skip
    results = q.results(lake, con)
    volume = anomalies.volume_anomalies(results).order_by("run_time").to_pandas()
    assert list(volume.run_id[volume.anomaly]) == ["day09"]
    assert list(volume.history) == list(range(len(sizes)))
    fresh = anomalies.freshness_anomalies(results).order_by("run_time").to_pandas()
    assert list(fresh.run_id[fresh.anomaly]) == ["day07"]
    assert fresh.age_seconds.iloc[7] == 30 * 3600
    assert list(fresh.history) == list(range(len(sizes)))
    z = _reference_z([float(n) for n in sizes])
    assert [bool(a) for a in volume.anomaly] == [f for _, f in z]


def ibis_schema(schema: pa.Schema):
    import ibis

    return ibis.schema(schema)


# -- drift --------------------------------------------------------------------------------


def _psi(base_shares, current_shares):
    a = np.maximum(np.array(base_shares, dtype=float), 1e-4)
    b = np.maximum(np.array(current_shares, dtype=float), 1e-4)
    return float(((b - a) * np.log(b / a)).sum())


def test_psi_by_hand(con):
    base = con.create_table(
        "base", pa.table({"v": list(range(100)), "c": ["a", "b"] * 50}), overwrite=True
    )
    cur = con.create_table(
        "cur", pa.table({"v": list(range(50, 150)), "c": ["a"] * 80 + ["b"] * 20}), overwrite=True
    )
    bins = anomalies.psi_bins(base, cur, "v", bins=4)
    # Lower quartiles of 0..99 sit at positions 24, 49 and 74.
    assert list(bins.label) == ["<= 24", "<= 49", "<= 74", "> 74"]
    assert list(bins.n_base) == [25, 25, 25, 25] and list(bins.n_current) == [0, 0, 25, 75]
    assert bins.psi.sum() == pytest.approx(_psi([0.25] * 4, [0, 0, 0.25, 0.75]), rel=1e-12)
    cats = anomalies.psi_bins(base, cur, "c")
    assert cats.psi.sum() == pytest.approx(_psi([0.5, 0.5], [0.8, 0.2]), rel=1e-12)
    same = anomalies.psi_bins(base, base, "v")
    assert same.psi.sum() == 0


def test_drift_between_two_versions_read_with_time_travel(con, lake):
    rng = np.random.default_rng(5)
    n = 2000
    v0 = pa.table(
        {"amount": rng.normal(100, 10, n), "channel": rng.choice(["web", "app"], n, p=[0.5, 0.5])}
    )
    v1 = pa.table(
        {"amount": rng.normal(115, 10, n), "channel": rng.choice(["web", "app"], n, p=[0.5, 0.5])}
    )
    lake.write("silver.sales", v0, mode="overwrite")
    lake.write("silver.sales", v1, mode="overwrite")
    report = anomalies.drift(lake, "silver.sales", base_version=0, con=con).set_index("column")
    assert report.loc["amount", "drifted"] and report.loc["amount", "psi"] > 0.2
    assert not report.loc["channel", "drifted"] and report.loc["channel", "psi"] < 0.01
    # Independent: numpy deciles of version 0 (lower), counts with numpy.
    base = v0["amount"].to_numpy()
    edges = np.unique(np.quantile(base, np.arange(1, 10) / 10, method="lower"))
    counts = [np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1)
              for x in (base, v1["amount"].to_numpy())]  # fmt: skip
    expected = _psi(counts[0] / n, counts[1] / n)
    assert report.loc["amount", "psi"] == pytest.approx(expected, rel=1e-9)
