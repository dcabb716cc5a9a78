"""Capture: the source's change log as Debezium-style envelopes, landed as-is in bronze.

`snapshot` reads every table in one read transaction together with the LSN it saw, as `op = "r"`
events; `changes` then exports log rows strictly after that LSN, so the two meet with no gap and
no overlap. `Capture` is the connector: it keeps its offset (the last LSN landed) in the commit
metadata of the bronze table, and can deliver with the disorder of an at-least-once transport.
`snapshot_diff` is the fallback for sources without a log: compare two snapshots.
"""

from __future__ import annotations

import sqlite3

import ibis
import numpy as np
import pyarrow as pa

from workbench.cdc_source import KEYS, Source, row_json
from workbench.errors import WorkbenchError
from workbench.lakehouse import Lakehouse

EVENTS = "bronze.cdc_events"
"""The bronze table the connector lands envelopes in."""
SERVER = "retail"
"""The logical server name: topics are `retail.<table>`, as Debezium names them."""
OFFSET_KEY = "cdc.offset"
"""Commit metadata key of a bronze landing: the last source LSN it holds."""
APP_ID = "cdc-capture"


def silver_name(table: str) -> str:
    """The silver table a source table replicates into."""
    return f"silver.{table}"


def tombstone_name(table: str) -> str:
    """Where hard deletes leave their tombstones (key, LSN, commit time)."""
    return f"silver.{table}_tombstones"


BRONZE_SCHEMA = pa.schema(
    [("batch_id", pa.int64()), ("position", pa.int64()), ("topic", pa.string()),
     ("key", pa.string()), ("value", pa.string())]
)  # fmt: skip
"""What lands in bronze: Kafka-like records; `value` null is a tombstone message."""


def _source_json(table: str, lsn: str, tx_id: str, ts: str, snapshot: str) -> str:
    return (
        f"json_object('version', 'workbench-0.1', 'connector', 'sqlite', 'name', '{SERVER}', "
        f"'db', '{SERVER}', 'table', {table}, 'lsn', {lsn}, 'txId', {tx_id}, 'ts_ms', {ts}, "
        f"'snapshot', '{snapshot}')"
    )


