"""Data quality checks declared once and evaluated as Ibis expressions on any engine.

A check is a rule with a severity and a tolerance, in the vocabulary of Delta Live Tables and dbt:
`warn` keeps the failing rows, `drop` leaves them out (counted), `quarantine` moves them to the
quarantine table, `fail` stops the write. The check passes when its failing share is at most its
tolerance; the rows are still handled by their severity (a `fail` check within its tolerance lets
its rows through, recorded). Value checks leave nulls alone: `not_null` is the check for nulls,
as in dbt's `accepted_values` and `relationships` tests.

A `Suite` binds checks to a table's schema, so a check naming a missing column fails when it is
declared, and evaluates every row-level check in one pass: one flag column per check.
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
        raise _missing(key, to.columns, "the referenced table", f"references_{column}")
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


class Suite:
    """Checks bound to a table's schema, validated when declared, evaluated in one pass."""

    def __init__(
        self, table: ibis.Table | ibis.Schema, checks: Iterable[Check], name: str = "table"
    ):
        self.schema = table.schema() if isinstance(table, ibis.Table) else ibis.schema(table)
        self.checks = tuple(checks)
        self.name = name
        seen = set()
        for check in self.checks:
            if not isinstance(check, Check):
                raise QualityError(
                    f"{check!r} is not a check.", "Allowed: not_null(...), unique(...), ..."
                )
            if check.name in seen:
                raise QualityError(
                    f"Two checks are named {check.name!r}.",
                    "Check names are unique in a suite.",
                    "pass name='...' to one of them.",
                )
            seen.add(check.name)
            self._validate(check)

    def __repr__(self) -> str:
        return f"Suite({self.name!r}, {len(self.checks)} checks: {', '.join(self.names)})"

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checks]

    @property
    def row_checks(self) -> list[Check]:
        return [c for c in self.checks if c.row_level]

    def check(self, name: str) -> Check:
        """The check named `name`."""
        for c in self.checks:
            if c.name == name:
                return c
        raise _missing(name, self.names, "this suite", "the check", what="check")

    def _validate(self, check: Check) -> None:
        for column in check.columns:
            if column not in self.schema:
                raise _missing(column, list(self.schema), self.name, check.name)
        if check.columns:
            dtype = self.schema[check.columns[0]]
            needs = {"matches": dtype.is_string(), "freshness": dtype.is_temporal(),
                     "in_range": dtype.is_numeric() or dtype.is_temporal() or dtype.is_string()}  # fmt: skip
            if not needs.get(check.kind, True):
                raise QualityError(
                    f"Check {check.name!r}: column {check.columns[0]!r} has type {dtype}.",
                    "matches needs a string column, freshness a timestamp or date, in_range an "
                    "ordered type.",
                    "pick another column or another kind of check.",
                )
        if check.kind == "expression":
            declared = ibis.table(self.schema, name=self.name)
            try:
                value = _predicate(declared, check)
            except (AttributeError, ibis.common.exceptions.IbisError) as exc:
                column = re.findall(r"'([^']+)'", str(exc))
                raise _missing(
                    column[-1] if column else str(exc), list(self.schema), self.name, check.name
                ) from exc
            if not isinstance(value, ibis.Value) or not value.type().is_boolean():
                raise QualityError(
                    f"Check {check.name!r}: the expression is not boolean ({value!r}).",
                    "Allowed: an expression that is true for a good row.",
                    "for example expect('positive', ibis._.amount > 0).",
                )

    def conform(self, table: ibis.Table) -> None:
        """Refuse data that lacks a column the checks were declared on."""
        for check in self.checks:
            for column in check.columns:
                if column not in table.columns:
                    raise _missing(column, table.columns, "the data", check.name)

    # -- evaluation: pure functions ibis.Table -> ibis.Table ------------------------------

    def flags(self, table: ibis.Table) -> ibis.Table:
        """`table` with one boolean column per row-level check, True where the row fails it."""
        self.conform(table)
        data_columns = table.columns
        helpers = []
        for i, check in enumerate(self.row_checks):
            if check.kind == "references":
                # A left join to the distinct keys keeps every row once; no inequality join,
                # which Ibis's polars backend lacks.
                ref = f"__ref_{i}"
                dim = check.params["to"]
                keys = dim.select(**{ref: dim[check.params["key"]]}).distinct()
                table = table.left_join(keys, table[check.columns[0]] == keys[ref])
                helpers.append(ref)
        flags = {}
        for i, check in enumerate(self.row_checks):
            flags[check.flag_column] = _flag(table, check, i).fill_null(False)
        return table.select(*data_columns, **flags)

    def summary(self, flagged: ibis.Table) -> ibis.Table:
        """One row from one scan: the row count, failing rows per check, rows dropped and
        quarantined, and the newest timestamp of each freshness check."""
        metrics = {"rows": flagged.count()}
        for check in self.row_checks:
            metrics[check.flag_column] = flagged[check.flag_column].cast("int64").sum()
        drop, quarantine = self._any(flagged, "drop"), self._any(flagged, "quarantine")
        # Counted only when the suite has checks of that severity (absent means none).
        if quarantine is not None:
            metrics["quarantined"] = quarantine.cast("int64").sum()
        if drop is not None:
            gone = drop if quarantine is None else drop & ~quarantine
            metrics["dropped"] = gone.cast("int64").sum()
        for check in self.checks:
            if check.kind == "freshness":
                metrics[f"_newest_{check.name}"] = flagged[check.columns[0]].max()
        return flagged.aggregate(**metrics)

    def valid(self, flagged: ibis.Table) -> ibis.Table:
        """The rows that go on to the target: those failing no `drop` or `quarantine` check."""
        out = self._any(flagged, "drop", "quarantine")
        rows = flagged if out is None else flagged.filter(~out)
        return rows.drop(*self._flag_columns())

    def dropped(self, flagged: ibis.Table) -> ibis.Table:
        """The rows left out by a `drop` check and not quarantined."""
        drop, quarantine = self._any(flagged, "drop"), self._any(flagged, "quarantine")
        if drop is None:
            return flagged.filter(ibis.literal(False)).drop(*self._flag_columns())
        out = drop if quarantine is None else drop & ~quarantine
        return flagged.filter(out).drop(*self._flag_columns())

    def quarantined(self, flagged: ibis.Table, run_id: str) -> ibis.Table:
        """Rows failing a `quarantine` check, with `_failed_checks` (every check the row failed,
        comma separated) and `_run_id`."""
        names = ibis.literal("")
        for check in self.row_checks:
            names = names + ibis.ifelse(flagged[check.flag_column], ", " + check.name, "")
        out = self._any(flagged, "quarantine")
        rows = flagged.filter(ibis.literal(False) if out is None else out)
        # Every name comes with a leading ", ": strip the first one (a regex keeps the
        # expression single; substr repeats it inside a CASE on some compilers).
        rows = rows.mutate(_failed_checks=names.re_replace("^, ", ""), _run_id=ibis.literal(run_id))
        return rows.drop(*self._flag_columns())

    def failures(self, table: ibis.Table, check: str | Check) -> ibis.Table:
        """The rows of `table` failing one row-level check, as an audit returns them."""
        check = self.check(check) if isinstance(check, str) else check
        if not check.row_level:
            raise QualityError(
                f"Check {check.name!r} is a table-level check ({check.kind}): it has no failing rows.",
                "Row-level checks: " + ", ".join(c.name for c in self.row_checks) + ".",
                "its measured value is in the report (quality.audit) and ops.quality_results.",
            )
        flagged = Suite(self.schema, [check], self.name).flags(table)
        return flagged.filter(flagged[check.flag_column]).drop(check.flag_column)

    def _flag_columns(self) -> list[str]:
        return [c.flag_column for c in self.row_checks]

    def _any(self, flagged: ibis.Table, *severities: str) -> ibis.BooleanValue | None:
        """True where the row fails a check of one of `severities`; None when there is none."""
        flags = [flagged[c.flag_column] for c in self.row_checks if c.severity in severities]
        return ibis.or_(*flags) if flags else None


