"""Shared agent plumbing: internal envelopes, dead letters and batched sends."""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from typing import Any

import orjson
from faust.types import EventT

from finops_app.context import Context
from finops_app.core.validate import iso
from finops_app.errors import FinOpsError, ValidationError

logger = logging.getLogger(__name__)
DEAD_LETTER_RAW_MAX = 256 * 1024  # bytes of the original message copied into a dead letter


def envelope(kind: str, event: EventT[Any], body: dict[str, Any], source: str | None = None) -> bytes:
    """Internal record: kind, source tag/partition/offset (for idempotence), produce time, event.

    ``source`` tags the topic the record was derived from (default: the kind's initial), so
    offsets of different source topics never share a high-water mark.
    """
    msg = event.message
    return orjson.dumps(
        {
            "k": kind,
            "s": source or kind[0],
            "p": msg.partition,
            "o": msg.offset,
            "t": int(msg.timestamp * 1000),
            "e": body,
        }
    )


BATCH_MAX_BYTES = 512 * 1024  # largest batch envelope (a single bigger event still goes alone)


def encode_item(offset: int, timestamp_ms: int, body: dict[str, Any]) -> bytes:
    """One event of a batch envelope: ``[source offset, produce time ms, validated event]``."""
    return orjson.dumps([offset, timestamp_ms, body])


def envelope_at(
    kind: str, partition: int, offset: int, timestamp_ms: int, body: dict[str, Any], source: str | None = None
) -> bytes:
    """A single envelope (see ``envelope``) for a record read outside Faust (the intake service)."""
    return orjson.dumps(
        {"k": kind, "s": source or kind[0], "p": partition, "o": offset, "t": timestamp_ms, "e": body}
    )


def unpack(env: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of an internal record, each shaped like a single envelope.

    A batch envelope ``{"k", "s", "p", "b": [[offset, produce ms, event], ...]}`` carries the
    events of one source partition for one key, in offset order; a single envelope carries one.
    """
    items = env.get("b")
    if items is None:
        return [env]
    kind, src, part = env["k"], env.get("s") or env["k"][0], env["p"]
    return [{"k": kind, "s": src, "p": part, "o": o, "t": t, "e": e} for o, t, e in items]


class Outbox:
    """Validated events of one batch, grouped by (topic, key, source partition) into batch envelopes.

    The intake service sends one record per group instead of one per event: downstream agents then
    pay Faust's per-record delivery once per group (bench/profile.md), while every event keeps its
    own source offset, so ``first_delivery`` still counts each event exactly once.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[Any, str, str, str, int], list[bytes]] = {}

    def add(
        self, topic: Any, key: str, kind: str, partition: int, item: bytes, source: str | None = None
    ) -> None:
        group = (topic, key, kind, source or kind[0], partition)
        items = self._groups.get(group)
        if items is None:
            self._groups[group] = [item]
        else:
            items.append(item)

    def records(self) -> list[tuple[Any, str, bytes]]:
        """(topic, key, value) of every batch envelope, chunked to at most BATCH_MAX_BYTES."""
        out: list[tuple[Any, str, bytes]] = []
        for (topic, key, kind, source, partition), items in self._groups.items():
            head = (
                b'{"k":' + orjson.dumps(kind) + b',"s":' + orjson.dumps(source) + b',"p":%d,"b":[' % partition
            )
            chunk: list[bytes] = []
            size = 0
            for item in items:
                if chunk and size + len(item) > BATCH_MAX_BYTES:
                    out.append((topic, key, head + b",".join(chunk) + b"]}"))
                    chunk, size = [], 0
                chunk.append(item)
                size += len(item) + 1
            out.append((topic, key, head + b",".join(chunk) + b"]}"))
        return out


def source_id(env: dict[str, Any]) -> str:
    """The source tag and partition an internal record came from (the high-water mark's key)."""
    return f"{env.get('s') or env['k'][0]}{env['p']}"


def fresh(state: dict[str, Any], env: dict[str, Any]) -> tuple[list[Any], int]:
    """The events of an internal record not yet applied to ``state``, and how many were repeats.

    ``[offset, produce ms, event]`` each, in offset order; records the new high-water mark in
    ``state["h"]`` (mutates it), exactly as ``first_delivery`` would event by event.
    """
    items = env.get("b")
    if items is None:
        items = ((env["o"], env["t"], env["e"]),)
    marks = state["h"]
    src = source_id(env)
    hwm = start = marks.get(src, -1)
    out = []
    for item in items:
        if item[0] > hwm:
            hwm = item[0]
            out.append(item)
    if hwm != start:
        marks[src] = hwm
    return out, len(items) - len(out)


