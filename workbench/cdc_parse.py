"""Parsing change envelopes at the edge: JSON in, typed Arrow rows per table out.

Ibis 12 has no JSON functions on polars or datafusion, so JSON never enters a pipeline: a
private DuckDB connection reads the envelopes here, and the pipelines get typed columns plus
`_op`, `_lsn`, `_tx_id`, `_commit_ts`. What cannot be parsed goes to the dead letters with
its reason and the raw record; Kafka tombstone messages (value null) are counted and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from workbench.cdc_source import Catalog

META = ("_op", "_lsn", "_tx_id", "_commit_ts", "_position")
"""Columns every parsed event carries besides the table's own."""
DEAD_SCHEMA = pa.schema(
    [("batch_id", pa.int64()), ("position", pa.int64()), ("topic", pa.string()),
     ("key", pa.string()), ("value", pa.string()), ("table", pa.string()),
     ("reason", pa.string())]
)  # fmt: skip
_TS = pa.timestamp("us", tz="UTC")


@dataclass
class Parsed:
    """One batch, parsed: typed events per table, dead letters, counts of what was skipped."""

    events: dict[str, pa.Table] = field(default_factory=dict)
    dead: pa.Table = field(default_factory=DEAD_SCHEMA.empty_table)
    tombstones: dict[str, int] = field(default_factory=dict)
    """Kafka tombstone messages (value null) per table: they carry no change."""


def _sql(dtype: pa.DataType) -> str:
    if pa.types.is_integer(dtype) or pa.types.is_timestamp(dtype):
        return "BIGINT"  # timestamps travel as epoch microseconds (Debezium MicroTimestamp)
    if pa.types.is_floating(dtype):
        return "DOUBLE"
    if pa.types.is_boolean(dtype):
        return "BOOLEAN"
    return "VARCHAR"


def _path(column: str) -> str:
    return "'$.\"" + column.replace("'", "''").replace('"', '\\"') + "\"'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_INFERRED = {"BIGINT": pa.int64(), "UBIGINT": pa.int64(), "DOUBLE": pa.float64(),
             "BOOLEAN": pa.bool_(), "VARCHAR": pa.string()}  # fmt: skip
"""Types of columns seen only in JSON (e.g. added at the source); mixed ones stay text."""
_MAP = "MAP(VARCHAR, VARCHAR)"
_ENVELOPE = json.dumps({"op": "VARCHAR", "before": _MAP, "after": _MAP,
                        "source": {"table": "VARCHAR", "lsn": "VARCHAR", "txId": "VARCHAR",
                                   "ts_ms": "VARCHAR"}})  # fmt: skip
# One json_transform per envelope, row images as maps of text: no field is parsed twice
# (20x faster than a json_extract per field). A non-object image becomes null.
_ENVELOPES = """
    CREATE TEMP TABLE env AS
    WITH r AS (SELECT *, json_valid(value) AS ok FROM raw WHERE value IS NOT NULL),
    p AS (SELECT *, CASE WHEN ok THEN json_transform(value, {structure}) END AS e FROM r)
    SELECT batch_id, position, topic, key, value,
           e.op AS op, e.source."table" AS tbl,
           TRY_CAST(e.source.lsn AS BIGINT) AS lsn,
           TRY_CAST(e.source.txId AS BIGINT) AS tx_id,
           TRY_CAST(e.source.ts_ms AS BIGINT) AS commit_ms,
           CASE WHEN e.op = 'd' THEN e.before ELSE e.after END AS image,
           CASE
             WHEN NOT ok THEN 'unparseable JSON'
             WHEN left(ltrim(value), 1) <> '{{' THEN 'the value is not a JSON object'
             WHEN coalesce(e.op, '') NOT IN ('c', 'u', 'd', 'r')
               THEN 'unknown op ' || coalesce('''' || e.op || '''', 'null')
             WHEN coalesce(e.source."table", '') NOT IN ({tables})
               THEN 'unknown table ' || coalesce('''' || e.source."table" || '''', 'null')
             WHEN TRY_CAST(e.source.lsn AS BIGINT) IS NULL
               THEN 'source.lsn missing or not an integer'
             WHEN TRY_CAST(e.source.ts_ms AS BIGINT) IS NULL
               THEN 'source.ts_ms missing or not an integer'
             WHEN e.op <> 'd' AND e.after IS NULL THEN 'after missing on op ''' || e.op || ''''
           END AS reason
    FROM p"""