def _flag(t: ibis.Table, check: Check, i: int) -> ibis.BooleanValue:
    """True where the row fails `check` (may be null: the caller fills nulls with False)."""
    cols = [t[c] for c in check.columns]
    p = check.params
    if check.kind == "not_null":
        return ibis.or_(*[c.isnull() for c in cols])
    if check.kind == "unique":
        present = ibis.and_(*[c.notnull() for c in cols])
        count = cols[0].count().over(ibis.window(group_by=list(check.columns)))
        return present & (count > 1)
    if check.kind == "accepted_values":
        return ~cols[0].isin(p["values"])
    if check.kind == "in_range":
        outside = [cols[0] < p["min"]] if p["min"] is not None else []
        outside += [cols[0] > p["max"]] if p["max"] is not None else []
        return ibis.or_(*outside)
    if check.kind == "matches":
        return ~cols[0].re_search(p["pattern"])
    if check.kind == "references":
        return cols[0].notnull() & t[f"__ref_{i}"].isnull()
    if check.kind == "expression":
        return ~_predicate(t, check).fill_null(True)
    raise AssertionError(check.kind)  # table-level kinds have no row flag


def _predicate(t: ibis.Table, check: Check) -> ibis.BooleanValue:
    predicate = check.params["predicate"]
    if isinstance(predicate, Deferred):
        return predicate.resolve(t)
    return predicate(t)


def _missing(
    value: str, candidates: list[str], where: str, check: str, what: str = "column"
) -> QualityError:
    close = difflib.get_close_matches(value, candidates, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(map(repr, close))}?" if close else "check the spelling."
    return QualityError(
        f"Check {check!r} names {what} {value!r}, which {where} does not have.",
        f"{what.capitalize()}s: {', '.join(candidates)}.",
        hint,
    )