def first_delivery(state: dict[str, Any], env: dict[str, Any]) -> bool:
    """True the first time a state sees this source record; records its offset (mutates ``state``).

    Each source partition feeds a key in offset order, so one high-water mark per source partition
    in the key's own value makes a redelivered record (after a crash, or a re-sent intake record)
    count once.
    """
    return bool(fresh(state, env)[0])


class SourceClock:
    """Per partition watermark aligned across the upstream partitions that feed it.

    A re-keyed partition merges records from every upstream partition, each processed in batches,
    so their event times interleave with a skew of up to a batch. The watermark is therefore the
    minimum, over the upstream sources seen within ``idle_s`` (wall clock), of each source's
    latest event time (kept in the partition record ``prec["src"]``); a quiet source stops
    holding it back after ``idle_s``. It never goes backwards.
    """

    def __init__(self, idle_s: float) -> None:
        self.idle_s = idle_s
        self.seen: dict[tuple[int, str], float] = {}

    def observe_source(self, prec: dict[str, Any], partition: int, src: str, ts_ms: int) -> None:
        marks = prec.setdefault("src", {})
        if ts_ms > marks.get(src, 0):
            marks[src] = ts_ms
        self.seen[(partition, src)] = time.time()

    def watermark(self, prec: dict[str, Any], partition: int, floor: int) -> int:
        marks: dict[str, int] = prec.get("src") or {}
        now = time.time()
        active = [
            ts for src, ts in marks.items() if now - self.seen.setdefault((partition, src), now) < self.idle_s
        ]
        candidate = min(active) if active else max(marks.values(), default=0)
        return max(floor, candidate)


def tick(watermark_ms: int) -> bytes:
    """A control record that advances an idle partition's watermark."""
    return orjson.dumps({"k": "tick", "wm": watermark_ms, "t": int(time.time() * 1000)})


def dead_letter_value(
    source_topic: str,
    partition: int,
    offset: int,
    raw: bytes | None,
    error: FinOpsError | str,
    stage: str = "intake",
) -> bytes:
    field = error.field if isinstance(error, ValidationError) else None
    raw = raw or b""
    kept = raw[:DEAD_LETTER_RAW_MAX]
    return orjson.dumps(
        {
            "source_topic": source_topic,
            "partition": partition,
            "offset": offset,
            "error": str(error),
            "field": field,
            # a huge message is kept in full at (source_topic, partition, offset); the dead letter
            # carries its first bytes and a digest, so it always fits the producer's request size
            "raw": base64.b64encode(kept).decode(),
            "raw_size": len(raw),
            "raw_truncated": len(kept) < len(raw),
            "raw_sha256": hashlib.sha256(raw).hexdigest(),
            "timestamp": iso(int(time.time() * 1000)),
            "stage": stage,
        }
    )


async def dead_letter(
    ctx: Context,
    event: EventT[Any],
    error: FinOpsError | str,
    stage: str = "intake",
    raw: bytes | None = None,
) -> None:
    """Send the event's raw bytes (or ``raw``: one event of a batch) with the reason to finops.deadletter."""
    msg = event.message
    if raw is None:
        raw = msg.value if isinstance(msg.value, bytes) else None
    if raw is None and isinstance(event.value, bytes):
        raw = event.value
    await dead_letter_record(ctx, msg.topic, msg.partition, msg.offset, raw, error, stage)


async def dead_letter_record(
    ctx: Context,
    topic: str,
    partition: int,
    offset: int,
    raw: bytes | None,
    error: FinOpsError | str,
    stage: str = "intake",
) -> Any:
    """Send a record's raw bytes with the reason to finops.deadletter; returns the delivery future."""
    value = dead_letter_value(topic, partition, offset, raw, error, stage)
    sent = await ctx.send(ctx.topics.deadletter, topic, value)
    ctx.metrics.inc("deadletters_total", labels={"topic": topic, "stage": stage})
    logger.info("dead-lettered %s[%d]@%d: %s", topic, partition, offset, error)
    return sent
