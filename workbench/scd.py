"""Slowly changing dimensions: SCD2 from a change feed (and, from `snapshots.py`, from full
snapshots), SCD1 upserts, and loading each into the lake with one Delta MERGE per batch.

A dimension table has these columns (dbt / SQLMesh vocabulary, see design.md):
`sk` (md5 of the key and `valid_from`; of the key alone for SCD1), the key columns, the
tracked columns, `row_hash` (md5 of the tracked columns, for change detection), `valid_from`,
`valid_to` (null for the current row), `is_current`, `is_deleted`, `is_inferred`.

How SCD2 works here: all we know about a key is a list of events in time (upsert, delete,
inferred). A snapshot or a batch of changes becomes events; the existing versions of the keys
they touch are turned back into events; the union is replayed in time order and the versions
rebuilt. The difference with the table is the MERGE source: new or changed versions, and
versions to remove (`_remove = true`, e.g. when a late change makes one redundant). So a
replay changes nothing, a late change lands where it belongs, and each batch is one MERGE.
At the same key and time, an incoming event replaces the recorded one (a restatement).

For change data capture (chapter 03), the entry points are:

    rows = scd2_from_changes(changes, key=["customer_id"], tracked=["city", "segment"],
                             op_col="op", ts_col="changed_at", deletes="invalidate", dim=dim)
    metrics = merge_changes(lake, "gold.dim_customer", changes, key=[...], tracked=[...])

`changes` has the key, the tracked columns (the `after` image; may be null on deletes), an
operation (`c`, `u`, `r` upsert; `d` delete) and a change time (the source commit time);
`order_col` (e.g. the LSN) orders changes to a key at the same time, the last one wins.
Rows with a null key or time, an unknown operation, or two different changes for one key at
one time are not applied: `merge_changes` raises naming them, or with `on_bad="quarantine"`
appends them to `<name>_quarantine` with a `reason`.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import ibis
import pyarrow as pa

from workbench import history
from workbench import keys as hashing
from workbench.dimension import (
    TS,
    bad_changes,
    bad_snapshot_rows,
    check_columns,
    check_policy,
    clean_changes,
    clean_snapshot,
    empty_dim,
    unfused,
)
from workbench.errors import WorkbenchError
from workbench.history import REMOVE
from workbench.snapshots import AS_OF, scd2_from_snapshot, scd2_from_snapshots, utc

UPSERT_OPS = ("c", "u", "r")
DELETE_OPS = ("d",)
BAD = ("raise", "quarantine")
"""What a load does with rows it cannot apply: raise naming them, or quarantine them."""


def scd2_from_changes(
    changes: ibis.Table,
    key: list[str],
    tracked: list[str],
    op_col: str = "op",
    ts_col: str = "changed_at",
    deletes: Literal["ignore", "invalidate", "new_record"] = "invalidate",
    *,
    dim: ibis.Table | None = None,
    order_col: str | None = None,
    sk: str = "sk",
) -> ibis.Table:
    """The SCD2 MERGE source for a batch of ordered changes (`valid_from` = change time)."""
    check_policy(deletes)
    dim = empty_dim(changes, key, tracked, sk) if dim is None else dim
    rows = clean_changes(changes, key, tracked, op_col, ts_col, order_col, UPSERT_OPS + DELETE_OPS)
    is_delete = rows[op_col].isin(DELETE_OPS)
    values = {
        c: is_delete.ifelse(ibis.null(dim[c].type()), rows[c].cast(dim[c].type())) for c in tracked
    }
    events = rows.select(
        *[rows[k].cast(dim[k].type()).name(k) for k in key],
        **values,
        _ts=rows[ts_col].cast(TS),
        _kind=is_delete.ifelse("delete", "upsert"),
    )
    if deletes == "ignore":
        events = events.filter(events._kind != "delete")
    events = history.flag_noops(dim, events, key, tracked)
    return history.rebuild(dim, events, key, tracked, sk, deletes)


def apply(dim: ibis.Table, rows: ibis.Table, sk: str = "sk") -> ibis.Table:
    """The dimension after a MERGE of `rows` (what `merge_snapshot` writes), without Delta."""
    kept = dim.anti_join(rows.select(sk), sk)
    return kept.union(rows.filter(~rows[REMOVE]).drop(REMOVE))


def scd1_rows(
    source: ibis.Table,
    key: list[str],
    tracked: list[str],
    *,
    dim: ibis.Table | None = None,
    sk: str = "sk",
) -> ibis.Table:
    """The SCD1 upsert source: new keys, changed rows and inferred members now known.

    Rows of keys with duplicates or null parts are left out (see `bad_snapshot_rows`).
    """
    check_columns(source, key + tracked, "source")
    rows = clean_snapshot(source, key, tracked)
    rows = rows.select(
        hashing.hash_key(rows, key).name(sk),
        *key,
        *tracked,
        row_hash=hashing.hash_key(rows, tracked),
        is_inferred=ibis.literal(False),
    )
    if dim is None:
        return rows
    old = dim.select(sk, _old_hash=dim.row_hash)
    joined = rows.left_join(old, sk)
    changed = joined._old_hash.isnull() | (joined._old_hash != joined.row_hash)
    return joined.filter(changed).select(rows.columns)


# -- loading into the lake: one MERGE per snapshot or batch ---------------------------------


def merge_snapshot(
    lake,
    name: str,
    snapshot: ibis.Table,
    as_of: dt.datetime,
    key: list[str],
    tracked: list[str],
    *,
    deletes: Literal["ignore", "invalidate", "new_record"] = "invalidate",
    sk: str = "sk",
    on_bad: Literal["raise", "quarantine"] = "raise",
) -> dict[str, int]:
    """Apply a snapshot taken at `as_of` to the SCD2 table `name` with one MERGE; returns
    the merge metrics.

    Rows that cannot be applied (duplicate or null keys) raise a WorkbenchError naming them,
    or with `on_bad="quarantine"` go to `<name>_quarantine` with a `reason` and the snapshot
    time (`snapshot_as_of`), and the rest is applied.
    """
    bad = bad_snapshot_rows(snapshot, key, tracked)
    bad = bad.mutate(**{AS_OF: ibis.literal(utc(as_of), TS)})
    clean = _handle_bad(lake, name, bad, key, on_bad, "snapshot") == 0

    def rows(dim):
        return scd2_from_snapshot(
            snapshot, as_of, key, tracked, dim=dim, deletes=deletes, sk=sk, checked=clean
        )

    return _merge(lake, name, snapshot, rows, sk, key)


def merge_snapshots(
    lake,
    name: str,
    snapshots: ibis.Table,
    key: list[str],
    tracked: list[str],
    as_of_col: str = "as_of",
    deletes: Literal["ignore", "invalidate", "new_record"] = "invalidate",
    *,
    sk: str = "sk",
    on_bad: Literal["raise", "quarantine"] = "raise",
) -> dict[str, int]:
    """Apply snapshots tagged with their `as_of_col` to the SCD2 table `name` in one MERGE."""
    bad = bad_snapshot_rows(snapshots, key, tracked, by=[as_of_col])
    _handle_bad(lake, name, bad, key, on_bad, "snapshot")

    def rows(dim):
        return scd2_from_snapshots(snapshots, key, tracked, as_of_col, deletes, dim=dim, sk=sk)

    return _merge(lake, name, snapshots, rows, sk, key)


def merge_changes(
    lake,
    name: str,
    changes: ibis.Table,
    key: list[str],
    tracked: list[str],
    op_col: str = "op",
    ts_col: str = "changed_at",
    deletes: Literal["ignore", "invalidate", "new_record"] = "invalidate",
    *,
    order_col: str | None = None,
    sk: str = "sk",
    on_bad: Literal["raise", "quarantine"] = "raise",
    transaction: tuple[str, int] | None = None,
) -> dict[str, int]:
    """Apply a batch of changes to the SCD2 table `name` with one MERGE; returns its metrics.

    `transaction=(app_id, batch_id)` records the batch in the commit; a batch id the table
    already holds for `app_id` is skipped (replays are no-ops in any case).
    """
    if transaction is not None:
        last = lake.transaction_version(name, transaction[0])
        if last is not None and last >= transaction[1]:
            return {"skipped": 1}
    ops = UPSERT_OPS + DELETE_OPS
    bad = bad_changes(changes, key, tracked, op_col, ts_col, order_col, ops)
    _handle_bad(lake, name, bad, key, on_bad, "change feed")

    def rows(dim):
        return scd2_from_changes(
            changes, key, tracked, op_col, ts_col, deletes, dim=dim, order_col=order_col, sk=sk
        )

    return _merge(lake, name, changes, rows, sk, key, transaction)


def merge_scd1(
    lake,
    name: str,
    source: ibis.Table,
    key: list[str],
    tracked: list[str],
    *,
    sk: str = "sk",
    on_bad: Literal["raise", "quarantine"] = "raise",
) -> dict[str, int]:
    """Upsert `source` into the SCD1 table `name` (changed and new rows only), one MERGE."""
    _handle_bad(lake, name, bad_snapshot_rows(source, key, tracked), key, on_bad, "source")

    def rows(dim):
        return scd1_rows(source, key, tracked, dim=dim, sk=sk).mutate(**{REMOVE: False})

    return _merge(lake, name, source, rows, sk, key)


def _merge(lake, name, source, rows_of, sk, key, transaction=None) -> dict[str, int]:
    """Compute the MERGE source on `source`'s engine against the table, then merge it.

    The merge matches on the business key too (the surrogate key implies it): delta-rs then
    skips files whose key range the source misses, when the table is clustered by the key.
    """
    con = source._find_backend(use_default=True)
    dim = lake.table(name, con) if lake.exists(name) else None
    with unfused():
        rows = con.to_pyarrow(rows_of(dim))
    if rows.num_rows == 0 and transaction is None:
        return {"source_rows": 0, "inserted": 0, "updated": 0, "deleted": 0}
    on = [sk, *key]
    return lake.merge(name, rows, on=on, delete_when=REMOVE, transaction=transaction)


def _handle_bad(lake, name: str, bad: ibis.Table, key, on_bad: str, role: str) -> int:
    """Raise naming the rows that cannot be applied, or append them to the quarantine table;
    returns how many there were."""
    if on_bad not in BAD:
        raise WorkbenchError(
            f"Unknown on_bad={on_bad!r}.",
            f"Allowed: {', '.join(repr(b) for b in BAD)}.",
            "'quarantine' appends the rows to <table>_quarantine with a reason and loads the rest.",
        )
    with unfused():
        found: pa.Table = bad._find_backend(use_default=True).to_pyarrow(bad)
    if found.num_rows == 0:
        return 0
    if on_bad == "quarantine":
        lake.write(f"{name}_quarantine", found, mode="append", schema_mode="merge")
        return found.num_rows
    listed = found.select([*key, "reason"]).to_pylist()
    named = sorted(
        {", ".join(f"{k}={row[k]!r}" for k in key) + f" ({row['reason']})" for row in listed}
    )
    raise WorkbenchError(
        f"The {role} for {name!r} has {found.num_rows} row(s) that cannot be applied: "
        + "; ".join(named[:10])
        + (f"; and {len(named) - 10} more" if len(named) > 10 else "")
        + ".",
        "Each key appears once per snapshot (once per key and time in a change feed), "
        "with no null part; operations are c, u, r or d.",
        "fix the source, or pass on_bad='quarantine' to load the rest and keep these rows in "
        f"{name}_quarantine.",
    )
