"""The generators: pure functions of (scale, seed), sized, consistent, disordered, validated."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from workbench import datasets
from workbench.errors import WorkbenchError

SCALE = 0.001


@pytest.fixture(scope="module")
def data() -> dict[str, pa.Table]:
    """Every table at the test scale, generated once for the module."""
    return {name: datasets.table(name, SCALE, seed=7) for name in datasets.TABLES}


def _ids(table: pa.Table, column: str) -> set:
    return set(table[column].drop_null().to_pylist())


def test_same_seed_same_bytes_other_seed_other_data(data):
    for name in datasets.TABLES:
        again = datasets.table(name, SCALE, seed=7)
        assert again.equals(data[name]), name
        assert not datasets.table(name, SCALE, seed=8).equals(data[name]), name


def test_tables_do_not_depend_on_what_was_generated_before():
    datasets._customer_facts.cache_clear()
    datasets._product_facts.cache_clear()
    first = datasets.table("payments", SCALE, seed=3)  # builds customers and products on the way
    for name in ("customers", "products", "orders"):
        datasets.table(name, SCALE, seed=3)
    datasets._customer_facts.cache_clear()
    assert datasets.table("payments", SCALE, seed=3).equals(first)


@pytest.mark.parametrize("scale", [0.001, 0.01])
def test_sizes(scale):
    expected = {
        "customers": 100_000 * scale,
        "products": max(50, 10_000 * scale),
        "orders": 1_000_000 * scale,
        "payments": 1_000_000 * scale,
        "click_events": 10_000_000 * scale,
    }
    for name, n in expected.items():
        assert datasets.rows(name, scale) == round(n)
        assert datasets.table(name, scale).num_rows == round(n), name
    lines = datasets.table("order_lines", scale).num_rows
    assert datasets.rows("order_lines", scale) == round(2_500_000 * scale)
    assert abs(lines / datasets.rows("order_lines", scale) - 1) < 0.05


def test_tiny_scales_keep_minimums():
    assert datasets.rows("customers", 1e-6) == 100
    assert datasets.rows("orders", 1e-6) == 200
    assert datasets.table("click_events", 1e-6).num_rows == 2_000


def test_schemas_and_keys(data):
    for name, table in data.items():
        assert table.schema == datasets.SCHEMAS[name], name
    for name, key in [("customers", "customer_id"), ("products", "product_id"),
                      ("orders", "order_id"), ("payments", "payment_id"),
                      ("click_events", "event_id")]:  # fmt: skip
        assert pc.count_distinct(data[name][key]).as_py() == data[name].num_rows, name
        assert data[name][key].null_count == 0
    con = duckdb.connect()
    con.register("lines", data["order_lines"])
    dupes = con.sql("SELECT order_id, line_no FROM lines GROUP BY ALL HAVING count(*) > 1")
    assert dupes.fetchall() == []


def test_referential_integrity(data):
    customers, products, orders = (_ids(data[t], k) for t, k in
                                   [("customers", "customer_id"), ("products", "product_id"),
                                    ("orders", "order_id")])  # fmt: skip
    assert _ids(data["orders"], "customer_id") <= customers
    assert _ids(data["order_lines"], "order_id") == orders  # every order has a line
    assert _ids(data["order_lines"], "product_id") <= products
    assert _ids(data["payments"], "order_id") == orders  # one payment per order
    assert _ids(data["click_events"], "customer_id") <= customers
    assert _ids(data["click_events"], "product_id") <= products


def test_amounts_and_times_agree_with_an_independent_sql():
    con = duckdb.connect()
    for name in datasets.TABLES:
        con.register(name, datasets.table(name, 0.01, seed=5))
    # A payment is the order's total: sum of quantity * unit_price - discount, to the cent.
    wrong = con.sql("""
        SELECT p.order_id FROM payments p JOIN (
            SELECT order_id, round(sum(quantity * unit_price - discount), 2) AS total
            FROM order_lines GROUP BY order_id) t USING (order_id)
        WHERE abs(p.amount - t.total) > 0.001 OR p.paid_ts < (
            SELECT order_ts FROM orders o WHERE o.order_id = p.order_id)""").fetchall()
    assert wrong == []
    early = con.sql("""SELECT count(*) FROM orders JOIN customers USING (customer_id)
                       WHERE order_ts < created_at""").fetchone()[0]
    assert early == 0
    assert con.sql("SELECT count(*) FROM order_lines WHERE discount < 0 OR quantity < 1 "
                   "OR discount > quantity * unit_price").fetchone()[0] == 0  # fmt: skip
    # Prices come from the catalog, in cents.
    price = con.sql("""SELECT count(*) FROM order_lines l JOIN products p USING (product_id)
                       WHERE l.unit_price <> p.price OR p.price <> round(p.price, 2)""")
    assert price.fetchone()[0] == 0


def test_skew_some_customers_buy_a_lot():
    orders = datasets.table("orders", 0.01)
    counts = np.sort(np.bincount(orders["customer_id"].to_numpy()))[::-1]
    top_tenth = counts[: datasets.rows("customers", 0.01) // 10].sum()
    assert top_tenth / orders.num_rows > 0.3


def test_timestamps_are_utc_microseconds_before_simulated_now(data):
    now = pa.scalar(datasets.SIMULATED_NOW, pa.timestamp("us", tz="UTC"))
    for name, table in data.items():
        for field in table.schema:
            if pa.types.is_timestamp(field.type):
                assert field.type == pa.timestamp("us", tz="UTC"), (name, field.name)
                assert pc.max(table[field.name]).as_py() < now.as_py(), (name, field.name)
    customers = data["customers"]
    assert pc.all(pc.less_equal(customers["created_at"], customers["updated_at"])).as_py()


def test_click_events_arrive_out_of_event_time_order(data):
    clicks = data["click_events"]
    event = clicks["event_time"].to_numpy().view(np.int64)
    ingest = clicks["ingest_time"].to_numpy().view(np.int64)
    assert (np.diff(ingest) >= 0).all()  # the order a consumer sees
    assert (np.diff(event) < 0).any()  # ... is not event-time order
    delay_s = (ingest - event) / 1e6
    assert delay_s.min() >= 0
    assert np.median(delay_s) < 10  # mostly a few seconds
    assert (delay_s > 600).sum() >= 5  # a heavy tail: some arrive more than 10 minutes late
    assert delay_s.max() <= 3 * 3600


def test_click_sessions_follow_a_funnel(data):
    con = duckdb.connect()
    con.register("clicks", data["click_events"])
    counts = dict(con.sql("SELECT event_type, count(*) FROM clicks GROUP BY 1").fetchall())
    assert counts["page_view"] > counts["add_to_cart"] > counts["checkout"] > counts["purchase"] > 0
    # A purchase is the last event of its session and is worth what was put in the cart.
    bad = con.sql("""
        SELECT session_id FROM clicks GROUP BY session_id
        HAVING count(*) FILTER (WHERE event_type = 'purchase') > 0 AND (
            arg_max(event_type, event_time) <> 'purchase' OR
            max(value) FILTER (WHERE event_type = 'purchase') <>
            max(value) FILTER (WHERE event_type = 'add_to_cart'))""").fetchall()
    assert bad == []
    nulls = con.sql("""SELECT count(*) FROM clicks WHERE (product_id IS NULL) = (page = 'product')
                       """).fetchone()[0]  # fmt: skip
    assert nulls == 0


def test_small_chunks_keep_every_invariant(monkeypatch):
    """Many chunks exercise the ingest-order merge; the data differ (chunks are seeded) but hold."""
    monkeypatch.setattr(datasets, "CHUNK_ROWS", 997)
    datasets._customer_facts.cache_clear()
    datasets._product_facts.cache_clear()
    try:
        clicks = datasets.table("click_events", SCALE)
        batches = list(datasets.generate_table("orders", SCALE))
        lines = datasets.table("order_lines", SCALE)
        payments = datasets.table("payments", SCALE)
    finally:
        datasets._customer_facts.cache_clear()
        datasets._product_facts.cache_clear()
    assert max(b.num_rows for b in batches) == 997
    assert sorted(clicks["event_id"].to_pylist()) == list(range(1, 10_001))
    assert (np.diff(clicks["ingest_time"].to_numpy().view(np.int64)) >= 0).all()
    totals = np.bincount(
        lines["order_id"].to_numpy(),
        weights=lines["quantity"].to_numpy() * lines["unit_price"].to_numpy()
        - lines["discount"].to_numpy(),
    )[1:]
    assert np.allclose(np.round(totals, 2), payments["amount"].to_numpy())


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(scale=0), "scale=0 "),
        (dict(scale=-1), "scale=-1 "),
        (dict(scale=11), "scale=11 "),
        (dict(scale=math.nan), "scale=nan"),
        (dict(scale="1"), "scale='1'"),
        (dict(scale=True), "scale=True"),
        (dict(seed=-1), "seed=-1 "),
        (dict(seed=1.5), "seed=1.5"),
        (dict(seed=2**32), "seed=4294967296"),
        (dict(name="orderz"), "'orderz' is not a dataset table"),
    ],
)
def test_bad_arguments_say_what_and_how(kwargs, fragment):
    args = dict(name="orders", scale=0.01, seed=42) | kwargs
    with pytest.raises(WorkbenchError) as info:
        datasets.generate_table(**args)
    message = str(info.value)
    assert fragment in message
    assert "Allowed:" in message and "Hint:" in message


def test_generate_writes_bronze_and_records_scale_and_seed(lake):
    written = datasets.generate(lake, scale=SCALE, seed=1, progress=False)
    assert written == {n: datasets.table(n, SCALE, seed=1).num_rows for n in datasets.TABLES}
    assert sorted(lake.tables("bronze")) == sorted(f"bronze.{n}" for n in datasets.TABLES)
    back = pa.table(lake.delta("bronze.click_events").to_pyarrow_table())
    back = back.cast(datasets.SCHEMAS["click_events"]).sort_by("event_id")
    assert back.equals(datasets.table("click_events", SCALE, seed=1).sort_by("event_id"))
    commit = lake.delta("bronze.orders").history(1)[0]
    assert (commit["workbench.scale"], commit["workbench.seed"]) == ("0.001", "1")

    # Present tables are kept; other parameters are refused rather than mixed in.
    assert set(datasets.generate(lake, scale=SCALE, seed=1, progress=False).values()) == {0}
    with pytest.raises(WorkbenchError, match="seed=1, not scale=0.001, seed=2"):
        datasets.generate(lake, scale=SCALE, seed=2, tables="orders", progress=False)
    again = datasets.generate(lake, scale=SCALE, seed=2, tables=["orders"], overwrite=True,
                              progress=False)  # fmt: skip
    assert again == {"orders": datasets.rows("orders", SCALE)}
    with pytest.raises(WorkbenchError, match="'nope' is not a dataset table"):
        datasets.generate(lake, tables=["orders", "nope"], progress=False)


def test_start_regenerates_a_lake_made_from_another_scale(tmp_path):
    """A learner who changes `scale` in a chapter's parameters gets the data they asked for."""
    from workbench.chapter import start

    _, lake = start("duckdb", tmp_path / "lake", scale=0.001, seed=1, tables=["products"])
    _, lake = start("duckdb", tmp_path / "lake", scale=0.002, seed=1, tables=["products"])
    history = lake.delta("bronze.products").history()
    assert history[0]["workbench.scale"] == "0.002" and len(history) == 2
