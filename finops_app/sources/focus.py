"""FOCUS 1.0-1.2 cost-and-usage files (CSV, CSV.gz, Parquet) -> canonical cost events.

Files are streamed in batches (the csv module over a text stream, or pyarrow's
``ParquetFile.iter_batches``), never loaded whole. Each row becomes a cost *wire* dict that goes
through ``parse_cost``; a row that fails is returned as a :class:`Reject` with its reason, never
dropped. Event ids hash the row's natural identity, so re-ingesting a file gives the same ids.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import orjson

from finops_app.core.money import to_str
from finops_app.core.validate import MAX_TEXT, NEGATIVE_OK, Limits, parse_cost
from finops_app.errors import SourceError, ValidationError
from finops_app.sources import allocation_from_tags, stable_id

logger = logging.getLogger(__name__)

Row = dict[str, str | None]
COST_COLUMNS = ("BilledCost", "EffectiveCost")
REQUIRED = ("ChargePeriodStart", "ServiceName")
_PROVIDERS = {
    **dict.fromkeys(("aws", "amazon web services"), "aws"),
    **dict.fromkeys(("microsoft", "azure", "microsoft azure"), "azure"),
    **dict.fromkeys(("google cloud", "google", "gcp"), "gcp"),
    **dict.fromkeys(("oracle", "oracle cloud infrastructure", "oci"), "oci"),
}
_NULLS = {"", "NULL"}
# the row's natural identity (with provider and service): what its event id hashes
_ID_COLUMNS = (  # noqa: SIM905 - FOCUS column names read best as one list
    "BillingAccountId SubAccountId ChargePeriodStart ChargePeriodEnd ResourceId SkuId SkuPriceId "
    "ChargeCategory ChargeClass Id ChargeDescription PricingCategory CommitmentDiscountId RegionId"
).split()
# metadata: these columns under their snake_case names; numbers normalised (Parquet == CSV)
_META_TEXT = "SkuId SkuPriceId ChargeDescription ServiceCategory BillingAccountId SubAccountName PricingUnit"
_META_NUMBERS = "EffectiveCost ListCost BilledCost ConsumedQuantity"
_META = [
    (re.sub(r"(?<!^)(?=[A-Z])", "_", c).lower(), c, n)
    for cs, n in ((_META_TEXT, 0), (_META_NUMBERS, 1))
    for c in cs.split()
]
_BAD_UTF8 = re.compile("[\udc80-\udcff]")
_QUOTED = re.compile(r"'[^']*'")


class Reject(NamedTuple):
    """A row that failed validation: unpacks as ``(row_number, raw_row, error)``."""

    row_number: int
    raw: Row
    error: ValidationError


@dataclass(slots=True)
class Batch:
    """One batch of a file: valid canonical events, rejects, and how far into the file we are."""

    path: str
    events: list[dict[str, Any]]
    rejects: list[Reject]
    position: int  # bytes of the file consumed so far (approximate for compressed/columnar files)
    size: int  # file size in bytes


@dataclass
class Summary:
    """Counts and money totals of an ingestion run (one or more files)."""

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    events: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    totals: defaultdict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))  # by provider
    currency_totals: defaultdict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())

    def add(self, batch: Batch) -> None:
        if batch.path not in self.files:
            self.files.append(batch.path)
        self.rows_read += len(batch.events) + len(batch.rejects)
        self.events += len(batch.events)
        for event in batch.events:
            self.totals[event["provider"]] += Decimal(event["cost_amount"])
            self.currency_totals[event["currency"]] += Decimal(event["cost_amount"])
        self.reasons.update(reason_key(r.error) for r in batch.rejects)


def reason_key(error: ValidationError) -> str:
    """A low-cardinality reason for counting: field and reason with quoted values elided."""
    reason = _QUOTED.sub("'…'", error.reason)
    return f"{error.field or 'row'}: {reason}"


# -- reading rows -------------------------------------------------------------------------------


def _cell(value: Any) -> str | None:
    """A Parquet value as the string the CSV export would carry (None for null)."""
    if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        value = dict(value)  # a Parquet MAP column (Tags)
    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    out: str | None
    if value is None or isinstance(value, str):
        out = None if value in _NULLS else value
    elif isinstance(value, bool):
        out = "true" if value else "false"
    elif isinstance(value, Decimal):
        out = format(value, "f")
    elif isinstance(value, float):
        out = repr(value)
    elif isinstance(value, date):  # datetime too
        out = value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    elif isinstance(value, bytes):
        out = value.decode("utf-8", "surrogateescape")
    elif isinstance(value, dict | list):
        out = orjson.dumps(value, default=str).decode()
    else:
        out = str(value)
    return out


RowItem = tuple[int, Row, ValidationError | None, int]  # (row_number, row, structural error, bytes read)


def _csv_reader(raw: BinaryIO) -> Iterator[list[str]]:
    compressed = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    binary: Any = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
    return csv.reader(io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline=""))


def _csv_rows(path: Path) -> Iterator[RowItem]:
    with path.open("rb") as raw:
        reader = _csv_reader(raw)
        header = [h.strip() for h in next(reader, [])]
        number = errors_in_a_row = 0
        while True:
            try:
                values = next(reader)
                errors_in_a_row = 0
            except StopIteration:
                return
            except csv.Error as exc:
                number += 1
                errors_in_a_row += 1
                if errors_in_a_row > 1000:
                    raise SourceError(f"{path}: unreadable CSV near record {number}: {exc}") from exc
                yield number, {}, ValidationError(f"unreadable CSV record: {exc}", "row"), raw.tell()
                continue
            if not values:
                continue  # a blank line carries no record
            number += 1
            names = header + [f"_extra_{i}" for i in range(len(header), len(values))]
            row = {k: (None if v in _NULLS else v) for k, v in zip(names, values, strict=False)}
            error = None
            if len(values) != len(header):
                error = ValidationError(
                    f"record has {len(values)} fields, the header has {len(header)}", "row"
                )
            yield number, row, error, raw.tell()


def _parquet_rows(path: Path, batch_size: int) -> Iterator[RowItem]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    total, size, number = max(pf.metadata.num_rows, 1), path.stat().st_size, 0
    for record_batch in pf.iter_batches(batch_size=batch_size):
        for record in record_batch.to_pylist():
            number += 1
            yield number, {str(k): _cell(v) for k, v in record.items()}, None, size * number // total


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """I/O, decompression and Parquet errors -> SourceError naming the file."""
    try:
        yield
    except (OSError, EOFError, zlib.error, csv.Error) as exc:
        raise SourceError(f"{path}: cannot read the file: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("pyarrow"):  # ArrowInvalid and friends
            raise SourceError(f"{path}: cannot read the Parquet file: {exc}") from exc
        raise


def read_header(path: Path) -> list[str]:
    """The column names of a FOCUS file (CSV, CSV.gz or Parquet)."""
    with _reading(path):
        if _is_parquet(path):
            import pyarrow.parquet as pq

            return [str(n) for n in pq.ParquetFile(path).schema_arrow.names]
        with path.open("rb") as raw:
            return [h.strip() for h in next(_csv_reader(raw), [])]


def iter_rows(path: Path, batch_size: int = 5000) -> Iterator[RowItem]:
    """``(row_number, row, structural error or None, bytes consumed)`` for every record of a file.

    Row numbers count records from 1 after the header (blank lines are not records). Values are
    strings as a CSV export writes them, ``None`` for ``NULL`` and empty cells.
    """
    with _reading(path):
        yield from _parquet_rows(path, batch_size) if _is_parquet(path) else _csv_rows(path)


# -- mapping a row --------------------------------------------------------------------------------


def _norm_time(value: str | None) -> str | None:
    """The same instant written the same way (CSV ``2024-09-18 22:00:00`` vs ISO ``...Z``)."""
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return value
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat()


def _money(value: str | None) -> str | None:
    try:
        return None if value is None else to_str(Decimal(value.strip()))
    except (InvalidOperation, ValueError):
        return value


def _fit(value: str) -> str:
    """Identifiers longer than the validator's limit keep a readable prefix and a hash."""
    return value if len(value) <= MAX_TEXT else value[:200] + "#" + stable_id("h", value)[2:18]


