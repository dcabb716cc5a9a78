"""Data quality checks declared once and evaluated as Ibis expressions on any engine.

A check is a rule with a severity and a tolerance, in the vocabulary of Delta Live Tables and dbt:
`warn` keeps the failing rows, `drop` leaves them out (counted), `quarantine` moves them to the
quarantine table, `fail` stops the write. The check passes when its failing share is at most its
tolerance; the rows are still handled by their severity (a `fail` check within its tolerance lets
its rows through, recorded). Value checks leave nulls alone: `not_null` is the check for nulls,
as in dbt's `accepted_values` and `relationships` tests.

`workbench.suite.Suite` binds checks to a table's schema and evaluates them in one pass.

Why not pandera (0.35, evaluated with its Ibis and Polars backends): it reports failure cases
but does not route rows (drop, quarantine), runs several queries per check (80 engine calls for
10 range checks on DuckDB), its Ibis backend ignored `unique=True` silently on all three
engines, and its Polars backend skips data checks on a LazyFrame unless
PANDERA_VALIDATION_DEPTH says otherwise. Delta enforces the schema.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ibis
from ibis import Deferred

from workbench.errors import WorkbenchError

SEVERITIES = ("warn", "drop", "quarantine", "fail")
"""What happens to failing rows: kept, left out, moved aside, or the write stops."""
TABLE_SEVERITIES = ("warn", "fail")
"""Table-level checks (row count, freshness) have no rows to drop or quarantine."""
TABLE_KINDS = ("row_count", "freshness")
FLAG_PREFIX = "_fail_"
"""Flag columns are named `_fail_<check>`: True where the row fails the check."""
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# Lookarounds and backreferences exist in Python's `re` but not in RE2 (DuckDB) nor in Rust's
# regex (Polars, DataFusion): a pattern using them cannot give the same answer everywhere.
_NOT_PORTABLE = re.compile(r"\(\?<?[=!]|\\[1-9]|\(\?P=")


class QualityError(WorkbenchError):
    """A check that cannot be declared, or a `fail` check that stopped a write."""


@dataclass(frozen=True)
class Check:
    """One declared rule: what it tests, on which columns, its severity and tolerance."""

    name: str
    kind: str
    columns: tuple[str, ...]
    severity: str = "warn"
    tolerance: float = 0.0
    params: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def row_level(self) -> bool:
        """True for checks that judge each row; False for row count and freshness."""
        return self.kind not in TABLE_KINDS

    @property
    def flag_column(self) -> str:
        return FLAG_PREFIX + self.name

    def judge(self, failing: int | None, total: int, observed: float | None) -> bool:
        """Whether the check passes, given what one evaluation measured."""
        if self.kind == "row_count":
            low, high = self.params["min"], self.params["max"]
            return (low is None or total >= low) and (high is None or total <= high)
        if self.kind == "freshness":
            return observed is not None and observed <= self.params["max_age"].total_seconds()
        share = failing / total if total else 0.0
        return share <= self.tolerance


def _make(kind, columns, severity, tolerance, name, default_name, **params) -> Check:
    columns = (columns,) if isinstance(columns, str) else tuple(columns)
    if not columns and kind not in ("row_count", "expression"):
        raise QualityError(f"A {kind} check needs at least one column.", None, "name a column.")
    allowed = TABLE_SEVERITIES if kind in TABLE_KINDS else SEVERITIES
    if severity not in allowed:
        close = difflib.get_close_matches(str(severity), allowed, n=1)
        raise QualityError(
            f"Unknown severity {severity!r} for a {kind} check.",
            f"Valid severities: {', '.join(allowed)}"
            + (
                " (a table-level check has no rows to drop or quarantine)."
                if kind in TABLE_KINDS
                else "."
            ),
            f"did you mean {close[0]!r}?"
            if close
            else "warn keeps the rows, fail stops the write.",
        )
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not 0 <= tolerance <= 1
    ):
        raise QualityError(
            f"tolerance={tolerance!r} is not a failing share.",
            "Allowed: a number from 0 (no failing row allowed) to 1.",
            "tolerance=0.01 lets the check pass with up to 1% failing rows.",
        )
    name = name or re.sub(r"[^a-z0-9_]+", "_", default_name.lower()).strip("_")
    if not _NAME.match(name):
        raise QualityError(
            f"Check name {name!r} is not allowed.",
            "A check name is lowercase letters, digits and underscores, starting with a letter.",
            "for example name='paid_after_order'.",
        )
    return Check(name, kind, columns, severity, float(tolerance), params)


def not_null(*columns: str, severity="warn", tolerance=0.0, name=None) -> Check:
    """Rows where any of `columns` is null fail."""
    return _make("not_null", columns, severity, tolerance, name, "not_null_" + "_".join(columns))


def unique(columns: str | Sequence[str], severity="warn", tolerance=0.0, name=None) -> Check:
    """Every row whose key (one or several columns) appears more than once fails; keys with a
    null are left alone, as in dbt's `unique` test."""
    cols = (columns,) if isinstance(columns, str) else tuple(columns)
    return _make("unique", cols, severity, tolerance, name, "unique_" + "_".join(cols))


