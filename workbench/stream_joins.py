"""Stream joins: enrich events with a dimension table, and join orders to their payments within
a time bound, with Spark Structured Streaming's state and watermark rules.

The interval join keeps both sides' rows as state and follows what a real Spark 4.0 run shows
(tests/data/streaming/README.md): a row is late when its own event time is `<= late_mark`; an
order leaves the state once `order_time <= mark - bound - 1 ms` (no future payment can match
it: Spark's state watermark for a non-strict bound) and, in a left outer join, is emitted with
nulls then if it never matched; a payment leaves once `payment_time <= mark - 1 ms`.
"""

from __future__ import annotations

from typing import Literal

import ibis

from workbench import stream_time as tm
from workbench.errors import WorkbenchError
from workbench.stream_windows import Marks, Step, at, late_rows

_MS = 1_000  # Spark's watermarks are whole milliseconds; its state watermark is one below


def enrich(
    events: ibis.Table, customers: ibis.Table, columns=("name", "city", "country", "segment")
):
    """Events with their customer's attributes (a stream-to-table join on `key`).

    With a type-2 dimension (`valid_from`, `valid_to`), each event gets the version that was
    valid at its event time; events without a customer keep null attributes (a left join).
    Equi-joins only, so that it runs on every engine.
    """
    dim = customers.select("customer_id", *columns, *_validity(customers))
    if "valid_from" not in dim.columns:
        joined = events.left_join(dim, events.key == dim.customer_id)
        return joined.select(*events.columns, *columns)
    # Pick the version valid at each event's time, then attach it by the event's position.
    pairs = events.select("partition", "offset", "key", "event_time").join(
        dim, events.key == dim.customer_id
    )
    valid = pairs.filter(
        (pairs.valid_from <= pairs.event_time)
        & (pairs.valid_to.isnull() | (pairs.event_time < pairs.valid_to))
    ).select("partition", "offset", *columns)
    joined = events.left_join(valid, ["partition", "offset"])
    return joined.select(*events.columns, *columns)


def _validity(table: ibis.Table) -> list[str]:
    return ["valid_from", "valid_to"] if {"valid_from", "valid_to"} <= set(table.columns) else []


ORDER_COLUMNS = ("order_id", "key", "order_time", "order_value")
PAYMENT_COLUMNS = ("payment_id", "ref", "payment_time", "payment_value")


def interval_join_step(
    state: dict[str, ibis.Table | None],
    rows: ibis.Table,
    bound: int,
    marks: Marks,
    how: Literal["inner", "left"] = "inner",
) -> Step:
    """Orders (kind 'order') joined to payments (kind 'payment', `ref` = the order's id) paid
    within `[order_time, order_time + bound]`, for one micro-batch."""
    if how not in ("inner", "left"):
        raise WorkbenchError(
            f"Unknown join type {how!r}.",
            "Allowed: 'inner' (matches only) or 'left' (every order, unmatched ones with null "
            "payment columns once the watermark passes order_time + bound).",
            "Spark also has right and full outer joins; they follow the same rules mirrored.",
        )
    is_late = rows.event_time <= at(marks.late)
    sides = rows.kind.isin(["order", "payment"])
    late = late_rows(rows.filter(sides & is_late), "join", marks.late)
    fresh = rows.filter(sides & ~is_late)
    orders = fresh.filter(fresh.kind == "order").select(
        order_id=fresh.event_id, key=fresh.key, order_time=fresh.event_time,
        order_value=fresh.value, matched=ibis.literal(False),
    )  # fmt: skip
    payments = fresh.filter(fresh.kind == "payment").select(
        payment_id=fresh.event_id, ref=fresh.ref, payment_time=fresh.event_time,
        payment_value=fresh.value,
    )  # fmt: skip
    old_orders, old_payments = state.get("orders"), state.get("payments")
    all_orders = _union(old_orders, orders)
    all_payments = _union(old_payments, payments)
    # New payments meet every order; new orders meet the payments already waiting.
    matches = _match(all_orders, payments, bound)
    if old_payments is not None:
        matches = ibis.union(matches, _match(orders, old_payments, bound), distinct=False)
    matched = matches.select("order_id").distinct().mutate(now=ibis.literal(True))
    flagged = all_orders.left_join(matched, "order_id").select(
        *ORDER_COLUMNS, matched=all_orders.matched | matched.now.fill_null(False)
    )
    order_gone = flagged.order_time <= at(marks.evict, -bound - _MS)
    out = matches
    if how == "left":
        unmatched = flagged.filter(order_gone & ~flagged.matched)
        padded = unmatched.select(
            *ORDER_COLUMNS,
            payment_id=ibis.null("int64"),
            payment_time=ibis.null("timestamp('UTC', 6)"),
            payment_value=ibis.null("float64"),
        )
        out = ibis.union(matches, padded.cast(matches.schema()), distinct=False)
    payment_gone = all_payments.payment_time <= at(marks.evict, -_MS)
    new_state = {
        "orders": flagged.filter(~order_gone),
        "payments": all_payments.filter(~payment_gone),
    }
    return Step(out=out, state=new_state, late=late, shared=matches)


def _union(old: ibis.Table | None, new: ibis.Table) -> ibis.Table:
    if old is None:
        return new
    return ibis.union(old.select(*new.columns).cast(new.schema()), new, distinct=False)


def _match(orders: ibis.Table, payments: ibis.Table, bound: int) -> ibis.Table:
    # An equi-join, then the time bound as a filter: Ibis's polars backend joins on equality only.
    joined = orders.join(payments, orders.order_id == payments.ref)
    paid, ordered = tm.micros(joined.payment_time), tm.micros(joined.order_time)
    within = joined.filter((paid >= ordered) & (paid <= ordered + bound))
    return within.select(
        *ORDER_COLUMNS,
        payment_id=within.payment_id,
        payment_time=within.payment_time.cast("timestamp('UTC', 6)"),
        payment_value=within.payment_value,
    )
