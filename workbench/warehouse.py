"""One business question, "revenue by customer country and product category per month",
answered from four warehouse shapes built on the same data: the star, a snowflaked product
dimension, a one-big-table, and a small data vault (hubs, links and satellites with hash keys
and load dates, queried back into the star's shape). The answers must agree.
"""

from __future__ import annotations

import ibis

from workbench import keys as hashing
from workbench.dimension import EARLIEST, TS
from workbench.modeling import CUSTOMER_KEY, CUSTOMER_TRACKED, PRODUCT_KEY, PRODUCT_TRACKED


def _revenue(rows: ibis.Table) -> ibis.Table:
    """Revenue (net of discounts, cancelled orders left out) by month, country and category."""
    rows = rows.filter(rows.status != "cancelled")
    by = rows.group_by(["month", "country", "category"])
    return by.agg(revenue=rows.net_amount.sum().round(2), lines=rows.count())


def revenue_star(fact, dim_customer, dim_product, dim_date) -> ibis.Table:
    """The business question from the star: the fact joined to three dimensions."""
    c = dim_customer.select("customer_sk", "country")
    p = dim_product.select("product_sk", "category")
    d = dim_date.select("date_key", month="month_start")
    rows = fact.join(c, "customer_sk").join(p, "product_sk").join(d, "date_key")
    return _revenue(rows)


def snowflake_product(dim_product: ibis.Table) -> dict[str, ibis.Table]:
    """`dim_product` normalized: product -> subcategory -> category, each with a hash key."""
    category = dim_product.select("category").distinct()
    category = category.mutate(category_sk=hashing.hash_key(category, ["category"]))
    sub = dim_product.select("category", "subcategory").distinct()
    sub = sub.mutate(subcategory_sk=hashing.hash_key(sub, ["category", "subcategory"]))
    sub = sub.mutate(category_sk=hashing.hash_key(sub, ["category"])).drop("category")
    product = dim_product.mutate(
        subcategory_sk=hashing.hash_key(dim_product, ["category", "subcategory"])
    )
    product = product.drop("category", "subcategory")
    return {"dim_product_sf": product, "dim_subcategory": sub, "dim_category": category}


def revenue_snowflake(fact, dim_customer, snowflake: dict[str, ibis.Table], dim_date) -> ibis.Table:
    """The business question from the snowflake: two more joins to reach the category."""
    c = dim_customer.select("customer_sk", "country")
    p = snowflake["dim_product_sf"].select("product_sk", "subcategory_sk")
    s = snowflake["dim_subcategory"].select("subcategory_sk", "category_sk")
    g = snowflake["dim_category"].select("category_sk", "category")
    d = dim_date.select("date_key", month="month_start")
    rows = fact.join(c, "customer_sk").join(p, "product_sk").join(s, "subcategory_sk")
    return _revenue(rows.join(g, "category_sk").join(d, "date_key"))


def one_big_table(fact, dim_customer, dim_product, dim_date) -> ibis.Table:
    """The star pre-joined into one wide table: every question without a join, at the cost
    of repeating each dimension's attributes on every line (and rewriting them on change)."""
    c = dim_customer.select(
        "customer_sk",
        "customer_id",
        customer_name="name",
        city="city",
        country="country",
        segment="segment",
    )
    p = dim_product.select(
        "product_sk",
        "product_id",
        product_name="name",
        category="category",
        subcategory="subcategory",
        brand="brand",
    )
    d = dim_date.select(
        "date_key",
        "date",
        month="month_start",
        fiscal_year="fiscal_year",
        fiscal_month="fiscal_month",
    )
    return fact.join(c, "customer_sk").join(p, "product_sk").join(d, "date_key")


def revenue_obt(obt: ibis.Table) -> ibis.Table:
    """The business question from the one-big-table: a group-by, no join."""
    return _revenue(obt)


# -- data vault ------------------------------------------------------------------------------


