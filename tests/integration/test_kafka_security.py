"""The app over Kafka TLS + SASL/SCRAM-SHA-512, on a private broker that accepts nothing else from
clients: a real worker totals cost windows read and written over SASL_SSL; a wrong password is
refused (by the CLI/test clients and by the worker) and says so; the password never reaches a log.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import stack as devstack  # dev/stack.py (tests/conftest.py puts dev/ on sys.path)

from finops_app import kafka, topics
from finops_app.cli import produce_all
from finops_app.config import Settings
from finops_app.errors import ConfigError
from tests.support import tls
from tests.support.kafka import produce, read_topic

USER, PASSWORD = "alice", "alice-secret"
WRONG_PASSWORD = "not-alices-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tls.SecureBroker]:
    var = tmp_path_factory.mktemp("secure-kafka")
    ports = devstack.Ports(kafka=_free_port(), controller=_free_port(), snowflake=0, moto=0)
    broker = tls.start_secure_broker(var, ports, _free_port(), {USER: PASSWORD})
    try:
        yield broker
    finally:
        tls.stop_secure_broker(broker)


@pytest.fixture
def secure_settings(settings_factory, secure_broker: tls.SecureBroker):
    """settings_factory's Settings (unique app id, prefix, data dir) pointed at the SASL_SSL listener."""

    def make(password: str = PASSWORD, **overrides: object) -> Settings:
        return settings_factory(**secure_broker.client_settings(USER, password), **overrides)

    return make


def cost(i: int, unit: str, minute: int, amount: str) -> dict[str, object]:
    return {
        "event_id": f"sec-{i}",
        "timestamp": f"2026-01-01 00:{minute:02d}:00",
        "event_type": "cloud_cost_incurred",
        "service": "ec2",
        "region": "us-east-1",
        "cost_amount": amount,
        "resource_id": f"i-{i % 3}",
        "business_unit": unit,
        "project_id": "p",
        "environment": "production",
        "metadata": {},
    }


def assert_no_secret(text: str, where: str) -> None:
    for secret in (PASSWORD, WRONG_PASSWORD):
        assert secret not in text, f"a SASL password appears in {where}"


async def test_worker_totals_windows_over_sasl_ssl(secure_settings, worker_factory, secure_broker) -> None:
    settings = secure_settings(window_seconds=300, allowed_lateness_seconds=600, roi_window_seconds=600)
    assert settings.kafka_security_protocol == "SASL_SSL" and settings.broker_hosts.endswith(
        str(secure_broker.sasl_port)
    )
    worker = worker_factory.start(settings)
    health = worker.wait_healthy()
    assert health["broker_url"] == secure_broker.broker_url

    events = [cost(i, "ecommerce" if i % 2 else "analytics", i % 10, f"{i}.0125") for i in range(20)]
    await produce(settings, topics.COST_EVENTS, [(e["resource_id"], e) for e in events])
    # an event 20 minutes later closes both 5-minute windows of each unit
    closer = [cost(100 + k, unit, 25, "0") for k, unit in enumerate(("ecommerce", "analytics"))]
    await produce(settings, topics.COST_EVENTS, [(e["resource_id"], e) for e in closer])

    expected: dict[tuple[str, str], Decimal] = {}
    for e in events:
        minute = int(str(e["timestamp"])[14:16])
        start = f"2026-01-01T00:{minute - minute % 5:02d}:00.000Z"
        key = (str(e["business_unit"]), start)
        expected[key] = expected.get(key, Decimal(0)) + Decimal(str(e["cost_amount"]))

    totals = await read_topic(settings, topics.AGGREGATIONS, lambda rs: len(rs) >= len(expected), timeout=90)
    got = {(t["business_unit"], t["window_start"]): Decimal(t["total_cost"]) for t in totals}
    assert got == expected, worker.log_tail()
    assert sum(t["event_count"] for t in totals) == len(events)
    assert worker.alive()

    worker.stop()
    assert_no_secret(worker.log_path.read_text(errors="replace"), "the worker's log")
    assert_no_secret(secure_broker.log_text(), "the broker's log")


async def _ensure_topics(settings: Settings) -> None:
    await kafka.ensure_topics(settings)


async def _produce_all(settings: Settings) -> None:
    # the CLI's producer (kafka.producer(settings) behind it), as `finops demo`/`ingest-*` use it
    await produce_all(settings, [(topics.COST_EVENTS, "k", {"x": 1})])


CLIENTS = pytest.mark.parametrize("client", [_ensure_topics, _produce_all], ids=["ensure_topics", "producer"])


@CLIENTS
async def test_wrong_password_is_refused_quickly(secure_settings, client) -> None:
    settings = secure_settings(password=WRONG_PASSWORD)
    t0 = time.monotonic()
    with pytest.raises((ConnectionError, ConfigError)) as info:
        await client(settings)
    assert time.monotonic() - t0 < 15, "a refused password should fail fast, not retry"
    assert_no_secret(str(info.value), "the error message")


@CLIENTS
async def test_wrong_password_error_says_authentication_failed(secure_settings, client) -> None:
    settings = secure_settings(password=WRONG_PASSWORD)
    with pytest.raises((ConnectionError, ConfigError)) as info:
        await client(settings)
    message = str(info.value)
    assert "authentication failed" in message.lower(), message
    assert "FINOPS_KAFKA_SASL_PASSWORD" in message, message
    assert "dev/stack up" not in message, message  # the broker is up; starting a stack would not help


def test_worker_with_wrong_password_exits_and_logs_authentication_failed(
    secure_settings, worker_factory
) -> None:
    settings = secure_settings(password=WRONG_PASSWORD)
    worker = worker_factory.start(settings)
    with pytest.raises(AssertionError, match="worker exited with"):
        worker.wait_healthy(timeout=60)
    assert worker.proc is not None and worker.proc.returncode not in (None, 0)
    log = Path(worker.log_path).read_text(errors="replace")
    # today aiokafka's own ERROR line: 'Unable connect to "127.0.0.1:PORT": [Error 58]
    # SaslAuthenticationFailed: Authentication failed during authentication due to invalid credentials
    # with SASL mechanism SCRAM-SHA-512' (then a traceback ending in "Unable to bootstrap");
    # with the proposed pre-flight check: one 'finops worker: Kafka authentication failed: ...' line
    auth_lines = [line for line in log.splitlines() if "authentication failed" in line.lower()]
    assert auth_lines, log[-4000:]
    assert tls.SCRAM_MECHANISM in auth_lines[0], auth_lines[0]
    assert_no_secret(log, "the worker's log")
