"""Three ``finops worker`` processes in one consumer group on the real broker.

What the tests show:

(a) the partitions of the input and internal topics are spread over the workers, each partition of
    finops.stream.by-unit is owned by exactly one worker;
(b) a key lookup (``GET /finops/tables/unit_state/<unit>/``) through ANY worker answers with the
    owner's value: a worker that does not own the key's partition proxies the request to the one
    that does (the URL of each partition's owner is part of Faust's assignment metadata); the view
    routes by the stream topic that feeds the table (``app.topic_route``): ``app.table_route`` hashed
    the JSON-encoded key and sent lookups to the wrong worker (found here, fixed);
(c) stopping one worker mid-stream (SIGTERM, and SIGKILL in a variant) moves its partitions to the
    other two, which recover its table partitions from the changelog, and the window totals stay
    exact for events produced before and after.

Six partitions (a multiple of 2 and 3), so that three workers, and two after one stops, each get
an equal share. With four, a third worker that joins two others which already own two partitions
each gets nothing: the last test checks such an idle worker reports itself healthy (it said 503).

What happens on rebalance (as observed here):

- Faust's ``PartitionAssignor`` is sticky: a rebalance keeps every worker's partitions while it
  holds at most ceil(partitions / workers) of them, and only moves the rest.
- It assigns *co-partitioned* topics together: partition ``p`` of every
  topic with the same partition count (the input topics, the ``finops.stream.*`` topics and
  the tables' changelogs) goes to one worker, so an agent's input partition and the table
  partition it writes always live in the same process.
- ``table_standby_replicas=1``: every table partition also has a standby copy on another worker,
  which keeps reading the changelog. When the owner goes away, a standby is usually promoted and
  only has to read the changelog tail; otherwise the new owner reads the whole changelog partition
  into its RocksDB before its agents start (``recovery_finished`` in ``/finops/health/`` is false
  meanwhile and the health answer is 503).
- SIGTERM: the worker leaves the group at once, the others rebalance within a few seconds. Its
  intake agents flushed their sends and committed their offsets on the way out.
- SIGKILL: the broker notices the dead member only after the consumer session timeout (Faust's
  ``broker_session_timeout``, 60 s by default; the SIGKILL variant lowers it to 10 s with Faust's
  own ``BROKER_SESSION_TIMEOUT`` variable to keep the test short). Nothing was flushed or
  committed: the new owners re-read the input from the last committed offset, the intake agents
  re-send those envelopes (same source partition and offset) and ``unit_windows`` skips every
  envelope at or below the high-water mark ``h`` stored in the unit's table value, so nothing is
  counted twice; the table value itself comes back from the changelog, so nothing is lost.
- Windows stay open across the move (they live in the table value, and the partition's watermark
  in its partition record), so every window is emitted once, with revision 1 and the full total,
  provided the closing events come after everything else: the test waits for the intake group
  (which rebalances separately) to have re-read the stopped worker's uncommitted input first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from finops_app import kafka, topics
from finops_app.agents.units import read_unit
from finops_app.config import Settings
from finops_app.core.windows import all_windows
from tests.support.faults import (
    assigned,
    free_port,
    key_partition,
    latest,
    send_all,
    stop_together,
    table_from_changelog,
    totals_match,
    wait_caught_up,
    wait_spread,
    window_start,
)
from tests.support.kafka import read_topic
from tests.support.workers import Worker, WorkerFactory

PARTITIONS = 6  # a multiple of 2 and 3: with 4, a late third worker may get nothing (see below)
WINDOW_S = 300
LATENESS_S = 900  # windows stay open for the whole test: each is emitted once, at the end
BASE_MS = 1_772_359_200_000  # 2026-03-01T10:00:00Z
CLOSER_MS = BASE_MS + 30 * 60_000 - 1_000  # 10:29:59: closes the windows 10:00 .. 10:15 (+ lateness)


def _pick_units(per_partition: int = 2) -> tuple[str, ...]:
    chosen: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    for i in range(1000):
        name = f"bu-{i}"
        bucket = chosen[key_partition(name, PARTITIONS)]
        if len(bucket) < per_partition:
            bucket.append(name)
        if all(len(b) == per_partition for b in chosen.values()):
            break
    return tuple(u for p in range(PARTITIONS) for u in chosen[p])


UNITS = _pick_units()


def cost(i: int) -> dict[str, Any]:
    ts = BASE_MS + (i * 2_789_000) % (15 * 60_000)  # spread over 10:00 .. 10:14:59
    return {
        "event_id": f"sc-{i}",
        "timestamp": ts,
        "service": ("ec2", "rds", "s3")[i % 3],
        "region": "eu-west-1",
        "cost_amount": f"{(i % 17) + 0.0123:.4f}",
        "business_unit": UNITS[i % len(UNITS)],
        "resource_id": f"r-{i % 23}",
    }


def closer(unit: str) -> dict[str, Any]:
    return {
        "event_id": f"sc-close-{unit}",
        "timestamp": CLOSER_MS,
        "service": "ec2",
        "cost_amount": "0",
        "business_unit": unit,
        "resource_id": "r-close",
    }


def expected(
    events: list[dict[str, Any]],
) -> tuple[dict[tuple[str, str], Decimal], dict[tuple[str, str], int]]:
    sums: dict[tuple[str, str], Decimal] = {}
    counts: dict[tuple[str, str], int] = {}
    for e in events:
        k = (e["business_unit"], window_start(e["timestamp"], WINDOW_S))
        sums[k] = sums.get(k, Decimal(0)) + Decimal(e["cost_amount"])
        counts[k] = counts.get(k, 0) + 1
    return sums, counts


def open_windows(events: list[dict[str, Any]]) -> dict[str, dict[str, tuple[Decimal, int]]]:
    """Per unit, the table value's open windows {start ms: (cost, count)} after ``events``."""
    out: dict[str, dict[str, tuple[Decimal, int]]] = {u: {} for u in UNITS}
    for e in events:
        start = str(e["timestamp"] - e["timestamp"] % (WINDOW_S * 1000))
        c, n = out[e["business_unit"]].get(start, (Decimal(0), 0))
        out[e["business_unit"]][start] = (c + Decimal(e["cost_amount"]), n + 1)
    return out


