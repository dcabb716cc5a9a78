"""Streaming semantics against golden outputs derived by hand and confirmed by a real Spark run.

tests/data/streaming/ holds the input (one JSON-lines file per micro-batch), the expected rows
written by hand from design.md's rules (expected.json), and what Spark 4.0.5 printed for the
same files (spark/, see README.md). Every engine must produce exactly the expected rows.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from workbench import streaming as st
from workbench.errors import WorkbenchError
from workbench.lakehouse import Lakehouse

DATA = Path(__file__).parent / "data" / "streaming"
EXPECTED = json.loads((DATA / "expected.json").read_text())
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WINDOWS = EXPECTED["windows"]


def seconds(value):
    """A timestamp as seconds after t0 (None for null), rounded to the microsecond."""
    if value is None:
        return None
    return round((value - T0).total_seconds(), 6)


def rows(table: pa.Table, columns: list[str]) -> list[list]:
    """Rows as sorted lists, timestamps as seconds after t0: engine and order independent."""
    out = []
    for row in table.select(columns).to_pylist():
        out.append([seconds(v) if isinstance(v, dt.datetime) else v for v in row.values()])
    return sorted(out, key=lambda r: [(v is None, v) for v in r])


def marks(progress) -> list:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return [None if w == epoch else seconds(w) for w in progress.watermark.dt.to_pydatetime()]


def make_query(name: str, spec: dict, delay) -> st.Query:
    window = spec.get("window")
    if window is not None:
        kind, *sizes = window
        window = getattr(st, kind)(*sizes)
    return st.Query(
        name, window, by=tuple(spec.get("by", ())), mode=spec["mode"], delay=delay,
        dedup=spec.get("dedup", False),
    )  # fmt: skip


def emitted(lake: Lakehouse, query: st.Query) -> pa.Table:
    """What each batch emitted: the appended rows, or in update mode the merge's post-images
    from the change data feed (each row carries the batch that wrote it)."""
    table = query.table()
    if query.mode == "append":
        return lake.delta(table).to_pyarrow_table()
    feed = pa.table(lake.delta(table).load_cdf(starting_version=0)).to_pylist()
    return pa.Table.from_pylist(
        [r for r in feed if r["_change_type"] in ("insert", "update_postimage")]
    )


@pytest.fixture(scope="session")
def golden_runs(tmp_path_factory):
    """Each golden query run once per engine, when a test first asks for it (the runs are the
    slow part). Session-scoped: a module-scoped fixture was set up again whenever the tests'
    order switched engines, six full runs instead of one."""
    import workbench as wb

    runs = {}

    def run(backend: str, name: str):
        if (backend, name) not in runs:
            lake = Lakehouse(tmp_path_factory.mktemp(f"golden_{backend}_{name}"))
            source = st.JsonLinesSource(DATA / WINDOWS["input"])
            query = make_query(name, WINDOWS["queries"][name], WINDOWS["delay_seconds"])
            runner = st.Runner(lake, wb.connect(backend), source, query, no_data_batches=False)
            runs[backend, name] = (lake, query, runner.run())
        return runs[backend, name]

    return run


@pytest.mark.parametrize("name", list(WINDOWS["queries"]))
def test_windows_and_dedup_match_the_golden_rows(golden_runs, backend, name):
    spec = WINDOWS["queries"][name]
    lake, query, progress = golden_runs(backend, name)
    assert marks(progress) == WINDOWS["watermarks"]
    assert rows(emitted(lake, query), spec["columns"]) == sorted(spec["emitted"])
    late = lake.delta(query.table("late")).to_pyarrow_table()
    assert rows(late, spec["late_columns"]) == rows_sorted(spec["late"])
    assert progress.late_rows.sum() == len(spec["late"])
    if "state_rows" in spec:
        assert progress.state_rows.tolist() == spec["state_rows"]
    if "duplicates" in spec:
        assert progress.duplicates.tolist() == spec["duplicates"]
    assert progress.dead_rows.sum() == 0


def rows_sorted(values: list[list]) -> list[list]:
    return sorted(values, key=lambda r: [(v is None, v) for v in r])


def test_dedup_keeps_spark_millisecond_watermark(con, lake):
    spec = EXPECTED["dedup_ms"]
    query = st.Query("dedup_ms", delay=spec["delay_seconds"], dedup=True)
    source = st.JsonLinesSource(DATA / spec["input"])
    progress = st.Runner(lake, con, source, query, no_data_batches=False).run()
    assert marks(progress) == spec["watermarks"]
    assert rows(emitted(lake, query), spec["columns"]) == spec["emitted"]
    assert progress.duplicates.tolist() == spec["duplicates"]
    assert progress.state_rows.tolist() == spec["state_rows"]


@pytest.mark.parametrize("golden", ["join", "join_ms"])
@pytest.mark.parametrize("how", ["inner", "left"])
def test_interval_join_matches_the_golden_rows(con, lake, golden, how):
    spec = EXPECTED[golden]
    query = st.Query(
        f"{golden}_{how}", join=how, delay=spec["delay_seconds"], bound=spec["bound_seconds"]
    )
    source = st.JsonLinesSource(DATA / spec["input"])
    progress = st.Runner(lake, con, source, query, no_data_batches=False).run()
    assert marks(progress) == spec["watermarks"]
    expected = spec["inner"] + (spec["left_extra"] if how == "left" else [])
    assert rows(emitted(lake, query), spec["columns"]) == rows_sorted(expected)
    assert progress.state_rows.tolist() == spec["state_rows"]
    if "late" in spec:
        late = lake.delta(query.table("late")).to_pyarrow_table()
        assert rows(late, spec["late_columns"]) == spec["late"]


def test_the_goldens_agree_with_the_recorded_spark_run():
    """The hand-derived rows and Spark's own output (kept in spark/) say the same."""
    spark = json.loads((DATA / "spark" / "windows_spark_4.0.5.json").read_text())
    for name, spec in WINDOWS["queries"].items():
        run = spark[name]
        assert [_spark_mark(p["watermark"]) for p in run["progress"]] == WINDOWS["watermarks"]
        got = []
        for row in run["rows"]:
            row = {
                **row,
                **{
                    k: _iso(row[k])
                    for k in ("window_start", "window_end", "event_time")
                    if k in row
                },
            }
            got.append([row[c] for c in spec["columns"]])
        assert rows_sorted(got) == sorted(spec["emitted"]), name
        # Spark counts late rows after its partial aggregation, one per (batch, window) for
        # windows; dedup and sessions count rows.
        dropped = [p["dropped_by_watermark"][-1] for p in run["progress"]]
        per_batch = {}
        key = (
            (lambda r: (r[0], r[2], r[3]))
            if spec.get("window", [""])[0] == "hopping"
            else (lambda r: tuple(r))
        )
        for late in spec["late"]:
            per_batch.setdefault(late[0], set()).add(key(late))
        if not spec.get("dedup"):
            assert dropped == [len(per_batch.get(k, ())) for k in range(len(dropped))], name
    joins = json.loads((DATA / "spark" / "join_spark_4.0.5.json").read_text())
    for golden in ("join", "join_ms"):
        spec = EXPECTED[golden]
        for how, extra in (("inner", []), ("leftOuter", spec["left_extra"])):
            run = joins[golden][how]
            got = [
                [
                    r["batch_id"],
                    r["order_id"],
                    _iso(r["order_time"]),
                    r["payment_id"],
                    _iso(r["paid_time"]),
                ]
                for r in run["rows"]
            ]
            assert rows_sorted(got) == rows_sorted(spec["inner"] + extra), (golden, how)
            assert [p["state_rows"][0] for p in run["progress"]] == spec["state_rows"]


