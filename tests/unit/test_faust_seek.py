"""The failover seek fix (finops_app/faust_seek.py) against stand-ins for Faust's consumer thread
and recovery service.

What matters in a worker: a stream partition that was never committed (or committed at 0) is
moved to its log start, a committed one and every changelog partition are left where aiokafka put
them, nothing moves when the reset policy is not ``earliest``, and the stream partitions are sought
before Faust's own resume (which resumes them before its seek). The end-to-end check is the
SIGKILL variant of tests/integration/test_scaling.py on the real broker.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from finops_app import faust_seek
from finops_app.app import create_app
from finops_app.config import Settings


class FakeThread:
    """What ``_seek_to_committed`` touches on Faust's AIOKafkaConsumerThread."""

    def __init__(self, committed: dict[Any, int | None], starts: dict[Any, int], reset: str = "earliest"):
        self.committed = committed
        self.starts = starts
        self.app = SimpleNamespace(
            conf=SimpleNamespace(consumer_auto_offset_reset=reset),
            tables=SimpleNamespace(changelog_topics={"app-unit_state-changelog"}),
        )
        self.asked: list[tuple[Any, ...]] = []
        self.sought: list[dict[Any, int]] = []

    async def earliest_offsets(self, *tps: Any) -> dict[Any, int]:
        self.asked.append(tps)
        return {tp: self.starts[tp] for tp in tps}

    async def seek_wait(self, positions: dict[Any, int]) -> None:
        self.sought.append(positions)


NEVER, ZERO, DONE = TP("by-unit", 0), TP("by-unit", 1), TP("by-unit", 2)
CHANGELOG = TP("app-unit_state-changelog", 0)


@pytest.fixture
def original_seek(monkeypatch: pytest.MonkeyPatch) -> None:
    async def aiokafka_seek(self: FakeThread) -> dict[Any, int | None]:
        return dict(self.committed)

    monkeypatch.setitem(faust_seek._originals, "seek_to_committed", aiokafka_seek)


async def test_never_committed_stream_partitions_go_to_their_log_start(original_seek: None) -> None:
    thread = FakeThread({NEVER: None, ZERO: 0, DONE: 12, CHANGELOG: None}, {NEVER: 0, ZERO: 3})
    committed = await faust_seek._seek_to_committed(thread)
    assert committed == {NEVER: None, ZERO: 0, DONE: 12, CHANGELOG: None}  # Faust's view unchanged
    assert thread.asked == [(NEVER, ZERO)]  # not the committed one, not the changelog
    assert thread.sought == [{NEVER: 0, ZERO: 3}]  # the log start (3: older records deleted)


async def test_committed_partitions_are_not_touched(original_seek: None) -> None:
    thread = FakeThread({DONE: 12, CHANGELOG: None}, {})
    await faust_seek._seek_to_committed(thread)
    assert thread.asked == [] and thread.sought == []


async def test_other_reset_policies_keep_aiokafkas_behaviour(original_seek: None) -> None:
    thread = FakeThread({NEVER: None}, {NEVER: 0}, reset="latest")
    await faust_seek._seek_to_committed(thread)
    assert thread.sought == []


class FakeRecovery:
    """What ``_resume_streams`` touches on Faust's Recovery service."""

    def __init__(self, generation: int, assignment: set[Any]) -> None:
        self.calls: list[str] = []

        async def perform_seek() -> None:
            self.calls.append("seek")

        self.app = SimpleNamespace(
            consumer_generation_id=generation,
            consumer=SimpleNamespace(assignment=lambda: assignment, perform_seek=perform_seek),
            conf=SimpleNamespace(broker_request_timeout=30.0),
        )

    async def _wait(self, coro: Any, timeout: float) -> None:
        await coro


@pytest.fixture
def original_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    async def faust_resume(self: FakeRecovery, generation_id: int = 0) -> None:
        self.calls.append(f"resume {generation_id}")

    monkeypatch.setitem(faust_seek._originals, "_resume_streams", faust_resume)


async def test_stream_partitions_are_sought_before_faust_resumes_them(original_resume: None) -> None:
    recovery = FakeRecovery(generation=4, assignment={NEVER})
    await faust_seek._resume_streams(recovery, generation_id=4)
    assert recovery.calls == ["seek", "resume 4"]


async def test_a_stale_generation_or_no_assignment_only_runs_fausts_resume(original_resume: None) -> None:
    stale = FakeRecovery(generation=5, assignment={NEVER})
    await faust_seek._resume_streams(stale, generation_id=4)  # Faust itself gives up on it
    empty = FakeRecovery(generation=4, assignment=set())
    await faust_seek._resume_streams(empty, generation_id=4)
    assert stale.calls == ["resume 4"] and empty.calls == ["resume 4"]


def test_create_app_installs_it_once() -> None:
    create_app(Settings())
    create_app(Settings())  # a second app must not wrap the wrappers
    assert faust_seek.installed()
    assert faust_seek._originals["seek_to_committed"] is not faust_seek._seek_to_committed
    assert faust_seek._originals["_resume_streams"] is not faust_seek._resume_streams
    assert AIOKafkaConsumerThread.seek_to_committed is faust_seek._seek_to_committed
    assert Recovery._resume_streams is faust_seek._resume_streams
