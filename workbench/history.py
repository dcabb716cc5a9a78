"""SCD2 as a replay of events: a dimension's versions turned back into events, merged with
new ones, replayed per key in time order, and compared with what the table holds.

An event is a key, the tracked values, a time `_ts`, a kind (`upsert`, `delete`, `inferred`)
and a `_noop` flag (true when it cannot change anything, so its key need not be replayed).
At one key and time an incoming event replaces the recorded one, which makes a replay a no-op
and a restatement an update.
"""

from __future__ import annotations

import ibis

from workbench import keys as hashing
from workbench.dimension import dim_columns, same

REMOVE = "_remove"
"""Column of the MERGE source: true for versions that must disappear."""


def flag_noops(dim: ibis.Table, events: ibis.Table, key, tracked) -> ibis.Table:
    """`events` with `_noop`: an upsert equal to its key's current row, and no older, changes
    nothing. The columns are compared as they are, so unchanged rows are never hashed."""
    current = dim.filter(dim.is_current, ~dim.is_deleted, ~dim.is_inferred)
    current = current.select(
        *[current[k].name(f"_cur_{k}") for k in key],
        *[current[c].name(f"_cur_{c}") for c in tracked],
        _cur_from=current.valid_from,
    )
    probe = events.left_join(current, [events[k] == current[f"_cur_{k}"] for k in key])
    noop = (probe._kind == "upsert") & (probe._cur_from <= probe._ts)
    for c in tracked:
        noop = noop & same(probe[c], probe[f"_cur_{c}"])
    return probe.select(*events.columns, _noop=noop.fill_null(False))


def rebuild(dim, events, key, tracked, sk, deletes, one_per_key: bool = False) -> ibis.Table:
    """Replay the history of the keys with an event that is not `_noop`, plus their events;
    return what differs from `dim`. `one_per_key`: each key has at most one such event."""
    if one_per_key:
        incoming = events.filter(~events._noop)
        touched = incoming.select(*key)
    else:
        touched = events.filter(~events._noop).select(*key).distinct()
        # `.select` closes each join, so later steps share it instead of re-deriving it.
        incoming = events.semi_join(touched, key).select(events.columns)
    incoming = incoming.mutate(valid_from=incoming._ts)
    is_upsert = incoming._kind == "upsert"
    incoming = incoming.select(
        *key,
        *tracked,
        "_ts",
        "_kind",
        row_hash=is_upsert.ifelse(hashing.hash_key(incoming, tracked), ibis.null("string")),
        _sk=hashing.hash_key(incoming, [*key, "valid_from"]),
    )
    old = dim.semi_join(touched, key).select(dim.columns)
    recorded = _history_events(old, key, tracked, sk)
    # At one key and time, the incoming event replaces the recorded one (a restatement).
    stamps = incoming.select(*key, "_ts")
    recorded = recorded.anti_join(stamps, [*key, "_ts"]).select(recorded.columns)
    merged = recorded.union(incoming.select(recorded.columns))
    return _diff(old, _versions(merged, key, tracked, sk, deletes), sk)


def _history_events(old: ibis.Table, key, tracked, sk) -> ibis.Table:
    """The recorded versions as events: each starts at `valid_from`; a version closed with no
    successor starting then was ended by a delete (the `invalidate` policy)."""
    kind = ibis.cases((old.is_inferred, "inferred"), (old.is_deleted, "delete"), else_="upsert")
    starts = old.select(
        *key, *tracked, _ts=old.valid_from, _kind=kind, row_hash=old.row_hash, _sk=old[sk]
    )
    ends = old.filter(old.valid_to.notnull()).select(*key, _ts=old.valid_to)
    ends = ends.anti_join(starts.select(*key, "_ts"), [*key, "_ts"]).select(ends.columns)
    ends = delete_events(ends, old, tracked)
    ends = ends.mutate(valid_from=ends._ts)
    ends = ends.mutate(
        row_hash=ibis.null("string"), _sk=hashing.hash_key(ends, [*key, "valid_from"])
    )
    return starts.union(ends.select(starts.columns))


def _versions(events, key, tracked, sk, deletes) -> ibis.Table:
    """Replay events per key in time order into versions with validity and flags."""
    w = ibis.window(group_by=[events[k] for k in key], order_by=events._ts)
    state = events._kind.concat(":", events.row_hash.fill_null(""))
    # Window values become columns before a filter uses them (Ibis's DataFusion compiler
    # cannot filter on a window expression).
    events = events.mutate(
        _prev_kind=events._kind.lag().over(w),
        _prev_ts=events._ts.lag().over(w),
        _prev_sk=events._sk.lag().over(w),
        _next_kind=events._kind.lead().over(w),
        _state=state,
        _before=state.lag().over(w),
    )
    # An inferred member is completed in place by the upsert right after it: the upsert
    # takes the member's time and key, and the member goes.
    completed = (events._kind == "inferred") & (events._next_kind == "upsert").fill_null(False)
    absorbs = (events._kind == "upsert") & (events._prev_kind == "inferred").fill_null(False)
    # A change is an event whose state differs from the state before it.
    before = events._before
    changed = before.isnull().ifelse(events._kind != "delete", events._state != before)
    changes = events.filter(changed, ~completed).mutate(
        _ts=absorbs.ifelse(events._prev_ts, events._ts),
        _sk=absorbs.ifelse(events._prev_sk, events._sk),
    )
    w = ibis.window(group_by=[changes[k] for k in key], order_by=changes._ts)
    changes = changes.mutate(valid_to=changes._ts.lead().over(w))
    if deletes != "new_record":
        changes = changes.filter(changes._kind != "delete")
    out = changes.mutate(
        valid_from=changes._ts,
        is_current=changes.valid_to.isnull(),
        is_deleted=changes._kind == "delete",
        is_inferred=changes._kind == "inferred",
    )
    return out.mutate(**{sk: out._sk}).select(dim_columns(key, tracked, sk))


def _diff(old: ibis.Table, new: ibis.Table, sk: str) -> ibis.Table:
    """Rows of `new` that `old` lacks or holds differently, and rows of `old` to remove."""
    flags = ["row_hash", "valid_to", "is_deleted", "is_inferred"]
    before = old.select(old[sk].name("_old_sk"), *[old[c].name(f"_old_{c}") for c in flags])
    joined = new.left_join(before, new[sk] == before._old_sk)
    kept = joined._old_sk.notnull()
    for c in flags:
        kept = kept & same(joined[c], joined[f"_old_{c}"])
    upserts = joined.filter(~kept).select(new.columns).mutate(**{REMOVE: ibis.literal(False)})
    removed = old.anti_join(new.select(sk), sk).select(old.columns)
    removed = removed.mutate(**{REMOVE: ibis.literal(True)})
    return upserts.union(removed.select(upserts.columns))


def delete_events(gone: ibis.Table, like: ibis.Table, tracked) -> ibis.Table:
    """Delete events for the keys and times (`_ts`) of `gone`, tracked columns null."""
    nulls = {c: ibis.null(like[c].type()) for c in tracked}
    keys = [c for c in gone.columns if c != "_ts"]
    return gone.select(*keys, **nulls, _ts=gone._ts, _kind=ibis.literal("delete"))
