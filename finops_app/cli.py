"""The project's commands on the app's Faust CLI (``finops <command> --help`` explains each)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from faust.cli import option

from finops_app import demo as demo_traffic
from finops_app import kafka
from finops_app.config import settings_table
from finops_app.context import Context

logger = logging.getLogger(__name__)


async def produce_all(
    settings: Any,
    records: Iterable[tuple[str, str | None, Any]],
    progress: Callable[[int], None] | None = None,
    batch: int = 5000,
) -> int:
    """Send (topic, key, value) records (dict values as JSON) and wait for every ack."""
    producer = kafka.producer(settings)
    try:
        await producer.start()
    except (KafkaError, OSError) as exc:  # bad credentials/TLS, or an unreachable broker: say which
        raise await kafka.connection_error(settings, exc) from None
    sent = 0
    pending: list[Awaitable[Any]] = []
    try:
        for topic, key, value in records:
            data = value if isinstance(value, bytes) else orjson.dumps(value)
            pending.append(
                await producer.send(
                    kafka.topic_name(settings, topic), data, key=key.encode() if key is not None else None
                )
            )
            if len(pending) >= batch:
                await asyncio.gather(*pending)
                sent += len(pending)
                if progress:
                    progress(len(pending))
                pending.clear()
        await asyncio.gather(*pending)
        sent += len(pending)
        if progress:
            progress(len(pending))
    finally:
        await producer.stop()
    return sent


def register(ctx: Context) -> None:
    app, conf = ctx.app, ctx.settings

    @app.command(option("--markdown", is_flag=True, default=False, help="Print a Markdown table."))
    async def settings(self: Any, markdown: bool) -> None:
        """List every FINOPS_ setting with its default and meaning (secrets are never shown)."""
        rows = settings_table()
        if markdown:
            self.say("| variable | default | meaning |\n|---|---|---|")
            for name, _, default, doc in rows:
                self.say(f"| `{name}` | `{default}` | {doc} |")
            return
        for name, group, default, doc in rows:
            self.say(f"{name:<42} [{group}] default={default}\n    {doc}")

    @app.command(
        option(
            "--history-hours",
            type=float,
            default=48.0,
            show_default=True,
            help="Event time covered before now, produced as fast as the broker takes it.",
        ),
        option(
            "--live-minutes",
            type=float,
            default=60.0,
            show_default=True,
            help="Then keep producing one minute of traffic per wall-clock minute for this long.",
        ),
        option(
            "--seed", type=int, default=7, show_default=True, help="Random seed (same seed, same traffic)."
        ),
    )
    async def demo(self: Any, history_hours: float, live_minutes: float, seed: int) -> None:
        """Produce realistic demo traffic with injected incidents (and print them).

        Cost events for four business units, four services and three regions every minute,
        business events whose revenue follows traffic, utilisation samples every five minutes;
        a spike, a level shift, a slow leak and a runaway resource are injected at seeded times.
        """
        from tqdm import tqdm

        await kafka.ensure_topics(conf)
        now = int(time.time() * 1000)
        now -= now % demo_traffic.STEP_MS
        start = now - int(history_hours * 3_600_000)
        incidents = demo_traffic.plan_incidents(start, now, __import__("random").Random(seed))
        live_end = now + int(live_minutes * 60_000)
        if live_minutes >= 10:
            at = now + 5 * demo_traffic.STEP_MS
            incidents.append(
                demo_traffic.Incident(
                    "spike", at, at + 10 * demo_traffic.STEP_MS, "rds", "ecommerce", 5.0, "rds-ecommerce-0"
                )
            )
        incidents = [
            i
            if i.end_ms < now or i.kind == "spike"
            else demo_traffic.Incident(
                i.kind,
                i.start_ms,
                max(i.end_ms, live_end),
                i.service,
                i.business_unit,
                i.magnitude,
                i.resource_id,
            )
            for i in incidents
        ]
        self.say("Injected incidents (UTC event time):")
        for inc in incidents:
            self.say("  " + inc.describe())
        with tqdm(desc="history", unit="ev", mininterval=0.5) as bar:
            n = await produce_all(conf, demo_traffic.generate(start, now, seed, incidents), bar.update)
        self.say(f"produced {n} history events; live traffic for {live_minutes:g} min (Ctrl-C stops)")
        minute = now
        while minute < live_end:
            wait = (minute + demo_traffic.STEP_MS) / 1000 - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await produce_all(
                conf, demo_traffic.generate(minute, minute + demo_traffic.STEP_MS, seed, incidents)
            )
            minute += demo_traffic.STEP_MS