def accepted_values(
    column: str, values: Iterable, severity="warn", tolerance=0.0, name=None
) -> Check:
    """Rows whose `column` is not one of `values` fail."""
    values = tuple(values)
    return _make(
        "accepted_values",
        column,
        severity,
        tolerance,
        name,
        f"accepted_values_{column}",
        values=values,
    )


def in_range(column: str, min=None, max=None, severity="warn", tolerance=0.0, name=None) -> Check:  # noqa: A002
    """Rows whose `column` is below `min` or above `max` (both inclusive, either optional) fail."""
    if min is None and max is None:
        raise QualityError("in_range needs min, max or both.", None, "in_range('amount', min=0).")
    return _make(
        "in_range", column, severity, tolerance, name, f"in_range_{column}", min=min, max=max
    )


def matches(column: str, pattern: str, severity="warn", tolerance=0.0, name=None) -> Check:
    """Rows whose string `column` does not contain a match of the regular expression fail
    (anchor it with ^ and $ to match the whole value)."""
    try:
        re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise QualityError(f"Pattern {pattern!r} is not a regular expression: {exc}.") from exc
    if _NOT_PORTABLE.search(pattern):
        raise QualityError(
            f"Pattern {pattern!r} uses a lookaround or a backreference.",
            "Allowed: the syntax RE2 (DuckDB) and Rust's regex (Polars, DataFusion) share.",
            "split the rule into two checks, or use an expect(...) check.",
        )
    return _make("matches", column, severity, tolerance, name, f"matches_{column}", pattern=pattern)


def references(
    column: str, to: ibis.Table, key: str | None = None, severity="warn", tolerance=0.0, name=None
) -> Check:
    """Rows whose `column` is absent from the dimension `to` (its column `key`, default the same
    name) fail: referential integrity."""
    key = key or column
    if key not in to.columns:
        raise missing_column(key, to.columns, "the referenced table", f"references_{column}")
    return _make(
        "references", column, severity, tolerance, name, f"references_{column}", to=to, key=key
    )


def row_count(min: int | None = None, max: int | None = None, severity="warn", name=None) -> Check:  # noqa: A002
    """The table's row count must be within [min, max] (either optional)."""
    return _make("row_count", (), severity, 0.0, name, "row_count", min=min, max=max)


def freshness(
    column: str, max_age: dt.timedelta, now: dt.datetime | None = None, severity="warn", name=None
) -> Check:
    """The newest `column` must be at most `max_age` older than `now` (default: the dataset's
    simulated now, never the wall clock)."""
    if not isinstance(max_age, dt.timedelta):
        raise QualityError(
            f"max_age={max_age!r} is not a duration.",
            "Allowed: a datetime.timedelta.",
            "max_age=datetime.timedelta(hours=6).",
        )
    return _make(
        "freshness", column, severity, 0.0, name, f"freshness_{column}", max_age=max_age, now=now
    )


def expect(name: str, predicate: Deferred | Callable, severity="warn", tolerance=0.0) -> Check:
    """Rows where the boolean expression is false fail (null is not a failure); `predicate` is a
    deferred (`ibis._.paid_ts >= ibis._.order_ts`) or a function of the table."""
    return _make("expression", (), severity, tolerance, name, name, predicate=predicate)


def missing_column(
    value: str, candidates: list[str], where: str, check: str, what: str = "column"
) -> QualityError:
    close = difflib.get_close_matches(value, candidates, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(map(repr, close))}?" if close else "check the spelling."
    return QualityError(
        f"Check {check!r} names {what} {value!r}, which {where} does not have.",
        f"{what.capitalize()}s: {', '.join(candidates)}.",
        hint,
    )
