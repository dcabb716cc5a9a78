"""The star schema, the date dimension, hash keys and the four warehouse shapes, on every engine.

The star's answer to the business question is checked against SQL written by hand over the
bronze tables (read with deltalake, run on a raw DuckDB connection); the snowflake, the
one-big-table and the vault must give the same rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil

import duckdb
import pyarrow as pa
import pytest

from workbench import datasets, keys, modeling, warehouse
from workbench.errors import WorkbenchError
from workbench.lakehouse import Lakehouse

UTC = dt.UTC
QUESTION = ["month", "country", "category"]


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# -- hash keys ----------------------------------------------------------------------------------


def test_hash_keys_are_md5_of_the_documented_text_on_every_engine(con):
    when = dt.datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=UTC)
    table = pa.table(
        {
            "s": ["a|b", "c\\", None],
            "i": pa.array([1, None, -3], pa.int64()),
            "f": [19.99, 0.00001, None],
            "b": [True, None, False],
            "d": pa.array([dt.date(2026, 1, 2), None, dt.date(1999, 12, 31)]),
            "t": pa.array(
                [when, None, dt.datetime(1900, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    t = con.create_table("mixed", table, overwrite=True)
    got = con.to_pyarrow(t.select("i", h=keys.hash_key(t, list(table.column_names))))
    expected = {
        1: md5("a\\|b|1|19.990000|t|2026-01-02|2026-03-04 05:06:07.000890"),
        None: md5("c\\\\|\\N|0.000010|\\N|\\N|\\N"),
        -3: md5("\\N|-3|\\N|f|1999-12-31|1900-01-01 00:00:00.000000"),
    }
    assert dict(zip(got["i"].to_pylist(), got["h"].to_pylist(), strict=True)) == expected
    assert keys.python_hash_key("a|b", 1, True, when) == md5("a\\|b|1|t|2026-03-04 05:06:07.000890")


# -- dim_date -----------------------------------------------------------------------------------


def test_dim_date_calendar_and_fiscal_periods(con):
    days = modeling.calendar(con, dt.date(2026, 1, 30), dt.date(2026, 2, 2))
    got = {r["date"]: r for r in con.to_pyarrow(modeling.dim_date(days)).to_pylist()}
    assert sorted(got) == [dt.date(2026, 1, 30) + dt.timedelta(days=i) for i in range(4)]
    jan31, feb1, feb2 = (
        got[dt.date(2026, 1, 31)],
        got[dt.date(2026, 2, 1)],
        got[dt.date(2026, 2, 2)],
    )
    # Fiscal years start on 1 February and are named after the year they end in.
    assert (jan31["fiscal_year"], jan31["fiscal_month"], jan31["fiscal_quarter"]) == (2026, 12, 4)
    assert (feb1["fiscal_year"], feb1["fiscal_month"], feb1["fiscal_quarter"]) == (2027, 1, 1)
    assert (jan31["weekday_name"], jan31["weekday"], jan31["is_weekend"]) == ("Saturday", 6, True)
    assert (feb2["weekday_name"], feb2["is_weekend"], feb2["week"]) == ("Monday", False, 6)
    assert (feb1["date_key"], feb1["month_start"], feb1["month_name"], feb1["quarter"]) == (
        20260201,
        dt.date(2026, 2, 1),
        "February",
        1,
    )
    october = {
        r["date"]: r for r in con.to_pyarrow(modeling.dim_date(days, fiscal_start=10)).to_pylist()
    }
    assert (
        october[dt.date(2026, 2, 1)]["fiscal_year"],
        october[dt.date(2026, 2, 1)]["fiscal_month"],
    ) == (2026, 5)
    calendar_year = con.to_pyarrow(modeling.dim_date(days, fiscal_start=1)).to_pylist()
    assert all(
        r["fiscal_year"] == r["year"] and r["fiscal_month"] == r["month"] for r in calendar_year
    )
    with pytest.raises(WorkbenchError, match="fiscal_start=13"):
        modeling.dim_date(days, fiscal_start=13)


# -- the star, built once per engine ----------------------------------------------------------


@pytest.fixture(scope="module")
def bronze(tmp_path_factory) -> Lakehouse:
    """Bronze retail tables at scale 0.001, generated once for every engine."""
    lake = Lakehouse(tmp_path_factory.mktemp("bronze") / "lake")
    datasets.generate(lake, scale=0.001, seed=7, tables=modeling.BRONZE, progress=False)
    return lake


@pytest.fixture(scope="module")
def star(bronze, backend, tmp_path_factory):
    """The star built on the engine under test, in a lake of its own sharing bronze."""
    from workbench import backends

    con = backends.connect(backend)
    root = tmp_path_factory.mktemp(f"star_{backend}") / "lake"
    shutil.copytree(bronze.root / "bronze", root / "bronze")
    lake = Lakehouse(root, con=con)
    modeling.build_star(lake, con)
    return con, lake


def bronze_sql(bronze: Lakehouse) -> list[dict]:
    """The business question written by hand over bronze (DuckDB SQL), with the documented
    history: a customer updated after signing up lived, until the update, in the city 13
    places further in the dataset's list of cities."""
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    for name in modeling.BRONZE:
        db.register(name, bronze.delta(f"bronze.{name}").to_pyarrow_table())
    cities = [(c, k) for c, k, _ in datasets._CITIES]
    moved = [(city, *cities[(i + 13) % len(cities)]) for i, (city, _) in enumerate(cities)]
    db.register(
        "moved",
        pa.table(
            dict(
                zip(
                    ["city", "old_city", "old_country"],
                    map(list, zip(*moved, strict=True)),
                    strict=True,
                )
            )
        ),
    )
    sql = """
        SELECT CAST(date_trunc('month', o.order_ts) AS DATE) AS month,
               CASE WHEN c.updated_at > c.created_at AND o.order_ts < c.updated_at
                    THEN m.old_country ELSE c.country END AS country,
               p.category,
               ROUND(SUM(l.quantity * l.unit_price - l.discount), 2) AS revenue,
               COUNT(*) AS lines
        FROM order_lines l
        JOIN orders o USING (order_id)
        JOIN customers c USING (customer_id)
        JOIN products p USING (product_id)
        JOIN moved m ON m.city = c.city
        WHERE o.status <> 'cancelled'
        GROUP BY ALL
    """
    return db.sql(sql).fetch_arrow_table().to_pylist()


