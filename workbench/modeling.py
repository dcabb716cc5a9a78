"""Dimensional modeling on the retail data: silver from bronze, a star schema (`dim_customer`
SCD2, `dim_product` SCD1, `dim_date`, `fact_sales` at order-line grain), the point-in-time
join, inferred members for late-arriving dimension rows, and one business question
("revenue by customer country and product category per month") is asked of these tables and
of other shapes in `warehouse.py`; the SCD machinery is in `scd.py`.

Surrogate keys are md5 hash keys (`keys.hash_key`): `product_sk` is the hash of `product_id`
and `customer_sk` the hash of `customer_id` and the version's `valid_from`, so any engine, and
a fact load running before the dimension's, computes the same key without a lookup.
"""

from __future__ import annotations

import datetime as dt

import ibis
import pyarrow as pa

from workbench import datasets, scd
from workbench import keys as hashing
from workbench.dimension import TS, inferred_members, point_in_time, unfused
from workbench.errors import WorkbenchError

CUSTOMER_KEY = ["customer_id"]
CUSTOMER_TRACKED = ["name", "email", "city", "country", "segment"]
PRODUCT_KEY = ["product_id"]
PRODUCT_TRACKED = ["name", "category", "subcategory", "brand", "price"]
BRONZE = ("customers", "products", "orders", "order_lines")
"""The bronze tables the star is built from."""
FISCAL_START = 2
"""The month a fiscal year starts in: February, as in the retail (4-5-4) calendar."""

