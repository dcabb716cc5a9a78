"""The apply rules of change data capture, as pure pipelines (`ibis.Table -> ibis.Table`).

Together they make applying a batch idempotent: exact duplicates collapse (`deduplicate`), per
key the highest LSN wins (`latest`, `settle`), ties that disagree are set apart
(`conflicting`), and only changes newer than what the lake holds survive (`unapplied`). `workbench.cdc.apply_changes` runs them at the edge and merges the result.
"""

from __future__ import annotations

import ibis

from workbench.cdc_parse import META


def deduplicate(events: ibis.Table) -> ibis.Table:
    """One row per distinct change (every column but `_position`), with its `_copies`."""
    content = [c for c in events.columns if c != "_position"]
    return events.group_by(content).agg(_position=events._position.min(), _copies=events.count())


def latest(changes: ibis.Table, key: list[str]) -> ibis.Table:
    """Per key, the change with the highest LSN (the row's final state in this batch)."""
    top = changes.group_by(key).agg(_top=changes._lsn.max())
    joined = changes.join(top, [*[changes[k] == top[k] for k in key], changes._lsn == top._top])
    return joined.select(*[changes[c] for c in changes.columns])


def settle(winners: ibis.Table) -> ibis.Table:
    """Winners tied on key and LSN that leave the same row become one: a snapshot read at LSN
    S and the change at S it already shows. The real change's time and transaction are kept."""
    data = [c for c in winners.columns if c not in (*META, "_copies")]
    w = winners.mutate(_is_delete=winners._op == "d")
    rows = w.group_by([*data, "_lsn", "_is_delete"]).agg(
        _op=w._op.min(),  # c before r before u: a tie keeps the change over the read
        _tx_id=w._tx_id.max(),  # a read has none
        _commit_ts=w._commit_ts.min(),  # a read is stamped later than the change it shows
        _position=w._position.min(),
        _copies=w._copies.sum(),
    )
    return rows.select(*winners.columns)


def conflicting(winners: ibis.Table, key: list[str]) -> ibis.Table:
    """Winners that share their key with another: changes with the same key and LSN that
    leave different rows, which a log cannot have made, so neither can be trusted."""
    groups = winners.group_by(key).agg(_n=winners.count())
    return winners.semi_join(groups.filter(groups._n > 1), key)


def unapplied(winners: ibis.Table, holding: list[ibis.Table], key: list[str]) -> ibis.Table:
    """The winners newer than what the lake holds for their key (its row, or the tombstone a
    delete left): older ones change nothing. Each table in `holding` has one row per key, so
    plain left joins do, and the engine reads only the keys it probes for (no aggregation
    over the whole table)."""
    keep = winners
    for i, table in enumerate(holding):
        h = table.select(*[table[k].name(f"_h{i}_{k}") for k in key], **{f"_h{i}": table._lsn})
        joined = keep.left_join(h, [keep[k] == h[f"_h{i}_{k}"] for k in key])
        newer = joined[f"_h{i}"].isnull() | (joined._lsn > joined[f"_h{i}"])
        keep = joined.filter(newer).select(*winners.columns)
    return keep
