"""SCD2 and SCD1 against golden answers derived by hand, on every engine.

The history (customers 1, 2, 3; times T1..T5, the first of each month of 2026):
  S1 @T1  1 Ann London, 2 Bob Paris, 3 Cy Rome     (first load)
  S2 @T2  1 moves to Berlin                          (update)
  S3 @T3  2 is missing                               (delete)
  S4 @T4  2 is back, Bob Paris as before             (re-insert)
  S5 @T5  the same as S4                             (no-op)
The same history as a change feed: c 1/2/3 @T1, u 1 @T2, d 2 @T3, c 2 @T4, u 3 (unchanged) @T5.
Expected rows are written out below per delete policy; surrogate keys and row hashes are
recomputed here with hashlib from the documented canonical text, not by the code under test.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import ibis
import pyarrow as pa
import pytest

from workbench import scd
from workbench.dimension import inferred_members, point_in_time, unfused
from workbench.errors import WorkbenchError

UTC = dt.UTC
T = {i: dt.datetime(2026, i, 1, tzinfo=UTC) for i in range(1, 6)}
EARLY = dt.datetime(1900, 1, 1, tzinfo=UTC)
KEY, TRACKED = ["customer_id"], ["name", "city"]
PEOPLE = {1: ("Ann", "London"), 2: ("Bob", "Paris"), 3: ("Cy", "Rome")}
SNAPSHOTS = {
    1: PEOPLE,
    2: {**PEOPLE, 1: ("Ann", "Berlin")},
    3: {1: ("Ann", "Berlin"), 3: ("Cy", "Rome")},
    4: {**PEOPLE, 1: ("Ann", "Berlin")},
    5: {**PEOPLE, 1: ("Ann", "Berlin")},
}
CHANGES = [
    (1, "Ann", "London", "c", T[1]),
    (2, "Bob", "Paris", "c", T[1]),
    (3, "Cy", "Rome", "c", T[1]),
    (1, "Ann", "Berlin", "u", T[2]),
    (2, None, None, "d", T[3]),
    (2, "Bob", "Paris", "c", T[4]),
    (3, "Cy", "Rome", "u", T[5]),
]

# (customer_id, name, city, valid_from, valid_to, is_current, is_deleted)
COMMON = [
    (1, "Ann", "London", T[1], T[2], False, False),
    (1, "Ann", "Berlin", T[2], None, True, False),
    (3, "Cy", "Rome", T[1], None, True, False),
]
GOLDEN = {
    "invalidate": COMMON
    + [
        (2, "Bob", "Paris", T[1], T[3], False, False),
        (2, "Bob", "Paris", T[4], None, True, False),
    ],
    "new_record": COMMON
    + [
        (2, "Bob", "Paris", T[1], T[3], False, False),
        (2, None, None, T[3], T[4], False, True),
        (2, "Bob", "Paris", T[4], None, True, False),
    ],
    "ignore": COMMON + [(2, "Bob", "Paris", T[1], None, True, False)],
}


@pytest.fixture(autouse=True)
def compiled_as_the_loads_compile():
    """Compile the pure functions' SQL as `scd.merge_*` do (see `dimension.unfused`)."""
    with unfused():
        yield


def md5(*parts: str) -> str:
    return hashlib.md5("|".join(parts).encode()).hexdigest()


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")


def full(row: tuple, inferred: bool = False) -> dict:
    """A golden row with the columns the code computes: sk, row_hash, is_inferred."""
    cid, name, city, start, end, current, deleted = row
    return {
        "sk": md5(str(cid), stamp(start)),
        "customer_id": cid,
        "name": name,
        "city": city,
        "row_hash": None if deleted or inferred else md5(name, city),
        "valid_from": start,
        "valid_to": end,
        "is_current": current,
        "is_deleted": deleted,
        "is_inferred": inferred,
    }


def rows_of(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: (r["customer_id"], r["valid_from"]))


def golden(policy: str) -> list[dict]:
    return sorted(
        (full(r) for r in GOLDEN[policy]), key=lambda r: (r["customer_id"], r["valid_from"])
    )


def snapshot_table(con, *numbers: int) -> ibis.Table:
    """Snapshots `numbers` on `con`, each row tagged with its `as_of`."""
    rows = [
        {"customer_id": cid, "name": n, "city": c, "as_of": T[i]}
        for i in numbers
        for cid, (n, c) in SNAPSHOTS[i].items()
    ]
    schema = pa.schema(
        {
            "customer_id": pa.int64(),
            "name": pa.string(),
            "city": pa.string(),
            "as_of": pa.timestamp("us", tz="UTC"),
        }
    )
    name = "snap_" + "_".join(map(str, numbers))
    return con.create_table(name, pa.Table.from_pylist(rows, schema), overwrite=True)


