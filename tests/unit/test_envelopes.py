"""Batch envelopes (agents/common.py): what intake sends and the stream agents unpack."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from finops_app.agents import common
from finops_app.agents.common import Outbox, encode_item, first_delivery, unpack


def event(partition: int, offset: int, ts: float = 1.5) -> Any:
    return SimpleNamespace(message=SimpleNamespace(partition=partition, offset=offset, timestamp=ts))


def test_outbox_groups_by_topic_key_and_partition_in_offset_order() -> None:
    box = Outbox()
    for off, (unit, part) in enumerate([("a", 0), ("b", 0), ("a", 1), ("a", 0)]):
        box.add("by-unit", unit, "cost", part, encode_item(event(part, off), {"n": off}))
    box.add("by-unit", "a", "biz", 0, encode_item(event(0, 9), {"n": 9}))
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
        box.add("t", "k", "cost", 2, encode_item(event(2, off), {"n": off}))
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
        box.add("t", "k", "cost", 0, encode_item(event(0, off), {"pad": "x" * 80}))
    box.add("t", "k", "cost", 0, encode_item(event(0, 40), {"pad": "y" * 3000}))  # alone, whole
    records = box.records()
    sizes = [len(v) for _, _, v in records]
    offsets = [i[0] for _, _, v in records for i in orjson.loads(v)["b"]]
    assert offsets == list(range(41))
    assert all(size <= 1100 for size in sizes[:-1]) and sizes[-1] > 3000
    assert len(records) > 4
