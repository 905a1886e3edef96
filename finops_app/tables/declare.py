"""The app's tables: one RocksDB-backed table per keyed state, values are JSON dicts.

- ``unit_state``     key business_unit (and partition records): cost windows, ROI windows,
                     month spend and sent budget alerts, per-source offsets (idempotence).
- ``series_state``   key service: open buckets, drivers and per-source offsets of every series
                     of that service; key ``\x00cold/<service>``: their EWMA detector states and
                     incidents, written only when they change (``core.costseries.split``).
- ``resource_state`` key resource_id: bounded utilisation history for recommendations.

None of them is a Faust windowed table: windows live inside the values and close by our own
watermark logic (``core.windows``), so they need no ``expires``; old windows are dropped by
retention inside the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TableT

RECOVERY_BUFFER = 10_000


@dataclass(frozen=True)
class Tables:
    unit_state: TableT[str, Any]
    series_state: TableT[str, Any]
    resource_state: TableT[str, Any]
    ledger: TableT[str, Any]


def declare(app: faust.App, partitions: int) -> Tables:
    def table(name: str, help_: str) -> TableT[str, Any]:
        return app.Table(
            name,
            default=None,
            key_type=str,
            value_type=None,
            partitions=partitions,
            options={"driver": "rocksdict"},
            # changelog records applied to RocksDB per write batch during recovery (Faust: 1,000)
            recovery_buffer_size=RECOVERY_BUFFER,
            help=help_,
        )

    return Tables(
        unit_state=table("unit_state", "Per business unit: open cost and ROI windows, budgets, offsets."),
        series_state=table("series_state", "Per service: EWMA state of its anomaly series and incidents."),
        resource_state=table("resource_state", "Per resource: utilisation history for recommendations."),
        ledger=table("ledger", "Per event id of re-sending sources: the amount already counted."),
    )
