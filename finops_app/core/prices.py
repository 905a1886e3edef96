"""Price table: instance types and storage classes in, hourly and per-GB-month list prices out.

The embedded figures are a SNAPSHOT, not a live feed: AWS on-demand list prices for Linux,
shared tenancy, in us-east-1 (USD, as published on the AWS pricing pages in 2024), plus a typical
long-run spot discount per family (spot prices move every hour; the factor is the fraction of the
on-demand price usually saved) and storage prices per GB-month (S3 first 50 TB tier; EBS volume
storage only, no IOPS/throughput extras). Savings computed from them are estimates.

Plug in your own prices (another region, a negotiated discount, newer families) with a file named
by ``FINOPS_PRICE_TABLE``; :func:`load_overrides` merges it over the snapshot, entry by entry.
JSON::

    {"instances": {"m7i.large": "0.1008"}, "spot_discount": {"m7i": "0.6"},
     "storage": {"s3:DEEP_ARCHIVE": "0.00099"}}

or CSV with the header ``kind,name,price`` (kind: ``instance``, ``spot_discount`` or ``storage``)::

    kind,name,price
    instance,m7i.large,0.1008

Sizes are ranked by AWS's size normalisation factors (nano 0.25 … large 4, xlarge 8,
``N``xlarge 8·N), so a family's ladder is derived from whichever of its sizes the table holds.
Storage classes are keyed ``service:CLASS`` (``s3:STANDARD``, ``ebs:gp3``); a service's classes,
dearest first, form its ladder of cheaper tiers.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

from finops_app.errors import ConfigError

logger = logging.getLogger(__name__)

HOURS_PER_MONTH = Decimal(730)
SNAPSHOT_SOURCE = "embedded snapshot: AWS us-east-1 on-demand Linux list prices (2024)"


def _d(table: Mapping[str, str]) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in table.items()}


_SIZES = ("large", "xlarge", "2xlarge", "4xlarge")
_PER_LARGE = {"m5": "0.096", "m6i": "0.096", "c5": "0.085", "c6i": "0.085", "r5": "0.126", "r6i": "0.126"}

# On-demand USD/hour. Within a family each size doubles the price of the one below it.
INSTANCE_HOURLY: Mapping[str, Decimal] = MappingProxyType(
    {
        **_d(
            {
                "t3.nano": "0.0052",
                "t3.micro": "0.0104",
                "t3.small": "0.0208",
                "t3.medium": "0.0416",
                "t3.large": "0.0832",
                "t3.xlarge": "0.1664",
                "t3.2xlarge": "0.3328",
            }
        ),
        **{
            f"{family}.{size}": Decimal(large) * (2**i)
            for family, large in _PER_LARGE.items()
            for i, size in enumerate(_SIZES)
        },
    }
)

# Fraction of the on-demand price typically saved on spot (approximate, per family).
SPOT_DISCOUNT: Mapping[str, Decimal] = MappingProxyType(
    _d({"t3": "0.70", "m5": "0.60", "m6i": "0.60", "c5": "0.62", "c6i": "0.60", "r5": "0.65", "r6i": "0.62"})
)

# USD per GB-month.
STORAGE_GB_MONTH: Mapping[str, Decimal] = MappingProxyType(
    _d(
        {
            "s3:STANDARD": "0.023",
            "s3:STANDARD_IA": "0.0125",
            "s3:GLACIER_IR": "0.004",
            "ebs:gp3": "0.08",
            "ebs:st1": "0.045",
            "ebs:sc1": "0.015",
        }
    )
)

_NAMED_SIZES = {"nano": 0.25, "micro": 0.5, "small": 1.0, "medium": 2.0, "large": 4.0, "xlarge": 8.0}
_NX_RE = re.compile(r"^(\d+)xlarge$")


def size_factor(instance_type: str) -> float | None:
    """AWS normalisation factor of ``family.size`` (``m5.2xlarge`` -> 16.0); None if not a size."""
    _, dot, size = instance_type.partition(".")
    if not dot:
        return None
    if size in _NAMED_SIZES:
        return _NAMED_SIZES[size]
    m = _NX_RE.match(size)
    return 8.0 * int(m.group(1)) if m and int(m.group(1)) > 0 else None


def family_of(instance_type: str) -> str:
    """``m5.large`` -> ``m5``."""
    return instance_type.partition(".")[0]


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices the recommendations use; build with :func:`load_overrides`."""

    instances: Mapping[str, Decimal] = field(default_factory=lambda: INSTANCE_HOURLY)
    spot_discount: Mapping[str, Decimal] = field(default_factory=lambda: SPOT_DISCOUNT)
    storage: Mapping[str, Decimal] = field(default_factory=lambda: STORAGE_GB_MONTH)
    source: str = SNAPSHOT_SOURCE

    def hourly(self, instance_type: str) -> Decimal | None:
        """On-demand USD/hour, or None when the type is not in the table."""
        return self.instances.get(instance_type)

    def ladder(self, family: str) -> list[str]:
        """The family's instance types in the table, smallest first."""
        sized = [(size_factor(t), t) for t in self.instances if family_of(t) == family]
        return [t for f, t in sorted((f, t) for f, t in sized if f is not None)]

    def smaller(self, instance_type: str) -> list[str]:
        """Types of the same family smaller than ``instance_type``, nearest first."""
        current = size_factor(instance_type)
        if current is None or instance_type not in self.instances:
            return []
        ladder = self.ladder(family_of(instance_type))
        return [t for t in reversed(ladder) if (size_factor(t) or current) < current]

    def spot_hourly(self, instance_type: str) -> Decimal | None:
        """Expected spot USD/hour from the family's discount; None when either is unknown."""
        price = self.hourly(instance_type)
        discount = self.spot_discount.get(family_of(instance_type))
        return None if price is None or discount is None else price * (1 - discount)

    def storage_price(self, service: str, storage_class: str) -> Decimal | None:
        """USD per GB-month of ``service:storage_class`` (``s3``, ``STANDARD_IA``)."""
        return self.storage.get(f"{service}:{storage_class}")

    def cheaper_storage(self, service: str, storage_class: str) -> list[str]:
        """The service's classes cheaper than ``storage_class``, dearest (nearest) first."""
        current = self.storage_price(service, storage_class)
        if current is None:
            return []
        prefix = f"{service}:"
        cheaper = [
            (p, k[len(prefix) :]) for k, p in self.storage.items() if k.startswith(prefix) and p < current
        ]
        return [name for _, name in sorted(cheaper, reverse=True)]


