"""Batch-safe table access: read and write a key in the context of an event of its partition.

Faust routes a table write (the RocksDB file and the changelog partition) by the *current event*.
A batch from ``stream.take_events`` spans partitions, so before touching a key the agent enters
the context of an event from that key's partition; ``by_partition`` groups a batch that way.
Faust's ``read_only`` option is ignored by the rocksdict driver; reads go through the same path.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from faust.stores.base import SerializedStore
from faust.streams import _current_event
from faust.types import EventT
from faust.utils import json as faust_json


@contextmanager
def event_context(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` the current event, so table I/O goes to its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def by_partition(events: Sequence[EventT[Any]]) -> dict[int, list[EventT[Any]]]:
    """Group a batch by source partition, keeping each partition's order."""
    groups: dict[int, list[EventT[Any]]] = {}
    for event in events:
        groups.setdefault(event.message.partition, []).append(event)
    return groups


def partition_key(partition: int) -> str:
    """Table key of a partition's bookkeeping record (watermark and due list)."""
    return f"\x00partition/{partition}"


def decode_key(key: Any) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    return "" if key is None else str(key)


class StateCache:
    """Decoded values of an agent's table keys, kept between batches; every write goes through.

    Without it every batch reads each key back from RocksDB and decodes its JSON, and Faust
    serialises each write twice (RocksDB and the changelog, the second one later, from the buffered
    object). Here a write is encoded once, at once: the same bytes go to the store and to the
    changelog, so a cached value can be mutated by the next batch without changing what an earlier
    write sends. Values are only ever changed by the agent that owns the key, so the cache is exact
    until the partitions move: it is cleared on every rebalance (``clear_on_rebalance``), and when
    a batch fails half-way (``discard``). It holds at most ``max_keys`` values.
    """

    def __init__(self, table: Any, max_keys: int = 50_000) -> None:
        self.table = table
        self.max_keys = max_keys
        self.values: dict[str, Any] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any:
        value = self.values.get(key)
        if value is not None:
            self.hits += 1
            return value
        self.misses += 1
        value = self.table.get(key)
        if value is not None:
            if len(self.values) >= self.max_keys:
                self.values.clear()
            self.values[key] = value
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        put(self.table, key, value)
        if len(self.values) >= self.max_keys:
            self.values.clear()
        self.values[key] = value

    def discard(self) -> None:
        """Forget every value (the next read of each key goes to the table)."""
        self.values.clear()


def put(table: Any, key: str, value: Any) -> None:
    """``table[key] = value``, encoded once and at once (see ``StateCache``).

    Needs the current event (``event_context``) like any table write. A store that keeps objects
    rather than bytes (``memory://``, used by tests) gets a decoded copy the cache cannot alias.
    """
    encoded = faust_json.dumps(value)  # Faust's JSON codec: orjson, Decimal and datetime as strings
    raw = encoded.encode() if isinstance(encoded, str) else encoded
    store = table.data
    if isinstance(store, SerializedStore):
        table.send_changelog(table.partition_for_key(key), key, raw, value_serializer="raw")
        store._set(store._encode_key(key), raw)
    else:
        table[key] = orjson.loads(raw)


def clear_on_rebalance(app: Any, caches: Sequence[StateCache]) -> None:
    """Clear ``caches`` whenever partitions are revoked or assigned, and when recovery completes."""

    async def clear(*args: Any, **kwargs: Any) -> None:
        for cache in caches:
            cache.discard()

    app.on_partitions_revoked.connect(clear)
    app.on_partitions_assigned.connect(clear)
    app.on_rebalance_complete.connect(clear)  # signals keep strong references by default
