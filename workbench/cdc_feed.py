"""Downstream of CDC: silver's Delta change data feed drives an SCD2 dimension incrementally.

Each run reads the feed from the silver version after the last one it consumed (kept as the
dimension's `Transaction(app_id, silver_version)`, so a rerun is a no-op), turns it back into
source changes, and hands them to `workbench.scd.merge_changes`, which rebuilds only the keys
the feed touched. Change times are the source's commit times kept in silver (`_commit_ts`),
never the time the lake was written.
"""

from __future__ import annotations

from typing import Literal

import ibis

from workbench.cdc_capture import silver_name, tombstone_name
from workbench.lakehouse import Lakehouse

_UPSERTS = ("insert", "update_postimage")


def silver_changes(feed: ibis.Table, tombstones: ibis.Table | None, key: list[str]) -> ibis.Table:
    """Silver's change feed as source changes: `op` (c, u, d), `changed_at` (source commit
    time) and `_lsn`. A hard delete's row holds the values it removed; its time and LSN are
    those of the tombstone that followed that row version (the smallest tombstone LSN above
    the row's), found in the tombstones' own feed."""
    rows = feed.filter(feed._change_type.isin(_UPSERTS))
    columns = [c for c in feed.columns if not c.startswith("_")]
    deleted = rows._deleted if "_deleted" in feed.columns else ibis.literal(False)
    op = ibis.cases((deleted, "d"), (rows._change_type == "insert", "c"), else_="u")
    upserts = rows.select(*columns, op=op, changed_at=rows._commit_ts, _lsn=rows._lsn)
    gone = feed.filter(feed._change_type == "delete")
    if tombstones is None:
        return upserts
    t = tombstones.filter(tombstones._change_type.isin(_UPSERTS))
    t = t.select(*[t[k].name(f"_t_{k}") for k in key], _t_lsn=t._lsn, _t_ts=t._commit_ts)
    pairs = gone.join(t, [gone[k] == t[f"_t_{k}"] for k in key])  # equi-join: every engine
    pairs = pairs.select(*key, _row_lsn=gone._lsn, _t_lsn=pairs._t_lsn, _t_ts=pairs._t_ts)
    pairs = pairs.filter(pairs._t_lsn > pairs._row_lsn)
    first = pairs.group_by([*key, "_row_lsn"]).agg(_lsn=pairs._t_lsn.min())
    found = first.join(pairs, [*key, "_row_lsn", first._lsn == pairs._t_lsn])
    found = found.select(*key, "_row_lsn", "_lsn", changed_at=found._t_ts)
    keyed = gone.left_join(
        found, [*[gone[k] == found[k] for k in key], gone._lsn == found._row_lsn]
    )
    deletes = keyed.select(
        *[gone[c] for c in columns],
        op=ibis.literal("d"),
        changed_at=keyed.changed_at,  # null if no tombstone: the load names such rows
        _lsn=keyed._lsn.coalesce(gone._lsn),
    )
    return upserts.union(deletes)


def update_dimension(
    lake: Lakehouse,
    con: ibis.BaseBackend,
    table: str = "customers",
    name: str = "gold.dim_customer",
    key: list[str] | None = None,
    tracked: list[str] | None = None,
    deletes: Literal["ignore", "invalidate", "new_record"] = "invalidate",
) -> dict:
    """Apply silver's changes since the last run to the SCD2 dimension `name`; returns the
    merge metrics with `keys` (keys touched) and the silver versions read."""
    from workbench import scd  # the modeling chapter's SCD2 (issue #4)
    from workbench.cdc_source import KEYS

    silver = silver_name(table)
    key = list(key or KEYS[table])
    app_id = f"cdf:{silver}"
    last = lake.transaction_version(name, app_id)
    latest = lake.version(silver)
    since = 0 if last is None else last + 1
    if since > latest:
        return {"keys": 0, "since": since, "until": latest, "skipped": 1}
    feed = lake.changes(silver, since=since, until=latest, con=con)
    tombs = tombstone_name(table)
    tombstones = lake.changes(tombs, con=con) if lake.exists(tombs) else None
    # Computed once here: the SCD2 pipeline reads it several times.
    rows = con.to_pyarrow(silver_changes(feed, tombstones, key))
    changes = con.create_table(f"_cdc_feed_{table}", rows, overwrite=True)
    tracked = tracked or [c for c in changes.columns if c not in key and c not in
                          ("op", "changed_at", "_lsn", "created_at", "updated_at")]  # fmt: skip
    keys = rows.group_by(key).aggregate([]).num_rows
    metrics = scd.merge_changes(
        lake, name, changes, key, tracked, op_col="op", ts_col="changed_at", deletes=deletes,
        order_col="_lsn", on_bad="quarantine", transaction=(app_id, latest),
    )  # fmt: skip
    return {**metrics, "keys": keys, "since": since, "until": latest}
