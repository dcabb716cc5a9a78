"""SCD2 from full snapshots of a source table: each snapshot (or a batch of them, each row
tagged with its `as_of`) becomes upsert and delete events for `history.rebuild`.

A key missing from a snapshot was deleted at its `as_of`; keys with duplicate rows or a null
part are left out entirely, neither applied nor deleted (`bad_snapshot_rows` names them).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import ibis

from workbench import history
from workbench.dimension import (
    TS,
    check_columns,
    check_policy,
    clean_snapshot,
    empty_dim,
    same,
)
from workbench.errors import WorkbenchError

AS_OF = "snapshot_as_of"
"""The column a single snapshot is tagged with when it is checked or quarantined."""


def scd2_from_snapshot(
    snapshot: ibis.Table,
    as_of: dt.datetime,
    key: list[str],
    tracked: list[str],
    *,
    dim: ibis.Table | None = None,
    deletes: Literal["ignore", "invalidate", "new_record"] = "invalidate",
    sk: str = "sk",
    checked: bool = False,
) -> ibis.Table:
    """The SCD2 MERGE source for a full snapshot of the source table taken at `as_of`.

    A key missing from the snapshot was deleted at `as_of` (per `deletes`); keys with
    duplicate rows or null parts are left out entirely (neither applied nor deleted).
    `checked=True` says the caller found no such rows (`bad_snapshot_rows`): one pass less.
    """
    check_policy(deletes)
    check_columns(snapshot, key + tracked, "snapshot")
    dim = empty_dim(snapshot, key, tracked, sk) if dim is None else dim
    at = ibis.literal(utc(as_of), TS)
    # One outer join of the snapshot with the rows alive at `as_of` finds updates, inserts,
    # deletes and unchanged keys at once (a batch of snapshots takes the general path).
    rows = _like(snapshot, dim, key + tracked).mutate(_in=ibis.literal(True))
    if checked:
        rows = rows.mutate(_n=ibis.literal(1, "int64"))
    else:
        counts = rows.group_by(key).agg(_n=ibis._.count())
        rows = rows.join(counts, key)  # null keys drop out here
    alive = dim.filter(
        dim.valid_from <= at,
        dim.valid_to.isnull() | (dim.valid_to > at),
        ~dim.is_deleted,
        ~dim.is_inferred,  # an inferred member has not arrived yet: absent is not deleted
    )
    alive = alive.select(*[alive[c].name(f"_a_{c}") for c in key + tracked])
    j = rows.outer_join(alive, [rows[k] == alive[f"_a_{k}"] for k in key])
    present, known = j._in.notnull(), j[f"_a_{key[0]}"].notnull()
    unchanged = known
    for c in tracked:
        unchanged = unchanged & same(j[c], j[f"_a_{c}"])
    bad = j._n > 1  # duplicate rows of a key: not applied, and not a delete either
    noop = present.ifelse(bad | unchanged, ibis.literal(deletes == "ignore"))
    events = j.select(
        *[present.ifelse(j[k], j[f"_a_{k}"]).name(k) for k in key],
        *[present.ifelse(j[c], ibis.null(dim[c].type())).name(c) for c in tracked],
        _ts=at,
        _kind=present.ifelse("upsert", "delete"),
        _noop=noop,
    )
    return history.rebuild(dim, events, key, tracked, sk, deletes, one_per_key=True)


def scd2_from_snapshots(
    snapshots: ibis.Table,
    key: list[str],
    tracked: list[str],
    as_of_col: str = "as_of",
    deletes: Literal["ignore", "invalidate", "new_record"] = "invalidate",
    *,
    dim: ibis.Table | None = None,
    sk: str = "sk",
) -> ibis.Table:
    """The SCD2 MERGE source for one or more full snapshots, each tagged with its `as_of_col`
    (a backfill in one MERGE gives the same table as applying them one by one)."""
    check_policy(deletes)
    check_columns(snapshots, key + tracked + [as_of_col], "snapshot")
    dim = empty_dim(snapshots, key, tracked, sk) if dim is None else dim
    rows = clean_snapshot(snapshots, key, tracked, by=[as_of_col])
    events = rows.select(
        *[rows[c].cast(dim[c].type()).name(c) for c in key + tracked],
        _ts=rows[as_of_col].cast(TS),
        _kind=ibis.literal("upsert"),
    )
    if deletes != "ignore":
        events = events.union(_snapshot_deletes(snapshots, dim, key, tracked, as_of_col))
    events = history.flag_noops(dim, events, key, tracked)
    return history.rebuild(dim, events, key, tracked, sk, deletes)


def _snapshot_deletes(snapshots, dim, key, tracked, as_of_col) -> ibis.Table:
    """Delete events: at each snapshot time, the keys alive in the dimension then, or seen
    in an earlier snapshot of the batch, that the snapshot lacks."""
    # Bad rows count as present: a key with duplicate rows is not gone.
    present = snapshots.select(
        *[snapshots[k].cast(dim[k].type()).name(k) for k in key],
        _ts=snapshots[as_of_col].cast(TS),
    ).distinct()
    times = present.select(_at=present._ts).distinct()
    # An inferred member has not arrived yet: absent from a snapshot is not deleted.
    live = dim.filter(~dim.is_deleted, ~dim.is_inferred)
    alive = live.cross_join(times).filter(
        live.valid_from <= times._at, live.valid_to.isnull() | (live.valid_to > times._at)
    )
    alive = alive.select(*key, _ts=alive._at)
    first = present.group_by(key).agg(_first=present._ts.min())
    seen = first.cross_join(times).filter(first._first < times._at)
    seen = seen.select(*key, _ts=seen._at)
    gone = alive.union(seen).distinct().anti_join(present, [*key, "_ts"])
    return history.delete_events(gone.select(*key, "_ts"), dim, tracked)


def _like(table: ibis.Table, dim: ibis.Table, columns: list[str]) -> ibis.Table:
    """`columns` of `table` cast to the dimension's types, so unions line up."""
    return table.select(*[table[c].cast(dim[c].type()).name(c) for c in columns])


def utc(when: dt.datetime) -> dt.datetime:
    if not isinstance(when, dt.datetime):
        raise WorkbenchError(
            f"as_of={when!r} is not a datetime.",
            "Allowed: a datetime (naive ones are taken as UTC).",
            "pass e.g. datetime(2026, 1, 31, tzinfo=UTC).",
        )
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)
