"""Stream sources: a seeded, replayable, partitioned log; JSON-lines replay; bad rows kept."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from workbench import stream_source
from workbench import streaming as st
from workbench.errors import WorkbenchError
from workbench.lakehouse import Lakehouse

SMALL = dict(scale=0.001, seed=5, rate=500.0, disorder="2 seconds", late_fraction=0.05,
             late_by="20 seconds", duplicates=0.03, bad=0.01)  # fmt: skip


@pytest.fixture(scope="module")
def log() -> st.EventLog:
    return st.EventLog.generate(**SMALL)


def test_the_log_is_a_pure_function_of_its_settings(log):
    assert st.EventLog.generate(**SMALL).events.equals(log.events)
    assert not st.EventLog.generate(**{**SMALL, "seed": 6}).events.equals(log.events)


def test_partitions_hold_contiguous_offsets_in_arrival_order(log):
    events = log.events
    for p, size in enumerate(log.sizes()):
        part = events.filter(pc.equal(events["partition"], p))
        assert part["offset"].to_pylist() == list(range(size))
        arrival = pc.cast(part["arrival_time"], pa.int64()).to_numpy()
        assert (np.diff(arrival) >= 0).all()
        keys = part["key"].to_numpy()
        assert (keys % log.partitions == p).all()  # a key always lands in the same partition


def test_the_settings_shape_the_stream(log):
    events = log.events
    n_clicks = pc.sum(pc.equal(events["kind"], "click")).as_py()
    assert {"click", "order", "payment"} == set(events["kind"].to_pylist())
    ids = events["event_id"].to_numpy()
    copies = len(ids) - len(np.unique(ids))
    assert 0.02 < copies / len(ids) < 0.04  # duplicates=0.03
    assert 0.005 < events["event_time"].null_count / len(ids) < 0.015  # bad=0.01
    known = events.filter(pc.is_valid(events["event_time"]))
    delay = pc.subtract(known["arrival_time"], known["event_time"]).cast(pa.int64()).to_numpy()
    delay = delay / 1e6
    assert delay.min() >= 0 and 0.03 < (delay > 20).mean() < 0.08  # late_fraction=0.05
    clicks = known.filter(pc.equal(known["kind"], "click"))
    times = pc.cast(clicks["event_time"], pa.int64()).to_numpy()
    span = (times.max() - times.min()) / 1e6
    assert span == pytest.approx(n_clicks / 500.0, rel=0.2)  # rate=500 events per second
    payments = events.filter(pc.equal(events["kind"], "payment"))
    orders = set(events.filter(pc.equal(events["kind"], "order"))["event_id"].to_pylist())
    assert set(payments["ref"].to_pylist()) <= orders


def test_reading_offsets_is_replayable(log):
    start, end = [0] * log.partitions, log.end_offsets(log.start_clock() + 5_000_000)
    first = log.read(start, end)
    assert first.equals(log.read(start, end))
    assert first.num_rows == sum(end) > 0
    assert log.read(end, end).num_rows == 0


@pytest.mark.parametrize(
    "bad",
    [dict(rate=0), dict(partitions=0), dict(duplicates=1.5), dict(late_fraction=-0.1),
     dict(disorder="-1 second"), dict(late_by="soon")],
)  # fmt: skip
def test_bad_settings_are_refused(bad):
    with pytest.raises(WorkbenchError) as err:
        st.EventLog.generate(**{**SMALL, **bad})
    assert "Hint" in str(err.value)


def test_json_lines_keep_every_line_and_say_what_is_wrong():
    text = "\n".join([
        json.dumps({"event_id": 1, "key": 7, "event_time": "2026-01-01T00:00:01Z", "kind": "click", "value": 2.5}),
        json.dumps({"event_id": 2, "event_time": "2026-01-01 00:00:02.25"}),  # no zone: UTC
        json.dumps({"event_id": 3, "event_time": "yesterday"}),
        json.dumps({"event_id": 4, "event_time": None}),
        json.dumps({"event_id": 5}),
        "[1, 2, 3]",
        "{not json",
        "",
    ])  # fmt: skip
    rows = stream_source.parse_json_lines(text, first_offset=10).to_pylist()
    assert [r["offset"] for r in rows] == list(range(10, 17))
    assert [r["error"] for r in rows] == [
        None, None, "event_time is not a timestamp: yesterday", "event_time is null",
        "event_time is null", "not a JSON object", "not a JSON object",
    ]  # fmt: skip
    assert rows[0]["event_time"].isoformat() == "2026-01-01T00:00:01+00:00"
    assert rows[1]["event_time"].isoformat() == "2026-01-01T00:00:02.250000+00:00"
    assert rows[0]["value"] == 2.5 and rows[0]["key"] == 7 and rows[5]["raw"] == "[1, 2, 3]"


def test_bad_rows_go_to_the_dead_letter_table_with_their_reason(tmp_path, con):
    folder = tmp_path / "files"
    folder.mkdir()
    lines = [
        {"event_id": 1, "key": 1, "event_time": "2026-01-01T00:00:01Z", "kind": "click", "value": 1},
        {"event_id": 2, "key": 1, "event_time": "nope", "kind": "click", "value": 1},
        {"event_id": None, "key": 1, "event_time": "2026-01-01T00:00:02Z", "kind": "click"},
    ]  # fmt: skip
    (folder / "b0.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n}{\n")
    lake = Lakehouse(tmp_path / "lake")
    query = st.Query("bad_input", st.tumbling("10 seconds"), delay="5 seconds", dedup=True)
    progress = st.Runner(lake, con, st.JsonLinesSource(folder), query).run()
    dead = lake.delta(query.table("dead_letter")).to_pyarrow_table().sort_by("offset").to_pylist()
    assert [(d["offset"], d["reason"]) for d in dead] == [
        (1, "event_time is not a timestamp: nope"), (2, "event_id is null"), (3, "not a JSON object"),
    ]  # fmt: skip
    assert dead[2]["raw"] == "}{" and progress.dead_rows.sum() == 3
    assert progress.input_rows.sum() == 4


def test_a_recorded_log_replays_to_the_same_results(tmp_path, con):
    log = st.EventLog.generate(**{**SMALL, "late_by": "5 seconds", "payment_delay": "1 second"})
    files = stream_source.files_from_log(log, tmp_path / "files", "5 seconds")
    assert sum(len(f.read_text().splitlines()) for f in files) == log.events.num_rows

    def query(name):
        return st.Query(name, st.tumbling("5 seconds"), by="kind", delay="3 seconds", dedup=True)

    lake = Lakehouse(tmp_path / "lake")
    live = st.Runner(
        lake, con, log, query("live"), trigger="5 seconds", no_data_batches=False
    ).run()
    replay = st.Runner(lake, con, st.JsonLinesSource(tmp_path / "files"), query("replay"),
                       no_data_batches=False).run()  # fmt: skip
    assert len(live) == len(replay) == len(files)
    cols = ["window_start", "window_end", "kind", "events", "batch_id"]
    order = [(c, "ascending") for c in cols]
    a = lake.delta("silver.live").to_pyarrow_table().select(cols).sort_by(order)
    b = lake.delta("silver.replay").to_pyarrow_table().select(cols).sort_by(order)
    assert a.equals(b) and a.num_rows > 0
    assert live.late_rows.tolist() == replay.late_rows.tolist()
    assert live.duplicates.tolist() == replay.duplicates.tolist()
