"""The failover seek fix (finops_app/faust_seek.py) against stand-ins for Faust's consumer thread
and recovery service.

What matters in a worker: a stream partition that was never committed (or committed at 0) is
moved to its log start, a committed one and every changelog partition are left where aiokafka put
them, nothing moves when the reset policy is not ``earliest``, and on the way out of recovery the
flow is stopped before the stream queues are cleared and the partitions sought, and resumed only
after (Faust cleared the queues after its seek, with the flow running: records queued in between
were lost). The end-to-end check is the
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
    """What ``_resume_streams`` touches on Faust's Recovery service, recording every step."""

    def __init__(self, generation: int, assignment: set[Any]) -> None:
        self.calls: list[str] = []
        self.queued = ["a record delivered before the seek"]  # a stream queue's content
        call = self.calls.append

        async def perform_seek() -> None:
            call("seek")

        async def nothing() -> None:
            call("rebalance complete")

        def resume_flow_control() -> None:  # mode's FlowControlEvent.resume clears the queues
            call("clear queues")
            self.queued.clear()

        async def maybe_start() -> None:
            call("fetcher")

        self.app = SimpleNamespace(
            consumer_generation_id=generation,
            consumer=SimpleNamespace(
                assignment=lambda: assignment,
                perform_seek=perform_seek,
                stop_flow=lambda: call("stop flow"),
                resume_flow=lambda: call("resume flow"),
                resume_partitions=lambda tps: call(f"resume {sorted(tp.partition for tp in tps)}"),
            ),
            conf=SimpleNamespace(broker_request_timeout=30.0),
            on_rebalance_complete=SimpleNamespace(send=nothing),
            flow_control=SimpleNamespace(resume=resume_flow_control),
            _fetcher=SimpleNamespace(maybe_start=maybe_start),
            on_rebalance_end=lambda: call("rebalance end"),
        )
        self.tables = SimpleNamespace(
            on_actives_ready=lambda: call("actives ready"), on_standbys_ready=lambda: None
        )
        self.completed = SimpleNamespace(set=lambda: call("completed"))
        self.log = SimpleNamespace(info=lambda *a: None, warning=lambda *a: call("rebalancing again"))

    async def _wait(self, coro: Any, timeout: float) -> None:
        await coro

    def _is_changelog_tp(self, tp: Any) -> bool:
        return tp.topic == CHANGELOG.topic


async def test_nothing_is_delivered_between_the_seek_and_the_clearing_of_the_queues() -> None:
    recovery = FakeRecovery(generation=4, assignment={NEVER, DONE, CHANGELOG})
    await faust_seek._resume_streams(recovery, generation_id=4)
    assert recovery.calls == [
        "rebalance complete",
        "stop flow",  # Faust's version let the flow run through all of this
        "clear queues",  # Faust's version cleared them after the seek: records queued since were lost
        "seek",
        "resume [0, 2]",  # the stream partitions, not the changelog
        "completed",
        "resume flow",
        "fetcher",
        "actives ready",
        "rebalance end",
    ]
    assert recovery.queued == []


async def test_a_stale_generation_changes_nothing() -> None:
    stale = FakeRecovery(generation=5, assignment={NEVER})
    await faust_seek._resume_streams(stale, generation_id=4)  # a newer rebalance does all of it
    assert stale.calls == ["rebalance complete", "rebalancing again"]


def test_create_app_installs_it_once() -> None:
    create_app(Settings())
    create_app(Settings())  # a second app must not wrap the wrappers
    assert faust_seek.installed()
    assert faust_seek._originals["seek_to_committed"] is not faust_seek._seek_to_committed
    assert AIOKafkaConsumerThread.seek_to_committed is faust_seek._seek_to_committed
    assert Recovery._resume_streams is faust_seek._resume_streams
