"""The sink's health status: a load stalled past FINOPS_SINK_STALL_SECONDS is not "connected".

Found in a full test run: Snowflake stopped mid-stream, health turned degraded because one load
hung in the connector's retries, and the status still said ``connected: true`` (the connection
object was open, it just never answered). The outage test itself is
tests/integration/test_snowflake_outage.py; this pins the rule without a Snowflake.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from finops_app.config import Settings
from finops_app.sinks.service import SinkService


def service(open_connection: bool) -> SinkService:
    connector = SimpleNamespace(connected=open_connection)
    return SinkService(Settings(sink_stall_seconds=30.0), connector=connector)  # type: ignore[arg-type]


def test_an_open_connection_without_a_stalled_load_is_connected() -> None:
    svc = service(open_connection=True)
    assert svc.status()["connected"] is True
    svc._load_started = time.monotonic() - 5  # a load running, below the stall limit
    status = svc.status()
    assert status["connected"] is True and 4.5 < status["load_in_flight_seconds"] < 10


def test_a_load_stalled_past_the_limit_is_not_connected() -> None:
    svc = service(open_connection=True)
    svc._load_started = time.monotonic() - 31
    status = svc.status()
    assert status["connected"] is False and status["load_in_flight_seconds"] >= 31


def test_a_closed_connection_is_not_connected() -> None:
    assert service(open_connection=False).status()["connected"] is False
