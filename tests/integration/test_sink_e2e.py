"""The Snowflake sink end to end: a real worker and broker, the fakesnow server through the real
connector. N events in gives exactly N rows with sums equal to the cent; replaying the topic
leaves N rows (MERGE on natural keys)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from decimal import Decimal

from finops_app import topics
from finops_app.sinks.connection import connect
from finops_app.sinks.migrate import run_migrations
from tests.support.kafka import produce

N = 600


def cost(i: int) -> dict[str, object]:
    return {
        "event_id": f"sink-{i}",
        "timestamp": f"2026-03-02T{8 + i // 120:02d}:{(i // 2) % 60:02d}:{(i * 7) % 60:02d}Z",
        "service": ("ec2", "rds", "s3")[i % 3],
        "cost_amount": f"{i % 17}.{(i * 7919) % 10**10:010d}",  # ten decimals, as FOCUS data has
        "business_unit": ("ecommerce", "analytics")[i % 2],
        "resource_id": f"r-{i % 9}",
    }


def query(settings, sql: str) -> tuple:
    conn = connect(settings)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return cur.fetchone()
    finally:
        conn.close()


async def wait_rows(settings, want: int, timeout: float = 120) -> tuple:
    deadline = time.monotonic() + timeout
    got: tuple = (0, None)
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(
            query,
            settings,
            "SELECT COUNT(*), SUM(CAST(cost_amount AS NUMBER(38,10))) FROM finops_curated.cost_events",
        )
        if got[0] >= want:
            return got
        await asyncio.sleep(1)
    return got


async def test_sink_loads_each_event_once_and_replay_changes_nothing(
    settings_factory, worker_factory
) -> None:
    settings = settings_factory(sink_batch_rows=250, sink_max_age_seconds=1.0, sql_jobs_interval_seconds=0)
    await asyncio.to_thread(run_migrations, settings)
    events = [cost(i) for i in range(N)]
    expected = sum((Decimal(str(e["cost_amount"])) for e in events), Decimal(0))

    worker = worker_factory.start(settings)
    worker.wait_healthy()
    await produce(settings, topics.COST_EVENTS, [(str(e["resource_id"]), e) for e in events])
    count, total = await wait_rows(settings, N)
    assert count == N, worker.log_tail()
    assert Decimal(str(total)) == expected
    status, health = worker.get("/finops/health/")
    assert status == 200 and health["sink"]["rows_loaded"] >= N

    worker.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")} | settings.as_environ()
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "finops_app",
            "replay",
            "--topic",
            topics.BY_UNIT,
            "--from",
            "30d",
            "--group",
            "sink",
            "--no-follow",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    moved = re.search(rf"(\d+) records of {re.escape(topics.BY_UNIT)} will be re-processed", replay.stdout)
    # every partition back to its start: all N events (in batch envelopes, plus idle ticks) again
    assert moved is not None and int(moved.group(1)) >= 1, replay.stdout
    assert re.findall(r"partition \d+: \d+ -> (\d+)", replay.stdout) == ["0"] * settings.topic_partitions

    worker = worker_factory.start(settings)
    worker.wait_healthy()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        _, health = worker.get("/finops/health/")
        if (health.get("sink") or {}).get("rows_loaded", 0) >= N:
            break
        await asyncio.sleep(1)
    assert health["sink"]["rows_loaded"] >= N, health  # the replayed rows were loaded again ...
    count, total = await wait_rows(settings, N)
    assert (count, Decimal(str(total))) == (N, expected)  # ... and are still there exactly once