def _version(header: list[str]) -> str:
    if "InvoiceId" in header or "PricingCurrency" in header or "BillingAccountType" in header:
        return "1.2"
    if "ServiceSubcategory" in header or "CapacityReservationId" in header or "SkuMeter" in header:
        return "1.1"
    return "1.0"


class _Mapper:
    def __init__(self, path: Path, settings: Any, cost_column: str, header: list[str]) -> None:
        self.path, self.settings, self.cost_column = path, settings, cost_column
        self.version = _version(header)
        # Without an Id column two rows may share an identity: the later ones get numbered ids,
        # so downstream de-duplication never drops a real charge. ~60 bytes per row of the file.
        self.seen: set[int] | None = None if "Id" in header else set()
        self.repeats: Counter[str] = Counter()

    def wire(self, number: int, row: Row) -> dict[str, Any]:
        g = row.get
        if _BAD_UTF8.search("".join(v for v in row.values() if v)):  # undecodable bytes were escaped
            bad = next(k for k, v in row.items() if v and _BAD_UTF8.search(v))
            raise ValidationError("is not valid UTF-8", bad)
        name = (g("ProviderName") or g("ServiceProviderName") or g("PublisherName") or "").strip()
        provider = _PROVIDERS.get(name.lower(), "other")
        category = (g("ChargeCategory") or "usage").strip().lower()
        if (g("ChargeClass") or "").strip().lower() == "correction":
            category = "correction"
        amount = g(self.cost_column)
        try:
            if amount is not None and Decimal(amount) < 0 and category not in NEGATIVE_OK:
                category = "adjustment"  # e.g. Azure usage reversals: negative Usage rows
        except InvalidOperation:
            pass  # parse_cost rejects the amount with its reason
        region = g("RegionId") or "global"
        account = g("SubAccountId") or g("BillingAccountId") or ""
        service = g("ServiceName") or "unknown"
        resource = g("ResourceId") or f"{provider}/{account or '-'}/{service}/{region}"
        start, end = g("ChargePeriodStart"), g("ChargePeriodEnd")
        identity = [_norm_time(g(c)) if c.startswith("ChargePeriod") else g(c) for c in _ID_COLUMNS]
        base = stable_id("focus", provider, service, *identity)
        event_id = base
        if self.seen is not None:
            digest = int(base[-16:], 16)
            if digest in self.seen:  # the same identity again: number it in file order
                self.repeats[base] += 1
                event_id = stable_id("focus", base, self.repeats[base] + 1)
            self.seen.add(digest)
        meta: dict[str, Any] = {key: _money(g(c)) if number else g(c) for key, c, number in _META}
        meta.update(
            focus_charge_category=g("ChargeCategory"),
            charge_class=g("ChargeClass"),
            focus_id=g("Id"),
            focus_version=self.version,
            source_file=str(self.path),
            row_number=number,
        )
        if len(resource) > MAX_TEXT:
            meta["full_resource_id"] = resource
        tags: dict[str, Any] = {}
        if g("Tags"):
            try:
                parsed = orjson.loads(g("Tags") or "")
                if not isinstance(parsed, dict):
                    raise ValueError(f"expected a JSON object, got {type(parsed).__name__}")
                tags = parsed
            except ValueError as exc:  # bad Tags JSON is not a reject: the cost is still real
                meta["tags_error"] = str(exc)[:200]
        meta["tags"] = tags
        return dict(
            allocation_from_tags(tags, self.settings),
            event_id=event_id,
            timestamp=start,
            charge_period_start=start,
            charge_period_end=end,
            service=service,
            region=region,
            cost_amount=amount,
            currency=g("BillingCurrency"),
            resource_id=_fit(resource),
            account_id=account,
            provider=provider,
            charge_category=category,
            source="focus",
            metadata=meta,
        )


