"""What every chapter notebook does first: charts offline, an engine, its own lake, its data."""

from __future__ import annotations

from pathlib import Path

import ibis

from workbench import backends, datasets, viz
from workbench.lakehouse import Lakehouse


def start(
    backend: str = backends.DEFAULT,
    lake_dir: str | Path = "lake",
    scale: float = 0.01,
    seed: int = 42,
    tables: list[str] | None = None,
) -> tuple[ibis.BaseBackend, Lakehouse]:
    """Connect to `backend`, open the lake at `lake_dir`, and generate the bronze tables
    the chapter needs at `(scale, seed)` when they are missing (or were made from another
    scale or seed: a learner who changes the parameters gets the data they asked for)."""
    viz.enable()
    con = backends.connect(backend)
    lake = Lakehouse(lake_dir, con=con)
    datasets.generate(lake, scale=scale, seed=seed, tables=tables, regenerate_mismatched=True)
    return con, lake
