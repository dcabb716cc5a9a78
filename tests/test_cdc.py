"""Change data capture: apply rules checked against hand-written events and answers, malformed
events, schema evolution, snapshot diffs, reconciliation, and a property test of random
workloads delivered out of order with duplicates and replays (tests/test_cdc_source.py covers
the SQLite source, its triggers, the workload and the exporter)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench import backends, cdc, datasets
from workbench.cdc_source import TableSpec
from workbench.errors import SchemaMismatchError, WorkbenchError
from workbench.lakehouse import Lakehouse

T0 = 1_793_491_200_000  # 2026-11-01 in epoch ms
TS = pa.timestamp("us", tz="UTC")
PEOPLE = pa.schema([("customer_id", pa.int64()), ("name", pa.string()), ("city", pa.string())])
CATALOG = {"customers": TableSpec(("customer_id",), PEOPLE)}


def envelope(op, lsn, key, city=None, before_city=None, table="customers", tx=None) -> str:
    """A Debezium envelope written by hand (independent of the exporter)."""
    image = None if city is None else {"customer_id": key, "name": f"n{key}", "city": city}
    before = (
        None
        if before_city is None
        else {"customer_id": key, "name": f"n{key}", "city": before_city}
    )
    if op == "d":
        before, image = before or {"customer_id": key, "name": f"n{key}", "city": "?"}, None
    source = {"db": "retail", "table": table, "lsn": lsn, "txId": tx or lsn, "ts_ms": T0 + lsn}
    return json.dumps(
        {"before": before, "after": image, "source": source, "op": op, "ts_ms": T0 + lsn + 7}
    )


def records(values: list[str | None], topic: str = "retail.customers") -> pa.Table:
    keys = []
    for v in values:
        try:
            payload = json.loads(v) if v else None
            image = payload and (payload.get("after") or payload.get("before")) or {}
            keys.append(json.dumps({"customer_id": image.get("customer_id")}))
        except (json.JSONDecodeError, AttributeError):
            keys.append(None)
    return pa.table({"topic": [topic] * len(values), "key": keys, "value": values},
                    schema=pa.schema([("topic", pa.string()), ("key", pa.string()), ("value", pa.string())]))  # fmt: skip


def silver(lake, con, name="silver.customers") -> dict[int, tuple]:
    rows = lake.table(name, con).to_pyarrow().to_pylist()
    return {r["customer_id"]: (r["city"], r["_lsn"], r.get("_deleted")) for r in rows}


def land_and_apply(lake, con, batch_id, values, **options):
    cdc.land(lake, records(values), batch_id, offset=0)
    return cdc.apply(lake, con, batch_id, CATALOG, **options).set_index("table")


# -- the apply rules, against answers written by hand -------------------------------------------


def test_highest_lsn_wins_duplicates_counted_tombstones_block_late_events(con, lake):
    first = [
        envelope("c", 1, 1, "Oslo"),
        envelope("u", 3, 1, "Rome", "Paris"),
        envelope("u", 2, 1, "Paris", "Oslo"),  # older than lsn 3, in the same batch
        envelope("u", 3, 1, "Rome", "Paris"),  # an exact duplicate
        envelope("c", 4, 2, "Lima"),
        envelope("d", 5, 2, before_city="Lima"),
        envelope("c", 6, 3, "Kyiv"),
    ]
    m = land_and_apply(lake, con, 0, first).loc["customers"]
    assert silver(lake, con) == {1: ("Rome", 3, None), 3: ("Kyiv", 6, None)}
    tombs = lake.table("silver.customers_tombstones", con).to_pyarrow().to_pylist()
    assert [(t["customer_id"], t["_lsn"]) for t in tombs] == [(2, 5)]
    assert (m.events, m.duplicates, m.superseded, m.applied, m.inserted) == (7, 1, 3, 3, 2)

    late = [envelope("c", 4, 2, "Lima"), envelope("u", 2, 1, "Paris", "Oslo"),
            envelope("u", 7, 3, "Kiev", "Kyiv")]  # fmt: skip
    m = land_and_apply(lake, con, 1, late).loc["customers"]
    assert silver(lake, con) == {1: ("Rome", 3, None), 3: ("Kiev", 7, None)}  # 2 stays deleted
    assert (m.stale, m.applied, m.updated) == (2, 1, 1)

    again = [envelope("c", 8, 2, "Baku"), envelope("d", 9, 3, before_city="Kiev")]
    m = land_and_apply(lake, con, 2, again).loc["customers"]
    assert silver(lake, con) == {1: ("Rome", 3, None), 2: ("Baku", 8, None)}  # re-inserted
    assert (m.inserted, m.deleted) == (1, 1)

    version = lake.version("silver.customers")
    m = land_and_apply(lake, con, 3, first + late + again).loc["customers"]  # replay it all
    assert (m.duplicates, m.superseded, m.stale, m.applied) == (3, 6, 3, 0)
    assert lake.version("silver.customers") == version  # a replay commits nothing
    skipped = cdc.apply(lake, con, 1, CATALOG)  # an applied batch id is skipped outright
    assert skipped.skipped.all() and lake.version("silver.customers") == version
    assert cdc.apply(lake, con, None, CATALOG).empty  # what poll() returns when nothing changed
    with pytest.raises(WorkbenchError, match="has not landed"):
        cdc.apply(lake, con, 7, CATALOG)  # marking it done would lose it when it lands


def test_soft_deletes_keep_the_row_with_its_lsn(con, lake):
    events = [envelope("c", 1, 1, "Oslo"), envelope("d", 2, 1, before_city="Oslo"),
              envelope("c", 3, 2, "Rome")]  # fmt: skip
    land_and_apply(lake, con, 0, events, deletes="soft")
    assert silver(lake, con) == {1: ("Oslo", 2, True), 2: ("Rome", 3, False)}
    land_and_apply(lake, con, 1, [envelope("u", 1, 1, "Late")], deletes="soft")  # older than 2
    assert silver(lake, con)[1] == ("Oslo", 2, True)
    assert not lake.exists("silver.customers_tombstones")
    live = cdc.live(lake.table("silver.customers", con)).to_pyarrow()
    assert live.column_names == ["customer_id", "name", "city"] and live.num_rows == 1
    with pytest.raises(WorkbenchError, match="deletes='soft'"):
        land_and_apply(lake, con, 2, [envelope("c", 9, 9, "X")], deletes="hard")


def test_malformed_events_go_to_the_dead_letters_and_the_rest_is_applied(con, lake):
    good = envelope("c", 1, 1, "Oslo")
    no_after = json.dumps(
        {"op": "u", "after": None, "source": {"table": "customers", "lsn": 2, "ts_ms": T0}}
    )
    bad_key = json.loads(envelope("c", 3, 1, "Oslo"))
    bad_key["after"]["customer_id"] = None
    bad_value = json.loads(envelope("c", 4, 4, "Oslo"))
    bad_value["after"]["customer_id"] = "four"
    values = [
        good,
        "{not json",
        envelope("x", 5, 5, "Oslo"),
        no_after,
        json.dumps(bad_key),
        json.dumps(bad_value),
        envelope("c", 6, 6, "Oslo", table="unknown"),
        json.dumps({"op": "c", "after": {"customer_id": 7}, "source": {"table": "customers"}}),
        None,  # a Kafka tombstone message: no data, skipped and counted
    ]
    metrics = land_and_apply(lake, con, 0, values)
    dead = lake.table(cdc.DEAD_LETTER, con).to_pyarrow().sort_by("position").to_pylist()
    reasons = {d["position"]: d["reason"] for d in dead}
    assert reasons == {
        1: "unparseable JSON",
        2: "unknown op 'x'",
        3: "after missing on op 'u'",
        4: "missing key column customer_id",
        5: "missing key column customer_id",  # 'four' is no integer key
        6: "unknown table 'unknown'",
        7: "source.lsn missing or not an integer",
    }
    assert dead[0]["value"] == "{not json"  # the raw payload is kept as it came
    assert silver(lake, con) == {1: ("Oslo", 1, None)}
    assert metrics.loc["customers"].tombstone_messages == 1
    assert metrics.dead_letter.sum() == 7


def test_a_bad_value_in_a_typed_column_is_dead_lettered(con, lake):
    spec = {"customers": TableSpec(("customer_id",), pa.schema([("customer_id", pa.int64()),
                                                                   ("score", pa.float64())]))}  # fmt: skip
    values = [json.dumps({"op": "c", "after": {"customer_id": i, "score": s}, "before": None,
                          "source": {"table": "customers", "lsn": i, "ts_ms": T0}})
              for i, s in ((1, 1.5), (2, "high"), (3, None))]  # fmt: skip
    cdc.land(lake, records(values), 0, 0)
    cdc.apply(lake, con, 0, spec)
    dead = lake.table(cdc.DEAD_LETTER, con).to_pyarrow().to_pylist()
    assert [(d["position"], d["reason"]) for d in dead] == [(1, "bad value for column score")]
    got = lake.table("silver.customers", con).to_pyarrow().sort_by("customer_id")
    assert got["score"].to_pylist() == [1.5, None]


def test_conflicting_events_with_one_lsn_are_dead_lettered(con, lake):
    values = [envelope("c", 1, 1, "Oslo"), envelope("u", 2, 1, "Rome"), envelope("u", 2, 1, "Lima"),
              envelope("c", 3, 2, "Baku")]  # fmt: skip
    metrics = land_and_apply(lake, con, 0, values)
    assert metrics.loc["customers"].conflicts == 2
    dead = lake.table(cdc.DEAD_LETTER, con).to_pyarrow().to_pylist()
    assert sorted(d["position"] for d in dead) == [1, 2]
    assert silver(lake, con) == {2: ("Baku", 3, None)}


def test_a_snapshot_read_and_the_change_it_shows_are_no_conflict(con, lake):
    change = envelope("u", 4, 1, "Rome", "Oslo", tx=9)
    read = json.loads(change)
    read.update(op="r", before=None)
    read["source"].update(txId=None, ts_ms=T0 + 100, snapshot="true")
    metrics = land_and_apply(lake, con, 0, [json.dumps(read), change]).loc["customers"]
    assert metrics.conflicts == 0 and not lake.exists(cdc.DEAD_LETTER)
    row = lake.table("silver.customers", con).to_pyarrow().to_pylist()[0]
    assert (row["city"], row["_lsn"], row["_tx_id"]) == ("Rome", 4, 9)  # the change's own tx
    assert row["_commit_ts"] == pa.scalar((T0 + 4) * 1000, TS).as_py()


def test_a_batch_is_applied_on_the_engine_under_test(con, lake, backend):
    land_and_apply(lake, con, 0, [envelope("c", 1, 1, "Oslo")])
    land_and_apply(lake, con, 1, [envelope("u", 2, 1, "Rome")])
    engines = set(lake.history("silver.customers").engine)
    assert engines == {backend}


# -- against a real source ---------------------------------------------------------------------


def small_source(path, customers=12, lines=16) -> cdc.Source:
    rows = {
        "customers": datasets.table("customers", 0.001, 7).slice(0, customers),
        "order_lines": datasets.table("order_lines", 0.001, 7).slice(0, lines),
    }
    return cdc.Source.create(path, rows=rows)


def all_in_sync(source, lake, con) -> dict:
    results = {t: cdc.reconcile(source, lake, t, con) for t in source.tables()}
    return {t: r.differences.to_dict("records") for t, r in results.items() if not r.ok}


def test_in_order_delivery_reconciles_after_every_batch(con, lake, tmp_path):
    source = small_source(tmp_path / "src.db")
    capture = cdc.Capture(source, lake)
    cdc.apply(lake, con, capture.snapshot(), source.catalog())
    assert all_in_sync(source, lake, con) == {}
    workload = cdc.Workload(source, seed=5)
    for _ in range(2):
        workload.run(10)
        cdc.apply(lake, con, capture.poll(), source.catalog(), now_ms=source.now_ms)
        assert all_in_sync(source, lake, con) == {}
    applied = lake.table(cdc.APPLIED, con).to_pyarrow()
    assert set(applied["batch_id"].to_pylist()) == {0, 1, 2}


def test_shuffled_duplicated_replayed_delivery_still_reconciles(con, lake, tmp_path):
    source = small_source(tmp_path / "src.db")
    capture = cdc.Capture(source, lake)
    capture.snapshot()
    workload = cdc.Workload(source, seed=9)
    for _ in range(2):
        workload.run(10)
        capture.poll(shuffle=True, seed=1)
    frames = cdc.apply_pending(lake, con, source.catalog(), deletes="soft")
    assert frames.duplicates.sum() > 0
    assert all_in_sync(source, lake, con) == {}
    assert cdc.pending(lake) == []


def test_a_column_added_at_the_source_flows_through_or_fails_clearly(con, lake, tmp_path):
    source = small_source(tmp_path / "src.db")
    capture = cdc.Capture(source, lake)
    cdc.apply(lake, con, capture.snapshot(), source.catalog())
    source.add_column("customers", "loyalty", "TEXT")
    with source.transaction() as db:
        db.execute("UPDATE customers SET loyalty = 'gold' WHERE customer_id = 3")
    batch = capture.poll()
    version = lake.version("silver.customers")
    with pytest.raises(SchemaMismatchError, match="loyalty"):
        cdc.apply(lake, con, batch, source.catalog(), evolve=False)
    assert lake.version("silver.customers") == version  # nothing of the batch was applied
    cdc.apply(lake, con, batch, source.catalog(), evolve=True)
    rows = lake.table("silver.customers", con).to_pyarrow().to_pylist()
    assert {r["customer_id"]: r["loyalty"] for r in rows if r["loyalty"]} == {3: "gold"}
    assert all_in_sync(source, lake, con) == {}


def test_reconcile_names_each_kind_of_difference(con, lake, tmp_path):
    source = small_source(tmp_path / "src.db")
    cdc.apply(lake, con, cdc.Capture(source, lake).snapshot(), source.catalog())
    lake.delete("silver.customers", "customer_id = 2")
    lake.delta("silver.customers").update({"city": "'Nowhere'"}, predicate="customer_id = 5")
    extra = lake.delta("silver.customers").to_pyarrow_table(filters=[("customer_id", "=", 1)])
    lake.write("silver.customers", extra.set_column(0, "customer_id", pa.array([99])))
    result = cdc.reconcile(source, lake, "customers", con)
    got = dict(zip(result.differences.customer_id, result.differences.difference, strict=True))
    assert got == {2: "missing in lake", 5: "values differ", 99: "extra in lake"}
    assert not result.ok and result.source_rows == result.lake_rows == 12


def test_snapshot_diff_finds_the_net_changes_only(con):
    old = pa.table({"k": [1, 2, 3, 4], "v": ["a", "b", None, "d"]})
    new = pa.table({"k": [1, 3, 4, 5], "v": ["a", "c", "d", "e"]})
    diff = cdc.snapshot_diff(con.create_table("o", old), con.create_table("n", new), ["k"],
                             lsn=7, commit_ts=pa.scalar(T0 * 1000, TS).as_py())  # fmt: skip
    got = sorted((r["k"], r["_op"], r["v"]) for r in diff.to_pyarrow().to_pylist())
    assert got == [(2, "d", "b"), (3, "u", "c"), (5, "c", "e")]  # a null -> 'c' is a change


# -- the property: any delivery order, duplicates and replays reconcile to zero ------------------

settings.register_profile("cdc", max_examples=6, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
settings.register_profile("cdc-deep", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
PROFILE = "cdc-deep" if os.environ.get("WORKBENCH_HYPOTHESIS_PROFILE") == "deep" else "cdc"


@settings(settings.get_profile(PROFILE))
@given(
    seed=st.integers(0, 2**16),
    before=st.integers(0, 6),
    after=st.integers(1, 15),
    batches=st.integers(1, 3),
    duplicates=st.floats(0, 0.6),
    replays=st.lists(st.integers(0, 2), max_size=1),
    soft=st.booleans(),
)
def test_any_delivery_reconciles_to_zero_differences(
    backend, tmp_path_factory, seed, before, after, batches, duplicates, replays, soft
):
    con = backends.connect(backend)
    folder = tmp_path_factory.mktemp("cdc")
    lake = Lakehouse(folder / "lake")
    source = small_source(folder / "src.db", customers=6, lines=8)
    workload = cdc.Workload(source, seed=seed)
    workload.run(before)  # changes before the snapshot are in it, not in the stream
    records, lsn = cdc.snapshot(source)
    workload.run(after)
    stream, _ = cdc.changes(source, after_lsn=lsn)
    everything = pa.concat_tables([records, stream])
    rng = np.random.default_rng(seed)
    sent = everything.take(rng.choice(everything.num_rows, int(everything.num_rows * duplicates)))
    mixed = pa.concat_tables([everything, sent])
    mixed = mixed.take(rng.permutation(mixed.num_rows))
    cuts = np.sort(rng.integers(0, mixed.num_rows + 1, batches - 1))
    parts = np.split(np.arange(mixed.num_rows), cuts)
    deliveries = [mixed.take(p) for p in parts] + [
        mixed.take(parts[r % len(parts)]) for r in replays
    ]
    options = {"deletes": "soft" if soft else "hard"}
    for batch_id, delivery in enumerate(deliveries):
        cdc.land(lake, delivery, batch_id, offset=0)
        cdc.apply(lake, con, batch_id, source.catalog(), **options)
    cdc.apply(lake, con, 0, source.catalog(), **options)  # an old batch id: skipped
    assert all_in_sync(source, lake, con) == {}


# -- downstream: silver's change feed drives the SCD2 dimension ---------------------------------


def test_the_silver_feed_builds_the_scd2_dimension_incrementally(con, lake):
    ms = [pa.scalar((T0 + lsn) * 1000, TS).as_py() for lsn in range(6)]
    land_and_apply(lake, con, 0, [envelope("c", 1, 1, "Oslo"), envelope("c", 2, 2, "Rome")])
    first = cdc.update_dimension(lake, con, tracked=["city"])
    land_and_apply(
        lake, con, 1, [envelope("u", 3, 1, "Lima"), envelope("d", 4, 2, before_city="Rome")]
    )
    land_and_apply(lake, con, 2, [envelope("c", 5, 2, "Baku")])
    second = cdc.update_dimension(lake, con, tracked=["city"])
    assert (first["keys"], second["keys"]) == (2, 2)
    assert cdc.update_dimension(lake, con, tracked=["city"])["skipped"] == 1  # nothing new
    dim = lake.table("gold.dim_customer", con).to_pyarrow().to_pylist()
    got = sorted(
        (r["customer_id"], r["city"], r["valid_from"], r["valid_to"], r["is_current"]) for r in dim
    )
    assert got == [
        (1, "Lima", ms[3], None, True),
        (1, "Oslo", ms[1], ms[3], False),
        (2, "Baku", ms[5], None, True),
        (2, "Rome", ms[2], ms[4], False),  # closed by the delete, at the delete's source time
    ]
