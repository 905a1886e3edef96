"""detect_csv: a timestamp,value CSV in, one scored row per input row out, no look-ahead, bad rows skipped."""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from finops_app.detect_csv import OUT_HEADER, detect_csv, parse_ts_ms
from finops_app.errors import ValidationError

START = datetime(2014, 2, 14, 14, 30)


def write(path: Path, values: list[str], header: str = "timestamp,value") -> Path:
    lines = [header] + [
        f"{(START + timedelta(minutes=5 * i)):%Y-%m-%d %H:%M:%S},{v}" for i, v in enumerate(values)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def series(n: int = 600, seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    return [f"{100 + rng.gauss(0, 2):.3f}" for _ in range(n)]


def test_one_row_per_input_row_with_the_header(tmp_path: Path) -> None:
    values = series()
    values[400] = "160"  # a spike, written as an int
    counts = detect_csv(write(tmp_path / "in.csv", values), tmp_path / "out.csv")
    rows = read(tmp_path / "out.csv")
    assert rows[0] == list(OUT_HEADER) == ["timestamp", "value", "anomaly_score", "is_anomaly"]
    assert len(rows) == 601
    assert [r[1] for r in rows[1:]] == values  # values written back as read
    assert rows[1][0] == "2014-02-14 14:30:00"
    assert all(0.0 <= float(r[2]) <= 1.0 for r in rows[1:])
    assert [i for i, r in enumerate(rows[1:]) if r[3] == "1"] == [400]
    assert float(rows[401][2]) > 0.99
    assert counts == {"rows": 600, "scored": 600, "skipped": 0, "anomalies": 1, "warmup": 30}


def test_drops_alert_too(tmp_path: Path) -> None:
    values = series()
    values[400] = "40.0"
    detect_csv(write(tmp_path / "in.csv", values), tmp_path / "out.csv")
    assert [i for i, r in enumerate(read(tmp_path / "out.csv")[1:]) if r[3] == "1"] == [400]


def test_bad_values_are_written_with_zero_and_skipped(tmp_path: Path) -> None:
    values = series(100)
    values[50], values[60], values[70], values[80] = "", "n/a", "nan", "inf"
    src = write(tmp_path / "in.csv", values)
    with src.open("a") as f:
        f.write("not a time,12\n")
    counts = detect_csv(src, tmp_path / "out.csv")
    rows = read(tmp_path / "out.csv")
    assert len(rows) == 102
    for i in (50, 60, 70, 80, 100):
        assert rows[i + 1][2:] == ["0", "0"]
    assert rows[51][:2] == [rows[51][0], ""] and rows[101][:2] == ["not a time", "12"]
    assert counts["rows"] == 101 and counts["skipped"] == 5 and counts["scored"] == 96


def test_no_look_ahead(tmp_path: Path) -> None:
    values = series(500, seed=9)
    values[300] = "150"
    detect_csv(write(tmp_path / "full.csv", values), tmp_path / "full_out.csv")
    detect_csv(write(tmp_path / "head.csv", values[:320]), tmp_path / "head_out.csv")
    assert read(tmp_path / "head_out.csv") == read(tmp_path / "full_out.csv")[:321]


def test_header_only_and_extra_columns(tmp_path: Path) -> None:
    assert detect_csv(write(tmp_path / "a.csv", []), tmp_path / "a_out.csv")["rows"] == 0
    assert read(tmp_path / "a_out.csv") == [list(OUT_HEADER)]
    src = tmp_path / "b.csv"
    src.write_text("value,timestamp,label\n5,2014-02-14 14:30:00,0\n6,2014-02-14 14:35:00,0\n")
    assert detect_csv(src, tmp_path / "b_out.csv")["scored"] == 2
    assert read(tmp_path / "b_out.csv")[1][:2] == ["2014-02-14 14:30:00", "5"]


def test_missing_columns_are_a_validation_error(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text("time,amount\n2014-02-14 14:30:00,1\n")
    with pytest.raises(ValidationError, match="timestamp"):
        detect_csv(src, tmp_path / "out.csv")


def test_naive_time_stamps_are_utc() -> None:
    assert parse_ts_ms("2014-02-14 14:30:00") == int(
        datetime(2014, 2, 14, 14, 30, tzinfo=UTC).timestamp() * 1000
    )
    assert parse_ts_ms("2014-02-14T15:30:00+01:00") == parse_ts_ms("2014-02-14 14:30:00")
