"""The lakehouse: names, reads on every engine, writes by the building engine, merge, CDF,
time travel, maintenance, and the errors a user can act on."""

from __future__ import annotations

import datetime as dt

import ibis
import pyarrow as pa
import pytest

from workbench import backends
from workbench.errors import (
    ConcurrentWriteError,
    InvalidTableNameError,
    SchemaMismatchError,
    TableNotFoundError,
    WorkbenchError,
)
from workbench.lakehouse import Lakehouse

UTC = dt.UTC


def sample(n=6) -> pa.Table:
    """A small table with a partition-friendly column, a date, a timestamp and a null."""
    return pa.table(
        {
            "id": pa.array(range(1, n + 1), pa.int64()),
            "region": ["north", "south", None, "north", "east", "south"][:n],
            "day": [dt.date(2024, 1, 1 + i % 3) for i in range(n)],
            "ts": pa.array(
                [dt.datetime(2024, 1, 1, i, tzinfo=UTC) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "amount": [float(i) * 1.5 for i in range(n)],
        }
    )


def rows(table: ibis.Table, key="id") -> list[dict]:
    return sorted(table.to_pyarrow().to_pylist(), key=lambda r: r[key])


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["orders", "bronze", "bronze.", "platinum.orders", "bronze.Orders", "../x",
             "bronze/../../x", "/tmp/x", "bronze.a.b", "bronze.1x", "", None]
)  # fmt: skip
def test_bad_names_are_refused(lake, name):
    with pytest.raises(InvalidTableNameError, match="layer.table"):
        lake.path(name)


def test_good_names_map_under_the_root(lake):
    assert lake.path("silver.orders") == lake.root / "silver" / "orders"
    assert lake.path("ops.quality_results").parent.name == "ops"


def test_missing_table_lists_existing_ones(lake):
    lake.write("bronze.things", sample())
    with pytest.raises(TableNotFoundError) as err:
        lake.table("bronze.nothing")
    assert "bronze.things" in str(err.value) and "Hint:" in str(err.value)


# -- reads on every engine -------------------------------------------------------------------


@pytest.mark.parametrize("partition_by", [None, ["region"], ["day"]])
def test_read_matches_what_was_written(lake, con, partition_by):
    data = sample()
    lake.write("silver.t", data, partition_by=partition_by)
    table = lake.table("silver.t", con)
    assert list(table.columns) == data.column_names
    assert table.schema() == ibis.schema(data.schema)
    assert rows(table) == sorted(data.to_pylist(), key=lambda r: r["id"])


def test_every_engine_returns_the_same_rows(lake, backend_names):
    lake.write("silver.t", sample(), partition_by=["region"])
    lake.write("silver.t", sample().slice(2, 3), mode="append")
    answers = {}
    for name in [*backend_names, "sqlite"]:
        con = backends.connect(name)
        t = lake.table("silver.t", con)
        kept = t.filter(t.amount > 1)
        query = kept.group_by("region").agg(n=kept.count(), total=kept.amount.sum())
        answers[name] = sorted(query.to_pyarrow().to_pylist(), key=lambda r: str(r["region"]))
    first = answers[backend_names[0]]
    assert first == [
        # by hand: rows with amount > 1 are ids 2-6, plus the appended copies of ids 3-5
        {"region": None, "n": 2, "total": 6.0},
        {"region": "east", "n": 2, "total": 12.0},
        {"region": "north", "n": 2, "total": 9.0},
        {"region": "south", "n": 2, "total": 9.0},
    ]
    assert all(a == first for a in answers.values()), answers


def test_empty_table_reads_on_every_engine(lake, con):
    lake.write("silver.empty", sample().schema.empty_table())
    assert lake.table("silver.empty", con).count().to_pyarrow().as_py() == 0


def test_duckdb_scans_the_files_itself(lake):
    """The fast path: DuckDB reads the snapshot's parquet files, not an Arrow dataset."""
    lake.write("silver.t", sample(), partition_by=["region"])
    con = backends.connect("duckdb")
    table = lake.table("silver.t", con)
    sql = con.con.sql("select sql from duckdb_views() where view_name = 'silver__t__v0'").fetchone()
    assert "read_parquet" in sql[0]
    assert rows(table.filter(table.region.isnull()))[0]["id"] == 3


def test_odd_partition_values_fall_back_and_stay_right(lake, con):
    data = pa.table({"id": [1, 2, 3], "p": ["a b", "x/y", "100%"]})
    lake.write("silver.odd", data, partition_by=["p"])
    assert rows(lake.table("silver.odd", con)) == data.to_pylist()


def test_schema_evolution_reads_old_files_as_null(lake, con):
    lake.write("silver.t", sample(3))
    wider = sample(3).append_column("note", pa.array(["x", None, "z"]))
    wider = wider.set_column(0, "id", pa.array([4, 5, 6], pa.int64()))
    lake.write("silver.t", wider, schema_mode="merge")
    notes = {r["id"]: r["note"] for r in rows(lake.table("silver.t", con))}
    assert notes == {1: None, 2: None, 3: None, 4: "x", 5: None, 6: "z"}


# -- writes ----------------------------------------------------------------------------------


def test_write_runs_on_the_engine_that_built_the_expression(lake, con):
    lake.write("bronze.t", sample())
    expr = lake.table("bronze.t", con).mutate(double=lambda t: t.amount * 2)
    version = lake.write("silver.t", expr)
    assert version == 0
    assert lake.history("silver.t").engine.tolist() == [con.name]
    assert [r["double"] for r in rows(lake.table("silver.t", con))] == [
        r["amount"] * 2 for r in sample().to_pylist()
    ]


def test_append_and_overwrite_make_versions(lake, con):
    assert lake.write("silver.t", sample(2)) == 0
    assert lake.write("silver.t", sample(2), mode="append") == 1
    assert lake.write("silver.t", sample(3), mode="overwrite") == 2
    counts = [lake.table("silver.t", con, version=v).count().to_pyarrow().as_py() for v in range(3)]
    assert counts == [2, 4, 3]
    assert lake.history("silver.t").version.tolist() == [2, 1, 0]


def test_time_travel_by_timestamp(lake, con):
    lake.write("silver.t", sample(2))
    first = lake.history("silver.t").timestamp.iloc[0].to_pydatetime()
    lake.write("silver.t", sample(5), mode="overwrite")
    assert lake.table("silver.t", con, version=first).count().to_pyarrow().as_py() == 2
    with pytest.raises(WorkbenchError, match="0 to 1"):
        lake.table("silver.t", con, version=7)


def test_bad_mode_is_refused(lake):
    with pytest.raises(WorkbenchError, match="'append', 'overwrite'"):
        lake.write("silver.t", sample(), mode="upsert")


def test_schema_mismatch_shows_both_schemas(lake):
    lake.write("silver.t", sample())
    other = pa.table({"id": ["not a number"], "extra": [1]})
    with pytest.raises(SchemaMismatchError) as err:
        lake.write("silver.t", other)
    text = str(err.value)
    assert "Table schema:" in text and "Incoming schema:" in text and "schema_mode='merge'" in text
    assert "amount: double" in text and "extra: int64" in text


def test_transactions_make_writes_idempotent(lake, con):
    for _ in range(2):  # a replayed batch is skipped
        lake.write("silver.t", sample(2), transaction=("app", 0))
    lake.write("silver.t", sample(3), mode="append", transaction=("app", 1))
    lake.write("silver.t", sample(3), mode="append", transaction=("app", 1))
    assert lake.table("silver.t", con).count().to_pyarrow().as_py() == 5
    assert lake.transaction_version("silver.t", "app") == 1
    assert lake.transaction_version("silver.t", "other") is None


def test_silver_records_a_change_feed_bronze_does_not(lake, con):
    lake.write("silver.t", sample(2))
    lake.write("bronze.t", sample(2))
    assert lake.changes("silver.t", con=con).count().to_pyarrow().as_py() == 2
    with pytest.raises(WorkbenchError, match="change data feed"):
        lake.changes("bronze.t")


# -- merge -----------------------------------------------------------------------------------


def test_merge_upserts_and_deletes(lake, con):
    lake.write("silver.t", sample(4))
    src = con.create_table(
        "src",
        pa.table({"id": [2, 3, 9], "region": ["w", "w", "w"], "day": [dt.date(2024, 2, 1)] * 3,
                  "ts": pa.array([None] * 3, pa.timestamp("us", tz="UTC")),
                  "amount": [20.0, 30.0, 90.0], "op": ["u", "d", "c"]}),
        overwrite=True,
    )  # fmt: skip
    flagged = src.mutate(gone=src["op"] == "d").drop("op")
    metrics = lake.merge("silver.t", flagged, on="id", delete_when="gone")
    assert {k: metrics[k] for k in ("inserted", "updated", "deleted")} == {
        "inserted": 1, "updated": 1, "deleted": 1}  # fmt: skip
    got = {r["id"]: r["amount"] for r in rows(lake.table("silver.t", con))}
    assert got == {1: 0.0, 2: 20.0, 4: 4.5, 9: 90.0}
    feed = lake.changes("silver.t", since=1, con=con).to_pyarrow().to_pylist()
    kinds = sorted((r["id"], r["_change_type"]) for r in feed)
    assert kinds == [(2, "update_postimage"), (2, "update_preimage"), (3, "delete"), (9, "insert")]


def test_merge_with_expression_delete_flag_and_update_if(lake, con):
    lake.write("silver.t", pa.table({"k": [1, 2], "v": ["a", "b"], "lsn": [5, 5]}))
    src = con.create_table(
        "src2",
        pa.table({"k": [1, 2, 3], "v": ["old", "new", "x"], "lsn": [4, 6, 1]}),
        overwrite=True,
    )
    metrics = lake.merge("silver.t", src, on="k", update_if="s.lsn > t.lsn",
                         delete_when=src.v == "x")  # fmt: skip
    assert metrics["updated"] == 1 and metrics["inserted"] == 0 and metrics["deleted"] == 0
    assert rows(lake.table("silver.t", con), "k") == [
        {"k": 1, "v": "a", "lsn": 5}, {"k": 2, "v": "new", "lsn": 6}]  # fmt: skip


def test_merge_delete_missing_and_ignore(lake, con):
    lake.write("silver.t", pa.table({"k": [1, 2, 3], "v": ["a", "b", "c"]}))
    src = pa.table({"k": [2, 4], "v": ["B", "D"]})
    metrics = lake.merge("silver.t", src, on="k", when_matched="ignore", delete_missing=True)
    assert (metrics["inserted"], metrics["updated"], metrics["deleted"]) == (1, 0, 2)
    assert rows(lake.table("silver.t", con), "k") == [{"k": 2, "v": "b"}, {"k": 4, "v": "D"}]


def test_merge_creates_a_missing_table(lake, con):
    metrics = lake.merge("gold.t", pa.table({"k": [1, 2], "v": ["a", "b"]}), on="k")
    assert metrics["inserted"] == 2
    assert lake.table("gold.t", con).count().to_pyarrow().as_py() == 2


def test_merge_errors(lake):
    lake.write("silver.t", pa.table({"k": [1], "v": ["a"]}))
    with pytest.raises(WorkbenchError, match="key columns"):
        lake.merge("silver.t", pa.table({"x": [1]}), on="k")
    with pytest.raises(WorkbenchError, match="'update', 'ignore'"):
        lake.merge("silver.t", pa.table({"k": [1], "v": ["b"]}), on="k", when_matched="replace")


def test_merge_transaction_is_idempotent(lake, con):
    lake.write("silver.t", pa.table({"k": [1], "n": [1]}))
    src = pa.table({"k": [1, 2], "n": [10, 20]})
    first = lake.merge("silver.t", src, on="k", transaction=("job", 3))
    again = lake.merge("silver.t", src, on="k", transaction=("job", 3))
    assert first["inserted"] == 1 and again.get("skipped") == 1
    assert lake.version("silver.t") == 1


def test_an_in_memory_merge_source_rewrites_only_the_files_its_keys_touch(lake, con):
    """`streamed=False` gives the same rows as the streamed merge, and delta-rs prunes the
    target's files by the source's key range: it reads one file of four, not all of them."""
    for start in (0, 100, 200, 300):  # four files, one key range each
        lake.write("silver.a", pa.table({"k": list(range(start, start + 100)), "v": [0] * 100}),
                   mode="append")  # fmt: skip
        lake.write("silver.b", pa.table({"k": list(range(start, start + 100)), "v": [0] * 100}),
                   mode="append")  # fmt: skip
    src = pa.table({"k": [110, 150, 199], "v": [1, 2, 3]})
    streamed = lake.merge("silver.a", src, on="k")
    held = lake.merge("silver.b", src, on="k", streamed=False)
    assert rows(lake.table("silver.a", con), "k") == rows(lake.table("silver.b", con), "k")
    assert held["updated"] == streamed["updated"] == 3
    assert streamed["files_removed"] == held["files_removed"] == 1
    assert streamed["files_scanned"] == 4, "a streamed source cannot prune: every file is read"
    assert held["files_scanned"] == 1


# -- maintenance, constraints, conflicts -----------------------------------------------------


def test_optimize_vacuum_and_time_travel(lake, con):
    for i in range(4):
        lake.write("silver.t", sample().slice(i, 1), mode="append")
    assert len(lake.files("silver.t")) == 4
    metrics = lake.optimize("silver.t", z_order=["id"])
    assert metrics["numFilesRemoved"] == 4 and len(lake.files("silver.t")) == 1
    assert lake.vacuum("silver.t", retention_hours=0, enforce_retention=False, dry_run=True)
    assert len(lake.files("silver.t", version=0)) == 1  # still readable before the real vacuum
    deleted = lake.vacuum("silver.t", retention_hours=0, enforce_retention=False)
    assert len(deleted) == 4
    with pytest.raises(WorkbenchError, match="no longer exist"):
        lake.table("silver.t", con, version=0)
    assert lake.table("silver.t", con).count().to_pyarrow().as_py() == 4


def test_restore(lake, con):
    lake.write("silver.t", sample(2))
    lake.write("silver.t", sample(5), mode="overwrite")
    lake.restore("silver.t", 0)
    assert lake.version("silver.t") == 2
    assert lake.table("silver.t", con).count().to_pyarrow().as_py() == 2


def test_check_constraints(lake):
    lake.write("silver.t", sample())
    lake.add_constraint("silver.t", "amount_positive", "amount >= 0")
    assert lake.constraints("silver.t") == {"amount_positive": "amount >= 0"}
    bad = sample(1).set_column(4, "amount", pa.array([-1.0]))
    with pytest.raises(WorkbenchError, match="CHECK constraints"):
        lake.write("silver.t", bad, mode="append")


def test_two_writers_conflict(lake, monkeypatch):
    lake.write("silver.t", pa.table({"k": [1, 2], "v": ["a", "b"]}))
    stale = lake.delta("silver.t")
    lake.delete("silver.t", "k = 1")  # another writer commits first
    monkeypatch.setattr(Lakehouse, "delta", lambda self, name, version=None: stale)
    with pytest.raises(ConcurrentWriteError, match="retry"):
        lake.merge("silver.t", pa.table({"k": [1], "v": ["z"]}), on="k")


def test_unsupported_input_type(lake):
    with pytest.raises(WorkbenchError, match="ibis.Table, a pyarrow.Table"):
        lake.write("silver.t", [{"k": 1}])
