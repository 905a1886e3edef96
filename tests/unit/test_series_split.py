"""A service's series state is stored as a hot part (every batch) and a cold part (detector state,
written only when it changes, before the hot part): costseries.split/join, agents.anomalies."""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson

from finops_app.agents.anomalies import ColdCache, cold_key, load_for_update, load_service, store_service
from finops_app.core import costseries
from tests.unit.test_costseries import CFG, T0, B, ev


def batches() -> list[list[tuple[dict[str, Any], int]]]:
    """One batch per 5-minute bucket, 40 buckets; bucket 30 carries a spike (an incident)."""
    out = []
    for b in range(40):
        batch = []
        for k in range(3):
            ts = T0 + b * B + k * 60_000
            amount = 80.0 if (b == 30 and k == 2) else 3.0
            batch.append((ev(b * 10 + k, ts, amount, "ecommerce"), ts))
            batch.append((ev(b * 10 + k + 5, ts + 1, 2.0, "analytics"), ts))
        out.append(batch)
    return out


def step(st: dict[str, Any], batch: list[tuple[dict[str, Any], int]]) -> list[dict[str, Any]]:
    """What the agent does with a batch: add the events, then score what the watermark passed."""
    recs = costseries.observe_many(st, batch, CFG, 0)
    return recs + costseries.advance(st, "ec2", max(e["ts_ms"] for e, _ in batch), CFG, 0)


class Table(dict[str, Any]):
    """A dict that records the order of its writes (the changelog's order), values copied."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes.append(key)
        super().__setitem__(key, orjson.loads(orjson.dumps(value)))


def test_split_and_join_give_back_the_state() -> None:
    st = costseries.new_service()
    for batch in batches()[:32]:
        step(st, batch)
    assert any(ser["inc"] for ser in st["s"].values())  # the spike opened an incident
    hot, cold = costseries.split(st)
    assert all(set(ser) <= {"ob", "ot"} for ser in hot["s"].values())
    assert all("d" in ser and "lb" in ser for ser in cold["s"].values())
    assert costseries.join(hot, cold) == st
    assert costseries.join(hot, orjson.loads(orjson.dumps(cold))) == st  # through the table's JSON
    assert costseries.join(st, None) is st  # a value stored whole, from before the split
    assert costseries.join(None, None) == costseries.new_service()


def test_the_cold_version_moves_only_when_the_detector_or_an_incident_changes() -> None:
    st = costseries.new_service()
    step(st, batches()[0])
    v = costseries.cold_version(st)
    assert v > 0  # new series
    ts = T0 + 2 * 60_000 + 30_000  # still inside bucket 0, which is open
    costseries.observe_many(st, [(ev(999, ts, 1.0, "ecommerce"), ts)], CFG, 0)
    assert costseries.cold_version(st) == v
    costseries.advance(st, "ec2", T0 + B, CFG, 0)  # bucket 0 is scored
    assert costseries.cold_version(st) > v


def test_the_agent_writes_the_cold_part_only_when_it_changed_and_before_the_hot_part() -> None:
    table = Table()
    all_batches = batches()
    for batch in all_batches[:3]:
        st = load_service(table, "ec2")
        loaded = st.get("cv") if st["s"] else None
        step(st, batch)
        store_service(table, "ec2", st, loaded)
    assert table.writes == [cold_key("ec2"), "ec2"] * 3  # each batch scored a bucket
    table.writes.clear()
    st = load_service(table, "ec2")
    loaded = st["cv"]
    ts = T0 + 3 * B + 10_000
    costseries.observe_many(st, [(ev(998, ts, 1.0, "ecommerce"), ts)], CFG, 0)  # an open bucket only
    store_service(table, "ec2", st, loaded)
    assert table.writes == ["ec2"]
    assert load_service(table, "ec2") == st
    assert len(orjson.dumps(table["ec2"])) < len(orjson.dumps(table[cold_key("ec2")]))


def run(crash_at: int | None) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Every batch through the agent's steps; with ``crash_at``, the worker dies after writing that
    batch's cold part and before its hot part, and the batch is delivered again."""
    all_batches = batches()
    st = costseries.new_service()
    records = []
    for k, batch in enumerate(all_batches):
        before = copy.deepcopy(st)
        recs = step(st, batch)
        if k == crash_at:
            hot_before, _ = costseries.split(before)
            _, cold_after = costseries.split(st)
            st = costseries.join(copy.deepcopy(hot_before), copy.deepcopy(cold_after))
            recs += step(st, batch)  # Kafka delivers the batch again: its offsets were not committed
        records += [(r["anomaly_id"], r["status"]) for r in recs]
    st.pop("cv")
    return st, records


