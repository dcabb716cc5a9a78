"""Quality checks: injected defects counted independently (pyarrow), on every engine."""

from __future__ import annotations

import datetime as dt

import ibis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench import datasets
from workbench import errors as wb_errors
from workbench import quality as q
from workbench.checks import QualityError

N_DEFECTS = {"null_customer": 7, "dup_id": 5, "bad_status": 11, "bad_channel": 4,
             "future_ts": 3, "orphan": 9, "negative_id": 2}  # fmt: skip
STATUSES = ["placed", "shipped", "delivered", "cancelled", "returned"]
FUTURE = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)

# Each example runs queries on an engine: a twelfth of the profile's examples (8 by default,
# more under a deep profile).
EXAMPLES = max(5, settings.default.max_examples // 12)


def _defective_orders(seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """Bronze orders with a known number of defects per check, at random (overlapping) rows."""
    orders = datasets.table("orders", scale=0.001, seed=42)
    customers = datasets.table("customers", scale=0.001, seed=42).select(["customer_id"])
    rng = np.random.default_rng(seed)
    n = orders.num_rows
    cols = {c: orders[c].to_pylist() for c in orders.column_names}

    def rows(k):
        return rng.choice(n, size=k, replace=False)

    for i in rows(N_DEFECTS["null_customer"]):
        cols["customer_id"][i] = None
    for i, j in zip(rows(N_DEFECTS["dup_id"]), rows(N_DEFECTS["dup_id"]), strict=True):
        cols["order_id"][i] = cols["order_id"][j]  # may hit itself: counted from the data below
    for i in rows(N_DEFECTS["bad_status"]):
        cols["status"][i] = "lost"
    for i in rows(N_DEFECTS["bad_channel"]):
        cols["channel"][i] = "Web!"
    for i in rows(N_DEFECTS["future_ts"]):
        cols["order_ts"][i] = FUTURE
    for i in rows(N_DEFECTS["orphan"]):
        cols["customer_id"][i] = 10**9
    for k, i in enumerate(rows(N_DEFECTS["negative_id"])):
        cols["order_id"][i] = -(k + 1)
    return pa.table(cols, schema=orders.schema), customers


def _masks(data: pa.Table, customers: pa.Table) -> dict[str, np.ndarray]:
    """Which rows fail each check, computed with pyarrow, independently of the code under test."""
    ids = data["order_id"]
    counts = pc.value_counts(pc.drop_null(ids))
    dups = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    cust = data["customer_id"]
    lit = pa.scalar(FUTURE.replace(year=2026, month=11), pa.timestamp("us", tz="UTC"))

    def np_(a):
        return np.asarray(pc.fill_null(a, False).to_numpy(zero_copy_only=False), dtype=bool)

    return {
        "not_null_customer_id": np_(pc.is_null(cust)),
        "unique_order_id": np_(pc.is_in(ids, dups)),
        "accepted_values_status": np_(pc.invert(pc.is_in(data["status"], pa.array(STATUSES)))),
        "matches_channel": np_(pc.invert(pc.match_substring_regex(data["channel"], "^[a-z]+$"))),
        "in_range_order_ts": np_(pc.greater(data["order_ts"], lit)),
        "references_customer_id": np_(
            pc.and_(pc.is_valid(cust), pc.invert(pc.is_in(cust, customers["customer_id"])))
        ),
        "positive_id": np_(pc.less_equal(ids, 0)),
    }


SEVERITY = {"not_null_customer_id": "quarantine", "unique_order_id": "quarantine",
            "accepted_values_status": "drop", "matches_channel": "warn",
            "in_range_order_ts": "drop", "references_customer_id": "quarantine",
            "positive_id": "warn"}  # fmt: skip


def _suite(orders: ibis.Table, customers: ibis.Table) -> q.Suite:
    s = SEVERITY
    now = datasets.SIMULATED_NOW
    return q.Suite(
        orders,
        [
            q.not_null("customer_id", severity=s["not_null_customer_id"]),
            q.unique("order_id", severity=s["unique_order_id"]),
            q.accepted_values("status", STATUSES, severity=s["accepted_values_status"]),
            q.matches("channel", "^[a-z]+$", severity=s["matches_channel"]),
            q.in_range("order_ts", max=now, severity=s["in_range_order_ts"]),
            q.references("customer_id", customers, severity=s["references_customer_id"]),
            q.expect("positive_id", ibis._.order_id > 0, severity=s["positive_id"], tolerance=0.01),
            q.row_count(min=100, max=10_000, severity="fail"),
            q.freshness("order_ts", max_age=dt.timedelta(days=1), severity="warn"),
        ],
        name="silver.orders",
    )


@pytest.fixture
def defects(con):
    data, customers = _defective_orders()
    orders = con.create_table("orders_in", data, overwrite=True)
    dim = con.create_table("customers_dim", customers, overwrite=True)
    return data, _masks(data, customers), orders, dim


def test_injected_defects_give_exact_counts_on_every_engine(con, lake, defects):
    data, masks, orders, dim = defects
    for name, k in N_DEFECTS.items():  # the injection really planted defects
        assert k > 0, name
    assert masks["not_null_customer_id"].sum() == N_DEFECTS["null_customer"]
    assert masks["accepted_values_status"].sum() == N_DEFECTS["bad_status"]
    suite = _suite(orders, dim)
    report = q.run(lake, "silver.orders", orders, suite, run_id="acceptance")

    assert report.failing() == {name: int(m.sum()) for name, m in masks.items()}
    quarantine = np.logical_or.reduce([masks[c] for c, s in SEVERITY.items() if s == "quarantine"])
    drop = np.logical_or.reduce([masks[c] for c, s in SEVERITY.items() if s == "drop"])
    n = data.num_rows
    assert report.rows == n
    assert report.quarantined == quarantine.sum()
    assert report.dropped == (drop & ~quarantine).sum()
    assert report.written == n - (drop | quarantine).sum()
    assert lake.table("silver.orders", con).count().to_pyarrow().as_py() == report.written

    # The quarantine table: the rows themselves, every check each failed, and the run id.
    got = lake.table("silver.orders_quarantine", con).to_pyarrow()
    assert set(got["_run_id"].to_pylist()) == {"acceptance"}
    expected = []
    for i in np.flatnonzero(quarantine):
        failed = ", ".join(c for c in masks if masks[c][i])
        expected.append((data["order_id"][i].as_py(), data["customer_id"][i].as_py(), failed))
    rows = zip(got["order_id"].to_pylist(), got["customer_id"].to_pylist(),
               got["_failed_checks"].to_pylist(), strict=True)  # fmt: skip
    assert sorted(rows, key=str) == sorted(expected, key=str)

    # The results history: one row per check, with the counts and the verdicts.
    res = q.results(lake, con).to_pyarrow().to_pylist()
    by_check = {r["check"]: r for r in res}
    assert len(res) == len(suite.checks)
    for name, m in masks.items():
        r = by_check[name]
        assert (r["failing_rows"], r["total_rows"], r["severity"]) == (m.sum(), n, SEVERITY[name])
        assert r["passed"] is (name == "positive_id")  # 2 of 1000 rows is within 1%
    assert by_check["row_count"]["passed"] and by_check["row_count"]["failing_rows"] is None
    assert all(r["table_version"] == lake.version("silver.orders") for r in res)
    assert {r["rows_written"] for r in res} == {report.written}


def test_a_replayed_batch_changes_nothing(con, lake, defects):
    """A retried job runs the same batch again: with its transaction nothing is written twice;
    without one, the rows are appended again (the reason to pass it)."""
    _, _, orders, dim = defects
    suite = _suite(orders, dim)

    def counts():
        return [lake.table(t, con).count().to_pyarrow().as_py()
                for t in ("silver.orders", "silver.orders_quarantine", q.RESULTS)]  # fmt: skip

    first = q.run(lake, "silver.orders", orders, suite, transaction=("orders_job", 1))
    once = counts()
    replay = q.run(lake, "silver.orders", orders, suite, transaction=("orders_job", 1))
    assert counts() == once and replay.table_version == first.table_version
    assert once == [first.written, first.quarantined, len(suite.checks)]
    q.run(lake, "silver.orders", orders, suite, transaction=("orders_job", 2))
    assert counts() == [2 * n for n in once]


def test_freshness_uses_the_simulated_now_unless_given(con, defects):
    data, _, orders, dim = defects
    clean = orders.filter(orders.order_ts < datasets.SIMULATED_NOW)
    newest = pc.max(pc.filter(data["order_ts"], pc.less(data["order_ts"], pa.scalar(
        datasets.SIMULATED_NOW, pa.timestamp("us", tz="UTC"))))).as_py()  # fmt: skip
    report = q.audit(clean, _suite(orders, dim))
    fresh = report.results.set_index("check").loc["freshness_order_ts"]
    assert fresh.observed == (datasets.SIMULATED_NOW - newest).total_seconds()
    assert fresh.passed  # the newest order is an hour old, the limit a day
    later = datasets.SIMULATED_NOW + dt.timedelta(days=2)
    stale = q.audit(clean, _suite(orders, dim), now=later).results.set_index("check")
    assert not stale.loc["freshness_order_ts"].passed


def test_fail_stops_the_run_and_the_target_never_shows_unaudited_rows(con, lake, defects):
    data, masks, orders, dim = defects
    good = orders.filter(orders.order_id > 0)
    strict = q.Suite(orders, [q.unique("order_id", severity="fail")], name="silver.orders")
    q.run(lake, "silver.orders", good.filter(good.order_id < 0), strict, run_id="empty")
    before = lake.version("silver.orders")
    with pytest.raises(QualityError) as info:
        q.run(lake, "silver.orders", orders, strict, run_id="stopped")
    message = str(info.value)
    dup = data["order_id"][int(np.flatnonzero(masks["unique_order_id"])[0])].as_py()
    assert "unique_order_id" in message and "order_id" in message and "Hint:" in message
    assert f"{int(masks['unique_order_id'].sum()):,} of {data.num_rows:,}" in message
    assert str(dup) in message or any(
        str(data["order_id"][int(i)].as_py()) in message
        for i in np.flatnonzero(masks["unique_order_id"])
    )
    assert lake.version("silver.orders") == before
    assert lake.table("silver.orders", con).count().to_pyarrow().as_py() == 0
    assert lake.table("silver.orders_staging", con).count().to_pyarrow().as_py() == data.num_rows
    res = q.results(lake, con).filter(ibis._.run_id == "stopped").to_pyarrow().to_pylist()
    assert [(r["passed"], r["failing_rows"], r["table_version"]) for r in res] == [
        (False, int(masks["unique_order_id"].sum()), before)
    ]


def test_tolerance_passes_the_check_while_rows_follow_their_severity(con, lake, defects):
    data, masks, orders, dim = defects
    bad = int(masks["accepted_values_status"].sum())
    suite = q.Suite(orders, [
        q.accepted_values("status", STATUSES, severity="drop", tolerance=0.05),
        q.unique("order_id", severity="fail", tolerance=0.05),
    ])  # fmt: skip
    report = q.run(lake, "silver.orders", orders, suite, stage=False)
    assert report.results.passed.all() and report.passed
    assert report.dropped == bad
    # A fail check within its tolerance lets its rows through, recorded.
    assert report.written == data.num_rows - bad


def test_failures_return_the_failing_rows_like_an_audit(con, defects):
    data, masks, orders, dim = defects
    suite = _suite(orders, dim)
    got = suite.failures(orders, "references_customer_id").order_by("order_id").to_pyarrow()
    expected = data.filter(pa.array(masks["references_customer_id"])).sort_by("order_id")
    assert got.column_names == data.column_names
    assert got["order_id"].to_pylist() == expected["order_id"].to_pylist()
    with pytest.raises(QualityError, match="table-level"):
        suite.failures(orders, "row_count")


def test_flags_are_one_select_of_one_boolean_column_per_check(con, defects):
    data, masks, orders, dim = defects
    suite = _suite(orders, dim)
    flagged = suite.flags(orders)
    assert list(flagged.columns) == [*orders.columns, *(f"_fail_{c}" for c in masks)]
    assert list(orders.columns) == data.column_names  # the input is not changed
    summary = suite.summary(flagged).to_pyarrow().to_pylist()
    assert len(summary) == 1  # one aggregate over one flagged scan
    assert {c: summary[0][f"_fail_{c}"] for c in masks} == {c: m.sum() for c, m in masks.items()}


# -- declaration errors ----------------------------------------------------------------


def test_missing_column_fails_when_declared_with_the_closest_names(con, defects):
    _, _, orders, _ = defects
    with pytest.raises(QualityError) as info:
        q.Suite(orders, [q.not_null("custmer_id")])
    assert "custmer_id" in str(info.value) and "Hint: did you mean 'customer_id'" in str(info.value)
    with pytest.raises(QualityError, match="'order_ts'"):
        q.Suite(orders, [q.expect("recent", ibis._.order_tz > datasets.SIMULATED_NOW)])
    with pytest.raises(QualityError, match="'status'"):
        q.Suite(orders, [q.expect("ok", lambda t: t.stauts == "placed")])


def test_bad_declarations_list_what_is_allowed():
    with pytest.raises(QualityError, match="warn, drop, quarantine, fail") as info:
        q.not_null("a", severity="quarantaine")
    assert "did you mean 'quarantine'" in str(info.value)
    with pytest.raises(QualityError, match="Valid severities: warn, fail"):
        q.row_count(min=1, severity="drop")
    with pytest.raises(QualityError, match="tolerance"):
        q.unique("a", tolerance=5)
    with pytest.raises(QualityError, match="lookaround"):
        q.matches("a", "^(?!x)")
    schema = ibis.schema({"a": "int64", "s": "string"})
    with pytest.raises(QualityError, match="Two checks"):
        q.Suite(schema, [q.not_null("a"), q.not_null("a")])
    with pytest.raises(QualityError, match="string column"):
        q.Suite(schema, [q.matches("a", "x")])
    with pytest.raises(QualityError, match="not boolean"):
        q.Suite(schema, [q.expect("sum", ibis._.a + 1)])


def test_unique_on_several_columns_and_nulls(con):
    data = pa.table({"a": [1, 1, 1, 2, None, None], "b": ["x", "x", "y", "x", "z", "z"]})
    t = con.create_table("pairs", data, overwrite=True)
    suite = q.Suite(t, [q.unique(["a", "b"]), q.not_null("a", "b")])
    assert q.audit(t, suite).failing() == {"unique_a_b": 2, "not_null_a_b": 2}


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 6)),
            st.one_of(st.none(), st.sampled_from(["a", "b", "c", "x"])),
            st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)),
        ),
        min_size=0,
        max_size=30,
    )
)
def test_counts_match_pyarrow_on_any_data(backend, rows):
    from workbench import backends

    con = backends.connect(backend)
    data = pa.table(
        {
            "k": pa.array([r[0] for r in rows], pa.int64()),
            "s": pa.array([r[1] for r in rows], pa.string()),
            "v": pa.array([r[2] for r in rows], pa.float64()),
        }
    )
    t = con.create_table("anydata", data, overwrite=True)
    suite = q.Suite(t, [
        q.not_null("k"), q.unique("k"), q.accepted_values("s", ["a", "b"]),
        q.in_range("v", min=-1, max=2), q.expect("k_small", ibis._.k < 5),
    ])  # fmt: skip
    counts = pc.value_counts(pc.drop_null(data["k"])).to_pylist()
    dup = {c["values"] for c in counts if c["counts"] > 1}
    expected = {
        "not_null_k": data["k"].null_count,
        "unique_k": sum(1 for r in rows if r[0] in dup),
        "accepted_values_s": sum(1 for r in rows if r[1] is not None and r[1] not in "ab"),
        "in_range_v": sum(1 for r in rows if r[2] is not None and not -1 <= r[2] <= 2),
        "k_small": sum(1 for r in rows if r[0] is not None and r[0] >= 5),
    }
    report = q.audit(t, suite)
    assert report.failing() == expected and report.rows == len(rows)


def test_bad_run_arguments_fail_before_any_write(con, lake, defects):
    _, _, orders, dim = defects
    suite = _suite(orders, dim)
    with pytest.raises(QualityError, match="'append', 'overwrite'"):
        q.run(lake, "silver.orders", orders, suite, mode="upsert")
    with pytest.raises(wb_errors.InvalidTableNameError):
        q.run(lake, "orders", orders, suite)
    with pytest.raises(QualityError, match=r"names column 'status'[\s\S]*did you mean 'stat'"):
        q.run(lake, "silver.orders", orders.rename(stat="status"), suite)
    assert lake.tables() == []
