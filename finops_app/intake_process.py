"""Intake in its own process (``FINOPS_INTAKE_PROCESS=true``): the worker's second CPU core.

A Faust worker is one Python process, one event loop, one core. Intake (validation and re-keying,
``agents/intake.py``) is stateless and about half of a worker's CPU per event (bench/run), so with
this setting the worker starts it as a child process, ``python -m finops_app.intake_process``,
which runs the same ``IntakeService`` (same consumer group ``<app_id>-intake``, same commits of the
acknowledged prefix, same envelopes) with its own aiokafka producer, while the worker's event loop
keeps the stateful agents. Like Kafka Streams' ``num.stream.threads``, but processes: Python's GIL
makes threads useless for this.

The worker supervises the child:
- the child reports every ``REPORT_S`` on its stdout, one JSON line: its metric increments (merged
  into the worker's /metrics, so ``finops_events_in_total`` and dead-letter counts read as before)
  and its status (shown under ``intake`` in /finops/health/);
- a child that exits is started again after a second (``restarts`` in the status), its partitions
  re-read from the last commit and counted once downstream (every event keeps its source offset);
- on a clean stop the worker sends SIGTERM and the child commits what was acknowledged and exits;
- if the worker dies (even SIGKILL) the kernel kills the child (PR_SET_PDEATHSIG), and the child
  also exits when its parent changes: no orphan keeps consuming.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from mode import Service

from finops_app.context import Context
from finops_app.metrics import Metrics

logger = logging.getLogger(__name__)
REPORT_S = 0.25
STALE_S = 10.0  # a child silent this long (event loop stuck) makes the worker's health degraded
STOP_GRACE_S = 3.0  # after a clean child exit, how long the worker waits for its own stop before a restart
_NOT_MERGED = ("gc_",)  # the child's own garbage collector counters stay in the child


# -- the child ----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Reporter:
    """Metric increments since the last report, and gauges, as one JSON line."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.sent: dict[tuple[str, Any], float] = {}

    def report(self, status: dict[str, Any]) -> bytes:
        counters: list[Any] = []
        gauges: list[Any] = []
        with self.metrics._lock:
            for name, series in self.metrics.counters.items():
                if name.startswith(_NOT_MERGED):
                    continue
                for labels, value in series.items():
                    delta = value - self.sent.get((name, labels), 0.0)
                    if delta:
                        counters.append([name, list(labels), delta])
                        self.sent[(name, labels)] = value
            for name, series in self.metrics.gauges.items():
                gauges.extend([name, list(labels), value] for labels, value in series.items())
        return orjson.dumps({"c": counters, "g": gauges, "s": status}, default=str) + b"\n"