def test_a_crash_between_the_cold_and_the_hot_write_scores_nothing_twice() -> None:
    """A cold part ahead of its hot part: the replayed batch scores no bucket twice and opens no
    incident twice, and the run ends in the state of a run without the crash. (An early alert can
    fire one batch sooner: the replay sees the bucket scored just before it.)"""
    clean_state, clean_records = run(None)
    opened = [anomaly for anomaly, status in clean_records if status == "open"]
    assert len(opened) == len(set(opened)) == 2  # the service's series and the unit's
    for k in (5, 29, 30, 31, 35):  # plain buckets, the spike's bucket and the incident's next ones
        state, records = run(k)
        assert state == clean_state, k
        assert sorted(set(records)) == sorted(set(clean_records)), k
        assert len(records) == len(clean_records), k


def test_a_state_stored_by_the_one_open_bucket_release_is_upgraded() -> None:
    """Before 2026-11-27 each series kept one open bucket as ``b``/``v``; such a changelog value
    crashed the anomaly agent (KeyError 'ob') after an upgrade. It now loads with its open bucket."""
    st = costseries.new_service()
    for batch in batches()[:20]:
        step(st, batch)
    old = copy.deepcopy(st)
    open_sums: dict[str, tuple[int, str]] = {}
    for key, ser in old["s"].items():  # the earlier layout: one open bucket, or none
        ob = ser.pop("ob")
        ser.pop("ot", None)
        (bucket, value) = next(iter(ob.items())) if ob else (None, "0")
        ser["b"], ser["v"] = (int(bucket) if bucket is not None else None), value
        if bucket is not None:
            open_sums[key] = (int(bucket), value)
    assert open_sums  # the fixture has open buckets to carry over
    table = Table()
    table["ec2"] = old  # stored whole, as then
    loaded = load_service(table, "ec2")
    assert all("b" not in ser and "v" not in ser for ser in loaded["s"].values())
    for key, (bucket, value) in open_sums.items():
        assert loaded["s"][key]["ob"] == {str(bucket): value}
    # and the agent's next batches run on it, scoring the carried bucket like the current layout
    current = copy.deepcopy(st)
    for batch in batches()[20:32]:
        assert step(loaded, batch) == step(current, batch)
    # a cold part without the series' hot fields (its hot value lost) gets no open buckets
    _, cold = costseries.split(st)
    assert all(ser["ob"] == {} for ser in costseries.join(None, cold)["s"].values())


def test_a_detector_state_this_release_cannot_read_learns_again(caplog) -> None:  # type: ignore[no-untyped-def]
    """A detector state missing fields added since (the 2026-11-27 demo state lacked ``zb``) is
    replaced by a new one, its cold part marked for rewriting, instead of crashing every batch."""
    st = costseries.new_service()
    for batch in batches()[:20]:
        step(st, batch)
    hot, cold = costseries.split(st)
    stale = copy.deepcopy(cold)
    for ser in stale["s"].values():
        for field in ("zb", "zv", "zn"):
            ser["d"].pop(field)
    loaded = costseries.join(copy.deepcopy(hot), stale)
    assert all(ser["d"] == costseries.detector.new_state() for ser in loaded["s"].values())
    assert costseries.cold_version(loaded) > cold["cv"]  # the agent writes the cold part again
    assert "learns again" in caplog.text
    for batch in batches()[20:40]:  # and the agent runs on it
        step(loaded, batch)
    assert all(ser["d"]["n"] > 0 for ser in loaded["s"].values())
    # today's states are left alone
    assert costseries.join(copy.deepcopy(hot), copy.deepcopy(cold)) == st
    # through the agent's load and store: the new detector state is written, and read back as is
    table = Table()
    table[cold_key("ec2")], table["ec2"] = stale, hot
    table.writes.clear()
    caplog.clear()
    st2, loaded = load_for_update(table, "ec2")
    store_service(table, "ec2", st2, loaded)
    assert table.writes == [cold_key("ec2"), "ec2"]
    caplog.clear()
    assert load_service(table, "ec2") == st2
    assert "learns again" not in caplog.text


