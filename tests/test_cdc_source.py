"""The CDC source side: SQLite triggers log every change with LSN, transaction id and commit time;
the workload is repeatable and makes the hard cases; the exporter's snapshot and stream meet with
no gap and no overlap (checked by replaying the envelopes by hand, in plain Python)."""

from __future__ import annotations

import json
import sqlite3

import pyarrow as pa
import pytest

from workbench import cdc, datasets
from workbench.cdc_source import START_MS
from workbench.errors import WorkbenchError


@pytest.fixture
def source(tmp_path):
    rows = {
        "customers": datasets.table("customers", 0.001, 3),  # 100 rows
        "products": datasets.table("products", 0.001, 3).slice(0, 10),
        "orders": datasets.table("orders", 0.001, 3).slice(0, 20),
        "order_lines": datasets.table("order_lines", 0.001, 3).slice(0, 30),
    }
    return cdc.Source.create(tmp_path / "src.db", rows=rows)


def log(source, after=0) -> list[dict]:
    return source.log(after).to_pylist()


def test_triggers_log_each_change_with_lsn_transaction_and_commit_time(source):
    with source.transaction(advance_ms=500) as db:
        db.execute("UPDATE customers SET city = 'Oslo' WHERE customer_id = 1")
        db.execute("DELETE FROM customers WHERE customer_id = 2")
    with source.transaction(advance_ms=250) as db:
        db.execute("INSERT INTO products (product_id, name, price) VALUES (999, 'Kite', 9.5)")
    rows = log(source)
    assert [(r["lsn"], r["tx_id"], r["table"], r["op"]) for r in rows] == [
        (1, 1, "customers", "u"), (2, 1, "customers", "d"), (3, 2, "products", "c")
    ]  # fmt: skip
    assert [r["commit_ms"] for r in rows] == [START_MS + 500, START_MS + 500, START_MS + 750]
    assert (
        json.loads(rows[0]["before"])["city"] != "Oslo"
        and json.loads(rows[0]["after"])["city"] == "Oslo"
    )
    assert rows[1]["after"] is None and json.loads(rows[1]["key"]) == {"customer_id": 2}
    assert rows[2]["before"] is None and json.loads(rows[2]["after"])["price"] == 9.5
    assert source.lsn == 3 and source.now_ms == START_MS + 750


def test_writes_outside_a_transaction_are_refused_and_rollbacks_leave_no_log(source):
    with pytest.raises(sqlite3.IntegrityError, match="outside a CDC transaction"):
        source.connection.execute("DELETE FROM customers WHERE customer_id = 1")
    with pytest.raises(RuntimeError), source.transaction() as db:
        db.execute("DELETE FROM customers WHERE customer_id = 1")
        raise RuntimeError("the application fails mid-transaction")
    assert log(source) == [] and source.read("customers").num_rows == 100
    assert source.now_ms == START_MS  # no commit, no tick


def test_a_primary_key_change_is_a_delete_and_a_create(source):
    with source.transaction() as db:
        db.execute("UPDATE customers SET customer_id = 5000 WHERE customer_id = 7")
    rows = log(source)
    assert [(r["op"], json.loads(r["key"])) for r in rows] == [
        ("d", {"customer_id": 7}), ("c", {"customer_id": 5000})
    ]  # fmt: skip


def test_reals_travel_through_json_exactly(source):
    tricky = [0.1 + 0.2, 19.99, 1 / 3, 1e-7, 123456.789]
    with source.transaction() as db:
        for i, price in enumerate(tricky):
            db.execute("UPDATE products SET price = ? WHERE product_id = ?", (price, i + 1))
    prices = [json.loads(r["after"])["price"] for r in log(source)]
    assert prices == tricky  # float equality on purpose: not one bit may change
    assert '"price":19.99' in log(source)[1]["after"]  # and the short form when it is exact


def test_the_workload_is_repeatable_and_makes_the_hard_cases(tmp_path, source):
    again = cdc.Source.create(tmp_path / "again.db",
                              rows={t: source.read(t) for t in source.tables()})  # fmt: skip
    cdc.Workload(source, seed=11).run(30)
    cdc.Workload(again, seed=11).run(30)
    assert log(source) == log(again)

    mark = source.lsn
    cdc.Workload(source, seed=1, kinds=["profile_edits"]).run(1)
    cdc.Workload(source, seed=1, kinds=["fix_line"]).run(1)
    cdc.Workload(source, seed=1, kinds=["churn"]).run(1)
    cdc.Workload(source, seed=1, kinds=["rejoin"]).run(1)
    rows = log(source, after=mark)
    assert len(rows) == 7
    edits, fix, churn, rejoin = rows[:3], rows[3:5], rows[5], rows[6]
    assert {(r["tx_id"], r["key"], r["op"]) for r in edits} == {
        (edits[0]["tx_id"], edits[0]["key"], "u")
    }
    assert [r["op"] for r in fix] == ["d", "c"] and fix[0]["key"] == fix[1]["key"]
    assert fix[0]["tx_id"] == fix[1]["tx_id"]
    assert churn["op"] == "d" and rejoin["op"] == "c"
    assert rejoin["tx_id"] > churn["tx_id"]
    deleted_before = {
        r["key"] for r in log(source)[:-1] if r["table"] == "customers" and r["op"] == "d"
    }
    assert rejoin["key"] in deleted_before  # a deleted key, inserted again later


