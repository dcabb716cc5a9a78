"""CDC apply benchmark (issue #5): ratios measured in one run on this machine.

For a silver table clustered on its key (sorted, written file by file) and a batch of change
events (90% updates, 5% inserts of new keys, 5% deletes), two workloads:
  (a) hot: every change hits the newest 5% of keys;  (b) uniform: keys at random.
It prints, per table size and workload, the apply rate (events per second, end to end: JSON
parsing, the pipeline, the MERGE, tombstones, bookkeeping), the files the batch rewrote out
of the table's files, the merge and the apply against a full rewrite of the table (reading
and writing every row; target for (a) at 1% of the rows: <= 0.20), and recomputing silver
from the whole change log against the incremental apply.

    python benchmarks/bench_cdc.py                                    # 200k rows, 2k events
    python benchmarks/bench_cdc.py --rows 1000000,10000000 --events 100000   # the issue's sizes

"merge" is the Delta MERGE alone (delta-rs' own execution time); "apply" adds parsing the JSON
envelopes, the dedup / highest-LSN / tombstone pipeline, the tombstones and the bookkeeping.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import duckdb
import ibis
import numpy as np
import pyarrow as pa

from workbench import backends, cdc
from workbench.cdc_source import TableSpec
from workbench.lakehouse import Lakehouse

T0_MS = 1_793_491_200_000
TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([("customer_id", pa.int64()), ("name", pa.string()), ("city", pa.string()),
                    ("segment", pa.string()), ("score", pa.float64()), ("updated_at", TS)])  # fmt: skip
CATALOG = {"customers": TableSpec(("customer_id",), SCHEMA)}
CITIES = np.array(["Lisbon", "Oslo", "Berlin", "Madrid", "Toronto", "Paris", "Rome", "Lima"])


def rows_of(ids: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Customer rows for `ids`, with a little of everything: strings, a float, a timestamp."""
    n = len(ids)
    return pa.table({
        "customer_id": ids,
        "name": pa.array(np.char.add("customer ", ids.astype(str))),
        "city": pa.array(CITIES[rng.integers(len(CITIES), size=n)]),
        "segment": pa.array(np.where(rng.random(n) < 0.7, "consumer", "corporate")),
        "score": np.round(rng.random(n) * 100, 2),
        "updated_at": pa.array(T0_MS * 1000 - rng.integers(0, 10**12, n), pa.int64()).cast(TS),
    }, schema=SCHEMA)  # fmt: skip


def parts(n: int, files: int, seed: int):
    """The initial rows in key order, one part per file: the same rows every time."""
    rng = np.random.default_rng(seed)
    bounds = np.linspace(1, n + 1, files + 1).astype(np.int64)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        yield rows_of(np.arange(lo, hi), rng)


def build_silver(lake: Lakehouse, n: int, files: int, seed: int) -> None:
    """silver.customers with n rows sorted by key, one file per key range (clustered)."""
    for part in parts(n, files, seed):
        part = part.append_column("_lsn", pa.array(np.zeros(len(part), np.int64)))
        part = part.append_column("_tx_id", pa.nulls(len(part), pa.int64()))
        part = part.append_column("_commit_ts", pa.array(np.full(len(part), T0_MS * 1000)).cast(TS))
        lake.write("silver.customers", part, mode="append")


def envelopes(rows: pa.Table, ops: np.ndarray, lsns: np.ndarray, snapshot: bool) -> pa.Table:
    """Debezium envelopes for `rows` (bronze records), built by DuckDB's json_object."""
    db = duckdb.connect()
    t = rows.append_column("op", pa.array(ops)).append_column("lsn", pa.array(lsns))
    t = t.set_column(t.schema.get_field_index("updated_at"), "updated_at",
                     t["updated_at"].cast(pa.int64()))  # fmt: skip
    db.register("t", t)
    image = ("json_object('customer_id', customer_id, 'name', name, 'city', city, "
             "'segment', segment, 'score', score, 'updated_at', updated_at)")  # fmt: skip
    return db.sql(f"""
        SELECT 'retail.customers' AS topic, json_object('customer_id', customer_id) AS key,
          json_object(
            'before', CASE WHEN op = 'd' THEN {image} END,
            'after', CASE WHEN op <> 'd' THEN {image} END,
            'source', json_object('db', 'retail', 'table', 'customers', 'lsn', lsn,
                                  'txId', CASE WHEN {not snapshot} THEN lsn END,
                                  'ts_ms', {T0_MS} + lsn, 'snapshot', '{str(snapshot).lower()}'),
            'op', op, 'ts_ms', {T0_MS} + lsn) AS value
        FROM t""").fetch_arrow_table()


def change_batch(n: int, m: int, hot: bool, seed: int) -> pa.Table:
    """m change events: updates and deletes of existing keys, inserts of new ones."""
    rng = np.random.default_rng(seed)
    low = int(n * 0.95) + 1 if hot else 1
    keys = rng.integers(low, n + 1, m)
    ops = rng.choice(np.array(["u", "d", "c"]), m, p=[0.90, 0.05, 0.05])
    keys = np.where(ops == "c", n + 1 + np.arange(m), keys)
    return envelopes(rows_of(keys, rng), ops, np.arange(1, m + 1), snapshot=False)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def last_merge(lake: Lakehouse) -> tuple[int, int, float]:
    """Files removed and added by silver's last MERGE, and its execution time."""
    history = lake.history("silver.customers")
    metrics = history[history.operation == "MERGE"].iloc[0].metrics
    seconds = metrics["execution_time_ms"] / 1000
    return int(metrics["num_target_files_removed"]), int(metrics["num_target_files_added"]), seconds