def test_only_a_new_cold_version_changes_the_cold_part() -> None:
    """What ColdCache relies on: a cold part whose version did not move is the one stored. Events
    one at a time, in and out of order, with spikes (early alerts, incidents opened and closed)."""
    rng = random.Random(7)
    st = costseries.new_service()
    changes, statuses = 0, []
    for b in range(80):
        for k in range(12):
            ts = T0 + b * B + rng.randrange(0, B)
            amount = 90.0 if b in (40, 60) and k > 6 else 3.0 + rng.random()
            version, cold = costseries.cold_version(st), orjson.dumps(costseries.cold_part(st))
            unit = rng.choice(("ecommerce", "analytics", "platform"))
            recs = costseries.observe_many(st, [(ev(b * 100 + k, ts, amount, unit), ts)], CFG, 0)
            recs += costseries.advance(st, "ec2", ts - 60_000, CFG, 0)
            statuses += [r["status"] for r in recs]
            if costseries.cold_version(st) == version:
                assert orjson.dumps(costseries.cold_part(st)) == cold, (b, k)
            else:
                changes += 1
    assert {"open", "closed"} <= set(statuses)  # incidents opened and closed on the way
    assert 80 <= changes < 80 * 12  # most events leave the cold part alone


class Store(Table):
    """Like the RocksDB store: every read decodes a fresh copy. Counts reads of cold parts."""

    def __init__(self) -> None:
        super().__init__()
        self.cold_reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        if key.startswith("\x00cold/"):
            self.cold_reads += 1
        value = super().get(key)
        return default if value is None else orjson.loads(orjson.dumps(value))


def agent_run(cache: ColdCache | None) -> tuple[Store, list[dict[str, Any]]]:
    """The agent's load, step and store per batch, one event per batch (as at live rates)."""
    table, records = Store(), []
    for batch in batches():
        for item in batch:
            st, loaded = load_for_update(table, "ec2", cache)
            records += step(st, [item])
            store_service(table, "ec2", st, loaded, cache)
    return table, records


def test_the_cold_cache_gives_the_same_records_and_state_with_fewer_reads() -> None:
    plain_table, plain = agent_run(None)
    cache = ColdCache()
    cached_table, cached = agent_run(cache)
    assert [r["status"] for r in plain].count("open") == 2  # the spike's incident, twice over
    assert cached == plain
    assert dict(cached_table) == dict(plain_table)
    assert plain_table.cold_reads == 240
    assert cached_table.cold_reads == 1  # the first load, before anything was stored
    assert cache.hits == 239


def test_the_cold_cache_misses_when_the_hot_part_names_another_version() -> None:
    """The cache holds another version than the hot part names (e.g. a cold part written by the
    batch whose hot write failed; the agent also drops the cache then): the table's part is read.
    (A cold part ahead of its hot part after a crash is read from the table: the cache starts
    empty, and another worker's writes come with a rebalance, which empties it too.)"""
    table = Store()
    st = costseries.new_service()
    for batch in batches()[:5]:
        step(st, batch)
    hot, cold = costseries.split(st)
    table[cold_key("ec2")], table["ec2"] = cold, hot
    cache = ColdCache()
    for other in (cold["cv"] - 1, cold["cv"] + 1):
        cache.put("ec2", {**copy.deepcopy(cold), "cv": other})
        reads = table.cold_reads
        loaded, version = load_for_update(table, "ec2", cache)
        assert version == cold["cv"] and loaded == st and table.cold_reads == reads + 1
    assert load_for_update(table, "ec2", cache) == (st, cold["cv"])  # now cached: no read
    assert table.cold_reads == 2


def test_the_cold_cache_keeps_the_most_recently_used() -> None:
    cache = ColdCache(max_entries=2)
    for name in ("a", "b"):
        cache.put(name, {"cv": 1, "s": {}})
    assert cache.get("a", 1) is not None  # a is now the most recent
    cache.put("c", {"cv": 1, "s": {}})
    assert cache.get("b", 1) is None and cache.get("a", 1) is not None and len(cache) == 2
    cache.clear()
    assert len(cache) == 0
