"""A real OLTP source for change data capture: a SQLite file whose triggers log every change.

SQLite gives triggers neither a transaction id nor a commit time, so the writer records them:
`Source.transaction()` opens a row in `_cdc_tx`, the triggers stamp each change with it, and the
commit time (from the source's simulated clock) is set just before COMMIT. The log's
AUTOINCREMENT key is the log sequence number (LSN): SQLite serializes writers, so LSN order is
commit order, as in a real database's write-ahead log.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from workbench import datasets
from workbench.errors import WorkbenchError

KEYS = {
    "customers": ("customer_id",),
    "products": ("product_id",),
    "orders": ("order_id",),
    "order_lines": ("order_id", "line_no"),
    "payments": ("payment_id",),
}
"""The retail OLTP tables and their primary keys."""
START_MS = int(datasets.SIMULATED_NOW.timestamp() * 1000)
"""The source's simulated clock starts where the generated data ends."""

_SQL_TYPES = {"INTEGER": pa.int64(), "REAL": pa.float64(), "TEXT": pa.string(),
              "TIMESTAMP": pa.timestamp("us", tz="UTC"), "BOOLEAN": pa.bool_()}  # fmt: skip
_LOG = """
CREATE TABLE IF NOT EXISTS _cdc_tx (tx_id INTEGER PRIMARY KEY AUTOINCREMENT, commit_ms INTEGER);
CREATE TABLE IF NOT EXISTS _cdc_context (tx_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS _cdc_log (
    lsn INTEGER PRIMARY KEY AUTOINCREMENT, tx_id INTEGER NOT NULL, tbl TEXT NOT NULL,
    op TEXT NOT NULL, key TEXT NOT NULL, before TEXT, after TEXT);
CREATE TABLE IF NOT EXISTS _cdc_meta (name TEXT PRIMARY KEY, value INTEGER);
"""


@dataclass(frozen=True)
class TableSpec:
    """What a consumer needs to know about a source table: its key and column types."""

    key: tuple[str, ...]
    schema: pa.Schema


Catalog = Mapping[str, TableSpec]


def sql_type(dtype: pa.DataType) -> str:
    """The SQLite column type that stores `dtype` (timestamps as epoch microseconds)."""
    if pa.types.is_integer(dtype):
        return "INTEGER"
    if pa.types.is_floating(dtype):
        return "REAL"
    if pa.types.is_timestamp(dtype):
        return "TIMESTAMP"
    if pa.types.is_boolean(dtype):
        return "BOOLEAN"
    return "TEXT"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _json_value(ref: str, declared: str) -> str:
    """SQL for a column's JSON value: reals with the fewest digits that round-trip exactly
    (SQLite's json_object keeps only 15), timestamps as epoch micros (Debezium MicroTimestamp)."""
    if declared != "REAL":
        return ref
    digits = [f"printf('%!.{d}g', {ref})" for d in (15, 16, 17)]
    exact = " ".join(f"WHEN CAST({d} AS REAL) = {ref} THEN json({d})" for d in digits[:2])
    return f"CASE WHEN {ref} IS NULL THEN NULL {exact} ELSE json({digits[2]}) END"