def _records(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [[], [], []]
    return pa.table(
        {
            n: pa.array(c, pa.string())
            for n, c in zip(["topic", "key", "value"], columns, strict=True)
        }
    )


def changes(
    source: Source,
    after_lsn: int = 0,
    limit: int | None = None,
    now_ms: int | None = None,
    tombstones: bool = True,
) -> tuple[pa.Table, int]:
    """Envelopes (`topic`, `key`, `value`) of the log rows with `lsn > after_lsn`, in LSN order,
    and the last LSN exported. A delete is followed by a tombstone message (value null), as
    Debezium does for Kafka log compaction, unless `tombstones=False`."""
    now = source.now_ms if now_ms is None else now_ms
    envelope = (
        "json_object('before', json(l.before), 'after', json(l.after), 'source', "
        + _source_json("l.tbl", "l.lsn", "l.tx_id", "t.commit_ms", "false")
        + ", 'op', l.op, 'ts_ms', :now)"
    )
    select = f"""
        WITH l AS (SELECT * FROM _cdc_log WHERE lsn > :after ORDER BY lsn LIMIT :limit)
        SELECT '{SERVER}.' || l.tbl, l.key, {envelope}, l.lsn, 0
        FROM l JOIN _cdc_tx t USING (tx_id)
        {"UNION ALL SELECT '" + SERVER + ".' || tbl, key, NULL, lsn, 1 FROM l WHERE op = 'd'" if tombstones else ""}
        ORDER BY 4, 5"""
    params = {"after": after_lsn, "limit": -1 if limit is None else limit, "now": now}
    rows = source.connection.execute(select, params).fetchall()
    last = max((r[3] for r in rows), default=after_lsn)
    return _records([r[:3] for r in rows]), last


def snapshot(
    source: Source, tables: list[str] | None = None, connection: sqlite3.Connection | None = None
) -> tuple[pa.Table, int]:
    """`op = "r"` envelopes of every row of `tables`, and the LSN they are consistent with.

    One read transaction covers the LSN and all the tables (SQLite in WAL mode gives it a
    stable snapshot while writers go on), so streaming from that LSN neither misses nor repeats
    a change. Every snapshot event carries that LSN in `source.lsn`.
    """
    db = connection or sqlite3.connect(source.path)
    names = tables or source.tables()
    now = source.now_ms
    rows = []
    try:
        db.execute("BEGIN")
        (lsn,) = db.execute("SELECT coalesce(max(lsn), 0) FROM _cdc_log").fetchone()
        for table in names:
            columns = [(r[1], r[2].upper()) for r in db.execute(f'PRAGMA table_info("{table}")')]
            keyed = [(c, t) for c, t in columns if c in KEYS[table]]
            envelope = (
                f"json_object('before', NULL, 'after', {row_json('', columns)}, 'source', "
                + _source_json(f"'{table}'", str(lsn), "NULL", str(now), "true")
                + f", 'op', 'r', 'ts_ms', {now})"
            )
            order = ", ".join(KEYS[table])
            rows += db.execute(
                f"SELECT '{SERVER}.{table}', {row_json('', keyed)}, {envelope} "
                f'FROM "{table}" ORDER BY {order}'
            ).fetchall()
        db.execute("COMMIT")
    finally:
        if connection is None:
            db.close()
    return _records(rows), lsn


def land(lake: Lakehouse, records: pa.Table, batch_id: int, offset: int, name: str = EVENTS) -> int:
    """Append `records` to bronze as batch `batch_id`, recording the connector's `offset` in the
    commit; idempotent per batch id. Returns the table version."""
    positions = pa.array(np.arange(records.num_rows, dtype=np.int64))
    batch = pa.array(np.full(records.num_rows, batch_id, dtype=np.int64))
    table = pa.table([batch, positions, records["topic"], records["key"], records["value"]],
                     schema=BRONZE_SCHEMA)  # fmt: skip
    return lake.write(
        name, table, mode="append", transaction=(APP_ID, batch_id),
        metadata={OFFSET_KEY: str(offset)},
    )  # fmt: skip


def disorder(records: pa.Table, earlier: pa.Table | None, seed: int,
             duplicates: float = 0.2, replays: float = 0.1) -> pa.Table:  # fmt: skip
    """What an at-least-once transport may deliver: `records` shuffled, a `duplicates` fraction
    sent twice, and a `replays` fraction of `earlier` deliveries sent again (late)."""
    rng = np.random.default_rng(seed)
    parts = [records]
    if records.num_rows:
        parts.append(records.take(rng.choice(records.num_rows, int(records.num_rows * duplicates))))
    if earlier is not None and earlier.num_rows:
        parts.append(earlier.take(rng.choice(earlier.num_rows, int(earlier.num_rows * replays))))
    mixed = pa.concat_tables([p.select(["topic", "key", "value"]) for p in parts])
    return mixed.take(rng.permutation(mixed.num_rows))


class Capture:
    """The connector: an initial snapshot, then the change log from where it left off."""

    def __init__(self, source: Source, lake: Lakehouse, name: str = EVENTS):
        self.source, self.lake, self.name = source, lake, name

    @property
    def offset(self) -> int | None:
        """The last source LSN landed in bronze (None before the snapshot)."""
        if not self.lake.exists(self.name):
            return None
        for commit in self.lake.delta(self.name).history():
            if OFFSET_KEY in commit:
                return int(commit[OFFSET_KEY])
        return None

    @property
    def batch_id(self) -> int:
        """The last batch id landed (-1 before the first)."""
        last = self.lake.transaction_version(self.name, APP_ID)
        return -1 if last is None else last

    def snapshot(self) -> int:
        """Land the initial snapshot as the next batch; streaming continues after its LSN."""
        records, lsn = snapshot(self.source)
        batch = self.batch_id + 1
        land(self.lake, records, batch, lsn, self.name)
        return batch

    def poll(
        self, max_events: int | None = None, shuffle: bool = False, seed: int = 0
    ) -> int | None:
        """Land the changes after the offset as the next batch (None when there are none).
        `shuffle=True` delivers them as `disorder` would: shuffled, duplicated, with replays."""
        if self.offset is None:
            raise WorkbenchError(
                "The connector has no offset yet: streaming must start after a snapshot.",
                "Order: capture.snapshot() once, then capture.poll() as often as you like.",
                "call capture.snapshot() first.",
            )
        records, last = changes(self.source, self.offset, max_events)
        if records.num_rows == 0:
            return None
        batch = self.batch_id + 1
        if shuffle:
            earlier = self.lake.delta(self.name).to_pyarrow_table(
                filters=[("batch_id", ">", 0)], columns=["topic", "key", "value"]
            )
            records = disorder(records, earlier, seed=seed + batch)
        land(self.lake, records, batch, last, self.name)
        return batch

    def batch(self, batch_id: int) -> pa.Table:
        """The records of one landed batch, as they were delivered."""
        return self.lake.delta(self.name).to_pyarrow_table(filters=[("batch_id", "=", batch_id)])


def snapshot_diff(
    old: ibis.Table, new: ibis.Table, key: list[str] | tuple[str, ...], lsn: int, commit_ts
) -> ibis.Table:
    """Change events inferred by comparing two snapshots of a table without a log: `c` for new
    keys, `d` for vanished ones (with the old values), `u` for rows whose values differ.
    Whatever happened between the snapshots and was undone is invisible to it."""
    key = list(key)
    values = [c for c in new.columns if c not in key]
    o = old.rename({f"_o_{c}": c for c in old.columns})
    n = new.rename({f"_n_{c}": c for c in new.columns})
    joined = o.outer_join(n, [o[f"_o_{k}"] == n[f"_n_{k}"] for k in key])
    gone, born = joined[f"_o_{key[0]}"].isnull(), joined[f"_n_{key[0]}"].isnull()
    changed = ibis.or_(
        *[~joined[f"_o_{c}"].identical_to(joined[f"_n_{c}"]) for c in values], ibis.literal(False)
    )
    op = ibis.cases((gone, "c"), (born, "d"), (changed, "u"), else_=None)
    columns = {
        c: ibis.cases((born, joined[f"_o_{c}"]), else_=joined[f"_n_{c}"]) for c in key + values
    }
    events = joined.select(**columns, _op=op).filter(lambda t: t._op.notnull())
    return events.mutate(
        _lsn=ibis.literal(lsn, "int64"),
        _tx_id=ibis.null("int64"),
        _commit_ts=ibis.literal(commit_ts, "timestamp('UTC', 6)"),
    )