def answer(table: pa.Table | list[dict]) -> dict[tuple, tuple]:
    rows = table.to_pylist() if isinstance(table, pa.Table) else table
    return {tuple(r[c] for c in QUESTION): (r["revenue"], r["lines"]) for r in rows}


def same_answer(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for cell, (revenue, lines) in expected.items():
        assert got[cell][1] == lines, cell
        assert got[cell][0] == pytest.approx(revenue, abs=0.011), cell  # sums in another order


def test_the_star_answers_the_business_question_as_sql_over_bronze_does(star, bronze):
    con, lake = star
    dim_customer, dim_product, dim_date, fact = (lake.table(n, con) for n in modeling.STAR)
    got = con.to_pyarrow(warehouse.revenue_star(fact, dim_customer, dim_product, dim_date))
    expected = answer(bronze_sql(bronze))
    assert len(expected) > 100
    same_answer(answer(got), expected)


def test_snowflake_one_big_table_and_vault_give_the_star_answer(star):
    con, lake = star
    dim_customer, dim_product, dim_date, fact = (lake.table(n, con) for n in modeling.STAR)
    reference = answer(
        con.to_pyarrow(warehouse.revenue_star(fact, dim_customer, dim_product, dim_date))
    )
    snowflake = warehouse.snowflake_product(dim_product)
    obt = warehouse.one_big_table(fact, dim_customer, dim_product, dim_date)
    silver = {
        n: lake.table(f"silver.{n}", con)
        for n in ("customers", "products", "orders", "order_lines")
    }
    changes = modeling.customer_changes(silver["customers"])
    vault = warehouse.vault(changes, silver["products"], silver["orders"], silver["order_lines"])
    for query in (
        warehouse.revenue_snowflake(fact, dim_customer, snowflake, dim_date),
        warehouse.revenue_obt(obt),
        warehouse.revenue_vault(vault),
    ):
        same_answer(answer(con.to_pyarrow(query)), reference)


def test_the_fact_keeps_every_order_line_with_keys_any_engine_recomputes(star, bronze):
    con, lake = star
    fact = lake.table("gold.fact_sales", con).to_pyarrow()
    lines = bronze.delta("bronze.order_lines").to_pyarrow_table()
    assert fact.num_rows == lines.num_rows
    assert fact["customer_sk"].null_count == fact["product_sk"].null_count == 0
    product = {(r["order_id"], r["line_no"]): r["product_id"] for r in lines.to_pylist()}
    for row in fact.to_pylist():  # a line's product key is md5 of its product id, anywhere
        assert row["product_sk"] == md5(str(product[row["order_id"], row["line_no"]]))
    dim = lake.table("gold.dim_customer", con).to_pyarrow().to_pylist()
    customers = bronze.delta("bronze.customers").to_pyarrow_table()
    moved = sum(
        u > c
        for u, c in zip(
            customers["updated_at"].to_pylist(), customers["created_at"].to_pylist(), strict=True
        )
    )
    assert len(dim) == customers.num_rows + moved  # one version per customer, two if they moved
    assert sum(r["is_current"] for r in dim) == customers.num_rows
    assert not any(r["is_inferred"] for r in dim)
