"""Deterministic hash keys: the same md5 hex string for the same values on every engine.

A hash key is `md5` of a canonical text of some columns. The text must not depend on the
engine, so each type is spelled explicitly (engines disagree on casting floats and timestamps
to strings, and Ibis's polars `length` counts bytes where the others count characters):

- strings as they are, integers in decimal, booleans `t` / `f`, dates `YYYY-MM-DD`,
  timestamps `YYYY-MM-DD HH:MM:SS.ffffff` in UTC, floats and decimals with 6 decimals;
- `\\` and `|` escaped with a backslash, null as `\\N`, and the columns joined by `|`,
  so two different rows never share a text (`("a|b", "c")` is not `("a", "b|c")`).

Used for surrogate keys (`hash_key`) and for change detection (`row_hash`).
"""

from __future__ import annotations

import ibis
import ibis.expr.datatypes as dt

from workbench.errors import WorkbenchError

NULL = "\\N"
SEPARATOR = "|"


def text(value: ibis.Value) -> ibis.StringValue:
    """The canonical, engine-independent text of one column (escaped, `\\N` for null)."""
    kind = value.type()
    if kind.is_string():
        spelled = value
    elif kind.is_integer():
        spelled = value.cast("string")
    elif kind.is_boolean():
        spelled = value.ifelse("t", "f")
    elif kind.is_floating() or kind.is_decimal():
        spelled = value.cast(dt.Decimal(38, 6)).cast("string")
    elif kind.is_date():
        spelled = value.strftime("%Y-%m-%d")
    elif kind.is_timestamp():
        # UTC wall time; microseconds apart because DataFusion's `%f` means nanoseconds.
        naive = value.cast(dt.Timestamp(timezone=None)) if kind.timezone else value
        micros = naive.microsecond().cast("string").lpad(6, "0")
        spelled = naive.strftime("%Y-%m-%d %H:%M:%S").concat(".", micros)
    else:
        raise WorkbenchError(
            f"Cannot build a hash key over a column of type {kind}.",
            "Allowed: strings, integers, booleans, floats, decimals, dates and timestamps.",
            "cast the column to one of these types first.",
        )
    escaped = spelled.replace("\\", "\\\\").replace(SEPARATOR, "\\" + SEPARATOR)
    return value.isnull().ifelse(ibis.literal(NULL), escaped)


def canonical(table: ibis.Table, columns: list[str]) -> ibis.StringValue:
    """The canonical text of `columns` of `table`, joined by `|`."""
    missing = [c for c in columns if c not in table.columns]
    if missing or not columns:
        raise WorkbenchError(
            f"Hash key columns {missing or columns} are not in the table.",
            f"Table columns: {', '.join(table.columns)}.",
            "pass the names of the columns that identify the row.",
        )
    # One join over all parts: nested concats grow exponentially on DataFusion, whose
    # compiler repeats each operand in a null check.
    return ibis.literal(SEPARATOR).join([text(table[c]) for c in columns])


def hash_key(table: ibis.Table, columns: list[str]) -> ibis.StringValue:
    """The md5 hex of `columns`: a surrogate key that any engine, or Python, recomputes."""
    return canonical(table, columns).hexdigest("md5")


def python_hash_key(*values) -> str:
    """`hash_key` computed in plain Python (str, int, bool, date, datetime, None): an
    independent check of the engines' keys."""
    import datetime
    import hashlib

    def spell(v) -> str:
        if v is None:
            return NULL
        if isinstance(v, bool):
            v = "t" if v else "f"
        elif isinstance(v, datetime.datetime):
            v = v.astimezone(datetime.UTC) if v.tzinfo else v
            v = v.strftime("%Y-%m-%d %H:%M:%S.%f")
        elif isinstance(v, datetime.date):
            v = v.isoformat()
        return str(v).replace("\\", "\\\\").replace(SEPARATOR, "\\" + SEPARATOR)

    return hashlib.md5(SEPARATOR.join(spell(v) for v in values).encode()).hexdigest()