def vault(customer_changes, products, orders, order_lines) -> dict[str, ibis.Table]:
    """A small data vault: hubs of business keys, links between them, satellites of history.

    Every hub and link key is the md5 of its business keys; every satellite row carries a
    `hash_diff` of its attributes and its `load_date` (here the source's change time, so the
    history lines up with the star's; a production vault also records when it loaded it).
    """
    c, p, o, li = customer_changes, products, orders, order_lines
    src = {"record_source": ibis.literal("bronze.customers")}
    hub_customer = c.group_by(CUSTOMER_KEY).agg(load_date=c.changed_at.min())
    hub_customer = _keyed(hub_customer, "customer_hk", CUSTOMER_KEY).mutate(**src)
    sat_customer = _keyed(c, "customer_hk", CUSTOMER_KEY).select(
        "customer_hk", *CUSTOMER_TRACKED, load_date=c.changed_at, **src
    )
    sat_customer = _keyed(sat_customer, "hash_diff", CUSTOMER_TRACKED)
    src = {"record_source": ibis.literal("bronze.products")}
    hub_product = _keyed(p, "product_hk", PRODUCT_KEY).select(
        "product_hk", *PRODUCT_KEY, load_date=p.updated_at, **src
    )
    sat_product = _keyed(p, "product_hk", PRODUCT_KEY).select(
        "product_hk", *PRODUCT_TRACKED, load_date=p.updated_at, **src
    )
    sat_product = _keyed(sat_product, "hash_diff", PRODUCT_TRACKED)
    src = {"record_source": ibis.literal("bronze.orders")}
    hub_order = _keyed(o, "order_hk", ["order_id"]).select(
        "order_hk", "order_id", load_date=o.order_ts, **src
    )
    link_order_customer = _keyed(o, "order_customer_hk", ["order_id", "customer_id"])
    link_order_customer = _keyed(link_order_customer, "order_hk", ["order_id"])
    link_order_customer = _keyed(link_order_customer, "customer_hk", CUSTOMER_KEY).select(
        "order_customer_hk", "order_hk", "customer_hk", load_date=o.order_ts, **src
    )
    sat_order = _keyed(o, "order_hk", ["order_id"]).select(
        "order_hk", "order_ts", "status", "channel", load_date=o.order_ts, **src
    )
    # An order line is a link with a dependent child key (the line number).
    lines = li.join(o.select("order_id", "order_ts"), "order_id")
    lines = _keyed(lines, "order_line_hk", ["order_id", "line_no", "product_id"])
    lines = _keyed(_keyed(lines, "order_hk", ["order_id"]), "product_hk", PRODUCT_KEY)
    src = {"record_source": ibis.literal("bronze.order_lines")}
    link_order_line = lines.select(
        "order_line_hk", "order_hk", "product_hk", "line_no", load_date=lines.order_ts, **src
    )
    sat_order_line = lines.select(
        "order_line_hk", "quantity", "unit_price", "discount", load_date=lines.order_ts, **src
    )
    return {
        "hub_customer": hub_customer,
        "hub_product": hub_product,
        "hub_order": hub_order,
        "link_order_customer": link_order_customer,
        "link_order_line": link_order_line,
        "sat_customer": sat_customer,
        "sat_product": sat_product,
        "sat_order": sat_order,
        "sat_order_line": sat_order_line,
    }


def revenue_vault(v: dict[str, ibis.Table]) -> ibis.Table:
    """The business question from the vault: rebuild the star's shape on the fly (lines with
    their order, the customer's satellite row valid at order time, the product's latest)."""
    lines = v["link_order_line"].select("order_line_hk", "order_hk", "product_hk")
    line_sat = v["sat_order_line"].select("order_line_hk", "quantity", "unit_price", "discount")
    orders = v["sat_order"].select("order_hk", "order_ts", "status")
    owner = v["link_order_customer"].select("order_hk", "customer_hk")
    rows = lines.join(line_sat, "order_line_hk").join(orders, "order_hk").join(owner, "order_hk")
    sat = v["sat_customer"]
    w = ibis.window(group_by=sat.customer_hk, order_by=sat.load_date)
    spans = sat.select(
        _hk=sat.customer_hk,
        country=sat.country,
        _since=sat.load_date.lag()
        .over(w)
        .isnull()
        .ifelse(ibis.literal(EARLIEST, TS), sat.load_date),
        _until=sat.load_date.lead().over(w),
    )
    rows = rows.join(spans, rows.customer_hk == spans._hk)
    when = rows.order_ts.cast(TS)
    rows = rows.filter(rows._since <= when, rows._until.isnull() | (when < rows._until))
    prod = v["sat_product"]
    latest = prod.group_by("product_hk").agg(load_date=prod.load_date.max())
    category = prod.join(latest, ["product_hk", "load_date"]).select("product_hk", "category")
    rows = rows.join(category, "product_hk")
    net = rows.quantity.cast("float64") * rows.unit_price - rows.discount
    return _revenue(rows.mutate(net_amount=net, month=rows.order_ts.date().truncate("M")))


def _keyed(table: ibis.Table, name: str, columns: list[str]) -> ibis.Table:
    return table.mutate(**{name: hashing.hash_key(table, columns)})