def lookup(worker: Worker, unit: str) -> tuple[int, dict[str, Any] | None]:
    status, body = worker.get(f"/finops/tables/unit_state/{unit}/", timeout=10)
    if status != 200 or not isinstance(body, dict) or not body.get("found"):
        return status, None
    return status, dict(body["value"])


def metric(worker: Worker, name: str) -> float:
    """Sum of a Prometheus counter over its label sets in the worker's /metrics text."""
    status, body = worker.get("/metrics")
    if status != 200 or not isinstance(body, str):
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name))


def windows_of(value: dict[str, Any] | None) -> dict[str, tuple[Decimal, int]] | None:
    if value is None:
        return None
    return {k: (Decimal(w["c"]), int(w["nc"])) for k, w in all_windows(value, "w").items()}


async def wait_state(settings: Settings, want: dict[str, dict[str, tuple[Decimal, int]]]) -> dict[str, Any]:
    """Wait until the unit_state changelog (what a new owner recovers) holds exactly ``want``."""

    def unit(values: dict[str, Any], u: str) -> dict[str, Any] | None:
        return read_unit(values, u)  # its value and its window archive

    def done(values: dict[str, Any]) -> bool:
        return all(windows_of(unit(values, u)) == w for u, w in want.items())

    values = await table_from_changelog(settings, "unit_state", done, timeout=60)
    got = {u: windows_of(unit(values, u)) for u in want}
    assert got == want, f"unit_state never reached the expected windows:\n got {got}\nwant {want}"
    return values


