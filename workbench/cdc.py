"""Change data capture into the lakehouse: apply change events exactly once, then reconcile.

The rules that make apply idempotent whatever the delivery does (duplicates, disorder, replays):
per key only the change with the highest LSN counts; a change no newer than what silver holds
for its key (its row, or the tombstone a delete left) is ignored; exact duplicates are dropped
and counted; every batch commits with `Transaction(app_id, batch_id)`. The source side lives in
`cdc_source` (SQLite + triggers), `cdc_workload` and `cdc_capture` (Debezium envelopes).
"""

from __future__ import annotations

import itertools
from typing import Literal

import ibis
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from workbench import scan
from workbench.cdc_capture import APP_ID as CAPTURE_ID
from workbench.cdc_capture import (
    EVENTS,
    Capture,
    changes,
    disorder,
    land,
    silver_name,
    snapshot,
    snapshot_diff,
    tombstone_name,
)
from workbench.cdc_feed import silver_changes, update_dimension
from workbench.cdc_parse import DEAD_SCHEMA, META, Parsed, parse
from workbench.cdc_reconcile import BOOKKEEPING, Reconciliation, differences, live, reconcile
from workbench.cdc_rules import conflicting, deduplicate, latest, settle, unapplied
from workbench.cdc_source import KEYS, Catalog, Source, TableSpec
from workbench.cdc_workload import Workload
from workbench.errors import SchemaMismatchError, WorkbenchError
from workbench.lakehouse import Lakehouse

__all__ = [
    "APPLIED", "BOOKKEEPING", "DEAD_LETTER", "EVENTS", "KEYS", "Capture", "Catalog", "Parsed",
    "Reconciliation", "Source", "TableSpec", "Workload", "apply", "apply_changes",
    "apply_pending", "changes", "conflicting", "deduplicate", "differences", "disorder",
    "land", "latest", "live", "parse", "pending", "reconcile", "settle", "silver_changes",
    "silver_name", "snapshot", "snapshot_diff", "tombstone_name", "unapplied", "update_dimension",
]  # fmt: skip

DEAD_LETTER = "bronze.cdc_events_dead_letter"
"""Malformed change events, with the reason and the raw record."""
APPLIED = "ops.cdc_apply"
"""One row per applied batch and table: what came in, what was dropped and why, lag."""
APP_ID = "cdc-apply"
_counter = itertools.count()


def _on(
    con: ibis.BaseBackend, name: str, data: pa.Table | ibis.Table
) -> tuple[ibis.Table, pa.Table]:
    """`data` computed on `con` and kept as Arrow (a memtable, registered with `con` when used):
    each step runs once, and counting its rows costs nothing."""
    if isinstance(data, ibis.Table):
        data = con.to_pyarrow(data)
    return ibis.memtable(data), data