DEFAULT_PRICES = PriceTable()

_SECTIONS = {"instance": "instances", "spot_discount": "spot_discount", "storage": "storage"}


def _price(value: Any, where: str, *, fraction: bool) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ConfigError(f"price table {where}: expected a number, got {value!r}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigError(f"price table {where}: {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0 or (fraction and amount >= 1):
        limit = "in [0, 1)" if fraction else "a finite amount >= 0"
        raise ConfigError(f"price table {where}: {value!r} must be {limit}")
    return amount


def _read_entries(path: Path) -> list[tuple[str, str, Any]]:
    """(section, name, raw price) rows from a JSON or CSV file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None or not {"kind", "name", "price"} <= set(reader.fieldnames):
            raise ConfigError(f"price table {path}: CSV needs the header kind,name,price")
        rows = []
        for n, row in enumerate(reader, start=2):
            kind = (row.get("kind") or "").strip()
            if kind not in _SECTIONS:
                raise ConfigError(f"price table {path} line {n}: kind must be one of {', '.join(_SECTIONS)}")
            rows.append((_SECTIONS[kind], (row.get("name") or "").strip(), row.get("price")))
        return rows
    try:
        doc = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"price table {path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) - set(_SECTIONS.values()):
        raise ConfigError(f"price table {path}: expected an object with keys {', '.join(_SECTIONS.values())}")
    rows = []
    for section, entries in doc.items():
        if not isinstance(entries, dict):
            raise ConfigError(f"price table {path}: {section!r} must be an object of name: price")
        rows.extend((section, str(name).strip(), value) for name, value in entries.items())
    return rows


def load_overrides(path: str | Path | None, base: PriceTable = DEFAULT_PRICES) -> PriceTable:
    """``base`` with the entries of a JSON/CSV price file merged over it (None or "": ``base``).

    Entries replace or extend the snapshot one by one; everything else keeps its snapshot price.
    A missing or malformed file is a :class:`ConfigError` naming the file and the entry.
    """
    if path is None or str(path) == "":
        return base
    p = Path(path)
    try:
        rows = _read_entries(p)
    except OSError as exc:
        raise ConfigError(f"price table {p}: cannot read: {exc.strerror or exc}") from None
    merged: dict[str, dict[str, Decimal]] = {
        "instances": dict(base.instances),
        "spot_discount": dict(base.spot_discount),
        "storage": dict(base.storage),
    }
    for section, name, raw in rows:
        where = f"{p} {section}[{name!r}]"
        if not name:
            raise ConfigError(f"price table {p}: an entry in {section!r} has no name")
        if section == "instances" and size_factor(name) is None:
            raise ConfigError(f"price table {where}: instance types look like family.size (m5.large)")
        if section == "storage" and ":" not in name:
            raise ConfigError(f"price table {where}: storage classes look like service:CLASS (s3:STANDARD)")
        merged[section][name] = _price(raw, where, fraction=section == "spot_discount")
    logger.info("price table: %d override(s) from %s", len(rows), p)
    return PriceTable(
        instances=MappingProxyType(merged["instances"]),
        spot_discount=MappingProxyType(merged["spot_discount"]),
        storage=MappingProxyType(merged["storage"]),
        source=f"{SNAPSHOT_SOURCE} + overrides from {p}",
    )
