"""Offline detection: a ``timestamp,value`` CSV in, a ``timestamp,value,anomaly_score,is_anomaly`` CSV out.

One series per file, rows in time order, any interval. Every input row gives exactly one output row, in
order; row i is scored with rows 0..i only (the streaming detector, run point by point), using
``CSV_PARAMS``: the default ``DetectorParams`` with direction "both" (utilisation-like metrics: drops
alert too). A row whose value is blank or not a finite number, or whose time stamp does not parse, is
written with score 0 and is_anomaly 0 and does not update the detector. Time stamps without a zone
(``2014-02-14 14:30:00``) are taken as UTC.
"""

from __future__ import annotations

import csv
import logging
import math
from datetime import UTC, datetime
from pathlib import Path

from finops_app.core.detector import DetectorParams, new_state, update
from finops_app.errors import ValidationError

log = logging.getLogger(__name__)

CSV_PARAMS = DetectorParams(direction="both")
OUT_HEADER = ("timestamp", "value", "anomaly_score", "is_anomaly")


def parse_ts_ms(text: str) -> int:
    """``2014-02-14 14:30:00`` (or any ISO-8601 form) -> epoch milliseconds; naive means UTC."""
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def parse_value(text: str) -> float | None:
    """A finite float, or None for a blank or non-numeric value."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _columns(header: list[str] | None, path: Path) -> tuple[int, int]:
    names = [h.strip().lower() for h in header or []]
    if "timestamp" not in names or "value" not in names:
        raise ValidationError(f"{path}: header must have 'timestamp' and 'value' columns, got {header!r}")
    return names.index("timestamp"), names.index("value")


def _point(row: list[str], ts_col: int, value_col: int) -> tuple[str, str, tuple[int, float] | None]:
    """(time stamp text, value text, (ts_ms, value) or None when either does not parse)."""
    ts_text = row[ts_col] if ts_col < len(row) else ""
    value_text = row[value_col] if value_col < len(row) else ""
    value = parse_value(value_text)
    try:
        ts_ms = parse_ts_ms(ts_text)
    except ValueError:
        return ts_text, value_text, None
    return ts_text, value_text, None if value is None else (ts_ms, value)


def detect_csv(
    input_path: str | Path, output_path: str | Path, params: DetectorParams | None = None
) -> dict[str, int]:
    """Score every row of ``input_path`` and write ``output_path``; returns counts.

    The counts are ``rows`` (data rows read and written; blank lines are not rows), ``scored`` (rows
    that updated the detector), ``skipped`` (blank or bad value or time stamp), ``anomalies`` (rows with
    is_anomaly 1) and ``warmup`` (scored rows inside the warm-up period).
    """
    params = params or CSV_PARAMS
    src, dst = Path(input_path), Path(output_path)
    counts = {"rows": 0, "scored": 0, "skipped": 0, "anomalies": 0, "warmup": 0}
    state = new_state()
    with (
        src.open(newline="", encoding="utf-8-sig") as fin,
        dst.open("w", newline="", encoding="utf-8") as fout,
    ):
        reader = csv.reader(fin)
        ts_col, value_col = _columns(next(reader, None), src)
        writer = csv.writer(fout, lineterminator="\n")
        writer.writerow(OUT_HEADER)
        for row in filter(None, reader):
            counts["rows"] += 1
            ts_text, value_text, point = _point(row, ts_col, value_col)
            if point is None:
                counts["skipped"] += 1
                log.debug("%s: skipped row %d %r", src, counts["rows"], row)
                writer.writerow((ts_text, value_text, 0, 0))
                continue
            state, verdict = update(state, point[0], point[1], params)
            counts["scored"] += 1
            counts["anomalies"] += verdict.is_anomaly
            counts["warmup"] += verdict.warming_up
            writer.writerow((ts_text, value_text, repr(verdict.score), int(verdict.is_anomaly)))
    if counts["skipped"]:
        log.warning(
            "%s: %d of %d rows had no usable value or time stamp", src, counts["skipped"], counts["rows"]
        )
    log.info("%s -> %s: %s", src, dst, counts)
    return counts
