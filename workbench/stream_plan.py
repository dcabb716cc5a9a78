"""A query's per-batch computation, built once over fixed-name tables and replayed every batch.

Ibis 12 takes 10 to 100 ms to compile one query, far longer than DuckDB takes to run it on
100k rows, and a micro-batch runs a dozen. So the plan builds each output's expression once,
over tables whose contents change between batches (input, state), compiles it once to the
engine's SQL and replays that SQL each batch, with the batch's two watermarks written into it
as numbers (a constant filter is pushed into the scan and estimated well; a subquery is not).
Polars has no SQL to replay, so its plan is rebuilt per batch.

Intermediate results stay in the engine; what is written to Delta comes back as Arrow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import ibis
import pyarrow as pa
import pyarrow.compute as pc

from workbench import stream_source
from workbench import stream_time as tm
from workbench.stream_windows import Marks, Step

Operator = tuple[str, Callable]


@dataclass
class Output:
    """One operator's results for a batch: its rows (as Arrow for the last operator only, the
    others stay in the engine), how many, its late rows and its new state, as Arrow."""

    out: pa.Table | None
    rows: int
    late: pa.Table | None
    states: dict[str, pa.Table]


@dataclass
class Batch:
    """What a batch produced: dead letters, valid rows seen, the latest event time (µs)."""

    dead: pa.Table
    valid_rows: int
    latest: int | None
    outputs: list[tuple[str, Output]]


class Plan:
    """The expressions of one query on one engine, and how to run them on a batch."""

    def __init__(self, con: ibis.BaseBackend, prefix: str, operators: list[Operator], key: str):
        self.con, self.prefix, self.operators = con, prefix, operators
        self.replay = con.name in ("duckdb", "datafusion")
        self._building = True
        self._kinds: dict[str, str] = {}
        # The same query on the same engine compiles to the same SQL: reuse it across runners.
        self._sql = _COMPILED.setdefault((con.name, key), {})
        self.inputs = self._put("in", stream_source.SCHEMA.empty_table())
        self.suspects = self._put("suspects", stream_source.SCHEMA.empty_table())
        self._now = Marks(0, 0)
        self.state_schemas: dict[str, pa.Schema] = {}
        self._keys: dict[str, list[str]] = {}
        self._build(Marks(0, 0), discover=True)
        self._building = False
        self.dead_schema = _empty(self.dead).schema
        self.valid_schema = _empty(self.valid).schema
        self.out_schema = _empty(self.steps[-1][1].out if self.steps else self.valid).schema
        lates = [step.late for _, step in self.steps if step.late is not None]
        self.late_schema = _empty(lates[0]).schema if lates else None

    def run(self, raw: pa.Table, marks: Marks, states: dict[str, pa.Table]) -> Batch:
        """Dead letters, valid rows, and each operator's output for one batch of `raw` events.

        Intermediate results stay in the engine (DuckDB temp tables, DataFusion cached frames);
        only what is written to Delta comes back as Arrow.
        """
        self._put("in", raw)
        suspects = raw.filter(_suspect(raw))
        self._now = marks
        for key, table in states.items():
            self._put(f"state_{key}", table.cast(self.state_schemas[key]))
        if not self.replay:
            self._building = True
            self._build(marks)
            self._building = False
        # Only a row with a parse error or without event time or id can be a dead letter: the
        # query runs over those few (none: skipped), not over the whole batch.
        dead = self.dead_schema.empty_table()
        if suspects.num_rows:
            self._put("suspects", suspects)
            dead = self._get(self.dead, "dead")
        self._keep("rows_0", self.valid, "valid", view=True)
        stats = self._get(self.stats, "stats").to_pylist()[0]
        outputs = []
        for i, (name, step) in enumerate(self.steps):
            if step.shared is not None:  # computed once, read by the outputs below
                self._keep(f"shared_{i}", step.shared, f"{i}.shared")
            if i == len(self.steps) - 1:
                out = self._get(step.out, f"{i}.out")
                rows = out.num_rows
            else:
                out, rows = (
                    None,
                    self._keep(f"rows_{i + 1}", step.out, f"{i}.out", view=True, count=True),
                )
            late = None if step.late is None else self._get(step.late, f"{i}.late")
            states = {k: self._get(e, f"{i}.state.{k}") for k, e in step.state.items()}
            outputs.append((name, Output(out, rows, late, states)))
        if not self.steps:  # a query of nothing but validation: its results are the valid rows
            outputs.append(("valid", Output(self._get(self.valid, "valid"), stats["n"], None, {})))
        return Batch(dead, stats["n"], stats["top"], outputs)

    # -- building -------------------------------------------------------------------------

    def _build(self, marks: Marks, discover: bool = False) -> None:
        """Build every expression; the first time, also create the empty state tables."""
        if self.replay:  # placeholders, replaced by each batch's watermarks in the SQL
            marks = Marks(ibis.literal(_LATE, "int64"), ibis.literal(_EVICT, "int64"))
        self.dead = stream_source.dead_letters(self.suspects)
        self.valid = stream_source.valid(self.inputs)
        rows = self._put("rows_0", _empty(self.valid)) if discover else self._table("rows_0")
        self.stats = rows.aggregate(n=rows.count(), top=tm.micros(rows.event_time.max()))
        self.steps = []
        for i, (name, run) in enumerate(self.operators):
            if discover:  # a first build without state tells the state tables' schemas
                for key, expr in run({}, rows, marks).state.items():
                    self.state_schemas[key] = _empty(expr).schema
                    self._put(f"state_{key}", _empty(expr))
                self._keys[name] = list(self.state_schemas)[len(self._keys_seen()) :]
            states = {key: self._table(f"state_{key}") for key in self._keys[name]}
            step = self._reuse(run(states, rows, marks), i, discover)
            self.steps.append((name, step))
            after = f"rows_{i + 1}"
            rows = self._put(after, _empty(step.out)) if discover else self._table(after)

    def _reuse(self, step: Step, i: int, discover: bool) -> Step:
        """The step with its shared intermediate read from a table (filled once per batch)."""
        if step.shared is None:
            return step
        what = f"shared_{i}"
        table = self._put(what, _empty(step.shared)) if discover else self._table(what)
        swap = {step.shared.op(): table.op()}

        def read(expr):
            return None if expr is None else expr.op().replace(swap).to_expr()

        out = table if step.out is step.shared else read(step.out)
        states = {key: read(expr) for key, expr in step.state.items()}
        return Step(out=out, state=states, late=read(step.late), shared=step.shared)

    def _keys_seen(self) -> list[str]:
        return [key for keys in self._keys.values() for key in keys]

    # -- the engine edge ------------------------------------------------------------------

    def _table(self, what: str) -> ibis.Table:
        return self.con.table(f"_{self.prefix}_{what}")

    def _put(self, what: str, data: pa.Table) -> ibis.Table | None:
        """Expose Arrow `data` to the engine as table `what` (zero-copy where it can)."""
        name = self._name(what)
        if self.con.name == "duckdb":  # a view over the Arrow table, replaced in place
            self._drop(name, "view")
            self.con.con.register(name, data)
        elif self.con.name == "datafusion":
            if self.con.con.table_exist(name):
                self.con.con.deregister_table(name)
            self.con.con.from_arrow(data, name)
        else:
            self.con.create_table(name, data, overwrite=True)
        return self.con.table(name) if self._building else None

    def _keep(self, what, expr, label, view=False, count=False) -> int | None:
        """Materialize `expr` in the engine as table `what` (a view when cheap to recompute);
        the row count when asked."""
        if not self.replay:
            data = self._get(expr, label)
            self._put(what, data)
            return data.num_rows
        name, sql = self._name(what), _with_marks(self._compiled(expr, label), self._now)
        if self.con.name == "duckdb":
            self._drop(name, "view" if view else "table")
            kind = "VIEW" if view else "TABLE"
            self.con.con.execute(f'CREATE OR REPLACE TEMP {kind} "{name}" AS {sql}')
            if count:
                return self.con.con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            return None
        frame = self.con.con.sql(sql)
        frame = frame if view else frame.cache()
        if self.con.con.table_exist(name):
            self.con.con.deregister_table(name)
        self.con.con.register_view(name, frame)
        return frame.count() if count else None

    def _drop(self, name: str, keep: str) -> None:
        """DuckDB refuses to replace a view by a table (or back): drop the other kind first."""
        was = self._kinds.get(name)
        if was is None:  # left by an earlier runner on this connection: either kind
            for kind in ("VIEW", "TABLE"):
                try:
                    self.con.con.execute(f'DROP {kind} IF EXISTS "{name}"')
                except duckdb.CatalogException:  # it is of the other kind
                    pass
        elif was != keep:
            self.con.con.execute(f'DROP {was.upper()} IF EXISTS "{name}"')
        self._kinds[name] = keep

    def _name(self, what: str) -> str:
        return f"_{self.prefix}_{what}"

    def _compiled(self, expr: ibis.Table, label: str) -> str:
        sql = self._sql.get(label)
        if sql is None:
            sql = self._sql[label] = self.con.compile(expr)
        return sql

    def _get(self, expr: ibis.Table, label: str) -> pa.Table:
        """Run `expr`: replay its compiled SQL, or let Ibis run it (polars)."""
        schema = expr.schema().to_pyarrow()
        if not self.replay:
            return self.con.to_pyarrow(expr).cast(schema)
        sql = _with_marks(self._compiled(expr, label), self._now)
        if self.con.name == "duckdb":
            data = self.con.con.execute(sql).fetch_arrow_table()
        else:
            data = self.con.con.sql(sql).to_arrow_table()
        # Raw results keep engine types (DuckDB sums are HUGEINT): give them Ibis's schema.
        return data.rename_columns(schema.names).cast(schema)


_COMPILED: dict[tuple[str, str], dict[str, str]] = {}
"""Compiled SQL by (engine, query) and output label."""


def _suspect(raw: pa.Table) -> pa.ChunkedArray:
    """True for the rows that may be dead letters: a parse error, no event time or no id."""
    return pc.or_(
        pc.is_valid(raw["error"]),
        pc.or_(pc.is_null(raw["event_time"]), pc.is_null(raw["event_id"])),
    )


_LATE, _EVICT = 8765432109876543210, 8765432109876543211
"""Watermark placeholders in the compiled SQL: 19 digits, found in no other literal."""


def _with_marks(sql: str, marks: Marks) -> str:
    """The compiled SQL with this batch's watermarks, typed (a bare 0 would be an INTEGER)."""
    late, evict = (f"CAST({mark} AS BIGINT)" for mark in (marks.late, marks.evict))
    return sql.replace(str(_LATE), late).replace(str(_EVICT), evict)


def _empty(expr: ibis.Table) -> pa.Table:
    return expr.schema().to_pyarrow().empty_table()
