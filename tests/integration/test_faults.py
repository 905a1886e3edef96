"""Faults a production worker meets, on real brokers and real ``finops worker`` processes.

- Poison input mixed into good traffic (finops.cost.events, .business.events, .resource.events):
  every bad message lands on finops.deadletter once, at its source position, with a reason naming
  its problem; every good one is counted exactly; the worker never stops. Messages of ~750 KB and
  more are a separate test: their dead letter keeps the first 256 KiB and a digest (they used to
  crash the intake agent: the base64 copy exceeded the producer's request size).
- The broker restarted under load (a private broker, never the shared one): an idempotent producer
  keeps sending through the outage, the worker reconnects and goes on, and the window totals equal
  the sums over what the input topic holds, exactly (nothing lost, nothing counted twice).
- A bounded soak (~2 min, loopback only): small windows (60 s, retention 120 s) fed at 40 events/s
  with real-time timestamps after four minutes of history, so windows open, close and expire all
  along. After a 30 s warm-up: the worker's RSS (``/proc/<pid>/status`` VmRSS) in the last third of
  the samples stays within 20 % of the middle third's median, threads and open files do not grow,
  and every unit's table value holds at most (size + retention) / size + 1 windows and does not
  grow. The criterion catches a leak of more than ~15 MiB/min on a ~100 MiB worker; slower growth
  (RocksDB memtables filling, see the report) only shows in the printed slope.
- A fresh deployment: the worker creates every topic it writes, not only those its agents read
  (results are produced to topics no agent declares; the broker does not auto-create them).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from finops_app import kafka, topics
from finops_app.config import Settings
from finops_app.core.windows import all_windows
from finops_app.sinks.migrate import run_migrations
from tests.support.faults import (
    PrivateBroker,
    latest,
    read_all,
    send_all,
    totals_match,
    vm_rss_kb,
    window_start,
)
from tests.support.kafka import read_topic
from tests.support.workers import WorkerFactory

# -- poison input ----------------------------------------------------------------------------------

POISON_BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def good_cost(i: int, unit: str, minute: int, amount: str) -> dict[str, Any]:
    return {
        "event_id": f"pg-{i}",
        "timestamp": f"2026-01-01T00:{minute:02d}:{i % 60:02d}Z",
        "service": "ec2",
        "region": "us-east-1",
        "cost_amount": amount,
        "resource_id": f"i-{i % 5}",
        "business_unit": unit,
    }


def _json(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def _cost(**over: Any) -> bytes:
    """A valid cost event with ``over`` applied (a value of ... removes the key)."""
    body: dict[str, Any] = {
        "event_id": "bad-1",
        "timestamp": "2026-01-01T00:03:00Z",
        "service": "ec2",
        "cost_amount": "1.25",
        "business_unit": "ecommerce",
    }
    body.update(over)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()  # ints beyond 64 bits


@dataclass(frozen=True)
class Poison:
    name: str
    topic: str
    value: bytes | None
    reason: str  # a substring the dead letter's error must contain
    field: str | None = None  # the dead letter's field, when the problem is one field


COST, BIZ, RES = topics.COST_EVENTS, topics.BUSINESS_EVENTS, topics.RESOURCE_EVENTS
APP_LIMIT = 1_000_000  # FINOPS_MAX_MESSAGE_BYTES default

POISON: list[Poison] = [
    Poison("truncated JSON", COST, b'{"event_id": "t1", "cost_amount": ', "not valid JSON"),
    Poison(
        "cost_amount is a list", COST, _cost(cost_amount=[1, 2]), "expected a number, got list", "cost_amount"
    ),
    Poison("cost_amount 1e30 (float)", COST, _cost(cost_amount=1e30), "magnitude exceeds", "cost_amount"),
    Poison(
        "cost_amount '1e30' (string)", COST, _cost(cost_amount="1e30"), "magnitude exceeds", "cost_amount"
    ),
    Poison("cost_amount 10**30 (int)", COST, _cost(cost_amount=10**30), "magnitude exceeds", "cost_amount"),
    Poison("cost_amount 'NaN'", COST, _cost(cost_amount="NaN"), "must be finite", "cost_amount"),
    Poison("cost_amount 'Infinity'", COST, _cost(cost_amount="Infinity"), "must be finite", "cost_amount"),
    Poison("cost_amount '-Infinity'", COST, _cost(cost_amount="-Infinity"), "must be finite", "cost_amount"),
    Poison(
        "bare NaN token",
        COST,
        b'{"event_id":"n1","timestamp":"2026-01-01T00:03:00Z","service":"ec2","cost_amount":NaN}',
        "not valid JSON",
    ),
    Poison(
        "1e400 overflows a double",
        COST,
        b'{"event_id":"n2","timestamp":"2026-01-01T00:03:00Z","service":"ec2","cost_amount":1e400}',
        "not valid JSON",
    ),
    Poison("missing event_id", COST, _cost(event_id=...), "is required", "event_id"),
    Poison("missing service", COST, _cost(service=...), "is required", "service"),
    Poison("missing timestamp", COST, _cost(timestamp=...), "is required", "timestamp"),
    Poison("missing cost_amount", COST, _cost(cost_amount=...), "is required", "cost_amount"),
    Poison("unknown currency XXX", COST, _cost(currency="XXX"), "unknown currency 'XXX'", "currency"),
    Poison(
        "timestamp in 2999",
        COST,
        _cost(timestamp="2999-01-01T00:00:00Z"),
        "too far in the future",
        "timestamp",
    ),
    Poison(
        "timestamp in 1970", COST, _cost(timestamp="1970-01-02T00:00:00Z"), "too far in the past", "timestamp"
    ),
    Poison("timestamp 1e30", COST, _cost(timestamp=1e30), "out of range for a timestamp", "timestamp"),
    Poison(
        "timestamp not a date", COST, _cost(timestamp="yesterday"), "not an ISO-8601 timestamp", "timestamp"
    ),
    Poison(
        "invalid UTF-8",
        COST,
        b'{"event_id":"\xff\xfe","timestamp":"2026-01-01T00:03:00Z","service":"ec2","cost_amount":"1"}',
        "not valid UTF-8",
    ),
    Poison("JSON array", COST, orjson.dumps([orjson.loads(_cost())]), "expected a JSON object, got list"),
    Poison("JSON string", COST, b'"hello"', "expected a JSON object, got str"),
    Poison("empty message", COST, b"", "not valid JSON"),
    Poison("null value (tombstone)", COST, None, "expected a JSON object"),
    Poison("nested 5000 deep", COST, b"[" * 5000 + b"]" * 5000, "not valid JSON"),
    Poison("negative usage", COST, _cost(cost_amount="-5"), "is negative", "cost_amount"),
    Poison(
        "bad event_id characters",
        COST,
        _cost(event_id="a b<script>"),
        "not allowed in an identifier",
        "event_id",
    ),
    Poison("business: truncated", BIZ, b'{"event_id": "b1", "revenue', "not valid JSON"),
    Poison(
        "business: revenue not a number",
        BIZ,
        _json(event_id="b2", timestamp="2026-01-01T00:03:00Z", revenue_impact="lots"),
        "is not a number",
        "revenue_impact",
    ),
    Poison(
        "business: missing timestamp",
        BIZ,
        _json(event_id="b3", revenue_impact="1"),
        "is required",
        "timestamp",
    ),
    Poison(
        "business: currency XXX",
        BIZ,
        _json(event_id="b4", timestamp="2026-01-01T00:03:00Z", revenue_impact="1", currency="XXX"),
        "unknown currency",
        "currency",
    ),
    Poison(
        "resource: utilisation 5",
        RES,
        _json(event_id="r1", timestamp="2026-01-01T00:03:00Z", resource_id="i-1", utilisation=5),
        "outside [0, 1]",
        "utilisation",
    ),
    Poison(
        "resource: missing resource_id",
        RES,
        _json(event_id="r2", timestamp="2026-01-01T00:03:00Z", utilisation=0.5),
        "is required",
        "resource_id",
    ),
    Poison("resource: JSON array", RES, b"[1, 2, 3]", "expected a JSON object, got list"),
]
# Messages whose dead letter would be larger than the worker's producer accepts (Faust's
# producer_max_request_size, 1,000,000 bytes) if it carried them whole in base64 (4/3 of the size):
# anything from ~750 KB up used to crash the intake agent; the dead letter now keeps the first
# bytes, the size and a SHA-256. The 5 MB one is sent with a producer whose max_request_size
# allows it (the broker's message.max.bytes is 10 MB).
OVERSIZE: list[Poison] = [
    Poison("900 KB of invalid JSON", COST, b"{" + b"x" * 900_000, "not valid JSON"),
    Poison(
        "just over the app limit",
        COST,
        b'{"pad":"' + b"x" * APP_LIMIT + b'"}',
        "exceeds the 1000000-byte limit",
    ),
    Poison("5 MB", COST, b'{"pad":"' + b"x" * (5 * 1024 * 1024) + b'"}', "exceeds the 1000000-byte limit"),
]


async def run_poison(
    settings_factory: Callable[..., Settings], worker_factory: WorkerFactory, poison: list[Poison]
) -> None:
    """Good cost events with ``poison`` interleaved (cost topic) or alongside (other topics); the
    good ones must be totalled exactly, each bad one dead-lettered once with its reason."""
    settings = settings_factory(
        window_seconds=300,
        allowed_lateness_seconds=600,
        roi_window_seconds=600,
        sink_enabled=False,  # the stream path only: the Snowflake sink has its own tests
        sql_jobs_interval_seconds=0,
    )
    worker = worker_factory.start(settings)
    worker.wait_healthy()

    units = ("ecommerce", "analytics")
    good = [good_cost(i, units[i % 2], i % 10, f"{i}.0{i % 7}5") for i in range(60)]
    bad_cost = [p for p in poison if p.topic == COST]
    step = max(1, len(good) // max(1, len(bad_cost)))
    where: dict[tuple[str, int, int], Poison] = {}
    # good and bad interleaved on the same topic, one producer per chunk; 8 MB requests allowed
    for n, p in enumerate(bad_cost):
        chunk = good[n * step : (n + 1) * step]
        records = [(str(e["resource_id"]), orjson.dumps(e)) for e in chunk] + [("i-bad", p.value)]
        sent = await send_all(settings, COST, records, max_request_size=8 * 1024 * 1024)
        where[(sent[-1].topic, sent[-1].partition, sent[-1].offset)] = p
    rest = good[len(bad_cost) * step :]
    for topic in (BIZ, RES):
        batch = [p for p in poison if p.topic == topic]
        for p, meta in zip(
            batch, await send_all(settings, topic, [("k", p.value) for p in batch]), strict=True
        ):
            where[(meta.topic, meta.partition, meta.offset)] = p
    # more good traffic after the poison, then one closer per unit (minute 25 closes 00:00 and 00:05)
    tail = [good_cost(100 + i, units[i % 2], i % 10, f"0.{i:02d}07") for i in range(20)]
    closers = [good_cost(200 + k, u, 25, "0") for k, u in enumerate(units)]
    await send_all(settings, COST, [(str(e["resource_id"]), e) for e in rest + tail + closers])

    expected: dict[tuple[str, str], Decimal] = {}
    for e in good + tail:
        k = (str(e["business_unit"]), window_start(_ms(str(e["timestamp"])), 300))
        expected[k] = expected.get(k, Decimal(0)) + Decimal(str(e["cost_amount"]))

    dead = await read_topic(settings, topics.DEADLETTER, lambda rs: len(rs) >= len(where), timeout=30)
    got = {(d["source_topic"], d["partition"], d["offset"]): d for d in dead}
    missing = {k: p.name for k, p in where.items() if k not in got}
    assert not missing, f"not dead-lettered: {missing}\n{worker.log_tail(6000)}"
    assert len(dead) == len(where), [
        d for d in dead if (d["source_topic"], d["partition"], d["offset"]) not in where
    ]
    for key, p in where.items():
        d = got[key]
        assert p.reason in d["error"], (p.name, d["error"])
        assert d["field"] == p.field, (p.name, d["field"], d["error"])
        assert d["stage"] == "intake"
        value = p.value or b""
        assert d["raw_size"] == len(value), p.name
        raw = base64.b64decode(d["raw"])
        assert value.startswith(raw), p.name
        assert d.get("raw_truncated", False) == (len(raw) < len(value)), p.name
        if "raw_sha256" in d:
            assert d["raw_sha256"] == hashlib.sha256(value).hexdigest(), p.name

    totals = await read_topic(
        settings, topics.AGGREGATIONS, lambda rs: totals_match(rs, expected), timeout=60
    )
    final = latest(totals)
    assert {k: Decimal(r["total_cost"]) for k, r in final.items()} == expected, worker.log_tail(6000)
    assert sum(r["event_count"] for r in final.values()) == len(good) + len(tail)

    assert worker.alive(), worker.log_tail()
    status, health = worker.get("/finops/health/")
    assert status == 200, health
    assert health["deadletters"] == len(where)
    assert "Crashed" not in worker.log_tail(10**9), "an agent crashed (and was restarted)"


async def test_poison_input_is_dead_lettered_and_good_traffic_is_exact(
    settings_factory, worker_factory
) -> None:
    await run_poison(settings_factory, worker_factory, POISON)


async def test_oversize_poison_is_dead_lettered_and_good_traffic_is_exact(
    settings_factory, worker_factory
) -> None:
    await run_poison(settings_factory, worker_factory, OVERSIZE)


def _ms(iso_ts: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso_ts.replace("Z", "+00:00")).timestamp() * 1000)


# -- broker restarted under load -------------------------------------------------------------------

RESTART_BASE_MS = 1_772_532_000_000  # 2026-03-03T10:00:00Z
RESTART_EVENTS = 2000
RESTART_UNITS = ("ecommerce", "analytics", "platform", "data")
STEP_MS = 450  # 2,000 events over 15 minutes of event time: windows 10:00, 10:05, 10:10


def restart_cost(i: int) -> dict[str, Any]:
    return {
        "event_id": f"br-{i}",
        "timestamp": RESTART_BASE_MS + i * STEP_MS,
        "service": ("ec2", "rds", "s3", "lambda")[i % 4],
        "region": "us-east-1",
        "cost_amount": f"{(i % 29) * 0.37 + 0.0011:.4f}",
        "business_unit": RESTART_UNITS[i % len(RESTART_UNITS)],
        "resource_id": f"r-{i % 37}",
    }


@dataclass
class SteadyProducer:
    """Sends ``events`` at a bounded rate in the background; survives a broker outage.

    The producer is idempotent (acks=all) and its delivery timeout is long (``request_timeout_ms``
    120 s), so aiokafka retries across the outage and the broker drops retried duplicates; only a
    send that still fails is sent again (and counted in ``resent``, which may duplicate it)."""

    settings: Any
    events: list[dict[str, Any]]
    per_second: float = 100.0
    resent: int = 0
    errors: list[str] = field(default_factory=list)
    done_at: float = 0.0

    async def run(self) -> None:
        topic = kafka.topic_name(self.settings, COST)
        producer = kafka.producer(self.settings, request_timeout_ms=120_000, retry_backoff_ms=250)
        await producer.start()
        try:
            futures = []
            t0 = time.monotonic()
            for i, e in enumerate(self.events):
                delay = t0 + i / self.per_second - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                data = orjson.dumps(e)
                key = str(e["resource_id"]).encode()
                futures.append((data, key, await producer.send(topic, data, key=key)))
            for data, key, first in futures:
                pending = first
                for attempt in range(5):
                    try:
                        await pending
                        break
                    except Exception as exc:  # noqa: BLE001 - any delivery failure: record and re-send
                        self.errors.append(repr(exc))
                        self.resent += 1
                        await asyncio.sleep(2 * (attempt + 1))
                        pending = await producer.send(topic, data, key=key)
                else:
                    raise AssertionError(f"could not deliver after 5 attempts: {self.errors[-3:]}")
            self.done_at = time.monotonic()
        finally:
            await producer.stop()


async def test_broker_restart_under_load_keeps_totals_exact(
    settings_factory, worker_factory, tmp_path
) -> None:
    broker = PrivateBroker.create(tmp_path / "kafka")
    await asyncio.to_thread(broker.start)
    worker = None
    try:
        settings = settings_factory(
            broker_url=broker.broker_url,
            topic_partitions=4,
            window_seconds=300,
            roi_window_seconds=300,
            allowed_lateness_seconds=0,
            idle_timeout_seconds=2.0,
            sql_jobs_interval_seconds=0,
        )
        await asyncio.to_thread(run_migrations, settings)  # the sink loads into a real (fakesnow) schema
        worker = worker_factory.start(settings)  # it creates the app's topics itself
        worker.wait_healthy()

        events = [restart_cost(i) for i in range(RESTART_EVENTS)]
        # one zero-cost closer per unit just before 10:15: its window closes a second after idle
        events += [
            {
                **restart_cost(0),
                "event_id": f"br-end-{u}",
                "business_unit": u,
                "cost_amount": "0",
                "timestamp": RESTART_BASE_MS + 15 * 60_000 - 1,
            }
            for u in RESTART_UNITS
        ]
        producer = SteadyProducer(settings, events, per_second=100.0)
        task = asyncio.create_task(producer.run())
        deaths: list[str] = []

        async def watch() -> None:
            while not task.done():
                if not worker.alive() and not deaths:
                    deaths.append(f"worker exited with {worker.proc.returncode if worker.proc else None}")
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(7)  # a third of the stream is in
        t_down = time.monotonic()
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.wait_ports_free)
        # the broker stays away ~20 s in all: longer than the clients' 15 s metadata timeouts
        await asyncio.sleep(10)
        await asyncio.to_thread(broker.start)
        outage = time.monotonic() - t_down
        await asyncio.wait_for(task, timeout=180)
        t_produced = time.monotonic() - t_down
        await watcher
        assert not deaths, f"{deaths[0]} during the broker outage:\n{worker.log_tail(8000)}"

        # ground truth: what the input topic holds (a re-sent record counts as a record)
        records = await read_all(settings, COST)
        bodies = [orjson.loads(r.value) for r in records]
        ids = [b["event_id"] for b in bodies]
        assert set(ids) == {e["event_id"] for e in events}, "the producer lost events"
        duplicates = len(ids) - len(set(ids))
        assert duplicates <= producer.resent, (duplicates, producer.resent)
        expected: dict[tuple[str, str], Decimal] = {}
        counts: dict[tuple[str, str], int] = {}
        for b in bodies:
            k = (b["business_unit"], window_start(b["timestamp"], 300))
            expected[k] = expected.get(k, Decimal(0)) + Decimal(b["cost_amount"])
            counts[k] = counts.get(k, 0) + 1

        totals = await read_topic(
            settings, topics.AGGREGATIONS, lambda rs: totals_match(rs, expected), timeout=120
        )
        t_exact = time.monotonic() - t_down
        final = latest(totals)
        assert {k: Decimal(r["total_cost"]) for k, r in final.items()} == expected, worker.log_tail(8000)
        assert {k: r["event_count"] for k, r in final.items()} == counts
        assert worker.alive(), worker.log_tail(8000)
        corrections = sum(1 for r in totals if r["revision"] > 1)
        print(
            f"\nbroker outage {outage:.1f}s, all acked {t_produced:.1f}s and totals exact {t_exact:.1f}s "
            f"after it began; producer resent {producer.resent} ({producer.errors[:2]}), "
            f"{duplicates} duplicates on the input; {len(totals)} window records, {corrections} corrections"
        )
        # the worker reports itself healthy again once the broker is back
        health: Any = None
        for _ in range(40):
            status, health = worker.get("/finops/health/")
            if status == 200:
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError(f"worker still unhealthy 20 s after the broker came back: {health}")
    finally:
        if worker is not None:  # before the broker: a worker without a broker takes long to stop
            worker.stop(timeout=20)
        await asyncio.to_thread(broker.stop)


# -- soak ------------------------------------------------------------------------------------------------

SOAK_FEED_S = 105.0  # seconds of real-time traffic
SOAK_RATE = 40  # events per second
SOAK_UNITS = ("ecommerce", "analytics", "platform", "data", "search")
SOAK_SERVICES = ("ec2", "rds", "s3", "lambda")
SOAK_WINDOW_S, SOAK_RETENTION_S = 60, 120
# a window is kept until start + size + retention: at most this many per unit at any time
MAX_WINDOWS = (SOAK_WINDOW_S + SOAK_RETENTION_S) // SOAK_WINDOW_S + 1


def soak_cost(i: int, ts_ms: int) -> dict[str, Any]:
    return {
        "event_id": f"soak-{i}",
        "timestamp": ts_ms,
        "service": SOAK_SERVICES[i % len(SOAK_SERVICES)],
        "region": ("us-east-1", "eu-west-1")[i % 2],
        "cost_amount": f"{(i % 11) * 0.13 + 0.01:.2f}",
        "business_unit": SOAK_UNITS[i % len(SOAK_UNITS)],
        "resource_id": f"r-{i % 53}",
    }


def proc_sample(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    threads = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:"))
    return {"rss_kb": vm_rss_kb(pid), "threads": threads, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


async def test_soak_memory_and_state_stay_flat(settings_factory, worker_factory) -> None:
    settings = settings_factory(
        topic_partitions=2,
        window_seconds=SOAK_WINDOW_S,
        roi_window_seconds=SOAK_WINDOW_S,
        allowed_lateness_seconds=0,
        window_retention_seconds=SOAK_RETENTION_S,
        anomaly_bucket_seconds=60,
        sql_jobs_interval_seconds=0,
    )
    # the whole worker, Snowflake sink included: its database gets the schema (else it buffers rows
    # and retries, and the soak would measure that)
    await asyncio.to_thread(run_migrations, settings)
    worker = worker_factory.start(settings)
    worker.wait_healthy()
    assert worker.proc is not None
    pid = worker.proc.pid
    topic = kafka.topic_name(settings, COST)

    producer = kafka.producer(settings)
    await producer.start()
    samples: list[tuple[float, dict[str, int]]] = []
    state: list[tuple[float, dict[str, int], dict[str, int], int]] = []  # (t, windows, roi windows, bytes)
    i = 0
    try:
        # four minutes of history first (5 events/s): those windows expire during the soak
        now_ms = int(time.time() * 1000)
        history = [soak_cost(n, now_ms - 240_000 + n * 200) for n in range(1200)]
        await asyncio.gather(
            *[
                await producer.send(topic, orjson.dumps(e), key=str(e["resource_id"]).encode())
                for e in history
            ]
        )
        i = len(history)
        t0 = time.monotonic()
        next_sample = next_state = t0
        while (elapsed := time.monotonic() - t0) < SOAK_FEED_S:
            second_start = time.monotonic()
            now_ms = int(time.time() * 1000)
            futures = []
            for k in range(SOAK_RATE):
                e = soak_cost(i, now_ms + k * (1000 // SOAK_RATE))
                futures.append(
                    await producer.send(topic, orjson.dumps(e), key=str(e["resource_id"]).encode())
                )
                i += 1
            await asyncio.gather(*futures)
            if time.monotonic() >= next_sample:
                assert worker.alive(), worker.log_tail()
                samples.append((elapsed, proc_sample(pid)))
                next_sample += 3.0
            if time.monotonic() >= next_state:
                values = {u: worker.get(f"/finops/tables/unit_state/{u}/")[1] for u in SOAK_UNITS}
                found = {u: v["value"] for u, v in values.items() if isinstance(v, dict) and v.get("found")}
                state.append(
                    (
                        elapsed,
                        {u: len(all_windows(v, "w")) for u, v in found.items()},
                        {u: len(all_windows(v, "r")) for u, v in found.items()},
                        sum(len(orjson.dumps(v)) for v in found.values()),
                    )
                )
                next_state += 15.0
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - second_start)))
    finally:
        await producer.stop()

    assert worker.alive(), worker.log_tail()
    status, health = worker.get("/finops/health/")
    assert status == 200, health
    # windows closed throughout the soak, one final record per unit and minute
    closed = await read_topic(
        settings, topics.AGGREGATIONS, lambda rs: len(rs) >= len(SOAK_UNITS) * 3, timeout=30
    )
    assert len(closed) >= len(SOAK_UNITS) * 3

    # after a warm-up (the history is in), the last third of the samples against the middle third
    steady = [s for t, s in samples if t >= 30.0]
    third = len(steady) // 3
    middle, last = steady[third : 2 * third], steady[2 * third :]
    base_rss = statistics.median(s["rss_kb"] for s in middle)
    peak_rss = max(s["rss_kb"] for s in last)
    steady_state = [x for x in state if x[0] >= 30.0]
    sizes = [size for _, _, _, size in steady_state]
    xs = [t for t, _ in samples if t >= 30.0]
    slope = statistics.linear_regression(xs, [s["rss_kb"] / 1024 for s in steady]).slope * 60
    report = (
        f"\nsoak: {i} events in {SOAK_FEED_S:.0f}s; RSS slope after warm-up {slope:.1f} MiB/min; RSS MiB "
        f"{[round(s['rss_kb'] / 1024) for _, s in samples]}; middle median {base_rss / 1024:.0f}, "
        f"last max {peak_rss / 1024:.0f}; threads {[s['threads'] for _, s in samples][::5]}; "
        f"fds {[s['fds'] for _, s in samples][::5]}; unit_state bytes {sizes}; "
        f"windows per unit {[max(w.values(), default=0) for _, w, _, _ in state]}"
    )
    print(report)

    # table values: never more windows than the retention allows, and no growth in size
    for t, windows, rois, _ in steady_state:
        assert set(windows) == set(SOAK_UNITS), (t, windows)
        assert max(windows.values()) <= MAX_WINDOWS, (t, windows)
        assert max(rois.values()) <= MAX_WINDOWS, (t, rois)
    assert max(sizes[len(sizes) // 2 :]) <= 1.5 * min(sizes[len(sizes) // 2 :]), report

    # memory: the last third stays within 20 % of the middle third's median (no unbounded growth)
    assert peak_rss <= 1.20 * base_rss, report
    assert max(s["threads"] for s in last) <= max(s["threads"] for s in middle) + 2, report
    assert max(s["fds"] for s in last) <= max(s["fds"] for s in middle) + 10, report


# -- a fresh deployment --------------------------------------------------------------------------------


async def test_worker_creates_every_topic_it_writes(settings_factory, worker_factory) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    settings = settings_factory(sink_enabled=False, sql_jobs_interval_seconds=0)
    worker = worker_factory.start(settings)  # nothing created the topics before
    worker.wait_healthy()
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    missing = sorted(name for name in topics.ALL if kafka.topic_name(settings, name) not in existing)
    assert not missing, f"topics the worker writes but did not create: {missing}"