class Source:
    """A SQLite OLTP database with trigger-based change capture and a simulated clock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise WorkbenchError(
                f"No source database at {str(self.path)!r}.",
                "A source is a SQLite file made by Source.create(path, ...).",
                "create it with workbench.cdc_source.Source.create(path, scale=0.01, seed=42).",
            )
        # Autocommit mode: transactions are opened and closed explicitly by `transaction()`.
        self.connection = sqlite3.connect(self.path, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode = WAL")

    def __repr__(self) -> str:
        return f"Source({str(self.path)!r}, tables={self.tables()}, lsn={self.lsn})"

    @classmethod
    def create(
        cls,
        path: str | Path,
        scale: float = 0.01,
        seed: int = 42,
        tables: list[str] | None = None,
        rows: Mapping[str, pa.Table] | None = None,
    ) -> Source:
        """A fresh source at `path` holding the retail tables at `(scale, seed)`, or the given
        `rows` per table, with the change log and its triggers installed (an existing file is
        replaced). The initial rows are not changes: a snapshot captures them."""
        names = list(rows) if rows is not None else list(tables or KEYS)
        unknown = [n for n in names if n not in KEYS]
        if unknown:
            raise WorkbenchError(
                f"Unknown source table(s) {unknown}.",
                f"Allowed: {', '.join(KEYS)}.",
                "pass tables=[...] with retail table names.",
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        sqlite3.connect(path).close()
        source = cls(path)
        db = source.connection
        db.executescript(_LOG)
        db.execute("INSERT INTO _cdc_meta VALUES ('start_ms', ?)", (START_MS,))
        for name in names:
            data = rows[name] if rows is not None else datasets.table(name, scale, seed)
            source._load(name, data)
        source.install_triggers()
        return source

    def _load(self, name: str, data: pa.Table) -> None:
        columns = ", ".join(f"{_ident(f.name)} {sql_type(f.type)}" for f in data.schema)
        key = ", ".join(_ident(k) for k in KEYS[name])
        db = self.connection
        db.execute(f"CREATE TABLE {_ident(name)} ({columns}, PRIMARY KEY ({key}))")
        # Loading a database is the edge: sqlite3 takes Python values, one tuple per row.
        arrays = []
        for column in data.columns:
            if pa.types.is_timestamp(column.type):
                column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
            arrays.append(column.to_pylist())
        marks = ", ".join("?" * data.num_columns)
        db.execute("BEGIN")
        db.executemany(f"INSERT INTO {_ident(name)} VALUES ({marks})", zip(*arrays, strict=True))
        db.execute("COMMIT")

    # -- catalog ----------------------------------------------------------------------------

    def tables(self) -> list[str]:
        """The captured tables (those with a primary key among the retail tables)."""
        found = self.connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\'"
        ).fetchall()
        return sorted(n for (n,) in found if n in KEYS)

    def _columns(self, table: str) -> list[tuple[str, str]]:
        info = self.connection.execute(f"PRAGMA table_info({_ident(table)})").fetchall()
        return [(row[1], row[2].upper()) for row in info]

    def schema(self, table: str) -> pa.Schema:
        """The table's columns as Arrow types (TIMESTAMP columns hold epoch microseconds)."""
        self._check_table(table)
        return pa.schema([(c, _SQL_TYPES.get(t, pa.string())) for c, t in self._columns(table)])

    def catalog(self) -> dict[str, TableSpec]:
        """Key and column types of every captured table: what a schema registry would hold."""
        return {t: TableSpec(KEYS[t], self.schema(t)) for t in self.tables()}

    def _check_table(self, table: str) -> None:
        if table not in self.tables():
            raise WorkbenchError(
                f"The source has no table {table!r}.",
                f"Source tables: {', '.join(self.tables())}.",
                "create the source with that table: Source.create(path, tables=[...]).",
            )

    # -- reads ------------------------------------------------------------------------------

    def read(self, table: str, connection: sqlite3.Connection | None = None) -> pa.Table:
        """The table's current rows as Arrow, typed by `schema(table)` (sorted by key)."""
        schema = self.schema(table)
        db = connection or self.connection
        order = ", ".join(_ident(k) for k in KEYS[table])
        select = ", ".join(_ident(n) for n in schema.names)
        rows = db.execute(f"SELECT {select} FROM {_ident(table)} ORDER BY {order}").fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
        arrays = []
        for field, values in zip(schema, columns, strict=True):
            if pa.types.is_timestamp(field.type):
                arrays.append(pa.array(values, pa.int64()).cast(field.type))
            else:
                arrays.append(pa.array(values, field.type))
        return pa.Table.from_arrays(arrays, schema=schema)

    @property
    def lsn(self) -> int:
        """The last log sequence number written (0 before any change)."""
        (lsn,) = self.connection.execute("SELECT coalesce(max(lsn), 0) FROM _cdc_log").fetchone()
        return lsn

    @property
    def now_ms(self) -> int:
        """The simulated clock: the last commit time, in epoch milliseconds."""
        (now,) = self.connection.execute(
            "SELECT coalesce((SELECT max(commit_ms) FROM _cdc_tx),"
            " (SELECT value FROM _cdc_meta WHERE name = 'start_ms'))"
        ).fetchone()
        return now

    def log(self, after_lsn: int = 0, limit: int | None = None) -> pa.Table:
        """Raw change-log rows with `lsn > after_lsn`, with their transaction's commit time."""
        rows = self.connection.execute(
            "SELECT l.lsn, l.tx_id, t.commit_ms, l.tbl, l.op, l.key, l.before, l.after "
            "FROM _cdc_log l JOIN _cdc_tx t USING (tx_id) WHERE l.lsn > ? ORDER BY l.lsn LIMIT ?",
            (after_lsn, -1 if limit is None else limit),
        ).fetchall()
        names = ["lsn", "tx_id", "commit_ms", "table", "op", "key", "before", "after"]
        types = [pa.int64()] * 3 + [pa.string()] * 5
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
        return pa.table({n: pa.array(c, t) for n, c, t in zip(names, columns, types, strict=True)})

    # -- writes -----------------------------------------------------------------------------

    @contextmanager
    def transaction(self, advance_ms: int = 1000) -> Iterator[sqlite3.Connection]:
        """A write transaction whose changes the triggers log with its id; committed at the
        simulated clock plus `advance_ms`, rolled back (with its log rows) on error."""
        db = self.connection
        commit_ms = self.now_ms + max(1, int(advance_ms))
        db.execute("BEGIN IMMEDIATE")
        try:
            tx_id = db.execute("INSERT INTO _cdc_tx (commit_ms) VALUES (NULL)").lastrowid
            db.execute("INSERT INTO _cdc_context VALUES (?)", (tx_id,))
            yield db
            db.execute("DELETE FROM _cdc_context")
            db.execute("UPDATE _cdc_tx SET commit_ms = ? WHERE tx_id = ?", (commit_ms, tx_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def add_column(self, table: str, column: str, declared: str = "TEXT") -> None:
        """ALTER TABLE ADD COLUMN (nullable, no default) and reinstall the triggers, so the
        new column appears in the change events from now on."""
        self._check_table(table)
        if declared.upper() not in _SQL_TYPES:
            raise WorkbenchError(
                f"Unknown column type {declared!r}.",
                f"Allowed: {', '.join(_SQL_TYPES)}.",
                "pass declared='TEXT' for a string column.",
            )
        self.connection.execute(
            f"ALTER TABLE {_ident(table)} ADD COLUMN {_ident(column)} {declared.upper()}"
        )
        self.install_triggers()

    def install_triggers(self) -> None:
        """(Re)create the insert, update and delete triggers of every captured table."""
        db = self.connection
        db.execute("BEGIN")
        for table in self.tables():
            for statement in _triggers(table, KEYS[table], self._columns(table)):
                db.execute(statement)
        db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def row_json(prefix: str, columns: list[tuple[str, str]]) -> str:
    """SQL building a JSON object of a row's columns, e.g. `NEW.` in a trigger."""
    pairs = ", ".join(f"{_text(c)}, {_json_value(prefix + _ident(c), t)}" for c, t in columns)
    return f"json_object({pairs})"


def _triggers(table: str, key: tuple[str, ...], columns: list[tuple[str, str]]) -> list[str]:
    keyed = [(c, t) for c, t in columns if c in key]
    guard = (
        "SELECT RAISE(ABORT, 'a change outside a CDC transaction: write through "
        "Source.transaction()') WHERE NOT EXISTS (SELECT 1 FROM _cdc_context);"
    )

    def log(op: str, image: str) -> str:
        before = row_json("OLD.", columns) if op in ("u", "d") else "NULL"
        after = row_json("NEW.", columns) if op in ("c", "u") else "NULL"
        return (
            "INSERT INTO _cdc_log (tx_id, tbl, op, key, before, after) VALUES ("
            f"(SELECT tx_id FROM _cdc_context), {_text(table)}, '{op}', "
            f"{row_json(image, keyed)}, {before}, {after});"
        )

    same_key = " AND ".join(f"OLD.{_ident(k)} IS NEW.{_ident(k)}" for k in key)
    name = f"_cdc_{table}"
    drops = [f"DROP TRIGGER IF EXISTS {_ident(f'{name}_{s}')}" for s in ("c", "u", "k", "d")]
    return drops + [
        f"CREATE TRIGGER {_ident(name + '_c')} AFTER INSERT ON {_ident(table)} "
        f"BEGIN {guard} {log('c', 'NEW.')} END",
        f"CREATE TRIGGER {_ident(name + '_u')} AFTER UPDATE ON {_ident(table)} "
        f"WHEN {same_key} BEGIN {guard} {log('u', 'NEW.')} END",
        # A changed primary key is a delete of the old key and a create of the new one,
        # as Debezium emits it.
        f"CREATE TRIGGER {_ident(name + '_k')} AFTER UPDATE ON {_ident(table)} "
        f"WHEN NOT ({same_key}) BEGIN {guard} "
        f"{log('d', 'OLD.')} {log('c', 'NEW.')} END",
        f"CREATE TRIGGER {_ident(name + '_d')} AFTER DELETE ON {_ident(table)} "
        f"BEGIN {guard} {log('d', 'OLD.')} END",
    ]