def apply_changes(
    lake: Lakehouse,
    con: ibis.BaseBackend,
    table: str,
    events: pa.Table | ibis.Table,
    key: list[str] | tuple[str, ...],
    deletes: Literal["hard", "soft"] = "hard",
    evolve: bool = True,
    transaction: tuple[str, int] | None = None,
    target: str | None = None,
) -> dict:
    """Merge typed change events (the table's columns plus `_op`, `_lsn`, `_tx_id`,
    `_commit_ts`) into silver, keeping only changes newer than what silver holds per key.
    Returns counts, and `conflicts` (the `_position`s of conflicting events)."""
    key, target = list(key), target or silver_name(table)
    _check_mode(lake, target, deletes)
    if isinstance(events, ibis.Table) and "_position" not in events.columns:
        events = events.mutate(_position=ibis.null("int64"))
    elif isinstance(events, pa.Table) and "_position" not in events.column_names:
        events = events.append_column("_position", pa.nulls(events.num_rows, pa.int64()))
    ev, arrow = _on(con, f"{table}_events", events)
    distinct, n_distinct = _on(con, f"{table}_distinct", deduplicate(ev))
    winners, n_winners = _on(con, f"{table}_winners", settle(latest(distinct, key)))
    keys = n_winners.group_by(key).aggregate([]).num_rows  # cheap: skip the query when unique
    bad = con.to_pyarrow(conflicting(winners, key)) if keys < n_winners.num_rows else n_winners[:0]
    if bad.num_rows:
        winners = winners.anti_join(_on(con, f"{table}_bad", bad)[0], key)
    tombstones = f"{target}_tombstones"  # silver.customers -> silver.customers_tombstones
    tables = [lake.table(n, con) for n in (target, tombstones) if lake.exists(n)]
    todo = unapplied(winners, tables, key)
    todo, n_todo = _on(con, f"{table}_todo", todo)
    n = {"events": arrow.num_rows, "distinct": n_distinct.num_rows,
         "winners": n_winners.num_rows - bad.num_rows, "todo": n_todo.num_rows}  # fmt: skip
    metrics = {
        "events": n["events"],
        "duplicates": n["events"] - n["distinct"],
        "conflicts": bad.num_rows,
        "superseded": n["distinct"] - n["winners"] - bad.num_rows,
        "stale": n["winners"] - n["todo"],
        "applied": n["todo"],
        "inserted": 0, "updated": 0, "deleted": 0,
        "conflict_positions": bad["_position"].to_pylist(),
    }  # fmt: skip
    if n["todo"] == 0:
        return metrics
    data = [c for c in todo.columns if c not in (*META, "_copies")]
    # A table of `con`, so the merge runs on (and the commit names) the engine under test.
    todo = con.create_table(f"_cdc_{table}_merge_{next(_counter)}", n_todo, overwrite=True)
    is_delete = todo._op == "d"
    rows = todo.select(*data, "_lsn", "_tx_id", "_commit_ts", _flag=is_delete)
    schema_mode = "merge" if evolve else None
    # streamed=False: the batch is in memory anyway, and a materialized source lets delta-rs
    # skip the files outside its key range (10x faster when changes hit recent keys).
    if deletes == "soft":
        result = lake.merge(target, rows.rename(_deleted="_flag"), on=key,
                            update_if="s._lsn > t._lsn", schema_mode=schema_mode,
                            transaction=transaction, streamed=False)  # fmt: skip
    else:
        result = lake.merge(target, rows, on=key, delete_when="_flag", update_if="s._lsn > t._lsn",
                            schema_mode=schema_mode, transaction=transaction,
                            streamed=False)  # fmt: skip
        if pc.any(pc.equal(n_todo["_op"], "d")).as_py():
            gone = todo.filter(is_delete).select(*key, "_lsn", "_commit_ts")
            lake.merge(tombstones, gone, on=key, update_if="s._lsn > t._lsn",
                       transaction=transaction, streamed=False)  # fmt: skip
    metrics.update({k: result[k] for k in ("inserted", "updated", "deleted")})
    return metrics


def _check_mode(lake: Lakehouse, target: str, deletes: str) -> None:
    if deletes not in ("hard", "soft"):
        raise WorkbenchError(
            f"Unknown deletes={deletes!r}.",
            "Allowed: 'hard' (remove the row, keep a tombstone), 'soft' (keep it, _deleted = true).",
            "the default is 'hard'.",
        )
    if lake.exists(target):
        soft = "_deleted" in scan.arrow_schema(lake.delta(target)).names
        if soft != (deletes == "soft"):
            raise WorkbenchError(
                f"{target} was built with deletes={'soft' if soft else 'hard'!r}, not {deletes!r}.",
                "A table keeps the delete mode it was created with.",
                "apply into a fresh table to switch modes.",
            )


def _check_schemas(lake: Lakehouse, parsed: Parsed, evolve: bool) -> None:
    """Refuse, before anything is written, columns silver lacks when evolution is off."""
    if evolve:
        return
    for table, events in parsed.events.items():
        target = silver_name(table)
        if not lake.exists(target) or events.num_rows == 0:
            continue
        current = set(scan.arrow_schema(lake.delta(target)).names)
        new = [c for c in events.column_names if c not in current and c not in META]
        if new:
            raise SchemaMismatchError(
                f"Change events for {table!r} carry column(s) {new} that {target} does not have "
                "(a column added at the source).",
                f"{target} columns: {', '.join(sorted(current))}. With evolve=False new columns "
                "are refused, so nothing of this batch was applied.",
                "apply with evolve=True to add the column (schema evolution), or drop it at "
                "the source.",
            )