def group_settings(
    settings_factory: Callable[..., Settings], tmp_path: Path, n: int, partitions: int = PARTITIONS
) -> list[Settings]:
    """``n`` workers' settings: one app id and topic prefix (one group), own web port and data dir."""
    base: Settings = settings_factory(
        topic_partitions=partitions,
        window_seconds=WINDOW_S,
        roi_window_seconds=WINDOW_S,
        allowed_lateness_seconds=LATENESS_S,
        idle_timeout_seconds=2.0,
        sink_enabled=False,  # the stream path only (the Snowflake sink has its own tests)
        sql_jobs_interval_seconds=0,
    )
    return [replace(base, web_port=free_port(), data_dir=tmp_path / f"w{k}") for k in range(n)]


def start_three(
    settings_factory: Callable[..., Settings],
    worker_factory: WorkerFactory,
    tmp_path: Path,
    extra_env: dict[str, str] | None = None,
) -> tuple[Settings, list[Worker], list[set[int]]]:
    settings = group_settings(settings_factory, tmp_path, 3)
    base = settings[0]
    # the first worker creates the topics and changelogs, then two more join its group
    workers = [worker_factory.start(settings[0], extra_env)]
    workers[0].wait_healthy()
    workers += [worker_factory.start(s, extra_env) for s in settings[1:]]
    spread = wait_spread(workers, kafka.topic_name(base, topics.BY_UNIT), PARTITIONS)
    # (a) every partition of the by-unit stream has exactly one owner, and all three have some
    assert all(spread) and sum(len(p) for p in spread) == PARTITIONS, spread
    # co-partitioned internal streams follow the same spread
    assert wait_spread(workers, kafka.topic_name(base, topics.BY_SERVICE), PARTITIONS) == spread
    # the input is read by the intake service's own group: its partitions are spread too, each once
    inputs = wait_spread(workers, kafka.topic_name(base, topics.COST_EVENTS), PARTITIONS)
    assert all(inputs) and sum(len(p) for p in inputs) == PARTITIONS, inputs
    return base, workers, spread


@pytest.fixture
def factory(worker_factory: WorkerFactory) -> Iterator[WorkerFactory]:
    """worker_factory, whose workers are stopped all at once at the end (saves a rebalance each)."""
    yield worker_factory
    stop_together(worker_factory.workers)


