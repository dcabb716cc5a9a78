"""A lakehouse in a folder: Delta tables by layer, read on any engine, written by the engine that built them.

All Delta I/O goes through deltalake (delta-rs), so time travel, the change data feed and
transaction ids behave the same on every engine, offline.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import ibis
import pandas as pd
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake import exceptions as delta_errors

from workbench import backends, scan
from workbench.errors import (
    ConcurrentWriteError,
    InvalidTableNameError,
    SchemaMismatchError,
    TableNotFoundError,
    WorkbenchError,
)

LAYERS = ("bronze", "silver", "gold", "ops")
"""Medallion layers, plus `ops` for the workbench's own bookkeeping."""
CDF_LAYERS = ("silver", "gold")
"""Layers whose tables record a change data feed from their first commit."""
_NAME = re.compile(r"^(?P<layer>[a-z]+)\.(?P<table>[a-z_][a-z0-9_]*)$")
ENGINE_KEY = "workbench.engine"
"""Commit metadata key recording which engine computed the rows of a write."""

Data = ibis.Table | pa.Table | pa.RecordBatchReader


class Lakehouse:
    """A folder of Delta tables, `root/<layer>/<table>`, named `layer.table`."""

    def __init__(self, root: str | Path = "lake", con: ibis.BaseBackend | None = None):
        self.root = Path(root).resolve()
        self._con = con

    def __repr__(self) -> str:
        return f"Lakehouse({str(self.root)!r}, tables={len(self.tables())})"

    # -- names ---------------------------------------------------------------------------

    @property
    def con(self) -> ibis.BaseBackend:
        """The default connection for reads that name none (DuckDB unless given)."""
        if self._con is None:
            self._con = backends.connect(backends.DEFAULT)
        return self._con

    def path(self, name: str) -> Path:
        """The folder of table `name`, refusing names that are not `layer.table`."""
        match = _NAME.match(name) if isinstance(name, str) else None
        if match is None or match["layer"] not in LAYERS:
            raise InvalidTableNameError(
                f"Invalid table name {name!r}.",
                f"A table is named `layer.table`: layer one of {', '.join(LAYERS)}; table of "
                "lowercase letters, digits and underscores, starting with a letter.",
                "for example 'silver.orders'; paths such as '../x' or '/tmp/x' are refused.",
            )
        path = (self.root / match["layer"] / match["table"]).resolve()
        if self.root not in path.parents:  # belt and braces: the pattern already forbids it
            raise InvalidTableNameError(f"Table {name!r} escapes the lake root {self.root}.")
        return path

    def exists(self, name: str) -> bool:
        """True when table `name` has at least one commit."""
        return (self.path(name) / "_delta_log").is_dir()

    def tables(self, layer: str | None = None) -> list[str]:
        """The names of the tables that exist, optionally in one layer, sorted."""
        layers = LAYERS if layer is None else (layer,)
        found = []
        for lay in layers:
            folder = self.root / lay
            if folder.is_dir():
                found += [
                    f"{lay}.{p.name}" for p in folder.iterdir() if (p / "_delta_log").is_dir()
                ]
        return sorted(found)

    def delta(self, name: str, version: int | dt.datetime | None = None) -> DeltaTable:
        """The deltalake `DeltaTable` of `name` at `version` (latest by default)."""
        if not self.exists(name):
            existing = self.tables()
            raise TableNotFoundError(
                f"Table {name!r} does not exist in {self.root}.",
                f"Existing tables: {', '.join(existing) if existing else 'none yet'}.",
                "create it with lake.write(name, expr), or generate the bronze tables with "
                "wb.datasets.generate(lake).",
            )
        table = DeltaTable(str(self.path(name)))
        if version is None:
            return table
        latest = table.version()
        try:
            if isinstance(version, dt.datetime):
                when = version if version.tzinfo else version.replace(tzinfo=dt.UTC)
                table.load_as_version(when)
            else:
                table.load_as_version(int(version))
        except Exception as exc:
            raise WorkbenchError(
                f"Version {version!r} of {name!r} cannot be read: {exc}",
                f"Versions of {name!r} that exist: 0 to {latest}, unless vacuumed.",
                "lake.history(name) lists the versions with their timestamps.",
            ) from exc
        missing = [f for f in table.file_uris() if "://" not in f and not Path(f).exists()]
        if missing:
            raise WorkbenchError(
                f"Version {table.version()} of {name!r} refers to {len(missing)} data file(s) "
                f"that no longer exist, e.g. {missing[0]}.",
                "Time travel reads a version's files; vacuum deletes the files of old versions.",
                "read a version younger than the last vacuum's retention (lake.history(name)).",
            )
        return table

    # -- reads ---------------------------------------------------------------------------

    def table(
        self,
        name: str,
        con: ibis.BaseBackend | None = None,
        version: int | dt.datetime | None = None,
    ) -> ibis.Table:
        """Table `name` at `version` as an `ibis.Table` bound to `con` (lazy where the engine allows)."""
        con = self.con if con is None else con
        snapshot = self.delta(name, version)
        view = f"{name.replace('.', '__')}__v{snapshot.version()}"
        return scan.register(con, view, snapshot)

    def history(self, name: str, limit: int | None = None) -> pd.DataFrame:
        """The table's commits, newest first: version, time, operation, engine, metrics."""
        rows = []
        for commit in self.delta(name).history(limit):
            rows.append(
                {
                    "version": commit.get("version"),
                    "timestamp": pd.Timestamp(commit.get("timestamp", 0), unit="ms", tz="UTC"),
                    "operation": commit.get("operation"),
                    "engine": commit.get(ENGINE_KEY),
                    "parameters": commit.get("operationParameters"),
                    "metrics": commit.get("operationMetrics"),
                }
            )
        return pd.DataFrame(rows)

    def version(self, name: str) -> int:
        """The table's latest version."""
        return self.delta(name).version()

    def changes(
        self,
        name: str,
        since: int = 0,
        until: int | None = None,
        con: ibis.BaseBackend | None = None,
    ) -> ibis.Table:
        """The change data feed from version `since` (inclusive) to `until`: rows with
        `_change_type` (insert, update_preimage, update_postimage, delete), `_commit_version`
        and `_commit_timestamp`."""
        con = self.con if con is None else con
        table = self.delta(name)
        if table.metadata().configuration.get("delta.enableChangeDataFeed") != "true":
            raise WorkbenchError(
                f"Table {name!r} does not record a change data feed.",
                f"Silver and gold tables record one from their creation; {name!r} does not.",
                "create the table with lake.write(..., change_data_feed=True).",
            )
        latest = table.version()
        if since > latest:
            feed = _empty_feed(scan.arrow_schema(table))
        else:
            feed = pa.table(table.load_cdf(starting_version=since, ending_version=until))
        view = (
            f"{name.replace('.', '__')}__changes_{since}_{until if until is not None else latest}"
        )
        return con.create_table(view, feed, overwrite=True)

    def files(self, name: str, version: int | None = None) -> pd.DataFrame:
        """The snapshot's data files with their size, row count, partition values and
        per-column min / max / null-count statistics, as the Delta log records them."""
        actions = pa.table(self.delta(name, version).get_add_actions(flatten=True))
        return actions.to_pandas()

    def transaction_version(self, name: str, app_id: str) -> int | None:
        """The last batch id committed to `name` by application `app_id` (None if none)."""
        if not self.exists(name):
            return None
        return self.delta(name).transaction_version(app_id)

    # -- writes --------------------------------------------------------------------------

    def write(
        self,
        name: str,
        data: Data,
        mode: Literal["append", "overwrite"] = "append",
        partition_by: list[str] | str | None = None,
        schema_mode: Literal["merge", "overwrite"] | None = None,
        change_data_feed: bool | None = None,
        transaction: tuple[str, int] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Write `data` into table `name` and return the new version.

        An Ibis expression runs on the engine that built it, streamed as Arrow batches into
        Delta. `transaction=(app_id, batch_id)` makes the write idempotent: a batch id the
        table already holds for that app id is skipped (the current version is returned).
        """
        if mode not in ("append", "overwrite"):
            raise WorkbenchError(
                f"Unknown write mode {mode!r}.",
                "Allowed modes: 'append', 'overwrite'.",
                "use lake.merge(...) to upsert or delete rows.",
            )
        path = self.path(name)
        # Open the table once: the transaction check, the write and the new version all use it
        # (each open replays the Delta log; a stream writes every few seconds).
        table = DeltaTable(str(path)) if self.exists(name) else None
        if transaction is not None and table is not None and _holds(table, transaction):
            return table.version()
        engine, reader = _to_reader(data)
        reader = _deltafy(reader)
        layer = name.split(".")[0]
        cdf = layer in CDF_LAYERS if change_data_feed is None else change_data_feed
        props = _commit_properties(engine, transaction, metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_deltalake(
                str(path) if table is None else table,
                reader,
                mode=mode,
                partition_by=partition_by,
                schema_mode=schema_mode,
                configuration={"delta.enableChangeDataFeed": "true"} if cdf else None,
                commit_properties=props,
            )
        except delta_errors.SchemaMismatchError as exc:
            raise self._schema_error(name, reader.schema, exc) from exc
        except delta_errors.CommitFailedError as exc:
            raise _conflict(name, exc) from exc
        except (delta_errors.DeltaProtocolError, delta_errors.DeltaError) as exc:
            if "validation" not in str(exc) and "nvariant" not in str(exc):
                raise
            raise _constraint_error(name, exc) from exc
        return self.version(name) if table is None else table.version()

    def merge(
        self,
        name: str,
        source: Data,
        on: list[str] | str,
        when_matched: Literal["update", "ignore"] = "update",
        when_not_matched: Literal["insert", "ignore"] = "insert",
        delete_when: str | ibis.Value | None = None,
        delete_missing: bool = False,
        update_if: str | None = None,
        schema_mode: Literal["merge"] | None = None,
        transaction: tuple[str, int] | None = None,
        streamed: bool = True,
    ) -> dict[str, int]:
        """Upsert `source` into table `name` on the key columns `on` (a Delta MERGE).

        `delete_when` (a boolean column of the source, or an expression over it) deletes the
        matched target rows instead (a named column is consumed, not written); `delete_missing` deletes target rows absent from the
        source; `update_if` is an extra SQL condition over `s.` (source) and `t.` (target).
        Creates the table from `source` when it does not exist. Returns the row metrics.
        `streamed=False` holds the source in memory so the merge can skip the target files
        outside the source's key range: use it for batches that touch few files.
        """
        from workbench import merge as merging

        keys = [on] if isinstance(on, str) else list(on)
        if transaction is not None and self.exists(name) and _holds(self.delta(name), transaction):
            return merging.skipped_metrics()
        if isinstance(source, ibis.Table):
            source = merging.with_delete_flag(source, delete_when)
        elif isinstance(delete_when, str):
            source = source if isinstance(source, pa.Table) else source.read_all()
            source = source.rename_columns(
                [merging.FLAG if c == delete_when else c for c in source.column_names]
            )
        elif delete_when is not None:
            raise WorkbenchError(
                "delete_when must name a boolean column when the source is an Arrow table.",
                "Allowed: a column name, or an Ibis expression over an ibis.Table source.",
                "pass delete_when='is_deleted'.",
            )
        delete_when = merging.FLAG if delete_when is not None else None
        engine, reader = _to_reader(source)
        reader = _deltafy(reader)
        merging.check_keys(name, keys, reader.schema)
        props = _commit_properties(engine, transaction, None)
        if not self.exists(name):
            return merging.create_from(self, name, reader, when_not_matched, delete_when, props)
        try:
            return merging.run(
                self.delta(name),
                reader,
                keys,
                when_matched,
                when_not_matched,
                delete_when,
                delete_missing,
                update_if,
                schema_mode,
                props,
                streamed=streamed,
            )
        except delta_errors.SchemaMismatchError as exc:
            raise self._schema_error(name, reader.schema, exc) from exc
        except delta_errors.CommitFailedError as exc:
            raise _conflict(name, exc) from exc

    def delete(self, name: str, predicate: str | None = None) -> dict[str, int]:
        """Delete the rows matching a SQL `predicate` (all rows when None); returns metrics."""
        return self.delta(name).delete(predicate)

    # -- maintenance ---------------------------------------------------------------------

    def optimize(
        self, name: str, z_order: list[str] | None = None, target_size: int | None = None
    ) -> dict[str, Any]:
        """Compact small files, or rewrite them clustered by `z_order` columns; returns metrics."""
        optimizer = self.delta(name).optimize
        if z_order:
            return optimizer.z_order(z_order, target_size=target_size)
        return optimizer.compact(target_size=target_size)

    def vacuum(
        self,
        name: str,
        retention_hours: int = 168,
        dry_run: bool = False,
        enforce_retention: bool = True,
    ) -> list[str]:
        """Delete files no longer in any version younger than `retention_hours`; returns them.

        Time travel to versions older than the retention stops working once their files are gone.
        """
        return self.delta(name).vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            enforce_retention_duration=enforce_retention,
        )

    def restore(self, name: str, version: int | dt.datetime) -> dict[str, Any]:
        """Make an old version the newest one again (a new commit; history is kept)."""
        return self.delta(name).restore(version)

    def add_constraint(self, name: str, constraint: str, expression: str) -> None:
        """Add a CHECK constraint (a SQL expression every row must satisfy, now and later)."""
        try:
            self.delta(name).alter.add_constraint({constraint: expression})
        except delta_errors.DeltaProtocolError as exc:
            raise _constraint_error(name, exc) from exc

    def constraints(self, name: str) -> dict[str, str]:
        """The table's CHECK constraints, by name."""
        prefix = "delta.constraints."
        config = self.delta(name).metadata().configuration
        return {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}

    # -- helpers -------------------------------------------------------------------------

    def _schema_error(self, name: str, incoming: pa.Schema, exc: Exception) -> SchemaMismatchError:
        current = scan.arrow_schema(self.delta(name))
        return SchemaMismatchError(
            f"The data written to {name!r} does not match the table's schema ({exc}).\n"
            f"Table schema:\n{_indent(current)}\nIncoming schema:\n{_indent(incoming)}",
            "A write must keep the table's columns and types, unless schema evolution is asked for.",
            "pass schema_mode='merge' to add new columns (schema evolution), or "
            "mode='overwrite', schema_mode='overwrite' to replace the schema.",
        )


def _to_reader(data: Data) -> tuple[str, pa.RecordBatchReader]:
    """Arrow batches of `data`, computed by the engine that built it, and that engine's name."""
    if isinstance(data, ibis.Table):
        con = data._find_backend(use_default=True)
        return con.name, _as_declared(con.to_pyarrow_batches(data))
    if isinstance(data, pa.Table):
        return "arrow", data.to_reader()
    if isinstance(data, pa.RecordBatchReader):
        return "arrow", data
    raise WorkbenchError(
        f"Cannot write an object of type {type(data).__name__}.",
        "Allowed: an ibis.Table, a pyarrow.Table or a pyarrow.RecordBatchReader.",
        "wrap a pandas or polars DataFrame with con.create_table(...) or ibis.memtable(df).",
    )


def _as_declared(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Batches cast to the schema the reader declares.

    Ibis 12's DuckDB reader declares int64 for an integer literal column (`ibis.literal(2,
    "int64")`) but yields int32 batches; passed on as they are, Delta reads them as int64 garbage.
    """
    schema = reader.schema

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield batch if batch.schema == schema else batch.cast(schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _delta_type(t: pa.DataType) -> pa.DataType:
    """The nearest Arrow type Delta stores: microsecond timestamps, signed ints, plain strings."""
    if pa.types.is_timestamp(t) and t.unit != "us":
        return pa.timestamp("us", tz=t.tz)
    if pa.types.is_unsigned_integer(t):
        return pa.int64()
    if t == pa.string_view() or pa.types.is_large_string(t):
        return pa.string()
    if t == pa.binary_view() or pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_dictionary(t):
        return _delta_type(t.value_type)
    return t


def _deltafy(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Cast batches to types Delta stores, lazily, so nothing is materialized."""
    target = pa.schema([f.with_type(_delta_type(f.type)) for f in reader.schema])
    if target == reader.schema:
        return reader

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield batch.cast(target)

    return pa.RecordBatchReader.from_batches(target, batches())


def _commit_properties(
    engine: str, transaction: tuple[str, int] | None, metadata: Mapping[str, str] | None
) -> CommitProperties:
    custom = {ENGINE_KEY: engine, **(metadata or {})}
    txns = [Transaction(app_id=transaction[0], version=transaction[1])] if transaction else None
    return CommitProperties(custom_metadata=custom, app_transactions=txns)


def _empty_feed(schema: pa.Schema) -> pa.Table:
    extra = [
        pa.field("_change_type", pa.string()),
        pa.field("_commit_version", pa.int64()),
        pa.field("_commit_timestamp", pa.timestamp("ms", tz="UTC")),
    ]
    return pa.schema(list(schema) + extra).empty_table()


def _holds(table: DeltaTable, transaction: tuple[str, int]) -> bool:
    """True when `table` already committed batch `transaction = (app_id, batch_id)` (or later)."""
    last = table.transaction_version(transaction[0])
    return last is not None and last >= transaction[1]


def _conflict(name: str, exc: Exception) -> ConcurrentWriteError:
    return ConcurrentWriteError(
        f"Another writer committed to {name!r} first, touching the same data: {exc}",
        "Delta commits are optimistic: of two writers that start from the same version and "
        "change the same files, the second one fails; blind appends both succeed.",
        "read the table again and retry the write.",
    )


def _constraint_error(name: str, exc: Exception) -> WorkbenchError:
    return WorkbenchError(
        f"A write to {name!r} was refused by the Delta protocol: {exc}",
        "Every row must satisfy the table's CHECK constraints (lake.constraints(name)).",
        "filter or quarantine the failing rows first (workbench.quality).",
    )


def _indent(schema: pa.Schema) -> str:
    return "\n".join(f"  {field.name}: {field.type}" for field in schema)
