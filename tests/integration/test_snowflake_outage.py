"""Snowflake goes away under a running worker, then comes back: nothing is lost, nothing doubles.

A PRIVATE fakesnow server (its own port and DuckDB files under a tmp dir; the shared stack's
server is never touched) backs one real ``finops worker`` on the shared broker. The scenario runs
once per module (``outage`` fixture) and the tests below assert on what it observed:

1. a first batch of cost events reaches Snowflake;
2. the private server is stopped and a second batch is produced: the worker stays alive, its
   health turns ``degraded`` (HTTP 503) with the sink disconnected and ``last_error`` set, and the
   sink's consumer group (``<app_id>-sink``) has not committed any ``finops.stream.by-unit``
   offset at or past the first unloaded record;
3. the server is started again on the same DuckDB files: every event of both batches is in
   ``finops_curated.cost_events`` exactly once (COUNT, DISTINCT event_id and SUM to the cent) and
   health is back to 200.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import stack as devstack  # dev/stack.py (tests/conftest.py puts dev/ on sys.path)
from aiokafka import AIOKafkaConsumer

from finops_app import kafka, topics
from finops_app.agents.common import unpack
from finops_app.config import Secret, Settings
from finops_app.sinks.connection import connect
from finops_app.sinks.migrate import run_migrations
from tests.support.faults import group_offsets
from tests.support.kafka import produce
from tests.support.workers import Worker, WorkerFactory

FIRST = 40
OUTAGE_GRACE = 45.0  # seconds Snowflake stays down
SECOND = 60
COST_SQL = (
    "SELECT COUNT(*), COUNT(DISTINCT event_id), SUM(CAST(cost_amount AS NUMBER(38,10))) "
    "FROM finops_curated.cost_events"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cost(i: int) -> dict[str, Any]:
    return {
        "event_id": f"outage-{i}",
        "timestamp": f"2026-03-03T10:{i // 60:02d}:{i % 60:02d}Z",
        "service": ("ec2", "rds", "s3")[i % 3],
        "cost_amount": f"{i % 13}.{(i * 7919) % 10**6:06d}",
        "business_unit": ("ecommerce", "analytics", "platform")[i % 3],
        "resource_id": f"r-{i % 7}",
    }


def total(events: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(str(e["cost_amount"])) for e in events), Decimal(0))


class PrivateSnowflake:
    """One fakesnow server of our own, stopped and started by PID through dev/stack.py."""

    def __init__(self, var: Path) -> None:
        self.var = var
        self.ports = devstack.Ports(kafka=0, controller=0, snowflake=_free_port(), moto=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.snowflake}/"

    def start(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + 30
        while not devstack.port_free(self.ports.snowflake) and time.monotonic() < deadline:
            time.sleep(0.2)
        devstack.start_snowflake(self.var, self.ports)
        devstack._wait("snowflake", self.var, lambda: devstack.http_ready(self.url), timeout)

    def stop(self) -> None:
        devstack.down(self.var, ("snowflake",))

    def running(self) -> bool:
        return devstack.read_pid(self.var, "snowflake") is not None


def query(settings: Settings, sql: str) -> tuple[Any, ...]:
    conn = connect(settings, login_timeout=10, network_timeout=20)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        row = cur.fetchone()
        assert row is not None
        return tuple(row)
    finally:
        conn.close()


async def wait_costs(settings: Settings, want: int, timeout: float) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    got: tuple[Any, ...] = (0, 0, None)
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(query, settings, COST_SQL)
        if got[0] >= want:
            return got
        await asyncio.sleep(1)
    return got


async def by_unit_offsets(settings: Settings, event_ids: set[str], timeout: float = 60.0) -> dict[int, int]:
    """Per by-unit partition, the lowest offset of an envelope carrying a cost event of ``event_ids``
    (read until every id was seen: the intake agent has re-keyed the whole batch)."""
    consumer = AIOKafkaConsumer(
        kafka.topic_name(settings, topics.BY_UNIT),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **kafka.client_kwargs(settings),
    )
    await consumer.start()
    first: dict[int, int] = {}
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while seen != event_ids and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                for m in msgs:
                    env = orjson.loads(m.value)
                    if env.get("k") not in ("cost", "grp"):  # a batch or a partition envelope
                        continue
                    for item in unpack(env):
                        if item["k"] != "cost":
                            continue
                        eid = item["e"].get("event_id")
                        if eid in event_ids:
                            seen.add(eid)
                            first[m.partition] = min(first.get(m.partition, m.offset), m.offset)
    finally:
        await consumer.stop()
    assert seen == event_ids, f"only {len(seen)} of {len(event_ids)} events reached {topics.BY_UNIT}"
    return first


def sink_metric_lines(text: str) -> list[str]:
    """Lines of /metrics that describe the Snowflake sink (any metric whose name mentions it)."""
    return [
        line
        for line in text.splitlines()
        if not line.startswith("#") and re.match(r"finops_\w*(sink|snowflake)\w*", line)
    ]


@dataclass
class Observed:
    settings: Settings
    worker_log: Any = None  # () -> the worker log's tail
    timings: dict[str, float] = field(default_factory=dict)
    first_rows: tuple[Any, ...] = ()
    outage_alive: bool = False
    outage_health: tuple[int, Any] = (0, None)
    outage_metrics: str = ""
    unloaded_from: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int | None] = field(default_factory=dict)
    ends: dict[int, int] = field(default_factory=dict)
    final_rows: tuple[Any, ...] = ()
    final_health: tuple[int, Any] = (0, None)
    final_metrics: str = ""
    expected_total: Decimal = Decimal(0)


def stalled(sink: dict[str, Any]) -> bool:
    """A load hanging past the stall threshold (the connector retries inside one request)."""
    return float(sink.get("load_in_flight_seconds") or 0) >= 30.0


def wait_health(worker: Worker, ok: bool, timeout: float) -> tuple[int, Any]:
    """Poll /finops/health/ until it answers 200 (ok) or 503 with the sink's error (not ok)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        try:
            last = worker.get("/finops/health/", timeout=5)
        except OSError as exc:
            last = (0, str(exc))
        status, body = last
        sink = body.get("sink") if isinstance(body, dict) else None
        if ok and status == 200 and sink is not None and sink.get("buffered_rows") == 0:
            return last  # healthy and every buffered table (curated and staging) loaded
        if not ok and status == 503 and sink and (sink.get("last_error") or stalled(sink)):
            return last
        time.sleep(0.5)
    return last


