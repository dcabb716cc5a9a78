"""Engine parity: the translations Ibis 12 lacks on polars and datafusion (see issue #3).

Placeholder until #3 lands: connect works, windows and hashes are not yet translated.
"""

from __future__ import annotations

import ibis


def install_polars() -> None:
    """Register the workbench's window and hash translations with Ibis's polars compiler."""


def install_datafusion() -> None:
    """Register the workbench's hash translations with Ibis's datafusion compiler."""


def polars_connection():
    """A polars connection whose results are collected with Polars' streaming engine."""
    return ibis.polars.connect()
