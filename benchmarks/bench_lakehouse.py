"""Lakehouse benchmarks (issue #2), each a ratio measured in one run on this machine.

1. A filtered aggregate over a 10M-row Delta table read through the lakehouse on DuckDB, against
   hand-written DuckDB SQL over a plain Parquet copy of the same rows (the limit; target <= 1.2),
   and the naive path (the snapshot's Arrow dataset registered on DuckDB).
2. Writing the bronze tables through the lakehouse against `pyarrow.parquet.write_table` of the
   same Arrow tables (target <= 1.1).
3. Generation throughput in rows per second.

    python benchmarks/bench_lakehouse.py            # scale 1: 10M click events (a few minutes)
    python benchmarks/bench_lakehouse.py --scale 0.1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from workbench import backends, datasets
from workbench.lakehouse import Lakehouse

QUERY = """
    SELECT page, count(*) AS events, sum(value) AS value
    FROM {source}
    WHERE event_type = 'purchase' AND customer_id BETWEEN 1000 AND 60000
    GROUP BY page
"""


def best_of(fn, repeat: int = 5) -> float:
    """The fastest of `repeat` runs after one warm-up, in seconds: the least disturbed figure."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def read_benchmark(lake: Lakehouse, folder: Path) -> None:
    delta = lake.delta("bronze.click_events")
    copy = folder / "click_events.parquet"
    pq.write_table(delta.to_pyarrow_table(), copy)
    con = backends.connect("duckdb")

    def workbench_read():
        t = lake.table("bronze.click_events", con)
        kept = t.filter((t.event_type == "purchase") & t.customer_id.between(1000, 60000))
        return kept.group_by("page").agg(events=kept.count(), value=kept.value.sum()).to_pyarrow()

    def duckdb_sql():
        return con.con.sql(QUERY.format(source=f"read_parquet('{copy}')")).fetch_arrow_table()

    def naive():
        con.con.register("naive_dataset", delta.to_pyarrow_dataset())
        return con.con.sql(QUERY.format(source="naive_dataset")).fetch_arrow_table()

    ours, limit, slow = best_of(workbench_read), best_of(duckdb_sql), best_of(naive)
    a = sorted(workbench_read().to_pylist(), key=lambda r: r["page"])
    b = sorted(duckdb_sql().to_pylist(), key=lambda r: r["page"])
    assert [r["events"] for r in a] == [r["events"] for r in b], "the two paths disagree"
    rows = delta.count() if hasattr(delta, "count") else delta.to_pyarrow_dataset().count_rows()
    print(f"\nread: filtered aggregate over {rows:,} rows on duckdb")
    print(f"  hand-written DuckDB SQL, read_parquet of a plain copy  {limit:7.3f} s  (limit)")
    print(f"  lakehouse.table (DuckDB scans the snapshot's files)    {ours:7.3f} s  "
          f"ratio {ours / limit:5.2f}  (target <= 1.2)")  # fmt: skip
    print(f"  naive: the snapshot's Arrow dataset on DuckDB          {slow:7.3f} s  "
          f"ratio {slow / limit:5.2f}")  # fmt: skip


def write_benchmark(scale: float, seed: int, folder: Path) -> None:
    print(f"\nwrite: bronze tables at scale {scale}")
    total_lake = total_pq = 0.0
    for name in datasets.TABLES:
        table = datasets.table(name, scale, seed)
        lake = Lakehouse(folder / "write_lake")
        start = time.perf_counter()
        lake.write(f"bronze.{name}", table, mode="overwrite")
        ours = time.perf_counter() - start
        start = time.perf_counter()
        pq.write_table(table, folder / f"{name}.parquet")
        plain = time.perf_counter() - start
        total_lake, total_pq = total_lake + ours, total_pq + plain
        print(f"  {name:13} {table.num_rows:>11,} rows  lakehouse {ours:6.2f} s  "
              f"pyarrow {plain:6.2f} s  ratio {ours / plain:5.2f}")  # fmt: skip
    print(f"  {'all':13} {'':>11}       lakehouse {total_lake:6.2f} s  pyarrow {total_pq:6.2f} s"
          f"  ratio {total_lake / total_pq:5.2f}  (target <= 1.1)")  # fmt: skip


def generation_benchmark(scale: float, seed: int) -> None:
    print(f"\ngeneration at scale {scale}")
    rows = seconds = 0
    for name in datasets.TABLES:
        start = time.perf_counter()
        n = sum(batch.num_rows for batch in datasets.generate_table(name, scale, seed))
        took = time.perf_counter() - start
        rows, seconds = rows + n, seconds + took
        print(f"  {name:13} {n:>11,} rows  {n / took / 1e6:6.2f} M rows/s")
    print(f"  {'all':13} {rows:>11,} rows  {rows / seconds / 1e6:6.2f} M rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 10M click events")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_lakehouse_") as tmp:
        folder = Path(tmp)
        lake = Lakehouse(folder / "lake")
        datasets.generate(lake, scale=args.scale, seed=args.seed, tables=["click_events"],
                          progress=False)  # fmt: skip
        read_benchmark(lake, folder)
        write_benchmark(args.scale, args.seed, folder)
        generation_benchmark(args.scale, args.seed)


if __name__ == "__main__":
    main()
