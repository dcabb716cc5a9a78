"""Delta MERGE for the lakehouse: upsert, delete by flag, delete missing rows, with metrics."""

from __future__ import annotations

import ibis
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake

from workbench.errors import WorkbenchError

FLAG = "__wb_delete"
"""The source column carrying `delete_when`; never written to the target."""

_METRICS = {
    "source_rows": "num_source_rows",
    "inserted": "num_target_rows_inserted",
    "updated": "num_target_rows_updated",
    "deleted": "num_target_rows_deleted",
    "copied": "num_target_rows_copied",
    "files_added": "num_target_files_added",
    "files_removed": "num_target_files_removed",
    "files_scanned": "num_target_files_scanned",
}


def with_delete_flag(source: ibis.Table, delete_when) -> ibis.Table:
    """The source with the boolean delete flag as a column, when `delete_when` is given."""
    if delete_when is None:
        return source
    flag = source[delete_when] if isinstance(delete_when, str) else delete_when
    if not isinstance(flag, ibis.Value) or not flag.type().is_boolean():
        got = flag.type() if isinstance(flag, ibis.Value) else repr(flag)
        raise WorkbenchError(
            f"delete_when must be boolean, got {got}.",
            "Allowed: the name of a boolean column of the source, or a boolean expression over it.",
            "for example delete_when=src.op == 'd'.",
        )
    source = source.mutate(**{FLAG: flag.fill_null(False)})
    if isinstance(delete_when, str):
        source = source.drop(delete_when)
    return source


def check_keys(name: str, keys: list[str], schema: pa.Schema) -> None:
    """Refuse a merge whose key columns are missing from the source."""
    missing = [k for k in keys if k not in schema.names]
    if not keys or missing:
        raise WorkbenchError(
            f"Merge into {name!r}: key columns {missing or keys} are not in the source.",
            f"Source columns: {', '.join(n for n in schema.names if n != FLAG)}.",
            "pass on=[...] with the columns that identify a row in both tables.",
        )


def skipped_metrics() -> dict[str, int]:
    """Metrics of a merge skipped because its transaction was already committed."""
    return {key: 0 for key in _METRICS} | {"skipped": 1}


def _quote(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


def run(
    target: DeltaTable,
    reader: pa.RecordBatchReader,
    keys: list[str],
    when_matched: str,
    when_not_matched: str,
    delete_when: str | None,
    delete_missing: bool,
    update_if: str | None,
    schema_mode: str | None,
    props: CommitProperties,
    streamed: bool = True,
) -> dict[str, int]:
    """Run one MERGE of `reader` into `target` and return friendly metrics.

    `streamed=False` reads the source into memory first: delta-rs then prunes the target's
    files by the source's key range before the join (measured: 100k hot keys into 10M rows,
    1.0 s instead of 12.7 s), at the cost of holding the source in memory.
    """
    _check_choice("when_matched", when_matched, ("update", "ignore"))
    _check_choice("when_not_matched", when_not_matched, ("insert", "ignore"))
    columns = [c for c in reader.schema.names if c != FLAG]
    values = {_quote(c): f"s.{_quote(c)}" for c in columns}
    predicate = " AND ".join(f"t.{_quote(k)} = s.{_quote(k)}" for k in keys)
    merger = target.merge(
        reader if streamed else reader.read_all(),
        predicate=predicate,
        source_alias="s",
        target_alias="t",
        merge_schema=schema_mode == "merge",
        streamed_exec=streamed,
        commit_properties=props,
    )
    keep = None
    if delete_when is not None:
        merger = merger.when_matched_delete(predicate=f"s.{FLAG}")
        keep = f"NOT s.{FLAG}"
    if when_matched == "update":
        condition = " AND ".join(c for c in (keep, update_if and f"({update_if})") if c) or None
        merger = merger.when_matched_update(values, predicate=condition)
    if when_not_matched == "insert":
        merger = merger.when_not_matched_insert(values, predicate=keep)
    if delete_missing:
        merger = merger.when_not_matched_by_source_delete()
    raw = merger.execute()
    return {key: int(raw.get(source, 0)) for key, source in _METRICS.items()}


def create_from(lake, name, reader, when_not_matched, delete_when, props) -> dict[str, int]:
    """A merge into a missing table: the source rows that would be inserted become the table."""
    table = reader.read_all()
    source_rows = table.num_rows
    if delete_when is not None:
        table = table.filter(pa.compute.invert(table[FLAG])).drop_columns([FLAG])
    if when_not_matched != "insert":
        table = table.schema.empty_table()
    layer = name.split(".")[0]
    from workbench.lakehouse import CDF_LAYERS

    path = lake.path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_deltalake(
        str(path),
        table,
        mode="append",
        configuration={"delta.enableChangeDataFeed": "true"} if layer in CDF_LAYERS else None,
        commit_properties=props,
    )
    files = len(DeltaTable(str(path)).file_uris())
    metrics = {key: 0 for key in _METRICS}
    return metrics | {"source_rows": source_rows, "inserted": table.num_rows, "files_added": files}


def _check_choice(argument: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise WorkbenchError(
            f"Unknown {argument}={value!r}.",
            f"Allowed: {', '.join(repr(a) for a in allowed)}.",
            "see help(Lakehouse.merge).",
        )
