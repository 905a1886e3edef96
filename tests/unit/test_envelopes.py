"""Batch envelopes (agents/common.py): what intake sends and the stream agents unpack."""

from __future__ import annotations

from typing import Any

import orjson

from finops_app.agents import common
from finops_app.agents.common import Outbox, encode_item, first_delivery, fresh, unpack


def test_outbox_groups_by_topic_key_and_partition_in_offset_order() -> None:
    box = Outbox()
    for off, (unit, part) in enumerate([("a", 0), ("b", 0), ("a", 1), ("a", 0)]):
        box.add("by-unit", unit, "cost", part, encode_item(off, 1500, {"n": off}))
    box.add("by-unit", "a", "biz", 0, encode_item(9, 1500, {"n": 9}))
    records = [(topic, key, orjson.loads(value)) for topic, key, value in box.records()]
    assert [(k, env["k"], env["s"], env["p"], [i[0] for i in env["b"]]) for _, k, env in records] == [
        ("a", "cost", "c", 0, [0, 3]),
        ("b", "cost", "c", 0, [1]),
        ("a", "cost", "c", 1, [2]),
        ("a", "biz", "b", 0, [9]),
    ]
    assert records[0][2]["b"][0] == [0, 1500, {"n": 0}]  # offset, produce time in ms, event


def test_unpack_gives_single_envelopes_that_deduplicate_per_event() -> None:
    box = Outbox()
    for off in (5, 6, 7):
        box.add("t", "k", "cost", 2, encode_item(off, 1500, {"n": off}))
    [(_, _, value)] = box.records()
    items = unpack(orjson.loads(value))
    assert [(i["k"], i["s"], i["p"], i["o"], i["e"]) for i in items] == [
        ("cost", "c", 2, off, {"n": off}) for off in (5, 6, 7)
    ]
    state: dict[str, Any] = {"h": {}}
    assert [first_delivery(state, i) for i in items] == [True, True, True]
    # a redelivered batch (after a crash) that overlaps what was applied counts only the new event
    again = unpack({"k": "cost", "s": "c", "p": 2, "b": [[6, 0, {}], [7, 0, {}], [8, 0, {}]]})
    assert [first_delivery(state, i) for i in again] == [False, False, True]
    single = {"k": "cost", "p": 0, "o": 1, "t": 0, "e": {}}
    assert unpack(single) == [single]


def test_large_batches_are_chunked_under_the_size_limit(monkeypatch: Any) -> None:
    monkeypatch.setattr(common, "BATCH_MAX_BYTES", 1000)
    box = Outbox()
    for off in range(40):
        box.add("t", "k", "cost", 0, encode_item(off, 1500, {"pad": "x" * 80}))
    box.add("t", "k", "cost", 0, encode_item(40, 1500, {"pad": "y" * 3000}))  # alone, whole
    records = box.records()
    sizes = [len(v) for _, _, v in records]
    offsets = [i[0] for _, _, v in records for i in orjson.loads(v)["b"]]
    assert offsets == list(range(41))
    assert all(size <= 1100 for size in sizes[:-1]) and sizes[-1] > 3000
    assert len(records) > 4


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