def parse(raw: pa.Table, catalog: Catalog, known: Mapping[str, pa.Schema] | None = None) -> Parsed:
    """Parse bronze records (`batch_id`, `position`, `topic`, `key`, `value`) of `catalog`'s
    tables. Column types come from the catalog, then from `known` (e.g. the silver tables'
    current schemas), and are inferred from the JSON for columns neither knows."""
    db = duckdb.connect()
    db.register("raw", raw)
    tables = ", ".join(_text(t) for t in catalog) or "NULL"
    db.execute(_ENVELOPES.format(structure=_text(_ENVELOPE), tables=tables))
    tombstones = db.execute(
        "SELECT regexp_extract(topic, '[^.]+$'), count(*) FROM raw WHERE value IS NULL GROUP BY 1"
    ).fetchall()
    parsed = Parsed(tombstones=dict(tombstones))
    dead = [_dead(db, "reason IS NOT NULL", "reason", "regexp_extract(topic, '[^.]+$')")]
    for table, spec in catalog.items():
        where = f"reason IS NULL AND tbl = {_text(table)}"
        schema = _schema(db, where, spec.schema, (known or {}).get(table))
        cols, checks = [], []
        for f in schema:
            raw_value = f"image[{_text(f.name)}]"
            if f.name in spec.key:  # a delete without a before image keeps its key in `key`
                from_key = (
                    f"CASE WHEN json_valid(key) THEN json_extract_string(key, {_path(f.name)}) END"
                )
                raw_value = f"coalesce({raw_value}, {from_key})"
            value = f"TRY_CAST({raw_value} AS {_sql(f.type)})"
            cols.append(f"{value} AS {_ident(f.name)}")
            if f.name in spec.key:
                checks.append((f"{value} IS NULL", f"missing key column {f.name}"))
            elif _sql(f.type) != "VARCHAR":
                checks.append((f"{raw_value} IS NOT NULL AND {value} IS NULL",
                               f"bad value for column {f.name}"))  # fmt: skip
        problem = "CASE " + " ".join(f"WHEN {c} THEN {_text(r)}" for c, r in checks) + " END"
        if not checks:
            problem = "NULL"
        db.execute(f"""
            CREATE OR REPLACE TEMP TABLE t AS
            SELECT {", ".join(cols) or "1 AS _none"}, op AS _op, lsn AS _lsn, tx_id AS _tx_id,
                   commit_ms AS _commit_ms, position AS _position, {problem} AS _problem,
                   batch_id AS _r_batch_id, position AS _r_position, topic AS _r_topic,
                   key AS _r_key, value AS _r_value
            FROM env WHERE {where}""")
        dead.append(_dead(db, "_problem IS NOT NULL", "_problem", _text(table), prefix="_r_"))
        names = ", ".join(_ident(f.name) for f in schema)
        good = db.execute(
            f"SELECT {names}, _op, _lsn, _tx_id, _commit_ms, _position "
            "FROM t WHERE _problem IS NULL"
        ).fetch_arrow_table()
        parsed.events[table] = _typed(good, schema)
    parsed.dead = pa.concat_tables(dead)
    db.close()
    return parsed


def _schema(db, where: str, declared: pa.Schema, known: pa.Schema | None) -> pa.Schema:
    """The declared columns, then known ones, then any other key the batch's images carry
    (typed from the JSON itself: the rare path, parsed again only for the rows that have one)."""
    fields = list(declared)
    names = set(declared.names)
    for f in known or []:
        if f.name not in names and not f.name.startswith("_"):
            fields.append(f)
            names.add(f.name)
    seen = db.execute(f"SELECT DISTINCT unnest(map_keys(image)) FROM env WHERE {where}").fetchall()
    new = sorted(n for (n,) in seen if n not in names and not n.startswith("_"))
    if new:
        side = "CASE WHEN op = 'd' THEN value->'before' ELSE value->'after' END"
        has = " OR ".join(f"map_contains(image, {_text(n)})" for n in new)
        (structure,) = db.execute(
            f"SELECT json_group_structure({side}) FROM env WHERE {where} AND ({has})"
        ).fetchone()
        kinds = json.loads(structure or "{}")
        for name in new:
            kind = kinds.get(name)
            fields.append(pa.field(name, _INFERRED.get(kind, pa.string()) if isinstance(kind, str)
                                   else pa.string()))  # fmt: skip
    return pa.schema(fields)


def _typed(good: pa.Table, schema: pa.Schema) -> pa.Table:
    arrays, fields = [], []
    for f in schema:
        column = good[f.name]
        if pa.types.is_timestamp(f.type):
            column = column.cast(pa.int64()).cast(pa.timestamp("us")).cast(f.type)
        arrays.append(column.cast(f.type))
        fields.append(pa.field(f.name, f.type))
    commit = good["_commit_ms"].cast(pa.int64()).cast(pa.timestamp("ms")).cast(_TS)
    arrays += [
        good["_op"].cast(pa.string()),
        good["_lsn"],
        good["_tx_id"],
        commit,
        good["_position"],
    ]
    fields += [pa.field("_op", pa.string()), pa.field("_lsn", pa.int64()),
               pa.field("_tx_id", pa.int64()), pa.field("_commit_ts", _TS),
               pa.field("_position", pa.int64())]  # fmt: skip
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _dead(db, where: str, reason: str, table: str, prefix: str = "") -> pa.Table:
    columns = ", ".join(
        f"{prefix}{c} AS {c}" for c in ("batch_id", "position", "topic", "key", "value")
    )
    found = db.execute(
        f'SELECT {columns}, {table} AS "table", {reason} AS reason '
        f"FROM {'t' if prefix else 'env'} WHERE {where}"
    ).fetch_arrow_table()
    return found.cast(DEAD_SCHEMA)