async def test_lookup_through_any_worker_answers_the_owners_value(
    settings_factory, factory, tmp_path: Path
) -> None:
    base, workers, spread = start_three(settings_factory, factory, tmp_path)
    phase1 = [cost(i) for i in range(320)]
    await send_all(base, topics.COST_EVENTS, [(e["resource_id"], e) for e in phase1])
    want = open_windows(phase1)
    state = await wait_state(base, want)

    owner_of = {u: next(i for i, s in enumerate(spread) if key_partition(u, PARTITIONS) in s) for u in UNITS}
    for i in range(3):  # every worker is asked for keys it does not own (so they are routed)
        assert any(owner != i for owner in owner_of.values())
    wrong: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + 10  # a lookup racing a late rebalance may miss once
    while time.monotonic() < deadline:
        answers = {u: [lookup(w, u) for w in workers] for u in UNITS}
        wrong = {
            (u, i): status
            for u, values in answers.items()
            for i, (status, value) in enumerate(values)
            if status != 200 or value != state[u]
        }
        if not wrong:
            break
        time.sleep(1.0)
    assert not wrong, f"(unit, worker asked): status of lookups that missed the owner's value: {wrong}"
    status, _ = lookup(workers[1], "no-such-unit")
    assert status == 404


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_losing_a_worker_moves_its_partitions_and_totals_stay_exact(
    settings_factory, factory, tmp_path: Path, how: str
) -> None:
    t0 = time.monotonic()
    # SIGKILL: let the broker declare the dead member gone after 10 s instead of Faust's 60 s
    extra_env = (
        {"BROKER_SESSION_TIMEOUT": "10", "BROKER_HEARTBEAT_INTERVAL": "1"} if how == "sigkill" else None
    )
    base, workers, spread = start_three(settings_factory, factory, tmp_path, extra_env)
    by_unit = kafka.topic_name(base, topics.BY_UNIT)
    t_up = time.monotonic() - t0

    phase1 = [cost(i) for i in range(320)]
    phase2 = [cost(i) for i in range(320, 640)]
    await send_all(base, topics.COST_EVENTS, [(e["resource_id"], e) for e in phase1])
    await wait_state(base, open_windows(phase1))  # the windows are open and in the changelog

    # (c) stop the worker with the most partitions while it is busy; the other two take them over
    victim = max(range(3), key=lambda i: len(spread[i]))
    half = len(phase2) // 2
    await send_all(base, topics.COST_EVENTS, [(e["resource_id"], e) for e in phase2[:half]])
    t_stop = time.monotonic()
    if how == "sigterm":
        workers[victim].stop()
    else:
        workers[victim].kill()
    rest = [w for i, w in enumerate(workers) if i != victim]
    spread2 = wait_spread(rest, by_unit, PARTITIONS, timeout=120)
    t_moved = time.monotonic() - t_stop
    # The intake has its own group, which rebalances on its own schedule: wait until the survivors'
    # intake has read (and re-sent) all the input so far, the stopped worker's uncommitted part
    # included, so that the closing events below really come last. Without this wait, a source
    # silent through the failover is idle for the watermark, the closers close the windows, and
    # the re-sent events correct them with revision 2 (exact totals, one more revision; seen once).
    await wait_caught_up(base, f"{base.app_id}-intake", topics.COST_EVENTS, timeout=90)

    await send_all(base, topics.COST_EVENTS, [(e["resource_id"], e) for e in phase2[half:]])
    await send_all(base, topics.COST_EVENTS, [("r-close", closer(u)) for u in UNITS])

    want_sums, want_counts = expected(phase1 + phase2)
    records = await read_topic(base, topics.AGGREGATIONS, lambda rs: totals_match(rs, want_sums), timeout=90)
    final = latest(records)
    logs = "\n".join(w.log_tail(2000) for w in rest)
    assert {k: Decimal(r["total_cost"]) for k, r in final.items()} == want_sums, logs
    assert {k: r["event_count"] for k, r in final.items()} == want_counts
    assert sum(r["event_count"] for r in final.values()) == len(phase1) + len(phase2)
    # every window stayed open across the move and was emitted once, with the full total
    assert all(r["revision"] == 1 for r in records), [r for r in records if r["revision"] != 1]
    assert all(w.alive() for w in rest)
    skipped = sum(metric(w, "finops_duplicates_skipped_total") for w in rest)
    print(
        f"\n[{how}] 3 workers up and spread in {t_up:.1f}s ({[sorted(s) for s in spread]}); "
        f"partitions moved {t_moved:.1f}s after the stop ({[sorted(s) for s in spread2]}); "
        f"{skipped:g} redelivered records skipped; total {time.monotonic() - t0:.1f}s"
    )


async def test_a_worker_joining_two_gets_work_or_reports_itself_healthy(
    settings_factory, factory, tmp_path: Path
) -> None:
    settings = group_settings(settings_factory, tmp_path, 3, partitions=4)
    by_unit = kafka.topic_name(settings[0], topics.BY_UNIT)
    first = factory.start(settings[0])
    first.wait_healthy()
    second = factory.start(settings[1])
    assert sorted(len(s) for s in wait_spread([first, second], by_unit, 4)) == [2, 2]
    third = factory.start(settings[2])  # scaling out from two workers to three
    deadline = time.monotonic() + 25  # joining and a rebalance take ~10 s
    status, health = 0, None
    while time.monotonic() < deadline:
        assert third.alive(), third.log_tail()
        try:
            status, health = third.get("/finops/health/", timeout=3)
        except OSError as exc:
            status, health = 0, exc
        if status == 200:
            break
        time.sleep(1.0)
    assert status == 200, (health, [sorted(assigned(w, by_unit) or ()) for w in (first, second, third)])
