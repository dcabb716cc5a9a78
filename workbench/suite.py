"""A suite: checks bound to a table's schema, validated when declared, evaluated in one pass.

Binding to a schema lets a check naming a missing column fail when it is declared, with the
closest names as a hint. Evaluation is a pure Ibis pipeline: the data plus one boolean flag
column per row-level check, so counting every check's failures is one query with one scan of
the table (plus, inside that query, the aggregate of the keys a `unique` check needs and the
keys of the dimension a `references` check reads), not one query per check.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

import ibis
from ibis import Deferred

from workbench.checks import FLAG_PREFIX, Check, QualityError, missing_column

__all__ = ["FLAG_PREFIX", "Suite"]


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
        close = difflib.get_close_matches(str(name), self.names, n=3, cutoff=0.5)
        raise QualityError(
            f"Suite {self.name!r} has no check named {name!r}.",
            f"Checks: {', '.join(self.names)}.",
            f"did you mean {', '.join(map(repr, close))}?" if close else "see suite.names.",
        )

    def _validate(self, check: Check) -> None:
        for column in check.columns:
            if column not in self.schema:
                raise missing_column(column, list(self.schema), self.name, check.name)
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
                raise missing_column(
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
                    raise missing_column(column, table.columns, "the data", check.name)

    # -- evaluation: pure functions ibis.Table -> ibis.Table ------------------------------

    def flags(self, table: ibis.Table) -> ibis.Table:
        """`table` with one boolean column per row-level check, True where the row fails it."""
        self.conform(table)
        data_columns = list(table.columns)
        joined = {"unique", "references"}
        # Checks that need only the row first: the joins below then carry booleans, not the
        # strings the flags were computed from (DuckDB's projection after a join was the cost).
        local = {
            c.flag_column: _flag(table, c, i).fill_null(False)
            for i, c in enumerate(self.row_checks)
            if c.kind not in joined
        }
        source, flagged = table, table.select(*data_columns, **local)
        for i, check in enumerate(self.row_checks):
            # Keys found by an aggregate, then a left join of those keys: each row is kept
            # once, and no window has to carry every column (DuckDB's window operator
            # materializes them all); Ibis's polars backend has no inequality join either.
            mark = f"__key_{i}"
            if check.kind == "references":
                dim = check.params["to"]
                keys = dim.select(**{mark: dim[check.params["key"]]}).distinct()
                flagged = flagged.left_join(keys, flagged[check.columns[0]] == keys[mark])
            elif check.kind == "unique":
                cols = list(check.columns)
                present = source.filter(ibis.and_(*[source[c].notnull() for c in cols]))
                dups = present.group_by(cols).agg(_n=ibis._.count()).filter(ibis._._n > 1)
                dups = dups.select(
                    **{f"{mark}_{c}": dups[c] for c in cols}, **{mark: ibis.literal(True)}
                )
                on = [flagged[c] == dups[f"{mark}_{c}"] for c in cols]
                flagged = flagged.left_join(dups, on)
        flags = {}
        for i, check in enumerate(self.row_checks):
            if check.kind in joined:
                flags[check.flag_column] = _flag(flagged, check, i).fill_null(False)
            else:
                flags[check.flag_column] = flagged[check.flag_column]
        return flagged.select(*data_columns, **flags)

    def summary(self, flagged: ibis.Table) -> ibis.Table:
        """One row from one query: the row count, failing rows per check, rows dropped and
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
        return t[f"__key_{i}"].notnull()
    if check.kind == "accepted_values":
        return ~cols[0].isin(p["values"])
    if check.kind == "in_range":
        outside = [cols[0] < p["min"]] if p["min"] is not None else []
        outside += [cols[0] > p["max"]] if p["max"] is not None else []
        return ibis.or_(*outside)
    if check.kind == "matches":
        return ~cols[0].re_search(p["pattern"])
    if check.kind == "references":
        return cols[0].notnull() & t[f"__key_{i}"].isnull()
    if check.kind == "expression":
        return ~_predicate(t, check).fill_null(True)
    raise AssertionError(check.kind)  # table-level kinds have no row flag


def _predicate(t: ibis.Table, check: Check) -> ibis.BooleanValue:
    predicate = check.params["predicate"]
    if isinstance(predicate, Deferred):
        return predicate.resolve(t)
    return predicate(t)
