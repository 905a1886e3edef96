"""Batch envelopes (agents/common.py): what intake sends and the stream agents unpack."""

from __future__ import annotations

from typing import Any

import orjson

from finops_app.agents import common
from finops_app.agents.common import Outbox, encode_item, first_delivery, fresh, fresh_items, groups, unpack


def _records(box: Outbox) -> list[tuple[Any, Any, dict[str, Any], Any]]:
    return [(topic, key, orjson.loads(value), part) for topic, key, value, part in box.records()]


def test_outbox_without_partitions_sends_one_record_per_key_in_offset_order() -> None:
    box = Outbox()
    for off, (unit, part) in enumerate([("a", 0), ("b", 0), ("a", 1), ("a", 0)]):
        box.add("by-unit", unit, "cost", part, encode_item(off, 1500, {"n": off}))
    box.add("by-unit", "a", "biz", 0, encode_item(9, 1500, {"n": 9}))
    records = _records(box)
    assert [(key, part, env["k"]) for _, key, env, part in records] == [
        ("a", None, "grp"),
        ("b", None, "grp"),
    ]
    # record "a": its groups (kind, source tag, source partition, key, offsets), each in offset order
    assert [(g[0], g[1], g[2], g[3], [i[0] for i in g[4]]) for g in records[0][2]["g"]] == [
        ("cost", "c", 0, "a", [0, 3]),
        ("cost", "c", 1, "a", [2]),
        ("biz", "b", 0, "a", [9]),
    ]
    assert records[0][2]["g"][0][4][0] == [0, 1500, {"n": 0}]  # offset, produce time in ms, event


def test_outbox_puts_every_key_of_a_destination_partition_in_one_record() -> None:
    where = {"a": 1, "b": 0, "c": 1}
    box = Outbox(lambda topic, key: where[key] if topic == "by-unit" else None)
    for off, (unit, part) in enumerate([("a", 0), ("b", 0), ("c", 0), ("a", 1), ("c", 0), ("a", 0)]):
        box.add("by-unit", unit, "cost", part, encode_item(off, 1500, {"n": off}))
    box.add("other", "a", "cost", 0, encode_item(7, 1500, {"n": 7}))  # no partition known: keyed
    records = _records(box)
    assert [(topic, key, part) for topic, key, _, part in records] == [
        ("by-unit", None, 1),
        ("by-unit", None, 0),
        ("other", "a", None),
    ]
    by_partition = {part: env for topic, _, env, part in records if topic == "by-unit"}
    assert [(g[2], g[3], [i[0] for i in g[4]]) for g in by_partition[1]["g"]] == [
        (0, "a", [0, 5]),
        (0, "c", [2, 4]),
        (1, "a", [3]),
    ]
    assert [(g[2], g[3], [i[0] for i in g[4]]) for g in by_partition[0]["g"]] == [(0, "b", [1])]
    # what the agents read back: one group per key and source partition, keys from the groups
    assert [
        (kind, src, p, key, [i[0] for i in items]) for kind, src, p, key, items in groups(by_partition[1])
    ] == [
        ("cost", "c", 0, "a", [0, 5]),
        ("cost", "c", 0, "c", [2, 4]),
        ("cost", "c", 1, "a", [3]),
    ]


def test_groups_reads_batch_and_single_envelopes_with_the_record_key() -> None:
    batch = {"k": "cost", "s": "c", "p": 2, "b": [[5, 1, {"n": 5}]]}
    assert groups(batch, "acme") == [("cost", "c", 2, "acme", [[5, 1, {"n": 5}]])]
    single = {"k": "biz", "p": 3, "o": 9, "t": 4, "e": {"n": 9}}
    assert groups(single, "acme") == [("biz", "b", 3, "acme", [[9, 4, {"n": 9}]])]


