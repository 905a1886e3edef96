"""StateCache and put: one encoding per write, taken at once, so a cached value can change afterwards.

A real Faust app and its RocksDB store; only the changelog producer is replaced by a recorder (no
broker here). ``tests/integration/test_restart_exactness.py`` runs the same path on the real broker.
"""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from finops_app.app import create_app
from finops_app.config import Settings
from finops_app.tables.state import StateCache, clear_on_rebalance, event_context, put


class _Event:
    def __init__(self, topic: str, partition: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition)


@pytest.fixture
def setup(tmp_path: Any) -> tuple[Any, Any, list[dict[str, Any]], _Event]:
    app = create_app(Settings(data_dir=tmp_path))
    app.finalize()
    table = app.finops.tables.series_state  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    def send_soon(**kwargs: Any) -> Any:
        sent.append(kwargs)
        return SimpleNamespace(message=SimpleNamespace(partition=kwargs["partition"]))

    table.changelog_topic.send_soon = send_soon
    event = _Event(app.finops.topics.by_service.get_topic_name(), 1)  # type: ignore[attr-defined]
    return app, table, sent, event


def _wire(record: dict[str, Any], table: Any) -> bytes:
    """The value bytes a changelog record carries, as the producer would serialize them."""
    value = record["value"]
    if record.get("value_serializer") == "raw":
        assert isinstance(value, bytes)
        return value
    return table.data._encode_value(value)  # type: ignore[no-any-return]


def test_put_sends_and_stores_the_bytes_faust_would(setup: Any) -> None:
    _, table, sent, event = setup
    value = {"s": {"ec2": {"ob": {"60000": "1.50"}, "lb": None}}, "h": {"c0": 7}, "amount": Decimal("2.5")}
    with event_context(event):
        put(table, "ec2", value)
        expected = table.data._encode_value(value)
        assert _wire(sent[0], table) == expected
        assert sent[0]["partition"] == 1 and sent[0]["key"] == "ec2"
        assert table.data._get(table.data._encode_key("ec2")) == expected
        assert table.get("ec2") == {**value, "amount": "2.5"}


def test_a_value_changed_after_put_does_not_change_what_was_written(setup: Any) -> None:
    _, table, sent, event = setup
    value = {"n": 1, "h": {"c0": 1}}
    with event_context(event):
        put(table, "ec2", value)
        value["n"] = 2  # the next batch mutates the cached object
        value["h"]["c0"] = 9
        assert _wire(sent[0], table) == b'{"n":1,"h":{"c0":1}}'
        assert table.get("ec2") == {"n": 1, "h": {"c0": 1}}


def test_faust_table_setitem_defers_the_changelog_encoding(setup: Any) -> None:
    """Why put exists: Faust buffers the object itself, so mutating it later changes the record."""
    _, table, sent, event = setup
    value = {"n": 1}
    with event_context(event):
        table["ec2"] = value
        value["n"] = 2
        assert _wire(sent[0], table) == b'{"n":2}'  # not what was written


def test_cache_reads_the_table_once_and_writes_through(setup: Any) -> None:
    _, table, _, event = setup
    with event_context(event):
        table["ec2"] = {"n": 1}
        cache = StateCache(table)
        first = cache.get("ec2")
        assert first == {"n": 1} and cache.misses == 1
        assert cache.get("ec2") is first and cache.hits == 1
        first["n"] = 2
        cache["ec2"] = first
        assert table.get("ec2") == {"n": 2}
        assert cache.get("missing") is None and cache.misses == 2
        cache.discard()
        again = cache.get("ec2")
        assert again == {"n": 2} and again is not first


def test_cache_is_bounded(setup: Any) -> None:
    _, table, _, event = setup
    cache = StateCache(table, max_keys=3)
    with event_context(event):
        for i in range(5):
            cache[f"k{i}"] = {"i": i}
        assert len(cache.values) <= 3
        assert cache.get("k0") == {"i": 0}  # evicted from the cache, still in the table


async def test_rebalance_signals_clear_the_cache(setup: Any) -> None:
    app, table, _, event = setup
    cache = StateCache(table)
    clear_on_rebalance(app, [cache])
    for signal in (app.on_partitions_revoked, app.on_partitions_assigned):
        with event_context(event):
            cache["ec2"] = {"n": 1}
        assert cache.values
        await signal.send(set())
        assert not cache.values
    with event_context(event):
        cache["ec2"] = {"n": 1}
    await app.on_rebalance_complete.send()
    assert not cache.values


def test_a_store_of_objects_gets_a_copy(tmp_path: Any) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    app.finalize()
    app.conf.store = "memory://"
    table = app.finops.tables.unit_state  # type: ignore[attr-defined]
    table.changelog_topic.send_soon = lambda **kw: SimpleNamespace(message=SimpleNamespace(partition=0))
    assert type(table.data).__module__ == "faust.stores.memory"
    value = {"n": 1}
    with event_context(_Event(app.finops.topics.by_unit.get_topic_name(), 0)):  # type: ignore[attr-defined]
        put(table, "u", value)
        value["n"] = 2
        assert table.get("u") == {"n": 1}
