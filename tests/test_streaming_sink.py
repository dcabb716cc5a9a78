"""Exactly once into Delta: a runner stopped anywhere, even killed mid-write, resumes into the
same tables as a run that never stopped: no duplicate, no loss."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

import workbench as wb
from workbench import stream_source
from workbench import streaming as st
from workbench.lakehouse import Lakehouse

LOG = dict(scale=0.001, seed=3, rate=1000.0, disorder="1 second", late_fraction=0.05,
           late_by="3 seconds", duplicates=0.05, bad=0.01, partitions=3,
           payment_delay="1 second")  # fmt: skip
TRIGGER = "2 seconds"


def query() -> st.Query:
    """The full pipeline: dead letters, dedup, tumbling windows, late rows, results."""
    return st.Query(
        "clicks_2s", st.tumbling("2 seconds"), by=("kind",), delay="1 second", dedup=True
    )


def tables(lake: Lakehouse, q: st.Query) -> dict[str, list]:
    """Every table the query writes, as sorted rows (the commit records without timings; float
    sums to 9 significant digits)."""
    out = {}
    for name in lake.tables():
        if not name.split(".")[1].startswith(q.name):
            continue
        data = lake.delta(name).to_pyarrow_table()
        if name == q.table("ops:commits"):
            data = data.drop_columns(["seconds"])
        out[name] = sorted(
            repr({k: _rounded(v) for k, v in row.items()}) for row in data.to_pylist()
        )
    return out


def _rounded(value):
    # A float sum depends on the order the engine adds in (its threads): equal to 1e-9.
    return float(f"{value:.9g}") if isinstance(value, float) else value


def same(got: dict, expected: dict) -> bool:
    """Equal tables; on a difference, say which rows differ (an assertion message)."""
    for name in sorted(set(got) | set(expected)):
        a, b = set(got.get(name, [])), set(expected.get(name, []))
        assert a == b, f"{name}: extra {sorted(a - b)[:3]}, missing {sorted(b - a)[:3]}"
    return got == expected


def finish(lake: Lakehouse, backend: str, log: st.EventLog) -> None:
    st.Runner(lake, wb.connect(backend), log, query(), trigger=TRIGGER).run()


@pytest.fixture(scope="module")
def log() -> st.EventLog:
    return st.EventLog.generate(**LOG)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, log):
    """An uninterrupted run, and the crash points it went through, in order."""
    lake = Lakehouse(tmp_path_factory.mktemp("reference"))
    points = []
    runner = st.Runner(lake, wb.connect("duckdb"), log, query(), trigger=TRIGGER,
                       fault=lambda point, k: points.append((point, k)))  # fmt: skip
    progress = runner.run()
    assert progress.late_rows.sum() > 0 and progress.duplicates.sum() > 0
    assert progress.dead_rows.sum() > 0 and len(progress) >= 5
    return tables(lake, query()), points


def test_the_reference_run_writes_every_kind_of_table(reference):
    got, points = reference
    names = set(got)
    q = query()
    assert {q.table(), q.table("late"), q.table("dead_letter"), q.table("ops:offsets"),
            q.table("ops:commits"), q.table("ops:state_dedup"), q.table("ops:state_window")} <= names  # fmt: skip
    kinds = {p.split(":")[0] for p, _ in points}
    assert kinds == {"planned", "before", "during", "after", "before_commit", "committed"}


def crash_at(targets: set):
    """A fault hook that raises SimulatedCrash the first time it reaches each target."""

    def hook(point, k):
        if (point, k) in targets:
            targets.discard((point, k))
            raise st.SimulatedCrash(f"crash at {point} in batch {k}")

    return hook


def chaos(lake, backend, log, targets: set) -> int:
    """Run to the end, crashing at every target and restarting a fresh runner each time."""
    crashes = 0
    while True:
        hook = crash_at(targets)
        try:
            st.Runner(lake, wb.connect(backend), log, query(), trigger=TRIGGER, fault=hook).run()
            return crashes
        except Exception as exc:  # a crash inside a Delta write comes back wrapped
            assert "crash at" in str(exc), exc
            crashes += 1


def test_a_crash_at_every_point_of_a_batch_changes_nothing(tmp_path, reference, log):
    expected, points = reference
    batch = 2
    # Each point once (many restarts of batch 2); "committed" is unreachable once the crash
    # right after the commit record's write has committed the batch.
    targets = {p for p in points if p[1] == batch and p[0] != "committed"}
    lake = Lakehouse(tmp_path / "lake")
    assert chaos(lake, "duckdb", log, set(targets)) == len(targets)
    assert same(tables(lake, query()), expected)


def test_crashes_spread_over_every_batch_change_nothing(tmp_path, reference, log, backend):
    expected, points = reference
    kinds = sorted({p for p, _ in points})
    batches = sorted({k for _, k in points})
    # One crash per batch, each at another kind of point.
    targets = {(kinds[(3 * i + len(backend)) % len(kinds)], k) for i, k in enumerate(batches)}
    targets = {t for t in targets if t in set(points)}
    lake = Lakehouse(tmp_path / "lake")
    assert chaos(lake, backend, log, set(targets)) == len(targets)
    assert same(tables(lake, query()), expected)


def _killed_child(root: str, backend: str, point: str, batch: int) -> None:
    """Runs in a spawned process: run until `point` of `batch`, then SIGKILL itself."""

    def hook(p, k):
        if (p, k) == (point, batch):
            os.kill(os.getpid(), signal.SIGKILL)

    log = st.EventLog.generate(**LOG)
    st.Runner(Lakehouse(root), wb.connect(backend), log, query(), trigger=TRIGGER, fault=hook).run()


def test_a_real_process_kill_changes_nothing(tmp_path, reference, log):
    """A SIGKILL while Delta is writing a batch's results, then a restart in this process: the
    same tables. Spawned, because a forked process panics in deltalake. (One kill: a spawned
    process takes seconds to import; the in-process crashes above cover every other point.)"""
    expected, points = reference
    point, batch = "during:silver.clicks_2s", 3
    assert (point, batch) in points
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=_killed_child, args=(str(tmp_path / "lake"), "duckdb", point, batch)
    )
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    lake = Lakehouse(tmp_path / "lake")
    commits = lake.delta(query().table("ops:commits")).to_pyarrow_table()
    assert max(commits["batch_id"].to_pylist()) < batch  # it really died inside batch 3
    finish(lake, "duckdb", log)
    assert same(tables(lake, query()), expected)


def test_a_replayed_batch_skips_every_table_it_already_wrote(tmp_path, log):
    """Stopped just before its commit record, batch 2 is replayed: the transaction ids make
    every table skip it, and only the commit record is written."""
    lake = Lakehouse(tmp_path / "lake")
    con = wb.connect("duckdb")
    with pytest.raises(st.SimulatedCrash):
        st.Runner(lake, con, log, query(), trigger=TRIGGER,
                  fault=crash_at({("before_commit", 2)})).run()  # fmt: skip
    before = {name: lake.version(name) for name in lake.tables()}
    runner = st.Runner(lake, con, log, query(), trigger=TRIGGER)
    assert runner.batch_id == 2 and runner.step()["batch_id"] == 2
    after = {name: lake.version(name) for name in lake.tables()}
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {query().table("ops:commits")}


def test_writes_carry_the_batch_transaction(tmp_path, log):
    lake = Lakehouse(tmp_path / "lake")
    runner = st.Runner(lake, wb.connect("duckdb"), log, query(), trigger=TRIGGER)
    progress = runner.run()
    last = int(progress.batch_id.max())
    q = query()
    for name in (q.table("ops:offsets"), q.table("ops:commits"), q.table("ops:state_window")):
        assert lake.transaction_version(name, f"{q.name}@{name}") == last
    history = lake.history(q.table())
    appends = history[history.operation == "WRITE"].iloc[:-1]  # the oldest is the empty create
    assert set(appends.engine) == {"duckdb"}


def test_an_empty_source_runs_no_batch(tmp_path):
    lake = Lakehouse(tmp_path / "lake")
    empty = st.EventLog(stream_source.SCHEMA.empty_table())
    runner = st.Runner(lake, wb.connect("duckdb"), empty, query())
    assert runner.exhausted and runner.step() is None and runner.batch_id == 0
