"""Shared agent plumbing: internal envelopes, dead letters and batched sends."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from faust.types import EventT

from finops_app.context import Context
from finops_app.core.validate import iso
from finops_app.errors import FinOpsError, ValidationError
from finops_app.tables.state import by_partition, event_context

logger = logging.getLogger(__name__)
DEAD_LETTER_RAW_MAX = 256 * 1024  # bytes of the original message copied into a dead letter


def envelope(
    kind: str, event: EventT[Any], body: dict[str, Any], source: str | None = None, offset: int | None = None
) -> bytes:
    """Internal record: kind, source tag/partition/offset (for idempotence), produce time, event.

    ``source`` tags the topic the record was derived from (default: the kind's initial), so
    offsets of different source topics never share a high-water mark. ``offset`` (default: the
    source record's) must grow with the source offset and differ for every record one source record
    sends to the same key (see ``agents/ledger.py``).
    """
    msg = event.message
    return orjson.dumps(
        {
            "k": kind,
            "s": source or kind[0],
            "p": msg.partition,
            "o": msg.offset if offset is None else offset,
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


def groups(env: dict[str, Any], key: Any = None) -> list[tuple[str, str, int, Any, list[Any]]]:
    """``(kind, source tag, source partition, key, items)`` of every group in an internal record.

    Three shapes reach the stream agents: a partition envelope ``{"k": "grp", "g": [[kind, source,
    source partition, key, [[offset, produce ms, event], ...]], ...]}`` (what intake sends: every key
    of one destination partition in one record), a batch envelope ``{"k", "s", "p", "b": [...]}``
    (one key, the record's own) and a single envelope ``{"k", "s", "p", "o", "t", "e"}`` (the
    restatement ledger's); ``key`` is the record's key, used by the last two.
    """
    grouped = env.get("g")
    if grouped is not None:
        return [(g[0], g[1], g[2], g[3], g[4]) for g in grouped]
    items = env.get("b")
    if items is None:
        items = [[env["o"], env["t"], env["e"]]]
    return [(env["k"], env.get("s") or env["k"][0], env["p"], key, items)]


def unpack(env: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of an internal record, each shaped like a single envelope (plus ``key``)."""
    if env.get("g") is None and env.get("b") is None:
        return [env]
    return [
        {"k": kind, "s": src, "p": part, "o": o, "t": t, "e": e, "key": key}
        for kind, src, part, key, items in groups(env)
        for o, t, e in items
    ]


GROUPED = "grp"  # kind of a partition envelope
_Group = tuple[str, str, int, str]  # kind, source tag, source partition, key


class Outbox:
    """Validated events of one batch, as few records as the destination partitions allow.

    With ``partition_of`` (topic, key -> the partition the producer's partitioner gives that key),
    every key of one destination partition goes into one *partition envelope*, sent to that
    partition: downstream agents pay Faust's per-record delivery once per partition and batch, not
    once per key, which at moderate rates (a few events per key and batch) was most of their CPU.
    Each group keeps its key, source partition and every event's own source offset, so ``fresh``
    still counts each event exactly once, and table changelogs stay co-partitioned (a key always
    lands on the partition its hash gives). Without it (partitions unknown), one record per key.
    """

    def __init__(self, partition_of: Callable[[Any, str], int | None] | None = None) -> None:
        self._partition_of = partition_of
        # (topic, destination partition or None, key if no partition) -> group -> items
        self._slots: dict[tuple[Any, int | None, str | None], dict[_Group, list[bytes]]] = {}

    def add(
        self, topic: Any, key: str, kind: str, partition: int, item: bytes, source: str | None = None
    ) -> None:
        dest = self._partition_of(topic, key) if self._partition_of is not None else None
        slot = (topic, dest, None if dest is not None else key)
        groups_ = self._slots.get(slot)
        if groups_ is None:
            groups_ = self._slots[slot] = {}
        group = (kind, source or kind[0], partition, key)
        items = groups_.get(group)
        if items is None:
            groups_[group] = [item]
        else:
            items.append(item)

    def records(self) -> list[tuple[Any, str | None, bytes, int | None]]:
        """(topic, key, value, partition) of every envelope, chunked to at most BATCH_MAX_BYTES.

        A group larger than the limit continues in the next record of the same partition (sent in
        order, so its events stay in offset order); a single bigger event still goes alone.
        """
        out: list[tuple[Any, str | None, bytes, int | None]] = []
        for (topic, dest, key), groups_ in self._slots.items():
            parts: list[bytes] = []  # encoded groups of the record being filled
            size = 0
            for (kind, source, partition, gkey), items in groups_.items():
                head = b"[%b,%b,%d,%b,[" % (
                    orjson.dumps(kind),
                    orjson.dumps(source),
                    partition,
                    orjson.dumps(gkey),
                )
                chunk: list[bytes] = []
                for item in items:
                    if (chunk or parts) and size + len(head) + len(item) > BATCH_MAX_BYTES:
                        if chunk:
                            parts.append(head + b",".join(chunk) + b"]]")
                        out.append((topic, key, _grouped(parts), dest))
                        parts, chunk, size = [], [], 0
                    chunk.append(item)
                    size += len(item) + 1
                parts.append(head + b",".join(chunk) + b"]]")
                size += len(head) + 3
            if parts:
                out.append((topic, key, _grouped(parts), dest))
        return out


AGENT_BATCH_WAIT_S = 0.01  # longest wait of a stream agent for more records once it is idle
RETRY_FIRST_S, RETRY_MAX_S = 0.1, 5.0  # backoff between attempts of a failing batch


async def run_batches(
    stream: Any,
    ctx: Context,
    agent: str,
    process: Callable[[int, list[Any]], Awaitable[None]],
    within: float | None = None,
) -> None:
    """Feed a stream agent's records to ``process(partition, events)``, in batches of what has arrived.

    Faust's ``take_events`` yields when it holds ``max_`` records or ``within`` has passed since
    the previous batch; records that arrive while a batch is processed wait in the stream's queue
    and move into the next batch in well under a millisecond. Intake already batched the events (a
    record is a partition envelope of up to a whole intake batch), so the agent should take what is
    there and not wait for more: with ``batch_within`` (50 ms) every batch waited that long and
    the worker idled (bench: 0.6 cores busy while the agents fell behind); with a small record count
    it wrote its tables once per record (1.5x the CPU per event). A short wait and a large count
    give batches of whatever has arrived, and at most AGENT_BATCH_WAIT_S when the agent is idle
    (``within`` overrides it: the ledger and recommendations wait the configured time).

    Each partition's events run in the context of one of them, so table I/O goes to that partition;
    the time spent, batches and records are counted per agent (the rest of the time it waited).

    A partition's events whose ``process`` raises are retried (``retrying``), and the worker stops
    if they keep failing (``stop_worker``): Faust acks a batch when the loop moves on, whatever
    happened, so an exception let out of here would commit the batch as done and lose it. For the
    same reason, a batch cancelled half way (the worker stopping) holds what it did not process.
    """
    settings, metrics = ctx.settings, ctx.metrics
    take_max = settings.batch_size
    if within is None:
        within = min(settings.batch_within_seconds, AGENT_BATCH_WAIT_S)
    labels = {"agent": agent}
    async for batch in stream.take_events(take_max, within=within):
        started = time.perf_counter()
        parts = list(by_partition(batch).items())
        done = 0  # partitions of the batch processed
        try:
            for partition, events in parts:
                with event_context(events[-1]):
                    error = await retrying(ctx, agent, partition, events, process)
                if error is not None:
                    await stop_worker(ctx, agent, [e for _, rest in parts[done:] for e in rest], error)
                done += 1
        except asyncio.CancelledError:
            # the worker is stopping (or the agent restarting) mid-batch: what was not processed
            # must not be committed by the ack that take_events gives the whole batch on the way out
            hold([e for _, rest in parts[done:] for e in rest])
            raise
        metrics.inc("agent_busy_seconds_total", time.perf_counter() - started, labels=labels)
        metrics.inc("agent_batches_total", labels=labels)
        metrics.inc("agent_records_total", len(batch), labels=labels)


async def retrying(
    ctx: Context,
    agent: str,
    partition: int,
    events: list[Any],
    process: Callable[[int, list[Any]], Awaitable[None]],
) -> BaseException | None:
    """Run ``process(partition, events)`` until it succeeds (None) or has failed for longer than
    ``FINOPS_AGENT_RETRY_SECONDS`` (its last exception).

    Safe to repeat because an agent writes its state only after the batch's outputs were
    acknowledged (``delivered``) and reads a fresh copy of every value (the RocksDB store decodes
    each read): an attempt that failed before its writes left the state as it was, one that failed
    between two writes left keys that skip the events they already counted (``fresh_items``). The
    repeated outputs carry the same revisions (at-least-once). While it fails, the worker's health
    is degraded and ``agent_failures`` in it says which agent, partition, offsets and error.
    """
    settings, metrics = ctx.settings, ctx.metrics
    failures: dict[str, Any] = ctx.extras.setdefault("agent_failures", {})
    first_failed: float | None = None
    attempts = 0
    delay = RETRY_FIRST_S
    msg = events[0].message
    where = f"{msg.topic}[{partition}] offsets {msg.offset}..{events[-1].message.offset}"
    while True:
        try:
            await process(partition, events)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: retry, then stop without committing
            attempts += 1
            now = time.monotonic()
            if first_failed is None:
                first_failed = now
                logger.exception("agent %s: the batch of %s failed; retrying it", agent, where)
            metrics.inc("agent_errors_total", labels={"agent": agent})
            failures[agent] = {
                "records": where,
                "attempts": attempts,
                "failing_seconds": round(now - first_failed, 1),
                "error": f"{type(exc).__name__}: {exc}",
            }
            left = settings.agent_retry_seconds - (now - first_failed)
            if left <= 0:
                return exc
            if attempts > 1:
                logger.warning(
                    "agent %s: the batch of %s failed again (attempt %d, %s: %s); next attempt in %.1f s",
                    agent, where, attempts, type(exc).__name__, exc, min(delay, left),
                )  # fmt: skip
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, RETRY_MAX_S)
        else:
            if attempts:
                failures.pop(agent, None)
                logger.warning("agent %s: the batch of %s passed at attempt %d", agent, where, attempts + 1)
            return None


def hold(events: list[Any]) -> None:
    """Keep ``events`` from ever being committed: their messages count as acked already, so a later
    ack (``take_events``' own) never adds their offsets to the consumer's acked list, and the
    consumer commits a partition only up to its first offset not in that list."""
    for event in events:
        event.message.acked = True


async def stop_worker(ctx: Context, agent: str, held: list[Any], error: BaseException) -> None:
    """Stop the worker (exit code 1) without committing ``held``, the records not processed.

    Faust's ``take_events`` acks the batch in the ``finally`` of its ``yield``, which runs even as
    the worker cancels this agent on its way out; the consumer would then commit those offsets at
    shutdown and the next worker would never see them. Marking the messages acked beforehand makes
    that ack a no-op, and the consumer commits only offsets up to the first record not acked, so
    the next worker replays from the failed batch (events already counted are skipped by their
    source offsets). Waits here until the worker cancels the agent, or exits the process itself
    ``STOP_GRACE_S`` later if Faust's stop hangs.
    """
    hold(held)
    logger.critical(
        "agent %s: a batch kept failing for %.0f s (FINOPS_AGENT_RETRY_SECONDS); stopping the worker "
        "without committing it (%d records), so the next worker replays it. Last error: %s: %s. "
        "Fix its cause (the traceback above), then start the worker again.",
        agent, ctx.settings.agent_retry_seconds, len(held), type(error).__name__, error,
    )  # fmt: skip
    # Faust's graceful stop can wait for its streams without end (seen once in
    # tests/integration/test_agent_failures.py: stuck after "Wait for streams..."); nothing past the
    # held records can be committed, so a hard exit after a grace period is as safe as a SIGKILL
    watchdog = threading.Timer(STOP_GRACE_S, _exit_now, args=(agent,))
    watchdog.daemon = True
    watchdog.start()
    await ctx.app.crash(error)
    await asyncio.Event().wait()


STOP_GRACE_S = 15.0  # how long stop_worker lets Faust stop the worker before it exits the process


def _exit_now(agent: str) -> None:
    logger.critical(
        "agent %s: the worker did not stop within %.0f s of the failure; exiting now (exit code 1)",
        agent,
        STOP_GRACE_S,
    )
    logging.shutdown()  # flush the log handlers: os._exit skips them
    os._exit(1)


async def delivered(futures: list[Any]) -> None:
    """Wait until the broker has acknowledged every record in ``futures`` (``ctx.send`` results).

    A stateful agent calls this between sending a batch's outputs and writing the table values
    that record them (a window emitted with its revision, an incident opened, a restatement's
    corrections sent, the source offsets applied). Faust writes table changes to their changelog
    through the same producer, but the producer sends each partition's batch when its own linger
    expires, so a changelog record can reach the broker before an output sent earlier. Killed
    between the two, the worker would restore a state that says "sent" for a record the broker
    never got, and the replayed input would then be skipped as already applied: the output lost.
    Waiting first turns that into the at-least-once case (state not written, input replayed, the
    output sent again with the same revision). Costs one produce round trip per batch that sends.
    """
    pending = [f for f in futures if f is not None]
    if pending:  # a failed delivery raises here: the state is not written, the batch not committed
        await asyncio.gather(*pending)


def _grouped(parts: list[bytes]) -> bytes:
    return b'{"k":"' + GROUPED.encode() + b'","g":[' + b",".join(parts) + b"]}"


def source_id(env: dict[str, Any]) -> str:
    """The source tag and partition an internal record came from (the high-water mark's key)."""
    return f"{env.get('s') or env['k'][0]}{env['p']}"


def fresh_items(state: dict[str, Any], src: str, items: Sequence[Any]) -> tuple[list[Any], int]:
    """The items (``[offset, produce ms, event]``, in offset order) of source ``src`` not yet applied
    to ``state``, and how many were repeats; moves the high-water mark ``state["h"][src]``."""
    marks = state["h"]
    hwm = start = marks.get(src, -1)
    out = []
    for item in items:
        if item[0] > hwm:
            hwm = item[0]
            out.append(item)
    if hwm != start:
        marks[src] = hwm
    return out, len(items) - len(out)


def fresh(state: dict[str, Any], env: dict[str, Any]) -> tuple[list[Any], int]:
    """The events of a batch or single envelope not yet applied to ``state``, and how many were repeats.

    ``[offset, produce ms, event]`` each, in offset order; records the new high-water mark in
    ``state["h"]`` (mutates it), exactly as ``first_delivery`` would event by event.
    """
    items = env.get("b")
    if items is None:
        items = ((env["o"], env["t"], env["e"]),)
    return fresh_items(state, source_id(env), items)


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

    def forget(self, *_: Any, **__: Any) -> None:
        """Drop when each source was last seen (a Faust rebalance signal receiver): a partition that
        comes back after another worker had it must not count its sources idle from an hour ago."""
        self.seen.clear()

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
) -> Any:
    """Send the event's raw bytes (or ``raw``: one event of a batch) with the reason to
    finops.deadletter; returns the delivery future."""
    msg = event.message
    if raw is None:
        raw = msg.value if isinstance(msg.value, bytes) else None
    if raw is None and isinstance(event.value, bytes):
        raw = event.value
    return await dead_letter_record(ctx, msg.topic, msg.partition, msg.offset, raw, error, stage)


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
