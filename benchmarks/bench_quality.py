"""Benchmark: 20 quality checks evaluated in one pass vs one query per check vs a plain scan.

    python benchmarks/bench_quality.py                 # 200k rows, every engine
    python benchmarks/bench_quality.py --rows 1000000 --backends duckdb

Three ways to count what 20 checks find in one table, on each engine, best of `--repeat`:
- one pass: `Suite.summary(Suite.flags(t))`, one query with a flag column per check;
- per check: one such query per check (20 queries, each scanning the table);
- scan: one `count(*)` plus a `max` of every column, the least a single scan can do.
Target: one pass at most 2x the scan. By default the table is read from a Delta table in a
temporary lake (as a pipeline would read it); `--source memory` loads it into each engine's
memory first, which times the engines' work alone. A last line times the row-local checks only
(no unique, reference or regex), to show what the evaluation itself costs. Prints ratios
measured in this run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time

import ibis
import numpy as np
import pyarrow as pa

from workbench import backends, datasets
from workbench import quality as q
from workbench.lakehouse import Lakehouse

METHODS = ["card", "paypal", "bank_transfer", "gift_card"]
STATUSES = ["authorized", "captured", "failed", "refunded"]
CURRENCIES = ["EUR", "GBP", "USD"]


def make_data(rows: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Payments with about 0.1% defects per column, and a customers dimension."""
    rng = np.random.default_rng(seed)
    customers = max(1000, rows // 10)

    def holes(values):
        return pa.array(values, mask=rng.random(rows) < 0.001)

    now = int(datasets.SIMULATED_NOW.timestamp() * 1e6)
    ids = np.arange(1, rows + 1)
    ids[rng.random(rows) < 0.001] = 1  # duplicates
    data = pa.table({
        "payment_id": ids,
        "order_id": holes(rng.integers(1, rows, rows)),
        "customer_id": holes(rng.integers(1, int(customers * 1.001), rows)),
        "paid_ts": holes(now - rng.integers(0, 3 * 365 * 86_400 * 10**6, rows)).cast(
            pa.timestamp("us", tz="UTC")),
        "amount": holes(np.round(rng.lognormal(4, 1, rows) * np.where(rng.random(rows) < 0.001, -1, 1), 2)),
        "method": holes(rng.choice(METHODS + ["crypto"], rows, p=[0.6, 0.25, 0.1, 0.049, 0.001])),
        "status": rng.choice(STATUSES, rows),
        "currency": rng.choice(CURRENCIES + ["eur"], rows, p=[0.5, 0.3, 0.199, 0.001]),
        "email": holes(np.char.add(rng.integers(1, customers, rows).astype(str),
                                   np.where(rng.random(rows) < 0.001, "example.org", "@example.org"))),
        "country": rng.choice(["FR", "DE", "GB", "US", "es"], rows, p=[0.3, 0.3, 0.2, 0.199, 0.001]),
    })  # fmt: skip
    return data, pa.table({"customer_id": np.arange(1, customers + 1)})


def make_checks(dim: ibis.Table) -> list[q.Check]:
    """Twenty checks: 18 row-level of every kind, a row count and a freshness check."""
    now = datasets.SIMULATED_NOW
    return [
        *(
            q.not_null(c)
            for c in ("order_id", "customer_id", "paid_ts", "amount", "method", "email")
        ),
        q.unique("payment_id"),
        q.references("customer_id", dim),
        q.accepted_values("method", METHODS),
        q.accepted_values("status", STATUSES),
        q.accepted_values("currency", CURRENCIES),
        q.in_range("amount", min=0, max=100_000),
        q.in_range("paid_ts", min=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), max=now),
        q.matches("email", r"^[0-9]+@[a-z.]+$"),
        q.matches("country", r"^[A-Z]{2}$"),
        q.expect("captured_is_paid", (ibis._.status != "captured") | (ibis._.amount > 0)),
        q.expect("refund_is_small", (ibis._.status != "refunded") | (ibis._.amount <= 50_000)),
        q.expect(
            "card_in_euro_or_pound", (ibis._.method != "gift_card") | (ibis._.currency != "USD")
        ),
        q.row_count(min=1),
        q.freshness("paid_ts", max_age=dt.timedelta(days=1)),
    ]


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(
    backend: str, source, data: pa.Table, dim_data: pa.Table, repeat: int, local: bool
) -> dict:
    con = backends.connect(backend)
    if isinstance(source, Lakehouse):
        t, dim = source.table("silver.payments", con), source.table("silver.customers", con)
    else:
        t = con.create_table("payments", data, overwrite=True)
        dim = con.create_table("customers", dim_data, overwrite=True)
    checks = make_checks(dim)
    assert len(checks) == 20
    if local:  # what the single pass costs when no check needs more than the row itself
        checks = [c for c in checks if c.kind not in ("unique", "references", "matches")]
    suite = q.Suite(t, checks, name="silver.payments")
    singles = [q.Suite(t, [c]) for c in checks]
    scan = t.aggregate(rows=t.count(), **{f"max_{c}": t[c].max() for c in t.columns})

    def one_pass():
        return suite.summary(suite.flags(t)).to_pyarrow()

    def per_check():
        return [s.summary(s.flags(t)).to_pyarrow() for s in singles]

    found = one_pass().to_pylist()[0]
    separately = {}
    for result in per_check():
        separately |= result.to_pylist()[0]
    for c in suite.row_checks:  # both ways count the same failing rows
        assert found[c.flag_column] == separately[c.flag_column], c.name
    return {
        "backend": backend,
        "scan": best(lambda: scan.to_pyarrow(), repeat),
        "one_pass": best(one_pass, repeat),
        "per_check": best(per_check, repeat),
        "failing": sum(found[c.flag_column] for c in suite.row_checks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--backends", default=",".join(backends.REQUIRED))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--source", choices=["lake", "memory"], default="lake")
    args = parser.parse_args()
    data, dim = make_data(args.rows)
    source = None
    if args.source == "lake":
        source = Lakehouse(tempfile.mkdtemp(prefix="bench_quality_"))
        source.write("silver.payments", data, mode="overwrite")
        source.write("silver.customers", dim, mode="overwrite")
    print(f"20 checks over {args.rows:,} rows read from {args.source} (best of {args.repeat})\n")
    print(f"{'engine':<11}{'scan s':>9}{'one pass s':>12}{'per check s':>13}"
          f"{'pass/scan':>11}{'per check/pass':>16}  target pass/scan <= 2")  # fmt: skip
    for local in (False, True):
        if local:
            print("\nrow-local checks only (not_null, accepted_values, in_range, expect, row "
                  "count, freshness):")  # fmt: skip
        for name in args.backends.split(","):
            r = measure(name, source, data, dim, args.repeat, local)
            ratio = r["one_pass"] / r["scan"]
            print(f"{name:<11}{r['scan']:>9.3f}{r['one_pass']:>12.3f}{r['per_check']:>13.3f}"
                  f"{ratio:>11.2f}{r['per_check'] / r['one_pass']:>16.2f}  "
                  f"{'met' if ratio <= 2 else 'missed'}")  # fmt: skip


if __name__ == "__main__":
    main()
