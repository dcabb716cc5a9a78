"""md5 / sha256 `hexdigest` on polars and datafusion, byte-identical to DuckDB (issue #3).

Ibis 12 compiles `StringValue.hexdigest` on DuckDB only, and Polars' own `hash` changes between
versions, so surrogate keys and change-detection hashes need these rules: the lowercase hex
digest of the value's UTF-8 bytes (a binary value's own bytes), null for null.
"""

from __future__ import annotations

import hashlib
from functools import partial

import ibis.expr.operations as ops
import polars as pl
import sqlglot.expressions as sge
from ibis.backends.polars.compiler import translate
from ibis.backends.sql.compilers.datafusion import DataFusionCompiler

from workbench.errors import UnsupportedOperationError

ALGORITHMS = ("md5", "sha256")


def install_polars() -> None:
    """Register `hexdigest` with Ibis's polars `translate` dispatcher (idempotent)."""
    translate.register(ops.HexDigest, _polars_hexdigest)


def install_datafusion() -> None:
    """Give Ibis's datafusion compiler a `visit_HexDigest` (idempotent)."""
    DataFusionCompiler.visit_HexDigest = _datafusion_hexdigest


def _check(how: str) -> None:
    if how not in ALGORITHMS:
        raise UnsupportedOperationError(
            f"hexdigest({how!r}) has no translation that matches DuckDB.",
            f"Supported algorithms: {', '.join(ALGORITHMS)}.",
            "use md5 or sha256; both give the same hex string on every engine.",
        )


def _polars_hexdigest(op: ops.HexDigest, **kw) -> pl.Expr:
    """Hash with Python's hashlib, one batch at a time.

    Polars has no md5 / sha256 of its own, nor has pyarrow. hashlib needs no dependency and is
    independent of the DuckDB answer it is tested against, but it runs once per row in Python:
    about 1.4 s per million rows, on one core. The `polars-hash` plugin (Rust, inside the
    engine, works with Polars 2.1) did md5 and sha256 of a million rows in 0.55 s together;
    swap it in if hashing becomes the bottleneck (a new dependency).
    """
    _check(op.how)
    digest = partial(_digest_series, how=op.how)
    # Elementwise: the streaming engine may call it per batch, and it is safe inside `over`.
    return translate(op.arg, **kw).map_batches(digest, return_dtype=pl.String, is_elementwise=True)


def _digest_series(values: pl.Series, how: str) -> pl.Series:
    new = getattr(hashlib, how)
    if values.dtype == pl.Binary:
        digests = [None if v is None else new(v).hexdigest() for v in values.to_list()]
    else:
        digests = [None if v is None else new(v.encode()).hexdigest() for v in values.to_list()]
    return pl.Series(values.name, digests, dtype=pl.String)


def _datafusion_hexdigest(self, op, *, arg, how):
    """DataFusion's `md5` returns hex already; its `sha256` returns bytes, hex-encoded here."""
    _check(how)
    if how == "md5":
        return self.f.md5(arg)
    return self.f.encode(self.f.sha256(arg), sge.convert("hex"))