def change_table(con, changes: list[tuple], name: str = "changes", lsn: bool = False) -> ibis.Table:
    schema = {
        "customer_id": pa.int64(),
        "name": pa.string(),
        "city": pa.string(),
        "op": pa.string(),
    }
    schema["changed_at"] = pa.timestamp("us", tz="UTC")
    if lsn:
        schema["lsn"] = pa.int64()
    rows = [dict(zip(schema, c, strict=True)) for c in changes]
    return con.create_table(name, pa.Table.from_pylist(rows, pa.schema(schema)), overwrite=True)


def applied(
    con, dim: pa.Table | None, rows: pa.Table, name: str = "dim"
) -> tuple[pa.Table, ibis.Table]:
    """The dimension after a MERGE of `rows`, computed in pyarrow (independent of `scd.apply`)."""
    keep = set(rows["sk"].to_pylist())
    old = [] if dim is None else [r for r in dim.to_pylist() if r["sk"] not in keep]
    new = [
        {k: v for k, v in r.items() if k != "_remove"} for r in rows.to_pylist() if not r["_remove"]
    ]
    schema = rows.schema.remove(rows.schema.get_field_index("_remove"))
    table = pa.Table.from_pylist(old + new, schema)
    return table, con.create_table(name, table, overwrite=True)


DIM_SCHEMA = pa.schema(
    {
        "sk": pa.string(),
        "customer_id": pa.int64(),
        "name": pa.string(),
        "city": pa.string(),
        "row_hash": pa.string(),
        "valid_from": pa.timestamp("us", tz="UTC"),
        "valid_to": pa.timestamp("us", tz="UTC"),
        "is_current": pa.bool_(),
        "is_deleted": pa.bool_(),
        "is_inferred": pa.bool_(),
    }
)


def dim_table(con, rows: list[dict]) -> tuple[pa.Table, ibis.Table]:
    """A dimension written out by hand, on `con`."""
    table = pa.Table.from_pylist(rows, DIM_SCHEMA)
    return table, con.create_table("dim", table, overwrite=True)


# -- goldens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["invalidate", "new_record", "ignore"])
def test_four_snapshots_in_one_batch_match_the_golden_rows(con, policy):
    rows = scd.scd2_from_snapshots(snapshot_table(con, 1, 2, 3, 4, 5), KEY, TRACKED, deletes=policy)
    result = con.to_pyarrow(rows)
    assert not any(result["_remove"].to_pylist())
    assert rows_of(applied(con, None, result)[0]) == golden(policy)


@pytest.mark.parametrize("policy", ["invalidate", "new_record", "ignore"])
def test_the_same_history_as_a_change_feed_matches_the_golden_rows(con, policy):
    rows = scd.scd2_from_changes(change_table(con, CHANGES), KEY, TRACKED, deletes=policy)
    assert rows_of(applied(con, None, con.to_pyarrow(rows))[0]) == golden(policy)


def test_snapshots_one_merge_each_into_delta_then_a_replay_changes_nothing(con, lake):
    name, policy = "gold.dim_people", "new_record"
    scd.merge_snapshots(lake, name, snapshot_table(con, 1, 2), KEY, TRACKED, deletes=policy)
    for i in (3, 4):
        tagged = snapshot_table(con, i).drop("as_of")
        scd.merge_snapshot(lake, name, tagged, T[i], KEY, TRACKED, deletes=policy)
    assert lake.version(name) == 2  # S1 and S2 created the table; S3 and S4 merged
    assert rows_of(lake.table(name, con).to_pyarrow()) == golden(policy)  # S5 is S4 again
    again = snapshot_table(con, 4).drop("as_of")
    metrics = scd.merge_snapshot(lake, name, again, T[4], KEY, TRACKED, deletes=policy)
    assert metrics["inserted"] == metrics["updated"] == metrics["deleted"] == 0
    assert lake.version(name) == 2