@pytest.fixture(scope="module")
def outage(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp("outage")
    snow = PrivateSnowflake(tmp / "var")
    workers = WorkerFactory(tmp)
    t0 = time.monotonic()
    snow.start()
    run = f"o{int(time.time() * 1000) % 10**8:08d}"
    settings = Settings(
        app_id=f"t{run}",
        topic_prefix=f"t{run}.",
        broker_url=stack.broker_url,
        data_dir=tmp / "data",
        web_port=_free_port(),
        topic_partitions=2,
        snowflake_host="127.0.0.1",
        snowflake_port=snow.ports.snowflake,
        snowflake_database=f"T{run.upper()}",
        aws_endpoint_url=stack.aws_endpoint_url,
        aws_access_key_id="test",
        aws_secret_access_key=Secret("test"),
        idle_timeout_seconds=2.0,
        batch_within_seconds=0.02,
        sink_batch_rows=500,
        sink_max_age_seconds=0.5,
        sql_jobs_interval_seconds=0,
    )
    obs = Observed(settings)
    obs.worker_log = lambda: worker.log_tail(6000) if worker is not None else ""  # type: ignore[assignment]
    first = [cost(i) for i in range(FIRST)]
    second = [cost(i) for i in range(FIRST, FIRST + SECOND)]
    obs.expected_total = total(first + second)
    worker: Worker | None = None
    try:
        run_migrations(settings)
        obs.timings["private fakesnow + migrations"] = time.monotonic() - t0

        t = time.monotonic()
        worker = workers.start(settings)
        worker.wait_healthy()
        asyncio.run(produce(settings, topics.COST_EVENTS, [(str(e["resource_id"]), e) for e in first]))
        obs.first_rows = asyncio.run(wait_costs(settings, FIRST, 90))
        obs.timings["worker up + first batch loaded"] = time.monotonic() - t

        t = time.monotonic()
        snow.stop()
        asyncio.run(produce(settings, topics.COST_EVENTS, [(str(e["resource_id"]), e) for e in second]))
        obs.unloaded_from = asyncio.run(by_unit_offsets(settings, {str(e["event_id"]) for e in second}))
        # a sane health check notices a dead Snowflake within OUTAGE_GRACE seconds; this one does
        # not (see test_health_reports_the_outage), and the scenario does not wait minutes for it
        obs.outage_health = wait_health(worker, ok=False, timeout=OUTAGE_GRACE - (time.monotonic() - t))
        obs.timings["outage: waited for health to degrade"] = time.monotonic() - t
        _, obs.outage_metrics = worker.get("/metrics")
        obs.outage_alive = worker.alive()
        sink_group = f"{settings.app_id}-sink"
        obs.committed, obs.ends = asyncio.run(group_offsets(settings, sink_group, topics.BY_UNIT))
        obs.timings["outage: total"] = time.monotonic() - t

        t = time.monotonic()
        snow.start()
        obs.final_rows = asyncio.run(wait_costs(settings, FIRST + SECOND, 150))
        obs.timings["recovery: all rows loaded"] = time.monotonic() - t
        obs.final_health = wait_health(worker, ok=True, timeout=120)
        obs.timings["recovery: health 200"] = time.monotonic() - t
        _, obs.final_metrics = worker.get("/metrics")
        time.sleep(2)  # a flush/commit round after the last load
        obs.final_rows = asyncio.run(wait_costs(settings, FIRST + SECOND, 30))
        obs.timings["total"] = time.monotonic() - t0
        yield obs
    finally:
        workers.stop_all()
        snow.stop()
        print("timings:", {k: round(v, 1) for k, v in obs.timings.items()})


def test_first_batch_reaches_snowflake(outage: Observed) -> None:
    count, distinct, amount = outage.first_rows
    assert (count, distinct) == (FIRST, FIRST)
    assert Decimal(str(amount)) == total([cost(i) for i in range(FIRST)])


def test_worker_survives_the_outage_and_holds_the_rows(outage: Observed) -> None:
    assert outage.outage_alive, outage.worker_log()
    status, body = outage.outage_health
    assert isinstance(body, dict) and body.get("sink"), (status, body)
    sink = body["sink"]
    assert sink["buffered_rows"] >= SECOND, sink  # held in memory for the retry, not dropped
    curated = sink["tables"].get("finops_curated.cost_events") or {}
    assert curated.get("buffered_rows") == SECOND, sink["tables"]
    assert curated["oldest_row_age_seconds"] > 10, curated  # stuck: nothing is being loaded
    assert sink["rows_loaded"] < FIRST * 2 + SECOND  # the second batch was not counted as loaded
    # the other parts of the worker are fine
    assert body["recovery_finished"] is True and body["partitions_assigned"]


def test_health_reports_the_outage(outage: Observed) -> None:
    status, body = outage.outage_health
    assert status == 503, (status, body.get("sink") if isinstance(body, dict) else body)
    assert body["status"] == "degraded"
    sink = body["sink"]
    assert sink["connected"] is False
    # either a load already failed (the error names Snowflake) or one hangs in the connector's
    # retries past the stall threshold; which comes first depends on the machine's load
    if sink["last_error"]:
        assert "snowflake" in sink["last_error"].lower(), sink
        assert sink["batches_failed"] >= 1
        assert any(t["failures"] >= 1 and t["last_error"] for t in sink["tables"].values()), sink["tables"]
    else:
        assert stalled(sink), sink


def test_sink_offsets_not_committed_past_unloaded_rows(outage: Observed) -> None:
    assert outage.unloaded_from, "the second batch was not found on the by-unit topic"
    for partition, first_unloaded in outage.unloaded_from.items():
        committed = outage.committed.get(partition)
        assert committed is None or committed <= first_unloaded, (
            f"partition {partition}: committed {committed} beyond the first unloaded offset "
            f"{first_unloaded} (end {outage.ends.get(partition)})"
        )
        assert outage.ends[partition] > first_unloaded


def test_everything_loaded_exactly_once_after_recovery(outage: Observed) -> None:
    count, distinct, amount = outage.final_rows
    assert count == FIRST + SECOND, outage.worker_log()
    assert distinct == count  # no duplicates by event_id
    assert Decimal(str(amount)) == outage.expected_total  # to the cent (and beyond)


def test_health_returns_to_ok(outage: Observed) -> None:
    status, body = outage.final_health
    assert status == 200, (status, body)
    assert body["status"] == "ok"
    assert body["sink"]["connected"] is True
    assert body["sink"]["buffered_rows"] == 0
    assert body["sink"]["rows_loaded"] >= FIRST + SECOND


def test_metrics_report_the_sink(outage: Observed) -> None:
    lines = sink_metric_lines(outage.final_metrics)
    assert any("rows_loaded" in ln or "batches" in ln for ln in lines), outage.final_metrics