async def run_child(ctx: Context, parent: int, out: Callable[[bytes], None]) -> bool:
    """Run ``IntakeService`` with its own producer until SIGTERM or the parent is gone.

    Returns whether it ended because the service crashed (the worker then starts it again).
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.partitioner import DefaultPartitioner

    from finops_app.agents.intake import IntakeService
    from finops_app.kafka import client_kwargs

    settings = ctx.settings
    producer = AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=max(1 << 20, 2 * settings.max_message_bytes),
        **client_kwargs(settings),
    )
    await producer.start()

    async def send(topic: Any, key: str | bytes | None, value: bytes, partition: int | None = None) -> Any:
        raw_key = key.encode() if isinstance(key, str) else key
        return await producer.send(topic.get_topic_name(), value, key=raw_key, partition=partition)

    async def partitions(topic: Any) -> list[int] | None:
        try:
            found = await producer.partitions_for(topic.get_topic_name())
        except Exception:  # noqa: BLE001 - unknown: one record per key
            return None
        return sorted(found) if found else None

    ctx.send = send  # type: ignore[method-assign]
    ctx.partitions = partitions  # type: ignore[method-assign]
    ctx.partitioner = DefaultPartitioner  # type: ignore[method-assign,assignment]
    service = IntakeService(ctx)
    reporter = Reporter(ctx.metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        while not stop.is_set() and os.getppid() == parent and not service.crashed:
            out(reporter.report(service.status()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REPORT_S)
    finally:
        await service.stop()
        with contextlib.suppress(Exception):
            await producer.stop()
        out(reporter.report(service.status()))
    return bool(service.crashed)


def main() -> None:
    """``python -m finops_app.intake_process``: the child the worker starts (settings from the env)."""
    _die_with_parent()
    parent = int(sys.argv[sys.argv.index("--parent") + 1]) if "--parent" in sys.argv else os.getppid()
    if os.getppid() != parent:
        return  # the parent died before the kernel knew to tell us
    from finops_app.app import app

    ctx: Context = app.finops  # type: ignore[attr-defined]
    logging.basicConfig(
        level=ctx.settings.log_level.upper(),
        format="[%(asctime)s] [intake process %(process)d] [%(levelname)s] %(message)s",
        stream=sys.stderr,
    )
    stdout = sys.stdout.buffer

    def out(line: bytes) -> None:
        stdout.write(line)
        stdout.flush()

    if asyncio.run(run_child(ctx, parent, out)):
        sys.exit(1)


# -- the worker's side --------------------------------------------------------------------------


def apply_report(metrics: Metrics, line: bytes) -> dict[str, Any] | None:
    """Merge one report into the worker's metrics; returns the child's status."""
    report = orjson.loads(line)
    for name, labels, delta in report.get("c", ()):
        metrics.inc(name, delta, labels=dict(labels))
    for name, labels, value in report.get("g", ()):
        metrics.set(name, value, labels=dict(labels))
    status: dict[str, Any] | None = report.get("s")
    return status


class IntakeProcess(Service):
    """Starts, watches and stops the intake child; ``status()`` is what health shows."""

    restart_delay_s = 1.0

    def __init__(self, ctx: Context, **kwargs: Any) -> None:
        self.ctx = ctx
        self.proc: asyncio.subprocess.Process | None = None
        self.last: dict[str, Any] = {}
        self.restarts = 0
        self.started_at: float | None = None
        self.last_report_at: float | None = None
        self._delay = self.restart_delay_s / 2
        super().__init__(**kwargs)

    async def _spawn(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "finops_app.intake_process",
            "--parent",
            str(os.getpid()),
            stdout=asyncio.subprocess.PIPE,
            limit=16 << 20,
        )
        self.started_at = time.time()
        logger.info("intake process %d started (group %s-intake)", self.proc.pid, self.ctx.settings.app_id)

    async def on_start(self) -> None:
        await self._spawn()

    @Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            proc = self.proc
            if proc is None or proc.stdout is None:
                await self.sleep(0.5)
                continue
            line = await proc.stdout.readline()
            if line:
                try:
                    status = apply_report(self.ctx.metrics, line)
                except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                    logger.warning("intake process: unreadable report %r: %s", line[:200], exc)
                    continue
                if status is not None:
                    self.last = status
                    self.last_report_at = time.time()
                continue
            code = await proc.wait()  # end of output: the child exited
            if code == 0 and not self.should_stop:
                # a clean exit means a signal, usually SIGTERM or Ctrl-C to the worker's whole process
                # group: the worker is then stopping too, a moment later (it logged a restart before)
                await self.sleep(STOP_GRACE_S)
            if self.should_stop:
                return
            self.restarts += 1
            lived = time.time() - (self.started_at or 0.0)
            # a child that keeps failing at start is retried less and less often (up to 30 s)
            self._delay = self.restart_delay_s if lived > 60 else min(30.0, self._delay * 2)
            logger.error(
                "intake process %d exited with %s after %.1f s; starting it again in %.0f s",
                proc.pid,
                code,
                lived,
                self._delay,
            )
            await self.sleep(self._delay)
            if not self.should_stop:
                await self._spawn()

    async def on_stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 25.0)
        except TimeoutError:
            logger.warning("intake process %d did not stop in 25 s; killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def status(self) -> dict[str, Any]:
        proc = self.proc
        alive = proc is not None and proc.returncode is None
        fresh = self.last_report_at is not None and time.time() - self.last_report_at < STALE_S
        return {
            **self.last,
            "ready": bool(alive and fresh),
            "process": {
                "pid": proc.pid if proc is not None else None,
                "alive": alive,
                "restarts": self.restarts,
                "last_report_age_s": (
                    round(time.time() - self.last_report_at, 2) if self.last_report_at else None
                ),
            },
        }


def register(ctx: Context) -> None:
    """Run intake as a child process of the worker (instead of ``agents.intake.register``)."""

    class IntakeProcess_(IntakeProcess):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(ctx, **kwargs)
            ctx.extras["intake"] = self

    ctx.app.service(IntakeProcess_)


if __name__ == "__main__":
    main()
