"""The parity layer: installed once, collects with Polars' streaming engine, still needed."""

from __future__ import annotations

import json
import subprocess
import sys

import ibis
import ibis.expr.operations as ops
import polars as pl
import pytest

from workbench import backends, parity
from workbench.errors import UnsupportedOperationError

# Run by a fresh interpreter that never imports workbench: Ibis's own compilers, unpatched.
UPSTREAM = """
import json, ibis
import ibis.common.exceptions as com
t = ibis.memtable({"k": [1, 1], "o": [1, 2], "x": [1.0, 2.0], "s": ["a", "b"]})
w = ibis.window(group_by=t.k, order_by=t.o)
ops = {
    "row_number": ibis.row_number().over(w), "rank": ibis.rank().over(w),
    "dense_rank": ibis.dense_rank().over(w), "percent_rank": ibis.percent_rank().over(w),
    "cume_dist": ibis.cume_dist().over(w), "ntile": ibis.ntile(2).over(w),
    "lag": t.x.lag().over(w), "lead": t.x.lead(2, default=0.0).over(w),
    "first": t.x.first().over(w), "last": t.x.last().over(w),
    "cumsum": t.x.cumsum(group_by=t.k, order_by=t.o), "sum_over_partition": t.x.sum().over(group_by=t.k),
    "rows_frame": t.x.mean().over(ibis.window(order_by=t.o, rows=(-1, 1))),
}
cases = {f"polars {name}": ("polars", e) for name, e in ops.items()}
for engine in ("polars", "datafusion"):
    for how in ("md5", "sha256"):
        cases[f"{engine} hexdigest {how}"] = (engine, t.s.hexdigest(how))
translated = []
for case, (engine, expr) in cases.items():
    try:
        getattr(ibis, engine).connect().to_pyarrow(t.mutate(r=expr))
        translated.append(case)
    except com.OperationNotDefinedError:
        pass
# DataFusion answers the workbench corrects in SQL (workbench/parity.py), still wrong upstream?
con = ibis.datafusion.connect()
u = ibis.memtable({"id": [0, 1], "y": [0, None], "z": [0, 1]})
if con.to_pyarrow(u.agg(m=u.z.median()))["m"].to_pylist() == [0.5]:
    translated.append("datafusion median of integers")
sliding = u.y.mean().over(order_by=u.id, rows=(0, 0))
if con.to_pyarrow(u.mutate(r=sliding)).sort_by("id")["r"].to_pylist() == [0.0, None]:
    translated.append("datafusion AVG over a sliding frame left without values")
# Polars reductions that count or judge nulls unlike SQL, still so upstream?
p = ibis.polars.connect()
n = ibis.memtable({"g": [1, 1, 2], "x": [None, 1, None], "b": [None, True, None]})
got = p.to_pyarrow(n.group_by("g").agg(u=n.x.nunique(), a=n.b.any(), e=n.b.all()).order_by("g"))
if got.to_pylist() == [{"g": 1, "u": 1, "a": True, "e": True}, {"g": 2, "u": 0, "a": None, "e": None}]:
    translated.append("polars nunique, any and all with nulls")
print(json.dumps(translated))
"""


def test_upstream_ibis_still_lacks_these_translations():
    out = subprocess.run(
        [sys.executable, "-c", UPSTREAM], capture_output=True, text=True, check=True
    ).stdout
    translated = json.loads(out.strip().splitlines()[-1])
    assert translated == [], (
        f"Ibis {ibis.__version__} now handles {translated} itself: compare its answers with "
        "DuckDB, then drop the workbench's rule (workbench/polars_windows.py, hashing.py, parity.py)."
    )


@pytest.mark.parametrize("name", ["polars", "datafusion"])
def test_grouped_nunique_any_all_follow_duckdb_with_nulls(name):
    """Nulls are no distinct value, and `any` / `all` of only nulls is null (DuckDB's answer,
    which these expected rows spell out by hand)."""
    t = ibis.memtable({
        "g": [1, 1, 1, 2, 2, 3],
        "x": [None, 1, 1, None, None, 5],
        "b": [None, True, False, None, None, True],
    })  # fmt: skip
    expr = (
        t.group_by("g")
        .agg(u=t.x.nunique(), a=t.b.any(), e=t.b.all(), w=t.x.nunique(where=t.b))
        .order_by("g")
    )
    expected = [
        {"g": 1, "u": 1, "a": True, "e": False, "w": 1},
        {"g": 2, "u": 0, "a": None, "e": None, "w": 0},
        {"g": 3, "u": 1, "a": True, "e": True, "w": 1},
    ]
    assert backends.connect("duckdb").to_pyarrow(expr).to_pylist() == expected
    assert backends.connect(name).to_pyarrow(expr).to_pylist() == expected
    whole = t.agg(u=t.x.nunique(), a=t.b.any(), e=t.b.all())
    assert backends.connect(name).to_pyarrow(whole).to_pylist() == [{"u": 2, "a": True, "e": False}]


def test_install_is_idempotent():
    parity.install_polars()
    parity.install_polars()
    parity.install_datafusion()
    parity.install_datafusion()
    con = backends.connect("polars")
    assert con.has_operation(ops.WindowFunction) and con.has_operation(ops.HexDigest)
    assert backends.connect("datafusion").has_operation(ops.HexDigest)
    t = ibis.memtable({"k": [1, 1, 2], "x": [3, 1, 2]})
    result = con.to_pyarrow(t.mutate(r=ibis.row_number().over(group_by=t.k, order_by=t.x)))
    assert sorted(result.to_pylist(), key=lambda r: r["x"]) == [
        {"k": 1, "x": 1, "r": 0},
        {"k": 2, "x": 2, "r": 0},
        {"k": 1, "x": 3, "r": 1},
    ]


@pytest.fixture
def engines_used(monkeypatch):
    """The `engine` of every LazyFrame.collect call, in order."""
    used = []
    collect = pl.LazyFrame.collect

    def spy(self, *args, engine="auto", **kwargs):
        used.append(engine)
        return collect(self, *args, engine=engine, **kwargs)

    monkeypatch.setattr(pl.LazyFrame, "collect", spy)
    return used


def test_polars_collects_with_the_streaming_engine(engines_used):
    con = backends.connect("polars")
    t = ibis.memtable({"k": [1, 1, 2], "x": [1.0, 2.0, 3.0]})
    expr = t.group_by("k").agg(total=t.x.sum()).order_by("k")
    assert con.to_pyarrow(expr).to_pydict() == {"k": [1, 2], "total": [3.0, 3.0]}
    con.execute(expr)
    con.to_polars(expr)
    list(con.to_pyarrow_batches(expr))
    con.to_pyarrow(expr, engine="cpu")  # still a per-call choice
    assert engines_used == ["streaming"] * 4 + ["cpu"]


def test_capability_flags_say_windows_and_hashes_work():
    for name in ("polars", "datafusion"):
        assert backends.get(name).window_functions and backends.get(name).stable_hashes


def test_refusal_names_the_operation_and_gives_a_hint():
    t = ibis.memtable({"o": [1, 2], "x": [1.0, 2.0]})
    expr = t.mutate(r=t.x.sum().over(ibis.window(order_by=t.o, range=(-1, 0))))
    with pytest.raises(UnsupportedOperationError) as info:
        backends.connect("polars").to_pyarrow(expr)
    message = str(info.value)
    assert "Sum over a RANGE BETWEEN 1 PRECEDING AND CURRENT ROW frame" in message
    assert "\nHint: " in message