def test_unpack_gives_single_envelopes_that_deduplicate_per_event() -> None:
    box = Outbox()
    for off in (5, 6, 7):
        box.add("t", "k", "cost", 2, encode_item(off, 1500, {"n": off}))
    [(_, _, value, _)] = box.records()
    items = unpack(orjson.loads(value))
    assert [(i["k"], i["s"], i["p"], i["o"], i["e"], i["key"]) for i in items] == [
        ("cost", "c", 2, off, {"n": off}, "k") for off in (5, 6, 7)
    ]
    state: dict[str, Any] = {"h": {}}
    assert [first_delivery(state, i) for i in items] == [True, True, True]
    # a redelivered batch (after a crash) that overlaps what was applied counts only the new event
    again = unpack({"k": "cost", "s": "c", "p": 2, "b": [[6, 0, {}], [7, 0, {}], [8, 0, {}]]})
    assert [first_delivery(state, i) for i in again] == [False, False, True]
    single = {"k": "cost", "p": 0, "o": 1, "t": 0, "e": {}}
    assert unpack(single) == [single]


def test_large_batches_are_chunked_under_the_size_limit_in_order(monkeypatch: Any) -> None:
    monkeypatch.setattr(common, "BATCH_MAX_BYTES", 1000)
    box = Outbox(lambda topic, key: 3)
    for off in range(40):
        box.add("t", "k" if off % 2 else "j", "cost", 0, encode_item(off, 1500, {"pad": "x" * 80}))
    box.add("t", "k", "cost", 0, encode_item(40, 1500, {"pad": "y" * 3000}))  # alone, whole
    records = box.records()
    assert {(key, part) for _, key, _, part in records} == {(None, 3)}
    sizes = [len(v) for _, _, v, _ in records]
    per_key: dict[str, list[int]] = {}
    for _, _, v, _ in records:
        for _, _, _, key, items in groups(orjson.loads(v)):
            per_key.setdefault(key, []).extend(i[0] for i in items)
    assert per_key == {"j": list(range(0, 40, 2)), "k": [*range(1, 40, 2), 40]}
    assert all(size <= 1100 for size in sizes[:-1]) and sizes[-1] > 3000
    assert len(records) > 4


def test_fresh_items_per_group_counts_a_redelivered_partition_envelope_once() -> None:
    box = Outbox(lambda topic, key: 0)
    for off, unit in enumerate(["a", "b", "a"]):
        box.add("by-unit", unit, "cost", 1, encode_item(10 + off, 0, {"n": off}))
    [(_, _, value, _)] = box.records()
    states: dict[str, dict[str, Any]] = {"a": {"h": {}}, "b": {"h": {}}}

    def apply(env: dict[str, Any]) -> list[tuple[str, int]]:
        out = []
        for _, src, part, key, items in groups(env):
            new, _ = fresh_items(states[key], f"{src}{part}", items)
            out.extend((key, i[0]) for i in new)
        return out

    env = orjson.loads(value)
    assert apply(env) == [("a", 10), ("a", 12), ("b", 11)]
    assert apply(env) == []  # delivered again after a crash: nothing counted twice
    assert states["a"]["h"] == {"c1": 12} and states["b"]["h"] == {"c1": 11}


def test_fresh_skips_what_was_applied_and_moves_the_mark_once() -> None:
    state: dict[str, Any] = {"h": {"c2": 6}}
    env = {
        "k": "cost",
        "s": "c",
        "p": 2,
        "b": [[5, 0, {"n": 5}], [6, 0, {"n": 6}], [7, 1, {"n": 7}], [9, 2, {"n": 9}]],
    }
    items, repeats = fresh(state, env)
    assert [i[0] for i in items] == [7, 9] and repeats == 2 and state["h"] == {"c2": 9}
    assert fresh(state, env) == ([], 4) and state["h"] == {"c2": 9}
    # the same as first_delivery event by event, for a single envelope and another source too
    single = {"k": "biz", "p": 2, "o": 3, "t": 0, "e": {}}
    assert fresh(state, single) == ([(3, 0, {})], 0) and state["h"] == {"c2": 9, "b2": 3}
    other: dict[str, Any] = {"h": {"c2": 6}}
    assert [first_delivery(other, i) for i in unpack(env)] == [False, False, True, True]
    assert other["h"] == {"c2": 9}
