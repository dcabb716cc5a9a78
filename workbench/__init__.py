"""A Jupyter workbench for data engineering on one laptop: Ibis pipelines over a Delta lakehouse.

import workbench as wb
con = wb.connect("duckdb")
lake = wb.Lakehouse("lake")
wb.datasets.generate(lake, scale=0.01, seed=42)
"""

from workbench import backends, datasets, viz
from workbench.backends import BACKENDS, connect
from workbench.chapter import start
from workbench.errors import WorkbenchError
from workbench.lakehouse import Lakehouse

__all__ = [
    "BACKENDS",
    "Lakehouse",
    "WorkbenchError",
    "backends",
    "connect",
    "datasets",
    "start",
    "viz",
]
__version__ = "0.1.0"
