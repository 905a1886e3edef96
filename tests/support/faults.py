"""Helpers for the scaling and fault-injection tests: free ports, a private restartable broker,
producing with delivery reports, polling workers' health, expected window sums and RSS samples."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import stack as devstack  # dev/stack.py (tests/conftest.py puts dev/ on sys.path)
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from finops_app import kafka
from finops_app.config import Settings
from finops_app.core.validate import iso
from tests.support.workers import Worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def key_partition(key: str, partitions: int) -> int:
    """The partition the producers' default partitioner (murmur2) picks for ``key``."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


# -- a private broker that a test may stop and start ------------------------------------------------


@dataclass(frozen=True)
class PrivateBroker:
    """A single-node KRaft broker of dev/stack.py under ``var``; data survives ``restart``."""

    var: Path
    ports: devstack.Ports

    @classmethod
    def create(cls, var: Path) -> PrivateBroker:
        ports = devstack.Ports(kafka=free_port(), controller=free_port(), snowflake=0, moto=0)
        return cls(var=var, ports=ports)

    @property
    def broker_url(self) -> str:
        return f"kafka://127.0.0.1:{self.ports.kafka}"

    def start(self, timeout: float = 90.0) -> None:
        self.var.mkdir(parents=True, exist_ok=True)
        for port in (self.ports.kafka, self.ports.controller):
            if not devstack.port_free(port):
                raise devstack.StackError(f"port {port} for the private test broker is taken")
        devstack.start_kafka(self.var, self.ports, heap="512m")
        try:
            devstack._wait("kafka", self.var, lambda: devstack.kafka_ready(self.ports.kafka), timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 20 s) exactly the PID start_kafka recorded."""
        devstack.down(self.var, ("kafka",))

    def wait_ports_free(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if devstack.port_free(self.ports.kafka) and devstack.port_free(self.ports.controller):
                return
            time.sleep(0.2)
        raise devstack.StackError("the private broker's ports did not become free")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.var / "kafka.log").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no broker log)"


# -- producing ---------------------------------------------------------------------------------------


async def send_all(
    settings: Settings, topic: str, records: Iterable[tuple[bytes | str | None, Any]], **overrides: Any
) -> list[Any]:
    """Send (key, value) to the app topic ``topic`` and return each record's RecordMetadata, in order.

    Values that are not bytes are JSON-encoded; ``None`` is sent as a null value (a tombstone)."""
    await kafka.ensure_topics(settings)
    producer = kafka.producer(settings, **overrides)
    await producer.start()
    try:
        futures = []
        for key, value in records:
            data = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
            k = key.encode() if isinstance(key, str) else key
            futures.append(await producer.send(kafka.topic_name(settings, topic), data, key=k))
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


# -- windows --------------------------------------------------------------------------------------------


def window_start(ts_ms: int, size_s: int) -> str:
    size = size_s * 1000
    return iso(ts_ms - ts_ms % size)


def expected_totals(
    events: Iterable[dict[str, Any]], size_s: int, ts: Callable[[dict[str, Any]], int]
) -> tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str], int]]:
    """Hand-computed Decimal sum and count per (business unit, window start)."""
    sums: dict[tuple[str, str], Decimal] = {}
    counts: dict[tuple[str, str], int] = {}
    for e in events:
        k = (str(e["business_unit"]), window_start(ts(e), size_s))
        sums[k] = sums.get(k, Decimal(0)) + Decimal(str(e["cost_amount"]))
        counts[k] = counts.get(k, 0) + 1
    return sums, counts


def latest(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The highest revision per (business unit, window start); the later record on equal revisions.

    After a worker is killed, the worker that takes over can emit a revision number the dead one had
    already emitted (its changelog write was lost) with more events in it; the later record is the
    right one, as the Snowflake sink's MERGE and the dashboard's store also decide.
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        k = (r["business_unit"], r["window_start"])
        if k not in out or r["revision"] >= out[k]["revision"]:
            out[k] = r
    return out


def totals_match(records: list[dict[str, Any]], expected: dict[tuple[str, str], Decimal]) -> bool:
    got = latest(records)
    return all(k in got and Decimal(got[k]["total_cost"]) == v for k, v in expected.items())


# -- workers ------------------------------------------------------------------------------------------------


def assigned(worker: Worker, topic: str) -> set[int] | None:
    """Partitions of ``topic`` (full name) that ``worker``'s health reports (Faust's assignment, or the
    intake service's for an input topic), None unless healthy."""
    try:
        status, body = worker.get("/finops/health/", timeout=3)
    except OSError:
        return None
    if status != 200 or not isinstance(body, dict):
        return None
    out = set()
    intake = body.get("intake") or {}  # the input topics belong to the intake service's own group
    for entry in [*body.get("partitions_assigned", []), *intake.get("assigned", [])]:
        name, _, rest = entry.rpartition("[")
        if name == topic:
            out.add(int(rest.rstrip("]")))
    return out


