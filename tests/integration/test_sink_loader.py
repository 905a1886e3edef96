"""The bulk loader and the sink service against the fakesnow server through the real connector."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import TopicPartition

from finops_app import topics as t
from finops_app.core.validate import Limits, parse_business, parse_cost
from finops_app.errors import SinkError
from finops_app.sinks.connection import Connector
from finops_app.sinks.loader import BulkLoader, Column, TableSpec
from finops_app.sinks.rows import SINK_TOPICS, TABLES, event_row
from finops_app.sinks.service import SinkService
from tests.integration import snowflake_fixtures
from tests.integration.snowflake_fixtures import SnowflakeTestDatabase, cost_event

sf_conn = snowflake_fixtures.sf_conn  # the fixture, requested by name below

COST = "finops_curated.cost_events"
BIZ = "finops_curated.business_events"
LIMITS = Limits(now=time.time)


def _article_cost(i: int, amount: str) -> dict[str, Any]:
    """A cost event as the article's producer writes it (naive timestamp, float or string amount)."""
    return {
        "event_id": f"cost_{i}",
        "timestamp": (datetime(2025, 1, 15, 9, 0) + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S"),
        "event_type": "cloud_cost_incurred",
        "service": ["ec2", "s3", "rds"][i % 3],
        "region": "us-east-1",
        "cost_amount": amount,
        "resource_id": f"i-{i}",
        "business_unit": ["engineering", "marketing"][i % 2],
        "project_id": "p",
        "environment": "prod",
        "metadata": {"i": i, "tags": {"team": "x"}},
    }


def test_a_database_not_migrated_is_named_with_what_to_do(sf_conn: SnowflakeTestDatabase) -> None:
    loader = BulkLoader(sf_conn.connector())
    row = event_row(COST, parse_cost(_article_cost(0, "1.00"), LIMITS), 0, 0)
    with pytest.raises(SinkError) as err:
        loader.load(TABLES[COST], [row])
    message = str(err.value)
    assert "finops_curated.cost_events" in message.lower() and "does not exist" in message, message
    assert "run `finops migrate`" in message, message


def test_bulk_load_is_idempotent_and_reconciles_to_the_cent(sf_conn: SnowflakeTestDatabase) -> None:
    sf_conn.migrate()
    loader = BulkLoader(sf_conn.connector())
    amounts = [f"{i * 7 % 1000}.{(i * 7919) % 10**10:010d}" for i in range(500)]  # 10 decimal places
    costs = [parse_cost(_article_cost(i, a), LIMITS) for i, a in enumerate(amounts)]
    rows = [event_row(COST, e, 0, i) for i, e in enumerate(costs)]
    first = loader.load(TABLES[COST], rows)
    assert (first.rows, first.inserted, first.updated, first.rejected) == (500, 500, 0, [])
    again = loader.load(TABLES[COST], rows)  # the same batch again (a replay after a crash)
    assert (again.inserted, again.rejected) == (0, [])
    count, total, by_unit = sf_conn.query(
        "SELECT COUNT(*), SUM(CAST(cost_amount AS NUMBER(38, 10))), COUNT(DISTINCT business_unit) "
        "FROM finops_curated.cost_events"
    )[0]
    assert count == 500 and by_unit == 2
    assert total == sum((Decimal(a) for a in amounts), Decimal(0))  # exact, not just to the cent
    cents = dict(
        sf_conn.query(
            "SELECT business_unit, CAST(SUM(CAST(cost_amount AS NUMBER(38, 10))) AS NUMBER(38, 2)) "
            "FROM finops_curated.cost_events GROUP BY 1"
        )
    )
    assert cents["engineering"] == sum((Decimal(a) for a in amounts[0::2]), Decimal(0)).quantize(
        Decimal("0.01")
    )
    sample = sf_conn.query(
        "SELECT timestamp, metadata:tags:team::STRING, currency, source_offset "
        "FROM finops_curated.cost_events WHERE event_id = 'cost_3'"
    )
    assert sample == [(datetime(2025, 1, 15, 9, 3), "x", "USD", 3)]

    # a restated figure (same event_id, later in the batch) replaces the earlier one: no double count
    restated = dict(costs[0], cost_amount="1.5")
    result = loader.load(TABLES[COST], [event_row(COST, costs[0], 0, 900), event_row(COST, restated, 0, 901)])
    assert (result.inserted, result.updated) == (0, 1)
    assert sf_conn.query("SELECT cost_amount FROM finops_curated.cost_events WHERE event_id = 'cost_0'") == [
        (Decimal("1.5000000000"),)
    ]

    biz = [
        parse_business(
            {"event_id": f"b{i}", "timestamp": "2025-01-15 09:30:00", "revenue_impact": f"{i}.99"}, LIMITS
        )
        for i in range(50)
    ]
    loader.load(TABLES[BIZ], [event_row(BIZ, e, 1, i) for i, e in enumerate(biz)])
    loader.load(TABLES[BIZ], [event_row(BIZ, e, 1, i) for i, e in enumerate(biz)])
    assert sf_conn.query(
        "SELECT COUNT(*), SUM(CAST(revenue_impact AS NUMBER(38, 10))) FROM finops_curated.business_events"
    ) == [(50, Decimal("1274.5000000000"))]
    assert sf_conn.query("SELECT COUNT(*) FROM finops_curated.cost_events__landing") == [(0,)]


def test_later_revision_wins_and_an_older_one_never_overwrites(sf_conn: SnowflakeTestDatabase) -> None:
    sf_conn.migrate()
    loader = BulkLoader(sf_conn.connector())
    spec = TABLES["finops_aggregated.window_totals"]

    def total(rev: int, amount: str) -> dict[str, Any]:
        return {
            "business_unit": "eng",
            "window_start": "2025-01-15T09:00:00.000Z",
            "window_end": "2025-01-15T09:05:00.000Z",
            "total_cost": amount,
            "event_count": rev,
            "revision": rev,
            "currency": "USD",
            "closed_at": "",
            "late": rev > 1,
        }

    loader.load(spec, [total(1, "10"), total(3, "30"), total(2, "20")])  # duplicate keys in one batch
    loader.load(spec, [total(2, "20")])  # a replayed older revision
    # (closed_at IS NULL: the emulator returns a NULL timestamp as 1970-01-01)
    assert sf_conn.query(
        "SELECT revision, total_cost, late, closed_at IS NULL FROM finops_aggregated.window_totals"
    ) == [(3, Decimal("30.0000"), True, True)]


def test_rows_that_cannot_fit_are_returned_and_the_rest_loads(sf_conn: SnowflakeTestDatabase) -> None:
    sf_conn.migrate()
    loader = BulkLoader(sf_conn.connector())
    now = datetime(2025, 1, 15, 9)
    events = [cost_event(f"e{i}", now, f"{i}.25") for i in range(6)]
    events[2]["cost_amount"] = "1" + "0" * 30  # does not fit NUMBER(38, 10)
    events[4]["business_unit"] = None  # NOT NULL
    result = loader.load(TABLES[COST], [event_row(COST, e, 0, i) for i, e in enumerate(events)])
    assert [(r.index, r.row["event_id"]) for r in result.rejected] == [(2, "e2"), (4, "e4")]
    assert "cost_amount" in result.rejected[0].error and "does not fit" in result.rejected[0].error
    assert "business_unit" in result.rejected[1].error
    assert (result.inserted, result.accepted) == (4, 4)
    assert sf_conn.query("SELECT event_id FROM finops_curated.cost_events ORDER BY event_id") == [
        ("e0",),
        ("e1",),
        ("e3",),
        ("e5",),
    ]


def test_a_row_snowflake_refuses_is_isolated_by_bisection(sf_conn: SnowflakeTestDatabase) -> None:
    """A value the Python checks let through (the spec says text, the table says NUMBER)."""
    sf_conn.migrate()
    sf_conn.query("CREATE TABLE finops_curated.drifted (id STRING NOT NULL, amount NUMBER(18, 4))")
    spec = TableSpec(
        "finops_curated",
        "drifted",
        (Column("id", nullable=False), Column("amount")),
        ("id",),
        loaded_at=False,
    )
    rows = [{"id": f"r{i}", "amount": f"{i}.5"} for i in range(9)]
    rows[6]["amount"] = "not a number"
    result = BulkLoader(sf_conn.connector()).load(spec, rows)
    assert [r.index for r in result.rejected] == [6]
    assert result.attempts > 1  # it took more than one COPY + MERGE
    loaded = sf_conn.query("SELECT id, amount FROM finops_curated.drifted ORDER BY id")
    assert loaded == [(f"r{i}", Decimal(f"{i}.5000")) for i in range(9) if i != 6]


def test_an_unreachable_snowflake_is_a_retryable_sink_error(sf_conn: SnowflakeTestDatabase) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    settings = dataclasses.replace(sf_conn.settings, snowflake_port=port)
    connector = Connector(settings, login_timeout=2, network_timeout=2)
    started = time.monotonic()
    with pytest.raises(SinkError, match="cannot connect"):
        BulkLoader(connector).load(
            TABLES[COST], [event_row(COST, cost_event("x", datetime(2025, 1, 1), "1"), 0, 0)]
        )
    assert time.monotonic() - started < 30
    assert "cannot connect" in (connector.last_error or "")
    assert "local" not in (connector.last_error or "")  # the password never appears


# -- the sink service with an in-memory stand-in for Kafka -------------------------------------


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = 1_737_000_000_000


class FakeConsumer:
    def __init__(
        self, batches: list[dict[TopicPartition, list[Msg]]], assignment: set[TopicPartition]
    ) -> None:
        self.batches = deque(batches)
        self._assignment = set(assignment)
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.topics, self.listener = topics, listener

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Msg]]:
        if self.batches and not self.paused:
            return self.batches.popleft()
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    def committed(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for c in self.commits:
            out.update(c)
        return out


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.down = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        if self.down:
            raise KafkaConnectionError("broker down")
        self.sent.append((topic, value, key))


def _env(kind: str, event: dict[str, Any], p: int = 0, o: int = 0) -> bytes:
    return orjson.dumps({"k": kind, "p": p, "o": o, "t": 1, "e": event})


PREFIX = "it."
BY_UNIT0 = TopicPartition(PREFIX + t.BY_UNIT, 0)
BY_UNIT1 = TopicPartition(PREFIX + t.BY_UNIT, 1)
RAW1 = TopicPartition(PREFIX + t.COST_EVENTS, 1)
AGG0 = TopicPartition(PREFIX + t.AGGREGATIONS, 0)
DL0 = TopicPartition(PREFIX + t.DEADLETTER, 0)


def _messages() -> dict[TopicPartition, list[Msg]]:
    good = cost_event("good", datetime(2025, 1, 15, 9), "12.5")
    huge = cost_event("huge", datetime(2025, 1, 15, 9), "1" + "0" * 30)
    biz = {
        "event_id": "b1",
        "timestamp": "2025-01-15T09:00:00.000Z",
        "revenue_impact": "3",
        "currency": "USD",
        "business_unit": "engineering",
    }
    window = {
        "business_unit": "engineering",
        "total_cost": "12.5",
        "event_count": 1,
        "revision": 1,
        "window_start": "2025-01-15T09:00:00.000Z",
        "window_end": "2025-01-15T09:05:00.000Z",
    }
    return {
        BY_UNIT0: [
            Msg(BY_UNIT0.topic, 0, 0, _env("cost", good)),
            Msg(BY_UNIT0.topic, 0, 1, orjson.dumps({"k": "tick", "wm": 1})),
            Msg(BY_UNIT0.topic, 0, 2, _env("cost", huge)),
            Msg(BY_UNIT0.topic, 0, 3, _env("biz", biz)),
        ],
        RAW1: [
            Msg(RAW1.topic, 1, 5, orjson.dumps(_article_cost(1, "1.5")), key=b"i-1"),
            Msg(RAW1.topic, 1, 6, b"{not json"),
            Msg(RAW1.topic, 1, 7, orjson.dumps(_article_cost(2, "2.5")), key=b"i-2"),
        ],
        AGG0: [Msg(AGG0.topic, 0, 0, orjson.dumps(window))],
        BY_UNIT1: [Msg(BY_UNIT1.topic, 1, 0, b'{"k": "cost"}')],
        # a dead letter that cannot load (no source partition): logged, never dead-lettered again
        DL0: [Msg(DL0.topic, 0, 0, orjson.dumps({"source_topic": "x", "partition": None, "offset": 3}))],
    }


def _service(
    db: SnowflakeTestDatabase, consumer: FakeConsumer, producer: FakeProducer, **options: Any
) -> SinkService:
    settings = dataclasses.replace(
        db.settings,
        topic_prefix=PREFIX,
        sink_batch_rows=options.pop("batch_rows", 1000),
        sink_max_age_seconds=options.pop("max_age", 60.0),
    )
    return SinkService(
        settings,
        connector=options.pop("connector", None) or db.connector(),
        client_kwargs={},
        consumer_factory=lambda **_: consumer,
        producer_factory=lambda **_: producer,
        **options,
    )


async def test_sink_service_loads_dead_letters_and_commits_after_snowflake(
    sf_conn: SnowflakeTestDatabase,
) -> None:
    sf_conn.migrate()
    messages = _messages()
    consumer = FakeConsumer([messages], set(messages))
    producer = FakeProducer()
    svc = _service(sf_conn, consumer, producer, max_age=0.2)
    await svc.start()
    try:
        deadline = time.monotonic() + 30
        while (
            consumer.committed() != {BY_UNIT0: 4, RAW1: 8, AGG0: 1, BY_UNIT1: 1, DL0: 1}
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.1)
    finally:
        await svc.stop()
    assert consumer.committed() == {BY_UNIT0: 4, RAW1: 8, AGG0: 1, BY_UNIT1: 1, DL0: 1}
    assert consumer.topics == [PREFIX + name for name in SINK_TOPICS]
    assert sf_conn.query("SELECT event_id, cost_amount FROM finops_curated.cost_events") == [
        ("good", Decimal("12.5000000000"))
    ]
    assert sf_conn.query("SELECT event_id FROM finops_curated.business_events") == [("b1",)]
    assert sf_conn.query("SELECT total_cost FROM finops_aggregated.window_totals") == [(Decimal("12.5000"),)]
    assert sf_conn.query(
        "SELECT source_topic, source_offset, record_content:event_id::STRING, record_metadata:key::STRING "
        "FROM finops_staging.cost_events_raw ORDER BY source_offset"
    ) == [(RAW1.topic, 5, "cost_1", "i-1"), (RAW1.topic, 7, "cost_2", "i-2")]
    assert sf_conn.query("SELECT COUNT(*) FROM finops_staging.cost_aggregations_raw") == [(1,)]
    letters = sorted((orjson.loads(v) for _, v, _ in producer.sent), key=lambda d: d["partition"])
    assert [(d["source_topic"], d["partition"], d["offset"], d["stage"]) for d in letters] == [
        (BY_UNIT0.topic, 0, 2, "sink"),
        (BY_UNIT1.topic, 1, 0, "sink"),
    ]
    assert "does not fit" in letters[0]["error"] and "cost_amount" in letters[0]["error"]
    assert base64.b64decode(letters[0]["raw"]) == messages[BY_UNIT0][2].value
    assert {topic for topic, _, _ in producer.sent} == {PREFIX + t.DEADLETTER}
    status = svc.status()
    assert status["rows_rejected"] == 2 and status["messages_deadlettered"] == 2  # no loop on DL0
    assert status["buffered_rows"] == 0 and status["batches_failed"] == 0 and status["last_success"]
    assert consumer.stopped


async def test_sink_service_holds_offsets_while_snowflake_is_down(sf_conn: SnowflakeTestDatabase) -> None:
    sf_conn.migrate()
    real = sf_conn.connector()
    down = {"now": True}

    class Flaky:
        connected = False

        def __call__(self) -> Any:
            if down["now"]:
                raise SinkError("cannot connect to Snowflake: connection refused")
            return real()

        def invalidate(self, reason: str | None = None) -> None:
            real.invalidate(reason)

        def close(self) -> None:
            real.close()

    messages = _messages()
    consumer = FakeConsumer([], set(messages))
    producer = FakeProducer()
    svc = _service(
        sf_conn,
        consumer,
        producer,
        connector=Flaky(),
        max_buffered_rows=4,
        retry_base_seconds=30.0,
        max_age=0.0,
    )
    svc._consumer, svc._producer = consumer, producer  # driven by hand: no background tasks
    for tp, msgs in messages.items():
        for m in msgs:
            svc.ingest(tp, m)
    await svc.flush()
    committed = consumer.committed()
    # nothing that waits for Snowflake is committed; partitions that only dead-lettered may be
    assert BY_UNIT0 not in committed and RAW1 not in committed and AGG0 not in committed
    status = svc.status()
    assert status["batches_failed"] >= 1 and "connection refused" in status["last_error"]
    # 3 by-unit rows, 2 raw cost events, window total + raw copy, the dead letter's raw copy (its
    # deadletters row failed the Python checks: handled without Snowflake)
    assert status["buffered_rows"] == 8, status["tables"]
    assert all(
        tb["retry_in_seconds"] > 5 for tb in status["tables"].values() if tb["buffered_rows"]
    )  # backoff
    svc._backpressure()
    assert status["paused"] is False and svc.status()["paused"] is True
    assert consumer.paused == set(messages)  # bounded memory: no more fetching

    await svc.flush()  # still inside the backoff: no attempt, no commit
    assert svc.status()["batches_failed"] == status["batches_failed"]

    down["now"] = False
    await svc.flush(force=True)  # e.g. the backoff elapsed
    assert consumer.committed() == {BY_UNIT0: 4, RAW1: 8, AGG0: 1, BY_UNIT1: 1, DL0: 1}
    svc._backpressure()
    assert not svc.status()["paused"] and consumer.paused == set()
    assert sf_conn.query("SELECT COUNT(*) FROM finops_curated.cost_events") == [(1,)]

    # a revoked partition's buffered rows are dropped (its new owner reloads them), never committed
    svc.ingest(
        BY_UNIT0,
        Msg(
            BY_UNIT0.topic,
            0,
            4,
            _env("cost", cost_event("late", datetime(2025, 1, 15), "1")),
        ),
    )
    await svc.on_revoked({BY_UNIT0})
    consumer._assignment.discard(BY_UNIT0)
    await svc.flush(force=True)
    assert consumer.committed()[BY_UNIT0] == 4
    assert sf_conn.query("SELECT COUNT(*) FROM finops_curated.cost_events") == [(1,)]


# -- the sink service on the real broker -----------------------------------------------------------


async def test_sink_service_on_kafka_commits_after_loading(settings_factory: Any) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from finops_app.kafka import client_kwargs
    from finops_app.sinks.connection import connect
    from finops_app.sinks.migrate import SQL_DIR, migrate

    settings = settings_factory(sink_batch_rows=100, sink_max_age_seconds=0.3)
    conn = connect(settings)
    migrate(conn, SQL_DIR)
    kwargs = client_kwargs(settings)
    names = [settings.topic_prefix + name for name in SINK_TOPICS]
    admin = AIOKafkaAdminClient(**kwargs)
    await admin.start()
    producer = AIOKafkaProducer(**kwargs)
    await producer.start()
    svc = SinkService(settings)
    try:
        await admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names])
        by_unit, raw = settings.topic_prefix + t.BY_UNIT, settings.topic_prefix + t.COST_EVENTS
        for i in range(20):
            event = cost_event(f"k{i}", datetime(2025, 1, 15, 9, i), f"{i}.5")
            await producer.send_and_wait(by_unit, _env("cost", event, 0, i), key=b"engineering")
            await producer.send_and_wait(raw, orjson.dumps(_article_cost(i, f"{i}.5")), key=b"r")
        bad = cost_event("too-big", datetime(2025, 1, 15, 10), "1" + "0" * 30)
        await producer.send_and_wait(by_unit, _env("cost", bad), key=b"engineering")
        await svc.start()
        deadline = time.monotonic() + 60
        query = "SELECT COUNT(*) FROM finops_aggregated.deadletters"
        while time.monotonic() < deadline:
            status = svc.status()
            if status["rows_loaded"] >= 41 and _count(conn, query) == 1 and status["buffered_rows"] == 0:
                break
            await asyncio.sleep(0.3)
    finally:
        await svc.stop()
        await producer.stop()
    try:
        assert _count(conn, "SELECT COUNT(*) FROM finops_curated.cost_events") == 20
        assert _count(conn, "SELECT COUNT(*) FROM finops_staging.cost_events_raw") == 20
        # the rejected row went to finops.deadletter, and from there (the sink reads it too) to its table
        dead = conn.cursor().execute(
            "SELECT source_topic, source_offset, stage FROM finops_aggregated.deadletters"
        )
        assert dead.fetchall() == [(by_unit, 20, "sink")]
        check = AIOKafkaConsumer(group_id=f"{settings.app_id}-sink", enable_auto_commit=False, **kwargs)
        await check.start()
        try:
            committed = {n: await check.committed(TopicPartition(n, 0)) for n in (by_unit, raw)}
        finally:
            await check.stop()
        assert committed == {by_unit: 21, raw: 20}
    finally:
        await admin.delete_topics(names)
        await admin.close()
        conn.close()


def _count(conn: Any, sql: str) -> int:
    cur = conn.cursor()
    try:
        return int(cur.execute(sql).fetchone()[0])
    finally:
        cur.close()
