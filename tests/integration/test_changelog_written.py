"""The stateful agents' table values reach their changelog topics, as the worker holds them.

A restart on the same data directory restores from local RocksDB and can hide a changelog that was
never written; a new worker on another machine cannot. So this reads the changelogs themselves and
compares them with the worker's own view of each key (``/finops/tables/<table>/<key>/``).
"""

from __future__ import annotations

import time
from typing import Any

from finops_app import topics
from finops_app.agents.anomalies import cold_key
from finops_app.agents.units import archive_key, read_unit
from finops_app.core import costseries
from finops_app.core.windows import all_windows
from tests.support.faults import table_from_changelog
from tests.support.kafka import produce, read_topic

UNITS = ("ecommerce", "analytics")
SERVICES = ("ec2", "rds")


def cost(i: int) -> dict[str, object]:
    minute, second = divmod(i * 13, 60)
    return {
        "event_id": f"cl-{i}",
        "timestamp": f"2026-02-01T10:{minute % 60:02d}:{second:02d}Z",
        "service": SERVICES[i % 2],
        "cost_amount": f"{i % 7}.25",
        "business_unit": UNITS[(i // 2) % 2],
        "resource_id": f"r-{i % 5}",
    }


async def test_unit_and_series_state_changelogs_match_the_worker(settings_factory, worker_factory) -> None:
    settings = settings_factory(window_seconds=300, allowed_lateness_seconds=0)
    costs = [cost(i) for i in range(60)]  # 10:00 .. 10:12: the 10:00 and 10:05 windows close
    worker = worker_factory.start(settings)
    worker.wait_healthy()
    await produce(settings, topics.COST_EVENTS, [(str(c["resource_id"]), c) for c in costs])
    await read_topic(settings, topics.AGGREGATIONS, lambda rs: len(rs) >= 4, timeout=60)

    def served(table: str, key: str) -> Any:
        # an agent writes its state only after the broker acknowledged the outputs it records
        # (agents.common.delivered): a total can be read a moment before its unit's value exists
        deadline = time.monotonic() + 15
        while True:
            status, body = worker.get(f"/finops/tables/{table}/{key}/")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 200, (table, key, status, body)
        return body["value"]

    def whole(table: str, values: dict[str, Any], key: str) -> Any:
        if key not in values:
            return None
        if table == "series_state":  # a hot value per service plus its cold part, under its own key
            return costseries.join(values.get(key), values.get(cold_key(key)))
        return read_unit(values, key)  # a unit's value plus its window archive, under its own key

    changelogs = {}
    for table, keys in (("unit_state", UNITS), ("series_state", SERVICES)):
        want = {k: served(table, k) for k in keys}
        got = await table_from_changelog(
            settings,
            table,
            lambda values, want=want, table=table: all(whole(table, values, k) == v for k, v in want.items()),
        )
        assert {k: whole(table, got, k) for k in keys} == want, table
        changelogs[table] = got
        # the last written values carry every event: one high-water mark per source partition
        assert all(v["h"] for v in want.values()), want
    # the detector's state and the emitted windows went to their own keys
    series, units = changelogs["series_state"], changelogs["unit_state"]
    assert all(series[cold_key(s)]["s"][s]["d"]["n"] >= 1 for s in SERVICES)
    assert all(len(all_windows({**units[archive_key(u)], "w": {}, "wx": 0}, "w")) >= 2 for u in UNITS)
    assert all("wa" not in units[u] and "wx" in units[u] for u in UNITS)  # the expiry stays in the value