def test_a_late_change_splits_history_and_makes_a_later_version_redundant(con):
    first = [(1, "Ann", "London", "c", T[1]), (1, "Ann", "Berlin", "u", T[3])]
    dim, dim_t = applied(
        con, None, con.to_pyarrow(scd.scd2_from_changes(change_table(con, first), KEY, TRACKED))
    )
    # Late: she had already moved to Berlin at T2; T3 is delivered again.
    late = [(1, "Ann", "Berlin", "u", T[2]), (1, "Ann", "Berlin", "u", T[3])]
    rows = con.to_pyarrow(
        scd.scd2_from_changes(change_table(con, late, "late"), KEY, TRACKED, dim=dim_t)
    )
    actions = sorted((r["valid_from"], r["valid_to"], r["_remove"]) for r in rows.to_pylist())
    assert actions == [(T[1], T[2], False), (T[2], None, False), (T[3], None, True)]
    expected = [
        full((1, "Ann", "London", T[1], T[2], False, False)),
        full((1, "Ann", "Berlin", T[2], None, True, False)),
    ]
    assert rows_of(applied(con, dim, rows)[0]) == expected


def test_changes_at_one_time_keep_the_last_by_order_column(con):
    same_time = [(1, "Ann", "Oslo", "c", T[1], 7), (1, "Ann", "Lima", "u", T[1], 9)]
    rows = scd.scd2_from_changes(
        change_table(con, same_time, lsn=True), KEY, TRACKED, order_col="lsn"
    )
    assert [(r["city"], r["valid_to"]) for r in con.to_pyarrow(rows).to_pylist()] == [
        ("Lima", None)
    ]


def test_an_inferred_member_is_completed_in_place_by_the_real_row(con):
    dim, dim_t = applied(
        con,
        None,
        con.to_pyarrow(scd.scd2_from_changes(change_table(con, CHANGES[:1]), KEY, TRACKED)),
    )
    facts = con.create_table("facts", pa.table({"customer_id": [1, 7, 7, None]}), overwrite=True)
    member = con.to_pyarrow(inferred_members(facts, KEY, dim=dim_t))
    placeholder = full((7, None, None, EARLY, None, True, False), inferred=True)
    assert member.to_pylist() == [placeholder]
    dim, dim_t = applied(con, dim, member.append_column("_remove", pa.array([False])))
    arrived = [(7, "Zoe", "Oslo", "c", T[2]), (7, "Zoe", "Rome", "u", T[3])]
    rows = con.to_pyarrow(
        scd.scd2_from_changes(change_table(con, arrived, "arrived"), KEY, TRACKED, dim=dim_t)
    )
    result = [r for r in rows_of(applied(con, dim, rows)[0]) if r["customer_id"] == 7]
    # The placeholder keeps its key and time (facts point to it) and takes the first values.
    assert result == [
        full((7, "Zoe", "Oslo", EARLY, T[3], False, False)),
        full((7, "Zoe", "Rome", T[3], None, True, False)),
    ]
    assert result[0]["sk"] == placeholder["sk"]


def test_point_in_time_join_picks_the_version_valid_at_the_fact_time(con):
    _, dim_t = applied(
        con, None, con.to_pyarrow(scd.scd2_from_changes(change_table(con, CHANGES), KEY, TRACKED))
    )
    at = [
        (1, dt.datetime(2025, 12, 31, tzinfo=UTC)),  # before the first version: the first one
        (1, T[2] - dt.timedelta(microseconds=1)),  # London's last moment
        (1, T[2]),  # Berlin from its first moment
        (2, dt.datetime(2026, 3, 15, tzinfo=UTC)),  # deleted then: the last version before
        (2, T[5]),
        (9, T[5]),  # not in the dimension
    ]
    facts = pa.table(
        {
            "customer_id": [a for a, _ in at],
            "at": pa.array([b for _, b in at], pa.timestamp("us", tz="UTC")),
        }
    )
    joined = point_in_time(con.create_table("facts", facts, overwrite=True), dim_t, KEY, "at")
    got = sorted((r["customer_id"], r["at"], r["sk"]) for r in con.to_pyarrow(joined).to_pylist())
    sk = {
        (cid, when): md5(str(cid), stamp(when))
        for cid, when in [(1, T[1]), (1, T[2]), (2, T[1]), (2, T[4])]
    }
    assert got == [
        (1, at[0][1], sk[1, T[1]]),
        (1, at[1][1], sk[1, T[1]]),
        (1, at[2][1], sk[1, T[2]]),
        (2, at[3][1], sk[2, T[1]]),
        (2, at[4][1], sk[2, T[4]]),
        (9, at[5][1], None),
    ]


# -- bad input ---------------------------------------------------------------------------------


