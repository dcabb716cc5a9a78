"""Data quality runs: audit data with a suite, route its rows by severity, record every run.

`run` is write-audit-publish: the data is written to `<table>_staging`, audited there in one
pass, and only then published: valid rows to the target, quarantined rows to
`<table>_quarantine` (with the checks they failed and the run id), dropped rows counted. A `fail`
check that does not pass stops the run before the target changes. Every run appends one row per
check to `ops.quality_results`. The checks themselves live in `workbench.checks`; profiling and
anomaly detection in `workbench.profiling` and `workbench.anomalies`. Import this module
alone: it re-exports the check constructors and `Suite`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import ibis
import pandas as pd
import pyarrow as pa

from workbench import datasets
from workbench.checks import (  # noqa: F401  (re-exported: `quality.not_null(...)`)
    SEVERITIES,
    Check,
    QualityError,
    accepted_values,
    expect,
    freshness,
    in_range,
    matches,
    not_null,
    references,
    row_count,
    unique,
)
from workbench.lakehouse import Lakehouse
from workbench.suite import Suite

RESULTS = "ops.quality_results"
"""The table every run appends to: one row per check per run."""
SAMPLE_ROWS = 5
"""How many failing rows a `fail` error shows."""
RESULTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("run_time", pa.timestamp("us", tz="UTC")),
        ("table", pa.string()),
        ("table_version", pa.int64()),  # the target's version after the run (null: none yet)
        ("check", pa.string()),
        ("kind", pa.string()),
        ("severity", pa.string()),
        ("tolerance", pa.float64()),
        ("failing_rows", pa.int64()),  # null for table-level checks
        ("total_rows", pa.int64()),
        ("passed", pa.bool_()),
        ("observed", pa.float64()),  # failing share; row count; or age of the newest row in s
        ("rows_written", pa.int64()),
        ("rows_dropped", pa.int64()),
        ("rows_quarantined", pa.int64()),
    ]
)


@dataclass
class Report:
    """What one evaluation of a suite found: counts per check and what happened to the rows."""

    run_id: str
    run_time: dt.datetime
    table: str
    rows: int
    dropped: int
    quarantined: int
    results: pd.DataFrame
    table_version: int | None = None
    written: int = 0
    staged_version: int | None = None
    """The version of `<table>_staging` this run audited (write-audit-publish)."""

    @property
    def passed(self) -> bool:
        """True when no `fail` check failed (warn, drop and quarantine checks never stop a run)."""
        return not self.stopped_by

    @property
    def stopped_by(self) -> list[str]:
        """The `fail` checks that did not pass."""
        r = self.results
        return list(r.loc[(r.severity == "fail") & ~r.passed, "check"])

    def failing(self) -> dict[str, int]:
        """Failing rows per row-level check."""
        r = self.results.dropna(subset=["failing_rows"])
        return {c: int(n) for c, n in zip(r.check, r.failing_rows, strict=True)}

    def _repr_html_(self) -> str:
        head = (f"<p>run <code>{self.run_id}</code> on <b>{self.table}</b>: {self.rows:,} rows, "
                f"{self.written:,} written, {self.dropped:,} dropped, "
                f"{self.quarantined:,} quarantined</p>")  # fmt: skip
        return head + self.results.to_html(index=False)


def audit(
    data: ibis.Table,
    suite: Suite,
    now: dt.datetime | None = None,
    run_id: str | None = None,
    run_time: dt.datetime | None = None,
    table: str | None = None,
) -> Report:
    """Evaluate every check of `suite` on `data` in one scan and report the counts (writes nothing)."""
    flagged = suite.flags(data)
    summary = suite.summary(flagged).to_pyarrow().to_pylist()[0]
    rows = int(summary["rows"] or 0)
    records = []
    for check in suite.checks:
        failing, observed = None, None
        if check.row_level:
            failing = int(summary[check.flag_column] or 0)
            observed = failing / rows if rows else 0.0
        elif check.kind == "row_count":
            observed = float(rows)
        else:
            observed = _age(summary[f"_newest_{check.name}"], now or check.params["now"])
        records.append(
            {"check": check.name, "kind": check.kind, "severity": check.severity,
             "tolerance": check.tolerance, "failing_rows": failing, "total_rows": rows,
             "passed": check.judge(failing, rows, observed), "observed": observed}
        )  # fmt: skip
    results = pd.DataFrame(records, columns=[f.name for f in RESULTS_SCHEMA][4:12])
    return Report(
        run_id=run_id or uuid.uuid4().hex[:12],
        run_time=run_time or dt.datetime.now(dt.UTC),
        table=table or suite.name,
        rows=rows,
        dropped=int(summary.get("dropped") or 0),
        quarantined=int(summary.get("quarantined") or 0),
        results=results.astype({"failing_rows": "Int64"}),
    )


def run(
    lake: Lakehouse,
    target: str,
    data: ibis.Table,
    suite: Suite,
    mode: str = "append",
    stage: bool = True,
    now: dt.datetime | None = None,
    run_id: str | None = None,
    run_time: dt.datetime | None = None,
    transaction: tuple[str, int] | None = None,
) -> Report:
    """Audit `data` and publish it into `target`: valid rows to the target, quarantined rows to
    `<target>_quarantine`, dropped rows counted; a `fail` check that does not pass raises a
    `QualityError` and leaves the target untouched. Appends the results to ops.quality_results.

    With `stage=True` (write-audit-publish) the data is first written to `<target>_staging` and
    the audit and the publish both read that staged version, so what is published is exactly
    what was audited. `transaction=(app_id, batch_id)` makes a replay of a batch (a retried
    job) change nothing: the target, the quarantine and the results each commit with it, and a
    table that already holds that batch skips its write.
    """
    lake.path(target)  # refuse a bad name or mode before any work
    if mode not in ("append", "overwrite"):
        raise QualityError(
            f"Unknown write mode {mode!r}.", "Allowed modes: 'append', 'overwrite'.",
            "a quality run appends by default.",
        )  # fmt: skip
    suite.conform(data)
    staged = None
    if stage:
        staging = f"{target}_staging"
        staged = lake.write(staging, data, mode="overwrite", schema_mode="overwrite")
        data = lake.table(staging, data._find_backend(use_default=True), version=staged)
    report = audit(data, suite, now=now, run_id=run_id, run_time=run_time, table=target)
    report.staged_version = staged
    if not report.passed:
        report.table_version = lake.version(target) if lake.exists(target) else None
        record(lake, report, transaction)
        raise _stopped(report, suite, data)
    flagged = suite.flags(data)
    if report.quarantined:
        # Quarantine keeps rows whatever their schema: new columns are added, not refused.
        rows = suite.quarantined(flagged, report.run_id)
        lake.write(f"{target}_quarantine", rows, schema_mode="merge", transaction=transaction)
    # Nothing to leave out: publish the data as it is, without evaluating the flags again.
    valid = suite.valid(flagged) if report.dropped or report.quarantined else data
    report.table_version = lake.write(target, valid, mode=mode, transaction=transaction)
    report.written = report.rows - report.dropped - report.quarantined
    record(lake, report, transaction)
    return report


def record(lake: Lakehouse, report: Report, transaction: tuple[str, int] | None = None) -> int:
    """Append the report's rows to ops.quality_results (once per `transaction`, when given);
    returns the table's version."""
    r = report.results
    n = len(r)
    columns = {
        "run_id": [report.run_id] * n,
        "run_time": [report.run_time] * n,
        "table": [report.table] * n,
        "table_version": [report.table_version] * n,
        **{c: r[c].tolist() for c in r.columns},
        "rows_written": [report.written] * n,
        "rows_dropped": [report.dropped] * n,
        "rows_quarantined": [report.quarantined] * n,
    }
    columns["failing_rows"] = [None if pd.isna(v) else int(v) for v in columns["failing_rows"]]
    rows = pa.table(columns, schema=RESULTS_SCHEMA)
    return lake.write(RESULTS, rows, mode="append", transaction=transaction)


