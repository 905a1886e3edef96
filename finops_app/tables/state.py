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

from faust.streams import _current_event
from faust.types import EventT


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
