"""A query's per-batch computation, built once over fixed-name tables and replayed every batch.

Ibis 12 takes 10 to 100 ms to compile one query, far longer than DuckDB takes to run it on
100k rows, and a micro-batch runs a dozen. So the plan builds each output's expression once,
over tables whose contents change between batches (input, watermarks, state), compiles it once
to the engine's SQL and replays that SQL each batch. Polars has no SQL to replay (and no
scalar subqueries for the watermarks), so its plan is rebuilt per batch.

Everything crosses between steps as Arrow tables: counts are free, writes need no engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ibis
import pyarrow as pa

from workbench import stream_source
from workbench.stream_windows import Marks, Step

Operator = tuple[str, Callable]


@dataclass
class Output:
    """One operator's results for a batch, as Arrow."""

    out: pa.Table
    late: pa.Table | None
    states: dict[str, pa.Table]


class Plan:
    """The expressions of one query on one engine, and how to run them on a batch."""

    def __init__(self, con: ibis.BaseBackend, prefix: str, operators: list[Operator], key: str):
        self.con, self.prefix, self.operators = con, prefix, operators
        self.replay = con.name in ("duckdb", "datafusion")
        self._building = True
        # The same query on the same engine compiles to the same SQL: reuse it across runners.
        self._sql = _COMPILED.setdefault((con.name, key), {})
        self.inputs = self._put("in", stream_source.SCHEMA.empty_table())
        self._marks = self._put("marks", _marks_table(Marks(0, 0)))
        self.state_schemas: dict[str, pa.Schema] = {}
        self._keys: dict[str, list[str]] = {}
        self._build(Marks(0, 0), discover=True)
        self._building = False
        self.dead_schema = _empty(self.dead).schema
        self.valid_schema = _empty(self.valid).schema
        self.out_schema = _empty(self.steps[-1][1].out if self.steps else self.valid).schema
        lates = [step.late for _, step in self.steps if step.late is not None]
        self.late_schema = _empty(lates[0]).schema if lates else None

    def run(self, raw: pa.Table, marks: Marks, states: dict[str, pa.Table]):
        """Dead letters, valid rows, and each operator's output for one batch of `raw` events."""
        self._put("in", raw)
        self._put("marks", _marks_table(marks))
        for key, table in states.items():
            self._put(f"state_{key}", table.cast(self.state_schemas[key]))
        if not self.replay:
            self._building = True
            self._build(marks)
            self._building = False
        if _clean(raw):  # nothing can be a dead letter: skip two queries
            dead = self.dead_schema.empty_table()
            rows = raw.drop_columns(["error", "raw"]).cast(self.valid_schema)
        else:
            dead = self._get(self.dead, "dead")
            rows = self._get(self.valid, "valid")
        self._put("rows_0", rows)
        outputs = []
        for i, (name, step) in enumerate(self.steps):
            if step.shared is not None:  # computed once, read by the outputs below
                shared = self._get(step.shared, f"{i}.shared")
                self._put(f"shared_{i}", shared)
            result = Output(
                out=shared if step.out is step.shared else self._get(step.out, f"{i}.out"),
                late=None if step.late is None else self._get(step.late, f"{i}.late"),
                states={k: self._get(e, f"{i}.state.{k}") for k, e in step.state.items()},
            )
            outputs.append((name, result))
            self._put(f"rows_{i + 1}", result.out)
        return dead, rows, outputs

    # -- building -------------------------------------------------------------------------

    def _build(self, marks: Marks, discover: bool = False) -> None:
        """Build every expression; the first time, also create the empty state tables."""
        if self.replay:
            m = self._marks
            marks = Marks(m.late.as_scalar(), m.evict.as_scalar())
        self.dead = stream_source.dead_letters(self.inputs)
        self.valid = stream_source.valid(self.inputs)
        rows = self._put("rows_0", _empty(self.valid)) if discover else self._table("rows_0")
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

        out = step.shared if step.out is step.shared else read(step.out)
        states = {key: read(expr) for key, expr in step.state.items()}
        return Step(out=out, state=states, late=read(step.late), shared=step.shared)

    def _keys_seen(self) -> list[str]:
        return [key for keys in self._keys.values() for key in keys]

    # -- the engine edge ------------------------------------------------------------------

    def _table(self, what: str) -> ibis.Table:
        return self.con.table(f"_{self.prefix}_{what}")

    def _put(self, what: str, data: pa.Table) -> ibis.Table | None:
        """Expose Arrow `data` to the engine as table `what` (zero-copy where it can)."""
        name = f"_{self.prefix}_{what}"
        if self.con.name == "duckdb":  # a view over the Arrow table, replaced in place
            self.con.con.register(name, data)
        elif self.con.name == "datafusion":
            if self.con.con.table_exist(name):
                self.con.con.deregister_table(name)
            self.con.con.from_arrow(data, name)
        else:
            self.con.create_table(name, data, overwrite=True)
        return self.con.table(name) if self._building else None

    def _get(self, expr: ibis.Table, label: str) -> pa.Table:
        """Run `expr`: replay its compiled SQL, or let Ibis run it (polars)."""
        schema = expr.schema().to_pyarrow()
        if not self.replay:
            return self.con.to_pyarrow(expr).cast(schema)
        sql = self._sql.get(label)
        if sql is None:
            sql = self._sql[label] = self.con.compile(expr)
        if self.con.name == "duckdb":
            data = self.con.con.execute(sql).fetch_arrow_table()
        else:
            data = self.con.con.sql(sql).to_arrow_table()
        # Raw results keep engine types (DuckDB sums are HUGEINT): give them Ibis's schema.
        return data.rename_columns(schema.names).cast(schema)


_COMPILED: dict[tuple[str, str], dict[str, str]] = {}
"""Compiled SQL by (engine, query) and output label."""


def _clean(raw: pa.Table) -> bool:
    """True when no row can be a dead letter: no parse error, every event time and id set."""
    return (
        raw["error"].null_count == raw.num_rows
        and raw["event_time"].null_count == 0
        and raw["event_id"].null_count == 0
    )


def _marks_table(marks: Marks) -> pa.Table:
    return pa.table({"late": pa.array([marks.late], pa.int64()),
                     "evict": pa.array([marks.evict], pa.int64())})  # fmt: skip


def _empty(expr: ibis.Table) -> pa.Table:
    return expr.schema().to_pyarrow().empty_table()
