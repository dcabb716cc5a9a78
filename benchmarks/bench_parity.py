"""Polars through the workbench vs hand-written lazy Polars on the streaming engine (issue #3).

Prints one row per case, measured in one run: the workbench's time (an Ibis expression on
`wb.connect("polars")`), the hand-written Polars time, their ratio (target <= 1.3), and stock
Ibis (`ibis.polars.connect()`, in-memory engine) for contrast. Best of `--repeat` runs, taken in turns.

    .venv/bin/python benchmarks/bench_parity.py [--rows 1000000] [--events 10000000]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import ibis
import numpy as np
import polars as pl

from workbench import backends


def best(runs: list, repeat: int) -> list[float]:
    """The fastest of `repeat` runs of each callable, in seconds, taking turns so that a busy
    machine slows them alike."""
    times = [[] for _ in runs]
    for _ in range(repeat):
        for run, spent in zip(runs, times, strict=True):
            start = time.perf_counter()
            run()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def versions(rows: int, seed: int) -> pl.DataFrame:
    """SCD2-shaped versions: about 10 per key, in no particular order."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "key": rng.integers(0, rows // 10, rows),
            "valid_from": rng.integers(0, 10**9, rows),
            "amount": rng.random(rows),
        }
    )


def events(rows: int, seed: int) -> pl.DataFrame:
    """Click events: 100k users, 10 event types."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "user_id": rng.integers(0, 100_000, rows),
            "event_type": rng.integers(0, 10, rows),
            "amount": rng.random(rows),
        }
    )


def lead_case(df: pl.DataFrame):
    def ibis_expr(con):
        t = con.create_table("versions", df, overwrite=True)
        w = ibis.window(group_by=t.key, order_by=t.valid_from)
        return t.mutate(valid_to=t.valid_from.lead().over(w))

    def by_hand():
        valid_to = pl.col("valid_from").shift(-1).over("key", order_by="valid_from")
        return df.lazy().with_columns(valid_to=valid_to).collect(engine="streaming")

    return ibis_expr, by_hand


def group_by_case(df: pl.DataFrame):
    def ibis_expr(con):
        t = con.create_table("events", df, overwrite=True)
        return t.group_by("user_id").agg(events=t.count(), amount=t.amount.sum())

    def by_hand():
        aggs = [pl.len().alias("events"), pl.col("amount").sum()]
        return df.lazy().group_by("user_id").agg(aggs).collect(engine="streaming")

    return ibis_expr, by_hand


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="versions for the lead")
    parser.add_argument("--events", type=int, default=10_000_000, help="events for the group-by")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    workbench = backends.connect("polars")
    cases = {
        f"lead over key, {args.rows:,} rows": lead_case(versions(args.rows, args.seed)),
        f"group-by user, {args.events:,} events": group_by_case(events(args.events, args.seed)),
    }
    print(f"{'case':40} {'workbench':>10} {'by hand':>10} {'ratio':>6} {'stock ibis':>11}")
    for name, (ibis_expr, by_hand) in cases.items():
        runs = [partial(workbench.to_polars, ibis_expr(workbench)), by_hand]
        stock = "no rule"  # stock Ibis has no window rules on polars
        if "lead" not in name:
            con = ibis.polars.connect()
            runs.append(partial(con.to_polars, ibis_expr(con)))
        ours, hand, *rest = best(runs, args.repeat)
        stock = f"{rest[0]:.3f} s" if rest else stock
        ratio = ours / hand
        flag = "" if ratio <= 1.3 else "  above the 1.3 target"
        print(f"{name:40} {ours:8.3f} s {hand:8.3f} s {ratio:6.2f} {stock:>11}{flag}")


if __name__ == "__main__":
    main()