# Bronze keeps only each customer's latest state. We reconstruct one earlier state by a fixed
# rule: a customer updated after signing up had moved from the city 13 places away in the list.
_CITIES = [(city, country) for city, country, _ in datasets._CITIES]
MOVED_FROM = {
    city: _CITIES[(i + len(_CITIES) // 2) % len(_CITIES)] for i, (city, _) in enumerate(_CITIES)
}
"""city -> (city, country) a customer lived in before their update."""


# -- silver ----------------------------------------------------------------------------------


def _latest(table: ibis.Table, key: list[str], by: str) -> ibis.Table:
    """One row per key: the one with the greatest `by` (ties broken by every column)."""
    others = [ibis.desc(c) for c in table.columns if c not in key and c != by]
    w = ibis.window(group_by=[table[k] for k in key], order_by=[ibis.desc(table[by]), *others])
    ranked = table.mutate(_rn=ibis.row_number().over(w))
    return ranked.filter(ranked._rn == 0).drop("_rn")


def silver_customers(bronze: ibis.Table) -> ibis.Table:
    """Customers typed and conformed (trimmed names, lower-case emails), latest row per id."""
    rows = bronze.mutate(
        name=bronze.name.strip(), email=bronze.email.strip().lower(), city=bronze.city.strip()
    )
    return _latest(rows, CUSTOMER_KEY, "updated_at")


def silver_products(bronze: ibis.Table) -> ibis.Table:
    """Products with trimmed names, latest row per id."""
    return _latest(bronze.mutate(name=bronze.name.strip()), PRODUCT_KEY, "updated_at")


def silver_orders(bronze: ibis.Table) -> ibis.Table:
    """Orders, one row per order id, with the order date (UTC)."""
    orders = _latest(bronze, ["order_id"], "order_ts")
    return orders.mutate(order_date=orders.order_ts.date())


def silver_order_lines(bronze: ibis.Table) -> ibis.Table:
    """Order lines, one row per (order id, line number), with gross and net amounts."""
    lines = _latest(bronze, ["order_id", "line_no"], "quantity")
    gross = lines.quantity.cast("float64") * lines.unit_price
    return lines.mutate(gross_amount=gross, net_amount=gross - lines.discount)


# -- customer history ------------------------------------------------------------------------


def _before_move(customers: ibis.Table) -> dict[str, ibis.Value]:
    moved = customers.updated_at > customers.created_at
    city = customers.city.substitute({c: v[0] for c, v in MOVED_FROM.items()}, else_=customers.city)
    country = customers.city.substitute(
        {c: v[1] for c, v in MOVED_FROM.items()}, else_=customers.country
    )
    return {
        "city": moved.ifelse(city, customers.city),
        "country": moved.ifelse(country, customers.country),
    }


def customer_changes(customers: ibis.Table) -> ibis.Table:
    """The customers' change feed: a create at signup (in the city they moved from, if they
    moved) and an update when they moved; columns key, tracked, `op`, `changed_at`."""
    cols = CUSTOMER_KEY + CUSTOMER_TRACKED
    created = customers.mutate(
        **_before_move(customers), op=ibis.literal("c"), changed_at=customers.created_at
    )
    moved = customers.filter(customers.updated_at > customers.created_at)
    updated = moved.mutate(op=ibis.literal("u"), changed_at=moved.updated_at)
    return created.select(*cols, "op", "changed_at").union(
        updated.select(*cols, "op", "changed_at")
    )


def customer_snapshots(customers: ibis.Table, times: ibis.Table) -> ibis.Table:
    """The customers table as nightly exports at each `as_of` of `times` would have shown it:
    key, tracked columns and `as_of` (one snapshot per time, for `scd.scd2_from_snapshots`)."""
    at = times.as_of.cast(TS)
    rows = customers.cross_join(times.select(_at=at))
    rows = rows.filter(rows.created_at <= rows._at)
    earlier, later = _before_move(rows), rows.updated_at > rows._at
    return rows.select(
        *CUSTOMER_KEY,
        *[
            later.ifelse(earlier[c], rows[c]).name(c) if c in earlier else rows[c]
            for c in CUSTOMER_TRACKED
        ],
        as_of=rows._at,
    )


# -- dim_date --------------------------------------------------------------------------------


def calendar(
    con: ibis.BaseBackend, start: dt.date, end: dt.date, name: str = "calendar"
) -> ibis.Table:
    """A table on `con` with one row per day from `start` to `end` inclusive (column `date`)."""
    days = pa.array(
        [start + dt.timedelta(days=i) for i in range((end - start).days + 1)], pa.date32()
    )
    return con.create_table(name, pa.table({"date": days}), overwrite=True)


def dim_date(days: ibis.Table, fiscal_start: int = FISCAL_START) -> ibis.Table:
    """The date dimension over the `date` column of `days`: calendar and fiscal attributes.

    The fiscal year starts on the first of month `fiscal_start` and is named after the
    calendar year it ends in (with February: Feb 2026 to Jan 2027 is fiscal 2027).
    """
    if isinstance(fiscal_start, bool) or fiscal_start not in range(1, 13):
        raise WorkbenchError(
            f"fiscal_start={fiscal_start!r} is not a month.",
            "Allowed: an integer from 1 (January) to 12 (December).",
            "retail calendars start in February (2), many governments in October (10).",
        )
    d = days.date.cast("date")
    # Polars keeps month and day as 8-bit integers: widen before any arithmetic.
    year, month, day = d.year().cast("int64"), d.month().cast("int64"), d.day().cast("int64")
    fiscal_month = (month - fiscal_start + 12) % 12 + 1
    weekday = d.day_of_week.index().cast("int64") + 1
    return days.select(
        date_key=(year * 10000 + month * 100 + day).cast("int32"),
        date=d,
        day=day.cast("int16"),
        week=d.week_of_year().cast("int16"),
        month=month.cast("int16"),
        month_name=d.strftime("%B"),
        month_start=d.truncate("M"),
        quarter=((month - 1) // 3 + 1).cast("int16"),
        year=year.cast("int16"),
        weekday=weekday.cast("int16"),
        weekday_name=d.day_of_week.full_name(),
        is_weekend=weekday >= 6,
        fiscal_year=(year + ((month >= fiscal_start) & (fiscal_start > 1)).cast("int64")).cast(
            "int16"
        ),
        fiscal_quarter=((fiscal_month - 1) // 3 + 1).cast("int16"),
        fiscal_month=fiscal_month.cast("int16"),
    )


def date_key(ts: ibis.TimestampValue) -> ibis.IntegerValue:
    """The `dim_date` key (yyyymmdd) of a timestamp's UTC date: a readable, sortable key."""
    d = ts.date()
    return (
        d.year().cast("int64") * 10000 + d.month().cast("int64") * 100 + d.day().cast("int64")
    ).cast("int32")


# -- inferred members in the lake ------------------------------------------------------------


def merge_inferred(
    lake, name: str, facts: ibis.Table, key: list[str], *, sk: str = "sk", scd2: bool = True
) -> dict[str, int]:
    """Insert the inferred members `facts` need into dimension `name` (one MERGE)."""
    con = facts._find_backend(use_default=True)
    dim = lake.table(name, con)
    with unfused():
        rows = con.to_pyarrow(inferred_members(facts, key, dim=dim, sk=sk, scd2=scd2))
    if rows.num_rows == 0:
        return {"source_rows": 0, "inserted": 0, "updated": 0, "deleted": 0}
    return lake.merge(name, rows, on=sk, when_matched="ignore")


# -- the star ---------------------------------------------------------------------------------


def fact_sales(orders: ibis.Table, order_lines: ibis.Table, dim_customer: ibis.Table) -> ibis.Table:
    """Sales at order-line grain: the order id and line number (degenerate dimension), date,
    customer version at order time, product, status, and the line's measures."""
    lines = order_lines.join(
        orders.select("order_id", "customer_id", "order_ts", "status"), "order_id"
    )
    lines = point_in_time(lines, dim_customer, CUSTOMER_KEY, "order_ts", sk="customer_sk")
    return lines.select(
        "order_id",
        "line_no",
        date_key=date_key(lines.order_ts),
        customer_sk=lines.customer_sk,
        product_sk=hashing.hash_key(lines, PRODUCT_KEY),
        order_ts=lines.order_ts,
        status=lines.status,
        quantity=lines.quantity,
        unit_price=lines.unit_price,
        discount=lines.discount,
        gross_amount=lines.gross_amount,
        net_amount=lines.net_amount,
    )


# -- building the star in the lake ------------------------------------------------------------


def build_star(lake, con: ibis.BaseBackend, fiscal_start: int = FISCAL_START) -> dict[str, int]:
    """Silver from bronze, then the gold star, on `con`; returns the rows of each table.

    `dim_customer` comes from the customers' change feed (one MERGE), `dim_product` from an
    SCD1 upsert; facts whose customer or product is missing get inferred members first.
    """
    with unfused():  # see `dimension.unfused`
        silver = {
            "customers": silver_customers(lake.table("bronze.customers", con)),
            "products": silver_products(lake.table("bronze.products", con)),
            "orders": silver_orders(lake.table("bronze.orders", con)),
            "order_lines": silver_order_lines(lake.table("bronze.order_lines", con)),
        }
        for name, expr in silver.items():
            lake.write(f"silver.{name}", expr, mode="overwrite")
        t = {name: lake.table(f"silver.{name}", con) for name in silver}
        changes = customer_changes(t["customers"])
        scd.merge_changes(
            lake, "gold.dim_customer", changes, CUSTOMER_KEY, CUSTOMER_TRACKED, sk="customer_sk"
        )
        scd.merge_scd1(
            lake, "gold.dim_product", t["products"], PRODUCT_KEY, PRODUCT_TRACKED, sk="product_sk"
        )
        merge_inferred(lake, "gold.dim_customer", t["orders"], CUSTOMER_KEY, sk="customer_sk")
        merge_inferred(
            lake, "gold.dim_product", t["order_lines"], PRODUCT_KEY, sk="product_sk", scd2=False
        )
        span = (
            t["orders"]
            .agg(lo=t["orders"].order_date.min(), hi=t["orders"].order_date.max())
            .to_pyarrow()
        )
        days = calendar(con, span["lo"][0].as_py(), span["hi"][0].as_py())
        lake.write("gold.dim_date", dim_date(days, fiscal_start), mode="overwrite")
        dim_customer = lake.table("gold.dim_customer", con)
        lake.write(
            "gold.fact_sales",
            fact_sales(t["orders"], t["order_lines"], dim_customer),
            mode="overwrite",
        )
        return {n: lake.table(n, con).count().to_pyarrow().as_py() for n in STAR}


STAR = ("gold.dim_customer", "gold.dim_product", "gold.dim_date", "gold.fact_sales")
"""The star's tables in the lake."""