def wait_spread(
    workers: Sequence[Worker], topic: str, partitions: int, timeout: float = 90.0
) -> list[set[int]]:
    """Wait until every partition of ``topic`` is assigned to exactly one of ``workers`` (all healthy,
    each with at least one partition); returns each worker's partitions."""
    deadline = time.monotonic() + timeout
    last: list[set[int] | None] = []
    while time.monotonic() < deadline:
        for w in workers:
            assert w.alive(), f"worker on port {w.settings.web_port} died:\n{w.log_tail()}"
        last = [assigned(w, topic) for w in workers]
        if all(a for a in last):
            got = [a for a in last if a is not None]
            flat = sorted(p for a in got for p in a)
            if flat == list(range(partitions)):
                return got
        time.sleep(0.5)
    tails = "\n".join(f"--- worker {w.settings.web_port}:\n{w.log_tail(1500)}" for w in workers)
    raise AssertionError(f"partitions of {topic} not spread over the workers: {last}\n{tails}")


def vm_rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for {pid}")


async def table_from_changelog(
    settings: Settings,
    table: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Latest value per key of the Faust table ``table``, read from its changelog topic until
    ``until(values)`` holds or ``timeout`` passes (keys and values are JSON in the changelog)."""
    consumer = AIOKafkaConsumer(
        f"{settings.app_id}-{table}-changelog",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **kafka.client_kwargs(settings),
    )
    await consumer.start()
    values: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for m in messages:
                    key = orjson.loads(m.key)
                    if m.value is None:
                        values.pop(key, None)
                    else:
                        values[key] = orjson.loads(m.value)
            if until(values):
                break
        return values
    finally:
        await consumer.stop()


def stop_together(workers: Sequence[Worker], timeout: float = 30.0) -> None:
    """SIGTERM every live worker at once, then wait (one after the other, each triggers a
    rebalance that slows the next one's shutdown); SIGKILL what does not exit in ``timeout``."""
    live = [w for w in workers if w.alive() and w.proc is not None]
    for w in live:
        assert w.proc is not None
        os.killpg(w.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for w in live:
        assert w.proc is not None
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()


async def read_all(settings: Settings, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every record of the app topic ``topic`` up to its current end offsets (raw ConsumerRecords)."""
    name = kafka.topic_name(settings, topic)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **kafka.client_kwargs(settings))
    await consumer.start()
    out: list[Any] = []
    try:
        parts = consumer.partitions_for_topic(name) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(name) or set()
        tps = [TopicPartition(name, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {name} to its end within {timeout}s")
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for messages in batch.values():
                out.extend(messages)
        return out
    finally:
        await consumer.stop()


async def group_offsets(
    settings: Settings, group_id: str, topic: str
) -> tuple[dict[int, int | None], dict[int, int]]:
    """(committed offset, end offset) per partition of the app topic ``topic`` for consumer group
    ``group_id``; reads them without joining the group."""
    name = kafka.topic_name(settings, topic)
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=group_id, **kafka.client_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(name, p) for p in range(settings.topic_partitions)]
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}
        ends = {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()
    return committed, ends


async def wait_caught_up(settings: Settings, group_id: str, topic: str, timeout: float = 60.0) -> None:
    """Wait until consumer group ``group_id`` has committed every partition of the app topic
    ``topic`` up to its end offset when the wait began (read and acknowledged all of it)."""
    _, ends = await group_offsets(settings, group_id, topic)
    deadline = time.monotonic() + timeout
    behind: dict[int, tuple[int | None, int]] = {}
    while time.monotonic() < deadline:
        committed, _ = await group_offsets(settings, group_id, topic)
        behind = {p: (committed[p], end) for p, end in ends.items() if (committed[p] or 0) < end}
        if not behind:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{group_id} not caught up on {topic} within {timeout}s: {behind}")