def test_hot_picks_come_from_the_newest_keys(source):
    cdc.Workload(source, seed=2, hot=0.05, kinds=["move"]).run(20)
    moved = {json.loads(r["key"])["customer_id"] for r in log(source)}
    assert moved and min(moved) > 95  # the newest 5 of customers 1..100


def replay(records: pa.Table) -> dict[str, dict]:
    """Apply envelopes in LSN order with plain dicts: an independent reference."""
    state: dict[str, dict] = {}
    events = [json.loads(v) for v in records["value"].to_pylist() if v is not None]
    for e in sorted(events, key=lambda e: e["source"]["lsn"]):  # stable: snapshot rows keep order
        rows = state.setdefault(e["source"]["table"], {})
        image = e["after"] if e["op"] != "d" else e["before"]
        key = tuple(image[k] for k in cdc.KEYS[e["source"]["table"]])
        if e["op"] == "d":
            rows.pop(key, None)
        else:
            rows[key] = image
    return state


def as_dicts(source, table) -> dict:
    rows = source.read(table).to_pylist()
    micros = {f.name for f in source.schema(table) if pa.types.is_timestamp(f.type)}
    out = {}
    for r in rows:
        r = {k: (int(v.timestamp() * 1_000_000) if k in micros and v else v) for k, v in r.items()}
        out[tuple(r[k] for k in cdc.KEYS[table])] = r
    return out


def test_snapshot_then_stream_has_no_gap_and_no_overlap(source):
    workload = cdc.Workload(source, seed=4)
    workload.run(15)
    records, lsn = cdc.snapshot(source)
    assert lsn == source.lsn > 0
    assert {json.loads(v)["source"]["lsn"] for v in records["value"].to_pylist()} == {lsn}
    workload.run(15)
    stream, last = cdc.changes(source, after_lsn=lsn)
    lsns = [json.loads(v)["source"]["lsn"] for v in stream["value"].to_pylist() if v]
    (count,) = source.connection.execute(
        "SELECT count(*) FROM _cdc_log WHERE lsn > ?", (lsn,)
    ).fetchone()
    assert lsns == list(range(lsn + 1, last + 1)) and len(lsns) == count  # every change, once
    state = replay(pa.concat_tables([records, stream]))
    for table in source.tables():
        assert state.get(table, {}) == as_dicts(source, table), table
    tombstones = [k for k, v in zip(stream["key"].to_pylist(), stream["value"].to_pylist(), strict=True)
                  if v is None]  # fmt: skip
    deletes = [json.loads(v)["op"] for v in stream["value"].to_pylist() if v].count("d")
    assert len(tombstones) == deletes  # each delete is followed by a tombstone message


def test_the_connector_resumes_from_its_offset_in_bronze(source, lake):
    capture = cdc.Capture(source, lake)
    with pytest.raises(WorkbenchError, match="snapshot"):
        capture.poll()
    assert capture.snapshot() == 0 and capture.offset == 0
    assert capture.poll() is None  # nothing new
    cdc.Workload(source, seed=3).run(5)
    assert capture.poll() == 1
    restarted = cdc.Capture(source, lake)
    assert restarted.offset == source.lsn and restarted.batch_id == 1
    cdc.Workload(source, seed=4).run(5)
    assert restarted.poll() == 2
    landed = lake.delta(cdc.EVENTS).to_pyarrow_table()
    lsns = [
        json.loads(v)["source"]["lsn"]
        for v in landed.filter(pa.compute.field("batch_id") > 0)["value"].to_pylist()
        if v
    ]
    assert sorted(lsns) == list(range(1, source.lsn + 1))  # none lost, none twice
    version = lake.version(cdc.EVENTS)
    cdc.land(lake, capture.batch(2), 2, offset=source.lsn)  # landing a batch id again: skipped
    assert lake.version(cdc.EVENTS) == version


def test_bad_source_requests_explain_themselves(tmp_path, source):
    with pytest.raises(WorkbenchError, match="Allowed: customers"):
        cdc.Source.create(tmp_path / "x.db", tables=["clients"])
    with pytest.raises(WorkbenchError, match="Allowed: INTEGER"):
        source.add_column("customers", "x", "JSONB")
    with pytest.raises(WorkbenchError, match="no table 'payments'"):
        source.schema("payments")
    with pytest.raises(WorkbenchError, match="Source.create"):
        cdc.Source(tmp_path / "missing.db")
