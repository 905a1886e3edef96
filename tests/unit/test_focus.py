"""FOCUS files -> cost events (sources.focus) and the ingest-focus producer loop (sources.focus_cli)."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from finops_app.config import Settings
from finops_app.core.money import to_str
from finops_app.core.validate import Limits, parse_cost
from finops_app.errors import SourceError
from finops_app.sources.focus import Summary, read_focus
from finops_app.sources.focus_cli import ingest_focus
from finops_app.topics import COST_EVENTS, DEADLETTER

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = (
    ROOT / "tests" / "data" / "focus" / "focus_sample.csv"
)  # FOCUS 1.0 sample, CC BY 4.0 (see README there)
PROVIDER = {"AWS": "aws", "Microsoft": "azure", "Oracle": "oci", "Google Cloud": "gcp"}
ID_COLUMNS = ("BillingAccountId", "SubAccountId", "Id")  # ids keep their digits as written


def _settings() -> Settings:
    return Settings()


def _read(path: Path, **kwargs: Any) -> tuple[list[dict[str, Any]], Summary, list[Any]]:
    summary, events, rejects = Summary(), [], []
    for batch in read_focus(path, _settings(), summary=summary, **kwargs):
        events += batch.events
        rejects += batch.rejects
    return events, summary, rejects


def _sample_rows() -> list[dict[str, str]]:
    with SAMPLE.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _without_source(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(e, metadata={k: v for k, v in e["metadata"].items() if k != "source_file"}) for e in events]


def test_the_real_sample_ingests_whole_and_reconciles_per_provider() -> None:
    rows = _sample_rows()
    expected: dict[str, Decimal] = {}
    for row in rows:  # independent of the reader: csv + Decimal over BilledCost
        key = PROVIDER[row["ProviderName"]]
        expected[key] = expected.get(key, Decimal(0)) + Decimal(row["BilledCost"])

    events, summary, rejects = _read(SAMPLE, batch_size=300)

    assert (summary.rows_read, summary.events, summary.rejected, rejects) == (1000, 1000, 0, [])
    assert dict(summary.totals) == expected
    summed: dict[str, Decimal] = {}
    for e in events:
        summed[e["provider"]] = summed.get(e["provider"], Decimal(0)) + Decimal(e["cost_amount"])
    assert {k: v.quantize(Decimal("0.01")) for k, v in summed.items()} == {
        k: v.quantize(Decimal("0.01")) for k, v in expected.items()
    }
    assert summed == expected  # exact, not only to the cent
    assert Counter(e["provider"] for e in events) == {"aws": 942, "azure": 51, "oci": 7}
    assert {e["source"] for e in events} == {"focus"}
    assert all(e["metadata"]["focus_version"] == "1.0" for e in events)
    # negative Usage rows (Azure reversals) are kept, as adjustments
    negative = [e for e in events if Decimal(e["cost_amount"]) < 0]
    assert negative and {e["charge_category"] for e in negative} <= {"credit", "adjustment"}


def test_ids_are_deterministic_and_unique() -> None:
    first, _, _ = _read(SAMPLE)
    second, _, _ = _read(SAMPLE, batch_size=7)
    assert [e["event_id"] for e in first] == [e["event_id"] for e in second]
    assert len({e["event_id"] for e in first}) == 1000


def test_rows_sharing_an_identity_without_an_id_column_keep_distinct_ids(tmp_path: Path) -> None:
    rows = _sample_rows()[:3]
    header = [c for c in rows[0] if c != "Id"]
    lines = [_csv_line(header)] + [
        _csv_line([r[c] for c in header]) for r in (rows[0], rows[1], rows[0], rows[0])
    ]
    path = tmp_path / "no-id.csv"
    path.write_text("".join(lines))

    first, summary, _ = _read(path)
    second, _, _ = _read(path)

    assert summary.events == 4 and len({e["event_id"] for e in first}) == 4
    assert [e["event_id"] for e in first] == [e["event_id"] for e in second]


def test_tags_map_to_allocation_and_untagged_rows_are_unallocated() -> None:
    rows = _sample_rows()
    events, _, _ = _read(SAMPLE)
    for row, event in zip(rows, events, strict=True):
        tags = {} if row["Tags"] == "NULL" else json.loads(row["Tags"])
        assert event["metadata"]["tags"] == tags
        if "business_unit" in tags:
            assert event["business_unit"] == tags["business_unit"]
            assert event["project_id"] == tags["application"]
            assert event["environment"] == tags["environment"]
        elif not tags:
            assert (event["business_unit"], event["project_id"]) == ("unallocated", "unallocated")
    untagged = sum(1 for r in rows if r["Tags"] == "NULL")
    assert untagged == 289
    assert sum(1 for e in events if not e["metadata"]["tags"]) == untagged


def test_csv_gz_and_parquet_copies_give_identical_events(tmp_path: Path) -> None:
    gz = tmp_path / "sample.csv.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    table = pacsv.read_csv(
        SAMPLE,
        convert_options=pacsv.ConvertOptions(
            null_values=["NULL", ""],
            strings_can_be_null=True,
            column_types={c: pa.string() for c in ID_COLUMNS},
        ),
    )
    assert pa.types.is_floating(table.schema.field("BilledCost").type)  # typed, not all strings
    assert pa.types.is_timestamp(table.schema.field("ChargePeriodStart").type)
    parquet = tmp_path / "sample.parquet"
    pq.write_table(table, parquet, row_group_size=128)

    from_csv, _, _ = _read(SAMPLE)
    from_gz, gz_summary, _ = _read(gz, batch_size=333)
    from_parquet, pq_summary, _ = _read(parquet, batch_size=333)

    assert _without_source(from_gz) == _without_source(from_csv)
    assert _without_source(from_parquet) == _without_source(from_csv)
    assert gz_summary.totals == pq_summary.totals


def test_parquet_map_tags_and_effective_cost(tmp_path: Path) -> None:
    rows = _sample_rows()[:3]
    columns: dict[str, Any] = {k: [r[k] if r[k] != "NULL" else None for r in rows] for k in rows[0]}
    columns["Tags"] = pa.array(
        [[("business_unit", "Retail"), ("env", "prod")], None, []], type=pa.map_(pa.string(), pa.string())
    )
    path = tmp_path / "map.parquet"
    pq.write_table(pa.table(columns), path)

    events, summary, _ = _read(path, cost_column="EffectiveCost")

    assert [e["business_unit"] for e in events] == ["Retail", "unallocated", "unallocated"]
    assert events[0]["environment"] == "prod"
    assert [e["cost_amount"] for e in events] == [to_str(Decimal(r["EffectiveCost"])) for r in rows]
    assert summary.rejected == 0


def _broken_csv(tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    with SAMPLE.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        good = [next(reader) for _ in range(8)]
    col = {name: i for i, name in enumerate(header)}

    def variant(row: list[str], **changes: str) -> list[str]:
        out = list(row)
        for name, value in changes.items():
            out[col[name]] = value
        return out

    records: list[list[str] | bytes] = [
        good[0],  # 1 fine
        variant(good[1], BilledCost="abc"),  # 2 rejected
        variant(good[2], BilledCost="NULL"),  # 3 rejected
        variant(good[3], ChargePeriodStart="yesterday"),  # 4 rejected
        good[4][:10],  # 5 rejected: too few fields
        variant(good[5], Tags="{not json"),  # 6 kept: bad tags are noted, not rejected
        variant(good[6], BillingCurrency="XYZ"),  # 7 rejected
        b"",  # 8 rejected: invalid UTF-8 (filled in below)
        variant(good[7], BilledCost="-1.5", ChargeCategory="Usage"),  # 9 kept as an adjustment
    ]
    lines = []
    for record in records:
        if isinstance(record, bytes):
            bad = variant(good[0], ChargeDescription="caf\udce9")
            lines.append(_csv_line(bad).encode("utf-8", "surrogateescape"))
        else:
            lines.append(_csv_line(record).encode())
    path = tmp_path / "broken.csv"
    path.write_bytes(_csv_line(header).encode() + b"".join(lines))
    return path, [dict(zip(header, g, strict=True)) for g in good]


def _csv_line(values: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def test_broken_rows_are_rejected_with_reasons_and_the_rest_kept(tmp_path: Path) -> None:
    path, _ = _broken_csv(tmp_path)
    events, summary, rejects = _read(path)

    assert sorted(r.row_number for r in rejects) == [2, 3, 4, 5, 7, 8]
    reasons = {r.row_number: (r.error.field, r.error.reason) for r in rejects}
    assert reasons[2] == ("cost_amount", "'abc' is not a number")
    assert reasons[3] == ("cost_amount", "is required")
    assert reasons[4][0] == "timestamp"
    assert reasons[5] == ("row", "record has 10 fields, the header has 44")
    assert reasons[7] == ("currency", "unknown currency 'XYZ'")
    assert reasons[8] == ("ChargeDescription", "is not valid UTF-8")
    assert summary.rows_read == 9 and summary.events == 3 and summary.rejected == 6
    assert summary.reasons["cost_amount: '…' is not a number"] == 1
    by_row = {e["metadata"]["row_number"]: e for e in events}
    assert set(by_row) == {1, 6, 9}
    assert "tags_error" in by_row[6]["metadata"] and by_row[6]["business_unit"] == "unallocated"
    assert (by_row[9]["cost_amount"], by_row[9]["charge_category"]) == ("-1.5", "adjustment")
    rejected_raw = next(r.raw for r in rejects if r.row_number == 2)
    assert rejected_raw["BilledCost"] == "abc"


def test_a_file_that_is_not_focus_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SourceError, match="missing column"):
        list(read_focus(path, _settings()))


def test_canonical_events_round_trip_through_json() -> None:
    events, _, _ = _read(SAMPLE)
    limits = Limits.from_settings(_settings())
    for event in events:
        assert parse_cost(orjson.loads(orjson.dumps(event)), limits) == event


async def test_ingest_focus_sends_events_and_dead_letters(tmp_path: Path) -> None:
    path, _ = _broken_csv(tmp_path)
    sent: list[tuple[str, bytes, bytes]] = []

    async def produce(topic: str, key: bytes, value: bytes) -> None:
        sent.append((topic, key, value))

    summary = await ingest_focus([path, SAMPLE], _settings(), produce, progress=False, batch_size=400)

    topics = Counter(t for t, _, _ in sent)
    assert topics == {COST_EVENTS: 1003, DEADLETTER: 6}
    assert (summary.rows_read, summary.events, summary.rejected) == (1009, 1003, 6)
    assert all(k == orjson.loads(v)["resource_id"].encode() for t, k, v in sent if t == COST_EVENTS)
    dead = [orjson.loads(v) for t, _, v in sent if t == DEADLETTER]
    first = min(dead, key=lambda d: d["offset"])
    assert first["source_topic"] == f"file:{path}"
    assert (first["partition"], first["offset"], first["field"], first["stage"]) == (
        -1,
        2,
        "cost_amount",
        "intake",
    )
    raw = base64.b64decode(first["raw"])
    assert len(raw) == first["raw_size"] and b",abc," in raw


async def test_ingest_focus_raises_when_a_send_fails(tmp_path: Path) -> None:
    async def produce(topic: str, key: bytes, value: bytes) -> None:
        if b"Elastic Load Balancing" in value:
            raise ConnectionError("broker gone")

    with pytest.raises(SourceError, match=r"not delivered.*broker gone"):
        await ingest_focus([SAMPLE], _settings(), produce, progress=False)
