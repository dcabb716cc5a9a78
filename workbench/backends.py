"""The engines the workbench runs on, what each can do, and `connect(name)`."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

import ibis

from workbench.errors import UnknownBackendError

DEFAULT = "duckdb"


@dataclass(frozen=True)
class Backend:
    """One engine and its capabilities, as data: tests and notebooks select on these flags."""

    name: str
    """The name users pass to `connect`."""
    module: str
    """The Python module that must be importable for the engine to work."""
    description: str
    """One line for `workbench doctor` and the notebooks."""
    required: bool = True
    """Every test and notebook runs on it; False for engines registered for reads only."""
    pipelines: bool = True
    """Runs the workbench's pipelines (modeling, CDC, streaming, quality)."""
    lazy_delta_scan: bool = True
    """Scans a Delta snapshot's files itself, so filters skip what they do not need."""
    window_functions: bool = True
    """Ibis window functions (row_number, lag, lead, cumulative sums) run on it."""
    stable_hashes: bool = True
    """md5 / sha256 `hexdigest` give the same bytes as on every other engine."""
    json_functions: bool = False
    """Ibis JSON functions compile on it (parse JSON at the edge when False)."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Known gaps, named rather than hidden."""

    @property
    def installed(self) -> bool:
        """True when the engine's Python package can be imported."""
        return importlib.util.find_spec(self.module) is not None


BACKENDS: dict[str, Backend] = {
    "duckdb": Backend(
        "duckdb",
        "duckdb",
        "DuckDB: the default, a vectorized columnar SQL engine",
        json_functions=True,
    ),
    "polars": Backend(
        "polars",
        "polars",
        "Polars: lazy DataFrames, collected with the streaming engine",
        notes=(
            "window functions and hexdigest are the workbench's own translation",
            "refused (UnsupportedOperationError): RANGE frames with numeric offsets",
        ),
    ),
    "datafusion": Backend(
        "datafusion",
        "datafusion",
        "Apache DataFusion: an Arrow-native SQL engine",
        notes=(
            "hexdigest is the workbench's own translation",
            "sliding window frames: NaN / infinity sticks in sums, AVG / MIN of a frame left "
            "with only nulls are NaN / stale (tests/test_windows.py); LAG default is literal only",
        ),
    ),
    "sqlite": Backend(
        "sqlite",
        "sqlite3",
        "SQLite: a row store, registered for lakehouse reads only (contrast)",
        required=False,
        pipelines=False,
        lazy_delta_scan=False,
        stable_hashes=False,
        notes=("tables are copied into an in-memory SQLite database when read",),
    ),
}

REQUIRED = tuple(name for name, b in BACKENDS.items() if b.required)


def get(name: str) -> Backend:
    """The registry entry for `name`, or a WorkbenchError listing the valid names."""
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise UnknownBackendError(
            f"Unknown backend {name!r}.",
            f"Valid backends: {', '.join(BACKENDS)}.",
            f"the default is {DEFAULT!r}; `workbench doctor` shows which engines work here.",
        )
    return BACKENDS[name.lower()]


def installed() -> list[str]:
    """The names of the registered engines whose packages are installed."""
    return [name for name, b in BACKENDS.items() if b.installed]


def connect(name: str = DEFAULT) -> ibis.BaseBackend:
    """A fresh Ibis connection to engine `name` (in memory), with the workbench's fixes applied."""
    backend = get(name)
    if not backend.installed:
        raise UnknownBackendError(
            f"Backend {backend.name!r} is registered but its package {backend.module!r} is not installed.",
            f"Installed backends: {', '.join(installed())}.",
            "run `make demo` (or `uv sync --frozen`) to install the locked environment.",
        )
    if backend.name == "duckdb":
        return ibis.duckdb.connect()
    if backend.name == "polars":
        from workbench import parity

        parity.install_polars()
        return parity.polars_connection()
    if backend.name == "datafusion":
        from workbench import parity

        parity.install_datafusion()
        return ibis.datafusion.connect()
    return ibis.sqlite.connect()


def name_of(con: ibis.BaseBackend) -> str:
    """The registry name of an Ibis connection (`con.name`, e.g. 'duckdb')."""
    return con.name