def results(lake: Lakehouse, con: ibis.BaseBackend | None = None) -> ibis.Table:
    """The results history: every check of every run, as an Ibis table."""
    if not lake.exists(RESULTS):
        return (con or lake.con).create_table(
            "quality_results_empty", RESULTS_SCHEMA.empty_table(), overwrite=True
        )
    return lake.table(RESULTS, con)


def _age(newest, now: dt.datetime | None) -> float | None:
    """Seconds between the newest timestamp and `now` (the dataset's simulated now by default)."""
    if newest is None:
        return None
    now = pd.Timestamp(now or datasets.SIMULATED_NOW)
    newest = pd.Timestamp(newest)
    if newest.tzinfo is None:
        newest = newest.tz_localize("UTC")
    if now.tzinfo is None:
        now = now.tz_localize("UTC")
    return (now - newest).total_seconds()


def _stopped(report: Report, suite: Suite, data: ibis.Table) -> QualityError:
    """The error a `fail` check raises: the checks that stopped the run and a few failing rows."""
    lines = []
    for name in report.stopped_by:
        row = report.results.set_index("check").loc[name]
        check = suite.check(name)
        if check.row_level:
            sample = suite.failures(data, check).limit(SAMPLE_ROWS).to_pandas()
            lines.append(f"- {name}: {row.failing_rows:,} of {row.total_rows:,} rows fail "
                         f"(tolerance {check.tolerance:g}); for example:\n"
                         + sample.to_string(index=False, max_colwidth=30))  # fmt: skip
        else:
            lines.append(f"- {name} ({check.kind}): measured {row.observed:g}, {check.params}")
    return QualityError(
        f"Run {report.run_id} of {report.table!r} stopped by fail check(s) "
        f"{', '.join(report.stopped_by)}; the target was not changed.\n" + "\n".join(lines),
        "A fail check passes when its failing share is at most its tolerance.",
        "fix the data, or give the check another severity (quarantine keeps the rows aside); "
        f"the results are in {RESULTS}.",
    )
