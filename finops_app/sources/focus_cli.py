"""``finops ingest-focus PATH...``: FOCUS files -> ``finops.cost.events`` and ``finops.deadletter``.

The producer is injected (``produce(topic, key, value) -> Awaitable``, wired to Kafka by the CLI).
Valid events are sent as their canonical JSON (which re-validates to the same dict downstream),
keyed by resource id; rejected rows go to the dead-letter topic with their reason. Each batch's
sends are awaited before the next batch is read: a failed send raises :class:`SourceError`
naming the file and rows (never printed and dropped); re-running is safe, ids are deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from finops_app.errors import SourceError
from finops_app.sources.focus import Batch, Reject, Row, Summary, read_focus
from finops_app.topics import COST_EVENTS, DEADLETTER

logger = logging.getLogger(__name__)

Produce = Callable[[str, bytes, bytes], Awaitable[Any]]


def raw_line(row: Row) -> bytes:
    """The row as one CSV line (NULL for missing values), the bytes it was read from."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["NULL" if v is None else v for v in row.values()])
    return buf.getvalue().encode("utf-8", "surrogateescape")


def deadletter_record(path: str | Path, reject: Reject, now: datetime | None = None) -> dict[str, Any]:
    """The dead-letter message of a rejected row (``offset`` is the row number)."""
    raw = raw_line(reject.raw)
    return {
        "source_topic": f"file:{path}",
        "partition": -1,
        "offset": reject.row_number,
        "error": str(reject.error),
        "field": reject.error.field,
        "raw": base64.b64encode(raw).decode("ascii"),
        "raw_size": len(raw),
        "timestamp": (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "stage": "intake",
    }


def _messages(batch: Batch) -> Iterator[tuple[str, bytes, bytes]]:
    for event in batch.events:
        yield COST_EVENTS, str(event["resource_id"]).encode(), orjson.dumps(event)
    source = f"file:{batch.path}"
    for reject in batch.rejects:
        yield DEADLETTER, source.encode(), orjson.dumps(deadletter_record(batch.path, reject))


async def _send(batch: Batch, produce: Produce) -> None:
    """Send one batch and wait for every delivery; any failure stops the run with SourceError."""
    messages = list(_messages(batch))
    results = await asyncio.gather(*(produce(t, k, v) for t, k, v in messages), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise SourceError(
            f"{batch.path}: {len(errors)} of {len(messages)} messages of the batch ending at byte "
            f"{batch.position} were not delivered (first error: {type(errors[0]).__name__}: {errors[0]}); "
            "later batches were not read: re-run the file (event ids are deterministic)"
        ) from errors[0]


async def ingest_focus(
    paths: Iterable[str | Path],
    settings: Any,
    produce: Produce,
    progress: bool = True,
    *,
    batch_size: int = 5000,
    cost_column: str = "BilledCost",
) -> Summary:
    """Ingest FOCUS files (CSV, CSV.gz, Parquet) through ``produce``; return the run's Summary.

    Reading happens in a worker thread one batch at a time, so the event loop keeps serving the
    producer; a progress bar (bytes) is shown when ``progress`` is true.
    """
    summary = Summary()
    for path in map(Path, paths):
        size = path.stat().st_size
        bar = tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=not progress)
        batches = read_focus(path, settings, batch_size=batch_size, cost_column=cost_column, summary=summary)
        done = 0
        try:
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                await _send(batch, produce)
                bar.update(batch.position - done)
                done = batch.position
                logger.debug("%s: %d events, %d rejects sent", path, len(batch.events), len(batch.rejects))
        finally:
            batches.close()
            bar.close()
    totals = {k: str(v) for k, v in summary.totals.items()}
    logger.info(
        "FOCUS ingestion: %d rows, %d events, %d rejected %s, totals %s",
        summary.rows_read,
        summary.events,
        summary.rejected,
        dict(summary.reasons),
        totals,
    )
    return summary