def read_focus(
    path: str | Path,
    settings: Any,
    *,
    batch_size: int = 5000,
    cost_column: str = "BilledCost",
    limits: Limits | None = None,
    summary: Summary | None = None,
) -> Generator[Batch, None, None]:
    """Stream a FOCUS file as batches of canonical cost events and rejects.

    ``cost_column`` is ``BilledCost`` (what the invoice says) or ``EffectiveCost`` (amortised).
    A file without the FOCUS cost and period columns raises :class:`SourceError` up front; a
    file that breaks off midway raises it after the batches read so far. ``summary``, when
    given, is updated with every batch before the batch is yielded.
    """
    if cost_column not in COST_COLUMNS:
        raise ValueError(f"cost_column must be one of {COST_COLUMNS}, got {cost_column!r}")
    path = Path(path)
    header = read_header(path)
    missing = [c for c in (cost_column, *REQUIRED) if c not in header]
    if missing:
        raise SourceError(f"{path}: not a FOCUS file, missing column(s) {', '.join(missing)}")
    limits = limits or Limits.from_settings(settings)
    mapper, size = _Mapper(path, settings, cost_column, header), path.stat().st_size
    batch, yielded = Batch(str(path), [], [], 0, size), False
    for number, row, error, position in iter_rows(path, batch_size):
        if error is not None:
            batch.rejects.append(Reject(number, row, error))
        else:
            try:
                batch.events.append(parse_cost(mapper.wire(number, row), limits))
            except ValidationError as exc:
                batch.rejects.append(Reject(number, row, exc))
        if len(batch.events) + len(batch.rejects) >= batch_size:
            batch.position = position
            if summary is not None:
                summary.add(batch)
            yield batch
            batch, yielded = Batch(str(path), [], [], position, size), True
    batch.position = size
    if batch.events or batch.rejects or not yielded:
        if summary is not None:
            summary.add(batch)
        yield batch
