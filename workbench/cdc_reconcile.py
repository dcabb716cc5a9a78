"""Reconciliation: does the lake hold exactly what the source holds? Counts, keys, row hashes.

Both sides are compared on one engine, so a value's text (and so its hash) is spelled the same
way on each side; a difference names the key and whether it is missing, extra, or changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import ibis
import pandas as pd

from workbench.cdc_capture import silver_name
from workbench.cdc_source import KEYS, Source
from workbench.lakehouse import Lakehouse

BOOKKEEPING = ("_lsn", "_tx_id", "_commit_ts", "_deleted")
"""Columns silver keeps beside the source's: the change that wrote the row."""


def live(silver: ibis.Table) -> ibis.Table:
    """Silver as the source would show it: soft-deleted rows out, bookkeeping columns dropped."""
    if "_deleted" in silver.columns:
        silver = silver.filter(~silver._deleted)
    return silver.drop(*[c for c in BOOKKEEPING if c in silver.columns])


def row_hash(table: ibis.Table, columns: list[str]) -> ibis.Value:
    """md5 of the row's values as text: equal rows give equal hashes on the same engine."""
    parts = [table[c].cast("string").fill_null("\u2400") for c in columns]  # ␀ marks a null
    joined = parts[0] if len(parts) == 1 else ibis.literal("\u241f").join(parts)
    return joined.hexdigest("md5")


def differences(source: ibis.Table, lake: ibis.Table, key: list[str]) -> ibis.Table:
    """Keys missing from the lake, extra in it, or whose values differ (by per-row hash)."""
    columns = list(source.columns)
    missing = {c: ibis.null(source[c].type()) for c in columns if c not in lake.columns}
    lake = lake.mutate(**missing) if missing else lake
    s = source.select(*[source[k].name(f"_s_{k}") for k in key], _s=row_hash(source, columns))
    t = lake.select(*[lake[k].name(f"_t_{k}") for k in key], _t=row_hash(lake, columns))
    joined = s.outer_join(t, [s[f"_s_{k}"] == t[f"_t_{k}"] for k in key])
    kind = ibis.cases(
        (joined[f"_t_{key[0]}"].isnull(), "missing in lake"),
        (joined[f"_s_{key[0]}"].isnull(), "extra in lake"),
        (joined._s != joined._t, "values differ"),
        else_=None,
    )
    keys = {k: joined[f"_s_{k}"].coalesce(joined[f"_t_{k}"]) for k in key}
    found = joined.select(**keys, difference=kind, source_hash=joined._s, lake_hash=joined._t)
    return found.filter(found["difference"].notnull())


@dataclass
class Reconciliation:
    """The source table against silver: row counts and every differing key."""

    table: str
    source_rows: int
    lake_rows: int
    differences: pd.DataFrame

    @property
    def ok(self) -> bool:
        """True when the lake holds exactly the source's rows."""
        return self.source_rows == self.lake_rows and self.differences.empty

    def summary(self) -> dict[str, int]:
        """How many keys differ, by kind."""
        return self.differences["difference"].value_counts().to_dict()

    def __repr__(self) -> str:
        state = "in sync" if self.ok else f"{len(self.differences)} differences {self.summary()}"
        return (f"Reconciliation({self.table}: source {self.source_rows} rows, "
                f"lake {self.lake_rows} rows, {state})")  # fmt: skip


def reconcile(
    source: Source,
    lake: Lakehouse,
    table: str,
    con: ibis.BaseBackend | None = None,
    target: str | None = None,
) -> Reconciliation:
    """Compare the source table with its silver copy on `con`: counts, key sets, row hashes."""
    con = con or lake.con
    target = target or silver_name(table)
    key = list(KEYS[table])
    rows = source.read(table)
    src = ibis.memtable(rows)  # registered with `con` when the comparison runs there
    copy = live(lake.table(target, con)) if lake.exists(target) else src.limit(0)
    found = con.to_pyarrow(differences(src, copy, key)).to_pandas()
    found = found.sort_values(key).reset_index(drop=True)
    lake_rows = int(con.to_pyarrow(copy.count()).as_py())
    return Reconciliation(table, rows.num_rows, lake_rows, found)