def bronze(records: pa.Table) -> pa.Table:
    n = len(records)
    records = records.append_column("batch_id", pa.array(np.zeros(n, np.int64)))
    return records.append_column("position", pa.array(np.arange(n, dtype=np.int64)))


def recompute(lake: Lakehouse, con, changes: pa.Table, n: int, files: int, seed: int) -> float:
    """Silver from the whole change log: the snapshot's r events (the same rows silver started
    with) and the changes, parsed, latest per key, deletes dropped, written as a new table.
    Only parsing and computing are timed: the log's JSON exists already in bronze."""
    spent, typed = 0.0, []
    for part in [*parts(n, files, seed), None]:
        if part is None:
            records = changes
        else:
            zeros = np.zeros(len(part), np.int64)
            records = envelopes(part, np.full(len(part), "r"), zeros, snapshot=True)
        took, parsed = timed(lambda r=records: cdc.parse(bronze(r), CATALOG).events["customers"])
        spent, typed = spent + took, typed + [parsed]

    def rest():
        winners = cdc.latest(ibis.memtable(pa.concat_tables(typed)), ["customer_id"])
        rows = winners.filter(winners._op != "d").drop("_op", "_position")
        lake.write("silver.customers_recomputed", con.to_pyarrow(rows), mode="overwrite")

    return spent + timed(rest)[0]


def one_size(root: Path, n: int, m: int, files: int, backend: str, seed: int) -> list[dict]:
    con = backends.connect(backend)
    base = Lakehouse(root / "base")
    built, _ = timed(lambda: build_silver(base, n, files, seed))
    print(f"{n:,} rows: silver built in {built:.1f} s", flush=True)
    results = []
    for name, hot in (("(a) newest 5% of keys", True), ("(b) keys at random", False)):
        folder = root / ("hot" if hot else "uniform")
        shutil.copytree(base.root, folder)  # a fresh copy: Delta tables are relocatable
        lake = Lakehouse(folder, con=con)
        changes = change_batch(n, m, hot, seed + 1)
        cdc.land(lake, changes, 1, offset=m)
        total_files = len(lake.files("silver.customers"))
        apply_s, metrics = timed(lambda lake=lake: cdc.apply(lake, con, 1, CATALOG))
        removed, added, merge_s = last_merge(lake)

        def rewrite(lake=lake):  # what recomputing in place costs at least: read, write all
            table = lake.delta("silver.customers").to_pyarrow_table()
            lake.write("silver.customers", table, mode="overwrite")
            return len(table)

        full_s, rows_after = timed(rewrite)
        print(f"  {name}: apply {apply_s:.2f} s, full rewrite {full_s:.2f} s", flush=True)
        recompute_s = recompute(lake, con, changes, n, files, seed)
        same = lake.table("silver.customers_recomputed", con).count().to_pyarrow().as_py()
        assert same == rows_after, (same, rows_after)  # both ways give the same rows
        results.append({
            "rows": n, "workload": name, "events": m, "keys touched": int(metrics.applied.sum()),
            "apply s": apply_s, "events/s": m / apply_s,
            "files rewritten": f"{removed}/{total_files}", "merge s": merge_s,
            "full rewrite s": full_s, "merge / full rewrite": merge_s / full_s,
            "apply / full rewrite": apply_s / full_s, "recompute s": recompute_s,
            "recompute / apply": recompute_s / apply_s,
        })  # fmt: skip
        shutil.rmtree(folder)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="200000", help="silver sizes, comma-separated")
    parser.add_argument(
        "--events", type=int, default=None, help="events per batch (default 1%% of rows)"
    )
    parser.add_argument("--files", type=int, default=50, help="files silver is clustered into")
    parser.add_argument("--backend", default="duckdb")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    import pandas as pd

    results = []
    for n in (int(r) for r in args.rows.split(",")):
        m = args.events or max(1, n // 100)
        with tempfile.TemporaryDirectory() as tmp:
            results += one_size(Path(tmp), n, m, args.files, args.backend, args.seed)
    frame = pd.DataFrame(results)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 2):
        print(frame.to_string(index=False))
    hot = frame[frame.workload.str.startswith("(a)")]
    for _, row in hot.iterrows():
        share = row["events"] / row["rows"]
        for what in ("merge", "apply"):
            ratio = row[f"{what} / full rewrite"]
            verdict = "met" if ratio <= 0.20 else f"missed by {ratio / 0.20:.1f}x"
            print(
                f"target (a), {row['rows']:,} rows, batch of {share:.0%} of the rows: "
                f"{what} / full rewrite = {ratio:.2f} (<= 0.20: {verdict})"
            )


if __name__ == "__main__":
    main()