def test_missing_key_or_tracked_columns_are_named(con):
    snap = snapshot_table(con, 1)
    with pytest.raises(WorkbenchError, match="'customer_no'"):
        scd.scd2_from_snapshots(snap, ["customer_no"], TRACKED)
    with pytest.raises(WorkbenchError, match="'email'.*\n.*customer_id, name, city"):
        scd.scd2_from_changes(change_table(con, CHANGES), KEY, ["name", "email"])
    with pytest.raises(WorkbenchError, match="Allowed: 'ignore', 'invalidate', 'new_record'"):
        scd.scd2_from_snapshots(snap, KEY, TRACKED, deletes="soft")


def test_duplicate_keys_raise_naming_them_or_go_to_quarantine(con, lake):
    name = "gold.dim_people"
    scd.merge_snapshot(lake, name, snapshot_table(con, 1).drop("as_of"), T[1], KEY, TRACKED)
    rows = [(1, "Ann", "Berlin"), (2, "Bob", "Paris"), (2, "Bob", "Porto"), (2, "Bob", "Paris")]
    bad = con.create_table(
        "bad",
        pa.table(
            dict(zip(["customer_id", *TRACKED], map(list, zip(*rows, strict=True)), strict=True))
        ),
        overwrite=True,
    )
    with pytest.raises(WorkbenchError, match=r"customer_id=2 \(duplicate key\)") as info:
        scd.merge_snapshot(lake, name, bad, T[2], KEY, TRACKED)
    assert "customer_id=1" not in str(info.value) and "on_bad='quarantine'" in str(info.value)
    assert lake.version(name) == 0  # nothing was written
    scd.merge_snapshot(lake, name, bad, T[2], KEY, TRACKED, on_bad="quarantine")
    quarantined = lake.table(f"{name}_quarantine", con).to_pyarrow().to_pylist()
    assert sorted(
        (r["customer_id"], r["city"], r["reason"], r["snapshot_as_of"]) for r in quarantined
    ) == [
        (2, "Paris", "duplicate key", T[2]),  # an exact duplicate is a duplicate key too
        (2, "Paris", "duplicate key", T[2]),
        (2, "Porto", "duplicate key", T[2]),
    ]
    current = lake.table(name, con).filter(lambda t: t.is_current).to_pyarrow().to_pylist()
    # 1 moved; 2 was quarantined, so neither changed nor deleted; 3 is missing, so deleted.
    assert sorted((r["customer_id"], r["city"], r["valid_from"]) for r in current) == [
        (1, "Berlin", T[2]),
        (2, "Paris", T[1]),
    ]


def test_bad_changes_are_named(con, lake):
    changes = CHANGES[:3] + [
        (1, "Ann", "Oslo", "x", T[2]),
        (3, "Cy", "Oslo", "u", T[2]),
        (3, "Cy", "Lima", "u", T[2]),
    ]
    with pytest.raises(
        WorkbenchError,
        match="customer_id=1 \\(unknown operation\\); customer_id=3 \\(conflicting changes\\)",
    ):
        scd.merge_changes(lake, "gold.dim_people", change_table(con, changes), KEY, TRACKED)
    assert not lake.exists("gold.dim_people")


# -- SCD1 ---------------------------------------------------------------------------------------


def test_scd1_upserts_changed_and_new_rows_and_completes_inferred_members(con, lake):
    name, key, tracked = "gold.dim_item", ["item_id"], ["label", "price"]
    first = con.create_table(
        "items",
        pa.table({"item_id": [1, 2], "label": ["pen", "ink"], "price": [1.5, 3.0]}),
        overwrite=True,
    )
    scd.merge_scd1(lake, name, first, key, tracked)
    facts = con.create_table("facts", pa.table({"item_id": [2, 3]}), overwrite=True)
    from workbench.modeling import merge_inferred

    assert merge_inferred(lake, name, facts, key, scd2=False)["inserted"] == 1
    second = con.create_table(
        "items2",
        pa.table({"item_id": [1, 2, 3], "label": ["pen", "ink", "cap"], "price": [1.5, 3.5, 0.5]}),
        overwrite=True,
    )
    metrics = scd.merge_scd1(lake, name, second, key, tracked)
    assert (metrics["updated"], metrics["inserted"]) == (
        2,
        0,
    )  # 2 changed, 3 completed; 1 untouched
    got = sorted(
        (r["sk"], r["item_id"], r["label"], r["price"], r["is_inferred"])
        for r in lake.table(name, con).to_pyarrow().to_pylist()
    )
    assert got == sorted(
        [
            (md5("1"), 1, "pen", 1.5, False),
            (md5("2"), 2, "ink", 3.5, False),
            (md5("3"), 3, "cap", 0.5, False),
        ]
    )
