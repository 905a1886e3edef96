"""A FOCUS export ingested, then re-ingested with a restated row, through a real worker: the window
totals equal the latest figures (repeats counted once, the change as a correction)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from finops_app import kafka, topics
from finops_app.sources.focus_cli import ingest_focus
from tests.support.kafka import read_topic

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "focus" / "focus_sample.csv"


def write_export(path: Path, hour: datetime, amounts: list[str]) -> None:
    with SAMPLE.open(newline="") as f:
        reader = csv.DictReader(f)
        template = next(reader)
        fields = reader.fieldnames or []
    fmt = "%Y-%m-%d %H:%M:%S"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, quoting=csv.QUOTE_MINIMAL)
        w.writeheader()
        for i, amount in enumerate(amounts):
            unit = ("ecommerce", "analytics")[i % 2]
            w.writerow(
                {
                    **template,
                    "Id": str(1000 + i),
                    "BilledCost": amount,
                    "ResourceId": f"res-{i}",
                    "ChargePeriodStart": (hour + timedelta(minutes=i)).strftime(fmt),
                    "ChargePeriodEnd": (hour + timedelta(minutes=i + 1)).strftime(fmt),
                    "Tags": json.dumps({"business_unit": unit}),
                }
            )
        for unit in ("ecommerce", "analytics"):  # zero-cost rows just before 00:10 close the last windows
            w.writerow(
                {
                    **template,
                    "Id": f"close-{unit}",
                    "BilledCost": "0",
                    "ResourceId": f"close-{unit}",
                    "ChargePeriodStart": (hour + timedelta(minutes=9, seconds=59)).strftime(fmt),
                    "ChargePeriodEnd": (hour + timedelta(minutes=10)).strftime(fmt),
                    "Tags": json.dumps({"business_unit": unit}),
                }
            )


async def test_reingested_focus_export_counts_latest_figures(
    settings_factory, worker_factory, tmp_path
) -> None:
    settings = settings_factory(window_seconds=300, allowed_lateness_seconds=0, idle_timeout_seconds=2.0)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    first = [f"{i + 1}.0{i}" for i in range(10)]
    restated = list(first)
    restated[3] = "9.99"  # AWS restated one row
    a, b = tmp_path / "export-v1.csv", tmp_path / "export-v2.csv"
    write_export(a, hour, first)
    write_export(b, hour, restated)

    worker = worker_factory.start(settings)
    worker.wait_healthy()
    await kafka.ensure_topics(settings)
    producer = kafka.producer(settings)
    await producer.start()

    async def produce(topic: str, key: bytes, value: bytes) -> object:
        return await producer.send(kafka.topic_name(settings, topic), value, key=key)

    try:
        s1 = await ingest_focus([a], settings, produce, progress=False)
        s2 = await ingest_focus([b], settings, produce, progress=False)
        s3 = await ingest_focus([b], settings, produce, progress=False)  # an identical re-run
    finally:
        await producer.stop()
    assert (s1.events, s2.events, s3.events) == (12, 12, 12)

    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for i, amount in enumerate(restated):
        ts = hour + timedelta(minutes=i)
        start = ts.replace(minute=ts.minute - ts.minute % 5).strftime("%Y-%m-%dT%H:%M:00.000Z")
        expected[(("ecommerce", "analytics")[i % 2], start)] += Decimal(amount)

    def latest(rs: list[dict]) -> dict[tuple[str, str], Decimal]:
        out: dict[tuple[str, str], tuple[int, Decimal]] = {}
        for r in rs:
            k = (r["business_unit"], r["window_start"])
            if k not in out or r["revision"] > out[k][0]:
                out[k] = (r["revision"], Decimal(r["total_cost"]))
        return {k: v for k, (_, v) in out.items()}

    totals = await read_topic(
        settings, topics.AGGREGATIONS, lambda rs: latest(rs) == dict(expected), timeout=90
    )
    assert latest(totals) == dict(expected), (latest(totals), dict(expected))
    status, metrics = worker.get("/metrics")
    assert status == 200
    assert 'finops_restatements_total{kind="correction"} 1' in metrics
    assert "finops_restatements_unchanged_total 23" in metrics