def _iso(text):
    if text is None:
        return None
    return seconds(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC))


def _spark_mark(text: str):
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return None if when.year == 1970 else seconds(when)


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: st.tumbling(0),
        lambda: st.tumbling("-1 second"),
        lambda: st.hopping("10 seconds", 0),
        lambda: st.hopping("10 seconds", "11 seconds"),
        lambda: st.session(0),
        lambda: st.tumbling("ten seconds"),
    ],
)
def test_bad_window_specs_are_refused(make):
    with pytest.raises(WorkbenchError) as err:
        make()
    assert "Allowed" in str(err.value) and "Hint" in str(err.value)


def test_bad_queries_are_refused():
    with pytest.raises(WorkbenchError, match="Update mode"):
        st.Query("q", st.session("5 s"), by="key", mode="update")
    with pytest.raises(WorkbenchError, match="output mode"):
        st.Query("q", st.tumbling("5 s"), mode="complete")
    with pytest.raises(WorkbenchError, match="either a window or a join"):
        st.Query("q", st.tumbling("5 s"), join="inner")
    with pytest.raises(WorkbenchError, match="cannot be kept as streaming state"):
        st.Query("q", st.tumbling("5 s"), aggs={"m": ("mean", "value")})
    with pytest.raises(WorkbenchError, match="cannot name tables"):
        st.Query("../q", st.tumbling("5 s"))


def test_sessions_need_a_key(con, lake):
    query = st.Query("sessions_without_key", st.session("5 s"))
    with pytest.raises(WorkbenchError, match="key column"):
        st.Runner(lake, con, st.JsonLinesSource(DATA / "events"), query)
