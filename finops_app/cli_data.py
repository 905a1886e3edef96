"""Data commands: ingest FOCUS files / Cost Explorer / CloudWatch, score a CSV, inspect, replay."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from faust.cli import argument, option

from finops_app import kafka, topics
from finops_app.cli import produce_all
from finops_app.context import Context


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2025-01-15T09:00:00Z``, ``2025-01-15`` or a relative ``90m``/``6h``/``7d`` -> aware UTC."""
    now = now or datetime.now(UTC)
    m = re.fullmatch(r"(\d+)([mhd])", text.strip())
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m[2]]
        return now - timedelta(**{unit: int(m[1])})
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(
            f"cannot read time {text!r}: use ISO-8601 (2025-01-15T09:00:00Z) or 90m / 6h / 7d"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def register(ctx: Context) -> None:
    app, conf = ctx.app, ctx.settings

    @app.command(
        argument("paths", nargs=-1, required=True, type=Path),
        option(
            "--cost-column",
            default="BilledCost",
            show_default=True,
            help="FOCUS column counted as cost: BilledCost (invoice) or EffectiveCost (amortised).",
        ),
        option("--batch-size", default=5000, show_default=True, help="Rows read and sent per batch."),
    )
    async def ingest_focus(self: Any, paths: tuple[Path, ...], cost_column: str, batch_size: int) -> None:
        """Stream FOCUS 1.0-1.2 files (CSV, CSV.gz, Parquet) to finops.cost.events.

        Rows without tags are kept as 'unallocated'; rows that fail validation go to
        finops.deadletter with their reason. Re-ingesting a file is safe: event ids are
        deterministic and the ledger counts each id once (a changed amount as a correction).
        """
        from finops_app.sources.focus_cli import ingest_focus as run

        await kafka.ensure_topics(conf)
        producer = kafka.producer(conf)
        try:
            await producer.start()
        except Exception as exc:  # noqa: BLE001 - turned into a clear message
            raise await kafka.connection_error(conf, exc) from None

        async def produce(topic: str, key: bytes, value: bytes) -> Any:
            return await producer.send(kafka.topic_name(conf, topic), value, key=key)

        try:
            summary = await run(
                list(paths), conf, produce, progress=True, batch_size=batch_size, cost_column=cost_column
            )
        finally:
            await producer.stop()
        self.say(
            f"rows read {summary.rows_read}, events produced {summary.events}, rejected {summary.rejected}"
        )
        for reason, count in summary.reasons.most_common():
            self.say(f"  rejected {count:>6}  {reason}")
        for provider, total in sorted(summary.totals.items()):
            self.say(f"  total {provider:<10} {total}")

    @app.command(
        option(
            "--since",
            default="48h",
            show_default=True,
            help="Start of the period to read: ISO time or 90m / 6h / 7d ago. Recent periods are "
            "re-read on purpose: AWS restates them, the ledger turns changes into corrections.",
        ),
    )
    async def ingest_costs(self: Any, since: str) -> None:
        """Read AWS Cost Explorer once (GetCostAndUsage) and produce cost events."""
        from finops_app.sources import create_client
        from finops_app.sources.cost_explorer import poll_costs

        now = datetime.now(UTC)
        hours = max(1, int((now - parse_since(since, now)).total_seconds() // 3600))
        settings = dataclasses.replace(conf, ce_lookback_hours=hours)
        async with create_client(settings, "ce") as client:
            events = await poll_costs(client, settings, now, state={})
        n = await produce_all(conf, ((topics.COST_EVENTS, e["resource_id"], e) for e in events))
        self.say(f"Cost Explorer: {n} cost events for the last {hours} h produced to {topics.COST_EVENTS}")

    @app.command(option("--hours", default=1.0, show_default=True, help="Hours of samples to read."))
    async def ingest_utilisation(self: Any, hours: float) -> None:
        """Read CloudWatch utilisation of the EC2 instances in scope once and produce samples."""
        from finops_app.sources import create_client
        from finops_app.sources.cloudwatch import discover_ec2, poll_utilisation

        async with create_client(conf, "ec2") as ec2:
            resources = await discover_ec2(ec2, conf)
        async with create_client(conf, "cloudwatch") as cw:
            events = await poll_utilisation(
                cw, conf, resources, datetime.now(UTC), lookback=timedelta(hours=hours)
            )
        n = await produce_all(conf, ((topics.RESOURCE_EVENTS, e["resource_id"], e) for e in events))
        self.say(f"CloudWatch: {len(resources)} resources, {n} samples produced to {topics.RESOURCE_EVENTS}")

    @app.command(argument("input", type=Path), argument("output", type=Path))
    async def detect_csv(self: Any, input: Path, output: Path) -> None:
        """Score a `timestamp,value` CSV offline with the production detector (no Kafka needed).

        Writes `timestamp,value,anomaly_score,is_anomaly` with one row per input row; is_anomaly is 1
        on the row where the production alert would fire (once per incident).
        """
        from finops_app.detect_csv import detect_csv as run

        counts = run(input, output)
        self.say(json.dumps(counts))

    @app.command(
        argument("table"),
        argument("key", required=False),
        option("--json", "as_json", is_flag=True, default=False, help="Print JSON instead of a table."),
        option(
            "--data-dir", type=Path, default=None, help="The worker's data dir (default FINOPS_DATA_DIR)."
        ),
    )
    async def inspect(self: Any, table: str, key: str | None, as_json: bool, data_dir: Path | None) -> None:
        """Show a table's contents from the local RocksDB files, also while the worker runs.

        unit_state is shown one row per window (cost and ROI windows with their revision).
        """
        from finops_app.inspect_tables import render, rows

        try:
            data = rows(data_dir or conf.data_dir, table, key)
        except FileNotFoundError as exc:
            raise SystemExit(str(exc)) from None
        self.say(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if as_json else render(data))

    @app.command(
        option("--topic", required=True, help="Topic to re-process, e.g. finops.cost.events."),
        option("--from", "from_", required=True, help="ISO time or 90m / 6h / 7d ago."),
        option(
            "--group",
            type=str,
            default="app",
            show_default=True,
            help="'app' (the stream processors: group <app_id>-intake for the input topics, <app_id> for "
            "the others), 'sink' (the Snowflake loader) or a group id.",
        ),
        option(
            "--follow/--no-follow",
            default=True,
            show_default=True,
            help="Show progress until the group has caught up again.",
        ),
    )
    async def replay(self: Any, topic: str, from_: str, group: str, follow: bool) -> None:
        """Re-process a topic from a point in time by moving the group's committed offsets back.

        Stop the group's workers first (Kafka refuses to move offsets of an active group); start
        them again and they re-read from there. Re-processing is idempotent: windows count each
        source record once, the sink MERGEs on natural keys.
        """
        from finops_app.replay import rewind, wait_caught_up

        app_group = f"{conf.app_id}-intake" if topic in topics.INPUTS else conf.app_id
        group_id = {"app": app_group, "sink": f"{conf.app_id}-sink"}.get(group, group)
        moved = await rewind(conf, kafka.topic_name(conf, topic), group_id, parse_since(from_))
        total = sum(m["to_process"] for m in moved)
        for m in moved:
            self.say(
                f"  partition {m['partition']}: {m['committed']} -> {m['offset']} "
                f"({m['to_process']} to re-process)"
            )
        self.say(f"group {group_id}: {total} records of {topic} will be re-processed; start the workers now")
        if follow and total:
            await wait_caught_up(
                conf, kafka.topic_name(conf, topic), group_id, total, timeout=time.time() + 3600
            )
        sys.stdout.flush()