def apply(
    lake: Lakehouse,
    con: ibis.BaseBackend,
    batch_id: int | None,
    catalog: Catalog,
    deletes: Literal["hard", "soft"] = "hard",
    evolve: bool = True,
    now_ms: int | None = None,
    events: str = EVENTS,
) -> pd.DataFrame:
    """Apply one landed batch of change events to silver, exactly once, and return one row of
    metrics per table (also appended to `ops.cdc_apply`). A batch id already applied is
    skipped, and so is None (what `Capture.poll` returns when nothing changed); malformed
    events go to `bronze.cdc_events_dead_letter`."""
    if batch_id is None:
        return _frame(-1, []).iloc[0:0]
    last = lake.transaction_version(APPLIED, APP_ID)
    if last is not None and batch_id <= last:
        return pd.DataFrame([{"batch_id": batch_id, "table": None, "skipped": True}])
    landed = lake.transaction_version(events, CAPTURE_ID)
    if landed is None or batch_id > landed:
        raise WorkbenchError(
            f"Batch {batch_id} has not landed in {events}.",
            f"Landed batch ids: 0 to {landed}." if landed is not None else "No batch has landed.",
            "land it first (capture.poll() or cdc.land(...)); applying it would mark it done.",
        )
    raw = lake.delta(events).to_pyarrow_table(filters=[("batch_id", "=", batch_id)])
    known = {t: scan.arrow_schema(lake.delta(silver_name(t))) for t in catalog
             if lake.exists(silver_name(t))}  # fmt: skip
    parsed = parse(raw, catalog, known)
    _check_schemas(lake, parsed, evolve)
    transaction = (APP_ID, batch_id)
    rows, dead = [], [parsed.dead]
    for table, ev in parsed.events.items():
        if ev.num_rows == 0:
            if parsed.tombstones.get(table):
                rows.append({"table": table, **_event_stats(None, now_ms)})
            continue
        m = apply_changes(lake, con, table, ev, catalog[table].key, deletes, evolve, transaction)
        positions = m.pop("conflict_positions")
        if positions:
            conflict = raw.filter(pc.is_in(raw["position"], pa.array(positions, pa.int64())))
            conflict = conflict.append_column(
                "table", pa.array([table] * conflict.num_rows, pa.string())
            )
            reason = pa.array(["conflicting events: same key and LSN, different content"]
                              * conflict.num_rows, pa.string())  # fmt: skip
            dead.append(conflict.append_column("reason", reason).cast(DEAD_SCHEMA))
        rows.append({"table": table, **m, **_event_stats(ev, now_ms)})
    dead = pa.concat_tables(dead)
    per_table = pc.value_counts(dead["table"].fill_null("?")).to_pylist() if dead.num_rows else []
    for count in per_table:
        row = next((r for r in rows if r["table"] == count["values"]), None)
        if row is None:
            row = {"table": count["values"], **_event_stats(None, now_ms)}
            rows.append(row)
        row["dead_letter"] = count["counts"]
    for row in rows:
        row["tombstone_messages"] = parsed.tombstones.get(row["table"], 0)
    if dead.num_rows:
        lake.write(DEAD_LETTER, dead, mode="append", transaction=transaction)
    frame = _frame(batch_id, rows)
    lake.write(APPLIED, pa.Table.from_pandas(frame, preserve_index=False), mode="append",
               transaction=transaction)  # fmt: skip
    return frame


_COUNTS = ("events", "duplicates", "conflicts", "superseded", "stale", "applied", "inserted",
           "updated", "deleted", "dead_letter", "tombstone_messages",
           "op_c", "op_u", "op_d", "op_r")  # fmt: skip


def _event_stats(events: pa.Table | None, now_ms: int | None) -> dict:
    """Changes by op and replication lag: how far the batch's commits trail `now_ms`."""
    stats = {f"op_{o}": 0 for o in "cudr"}
    if events is None or events.num_rows == 0:
        return stats | {"lag_ms_max": None, "lag_ms_mean": None, "applied_ms": now_ms}
    for c in pc.value_counts(events["_op"]).to_pylist():
        stats[f"op_{c['values']}"] = c["counts"]
    commit = events["_commit_ts"].cast(pa.int64()).to_numpy() // 1000
    now = int(commit.max()) if now_ms is None else int(now_ms)
    lag = now - commit
    return stats | {
        "lag_ms_max": int(lag.max()),
        "lag_ms_mean": float(lag.mean()),
        "applied_ms": now,
    }


def _frame(batch_id: int, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=["table", *_COUNTS, "lag_ms_max", "lag_ms_mean", "applied_ms"]
    )
    frame[list(_COUNTS)] = frame[list(_COUNTS)].fillna(0).astype("int64")
    frame["lag_ms_max"] = frame["lag_ms_max"].astype("Int64")
    frame["lag_ms_mean"] = frame["lag_ms_mean"].astype("float64")
    frame["applied_ms"] = frame["applied_ms"].astype("Int64")
    frame.insert(0, "batch_id", batch_id)
    return frame


def pending(lake: Lakehouse, events: str = EVENTS) -> list[int]:
    """Landed batch ids not applied yet, in order."""
    if not lake.exists(events):
        return []
    ids = pc.unique(lake.delta(events).to_pyarrow_table(columns=["batch_id"])["batch_id"])
    last = lake.transaction_version(APPLIED, APP_ID)
    return sorted(i for i in ids.to_pylist() if last is None or i > last)


def apply_pending(
    lake: Lakehouse, con: ibis.BaseBackend, catalog: Catalog, **options
) -> pd.DataFrame:
    """Apply every landed batch not applied yet, in batch order; their metrics together."""
    frames = [apply(lake, con, b, catalog, **options) for b in pending(lake)]
    return pd.concat(frames, ignore_index=True) if frames else _frame(-1, []).iloc[0:0]
