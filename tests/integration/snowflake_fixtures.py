"""Snowflake fixtures: ``sf_conn`` gives each test its own database on the fakesnow server.

Import into a test module with ``from tests.integration.snowflake_fixtures import sf_conn  # noqa: F401``.
``sf_conn()`` opens a connection (the real connector) to the test's database, created on first
login by the emulator; ``sf_conn.settings`` are Settings bound to it; ``sf_conn.migrate()`` applies
``sql/``. Databases are named ``T_<random>`` so tests never see each other's rows (fakesnow has no
DROP DATABASE: they stay in the server's DuckDB directory, a few hundred KB each).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from snowflake.connector import SnowflakeConnection

from finops_app.config import Settings
from finops_app.sinks.connection import Connector, connect
from finops_app.sinks.loader import BulkLoader, LoadResult
from finops_app.sinks.migrate import SQL_DIR, migrate
from finops_app.sinks.rows import TABLES, event_row


class SnowflakeTestDatabase:
    """A connection factory bound to one fresh database."""

    def __init__(self, host: str, port: int) -> None:
        self.database = f"T_{uuid.uuid4().hex[:12].upper()}"
        self.settings = Settings(
            snowflake_host=host,
            snowflake_port=port,
            snowflake_protocol="http",
            snowflake_database=self.database,
        )
        self._conns: list[SnowflakeConnection] = []
        self._connectors: list[Connector] = []
        self._shared: SnowflakeConnection | None = None

    def __call__(self, **overrides: Any) -> SnowflakeConnection:
        conn = connect(self.settings, **overrides)
        self._conns.append(conn)
        return conn

    def connector(self, **overrides: Any) -> Connector:
        c = Connector(self.settings, **overrides)
        self._connectors.append(c)
        return c

    def migrate(self) -> list[str]:
        return migrate(self(), SQL_DIR)

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement on a shared connection, return its rows."""
        if self._shared is None:
            self._shared = self()
        cur = self._shared.cursor()
        try:
            cur.execute(sql, params)
            return list(cur.fetchall())
        finally:
            cur.close()

    def close(self) -> None:
        for c in self._connectors:
            c.close()
        for conn in self._conns:
            with contextlib.suppress(Exception):  # best effort at teardown
                conn.close()


@pytest.fixture
def sf_conn(snowflake_server: Any) -> Iterator[SnowflakeTestDatabase]:
    db = SnowflakeTestDatabase(snowflake_server.snowflake_host, snowflake_server.snowflake_port)
    try:
        yield db
    finally:
        db.close()


# -- seeding helpers: canonical events (the shape core.validate produces) --------------------------


def cost_event(
    event_id: str,
    ts: datetime,
    amount: str | Decimal,
    unit: str = "engineering",
    service: str = "ec2",
    environment: str = "prod",
    **extra: Any,
) -> dict[str, Any]:
    iso = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    event = {
        "event_id": event_id,
        "timestamp": iso,
        "event_type": "cloud_cost_incurred",
        "service": service,
        "region": "us-east-1",
        "cost_amount": str(amount),
        "currency": "USD",
        "resource_id": f"{service}-1",
        "business_unit": unit,
        "project_id": "p1",
        "environment": environment,
        "provider": "aws",
        "account_id": "123456789012",
        "charge_category": "usage",
        "charge_period_start": iso,
        "charge_period_end": iso,
        "source": "test",
        "schema_version": 1,
        "metadata": {"seeded": True},
    }
    event.update(extra)
    return event


def business_event(
    event_id: str, ts: datetime, revenue: str | Decimal, unit: str = "engineering"
) -> dict[str, Any]:
    iso = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
    return {
        "event_id": event_id,
        "timestamp": iso,
        "event_type": "purchase",
        "user_id": "u_" + event_id,
        "feature": "checkout",
        "action": "buy",
        "revenue_impact": str(revenue),
        "currency": "USD",
        "business_unit": unit,
        "source": "test",
        "schema_version": 1,
        "metadata": {},
    }


def load_events(db: SnowflakeTestDatabase, table: str, events: list[dict[str, Any]]) -> LoadResult:
    """Bulk-load canonical events into a curated table (fails the test on any rejected row)."""
    result = BulkLoader(db.connector()).load(TABLES[table], [event_row(table, e, None, None) for e in events])
    assert not result.rejected, result.rejected
    return result
