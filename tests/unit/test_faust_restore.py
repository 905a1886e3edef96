"""Which changelog partitions the bulk restore reads, and from where (finops_app/faust_restore.py).

The restore itself runs against the real broker and RocksDB in tests/integration/test_bulk_restore.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from finops_app import faust_restore
from finops_app.app import create_app
from finops_app.config import Settings


@pytest.fixture
def capable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_restore, "bulk_capable", lambda table: table == "rocksdb")


def test_plan_reads_after_the_persisted_offset_up_to_the_last(capable: None) -> None:
    tables = {"a": "rocksdb", "b": "rocksdb", "c": "rocksdb", "d": "rocksdb"}
    offsets: dict[str, Any] = {"a": None, "b": 4_999, "c": 9_000, "d": None}
    highwaters = {"a": 9_999, "b": 9_999, "c": 9_999, "d": -1}  # last offsets; -1: empty
    plan = faust_restore.plan(tables, offsets, highwaters, tables, min_records=1_000)
    # a: nothing restored yet -> from 0; b: from after its persisted offset; c: 999 left, too few;
    # d: an empty partition
    assert plan == {"a": (0, 9_999), "b": (5_000, 9_999)}


def test_plan_leaves_other_stores_to_faust(capable: None) -> None:
    tables = {"a": "memory", "b": "rocksdb"}
    plan = faust_restore.plan(tables, {"a": None, "b": None}, {"a": 50_000, "b": 50_000}, tables)
    assert plan == {"b": (0, 50_000)}


def test_installed_by_create_app_and_can_be_switched_off() -> None:
    create_app(Settings())
    assert faust_restore.installed()
    with pytest.raises(Exception, match="RESTORE_BULK_SECONDS"):
        Settings(restore_bulk_seconds=-1)
