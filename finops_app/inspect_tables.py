"""Read the worker's RocksDB table files while it runs: table files in, rows out.

Faust keeps one RocksDB per table partition under ``{data_dir}/v1/tables/{table}-{partition}.db``
(keys raw UTF-8, values JSON). The running worker holds each DB's lock, so they are opened as a
RocksDB *secondary* instance (a consistent read of the primary's files that never writes them),
falling back to read-only when no worker runs. ``unit_state`` values hold windows; they are shown
one row per window.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from finops_app.core.validate import iso
from finops_app.core.windows import ARCHIVE_PREFIX, all_windows

OFFSET_KEY = b"__faust\x00offset__"
_DB = re.compile(r"^(?P<table>.+)-(?P<partition>\d+)\.db$")


def table_dirs(data_dir: Path, table: str) -> list[tuple[int, Path]]:
    root = data_dir / "v1" / "tables"
    out = []
    for path in sorted(root.glob(f"{table}-*.db")) if root.is_dir() else []:
        m = _DB.match(path.name)
        if m and m["table"] == table:
            out.append((int(m["partition"]), path))
    return out


def tables_on_disk(data_dir: Path) -> list[str]:
    root = data_dir / "v1" / "tables"
    names = {m["table"] for p in root.glob("*.db") if (m := _DB.match(p.name))} if root.is_dir() else set()
    return sorted(names)


def read_table(data_dir: Path, table: str) -> Iterator[tuple[int, str, Any]]:
    """(partition, key, value) for every key of ``table`` in ``data_dir``."""
    from rocksdict import AccessType, Options, Rdict

    dirs = table_dirs(data_dir, table)
    if not dirs:
        raise FileNotFoundError(
            f"no files for table {table!r} under {data_dir}/v1/tables (tables here: "
            f"{', '.join(tables_on_disk(data_dir)) or 'none'}); pass the worker's FINOPS_DATA_DIR"
        )
    with tempfile.TemporaryDirectory(prefix="finops-inspect-") as scratch:
        for partition, path in dirs:
            opts = Options(raw_mode=True)
            try:
                db = Rdict(
                    str(path), options=opts, access_type=AccessType.secondary(f"{scratch}/{partition}")
                )
                db.try_catch_up_with_primary()
            except Exception:  # noqa: BLE001 - no primary running: a plain read-only open works
                db = Rdict(str(path), options=opts, access_type=AccessType.read_only())
            try:
                for raw_key, raw_value in db.items():
                    if raw_key == OFFSET_KEY:
                        continue
                    yield partition, decode_key(raw_key), orjson.loads(raw_value)
            finally:
                db.close()


def decode_key(raw: Any) -> str:
    """A table key as the agents use it: Faust stores ``str`` keys JSON-encoded (``"ecommerce"``,
    ``"\\u0000archive/ecommerce"``); anything else is shown as its text."""
    if not isinstance(raw, bytes):
        return str(raw)
    try:
        key = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
    return key if isinstance(key, str) else raw.decode("utf-8", "replace")


def window_rows(key: str, value: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per open or retained window of a unit_state value."""
    rows = []
    for family, name in (("w", "cost"), ("r", "roi")):
        held = all_windows(value, family) if family in value else {}
        for start, w in sorted(held.items(), key=lambda kv: int(kv[0])):
            rows.append(
                {
                    "business_unit": key,
                    "window": name,
                    "window_start": iso(int(start)),
                    "cost": str(Decimal(w["c"])),
                    "cost_events": w["nc"],
                    "revenue": str(Decimal(w["v"])),
                    "revenue_events": w["nv"],
                    "revision": w["rev"],
                    "pending": w["dirty"],
                }
            )
    return rows


def rows(data_dir: Path, table: str, key: str | None = None) -> list[dict[str, Any]]:
    entries = list(read_table(data_dir, table))
    archives: dict[str, Any] = {}
    if table == "unit_state":
        archives = {k[len(ARCHIVE_PREFIX) :]: v for _, k, v in entries if k.startswith(ARCHIVE_PREFIX)}
    out: list[dict[str, Any]] = []
    for partition, k, value in entries:
        if key is not None and k != key:
            continue
        if table == "unit_state" and k.startswith(ARCHIVE_PREFIX):
            continue  # shown with its unit's windows
        if k.startswith("\x00"):
            out.append({"partition": partition, "key": k.replace("\x00", "\\0"), "value": value})
        elif table == "unit_state" and isinstance(value, dict):
            whole = {**value, **(archives.get(k) or {})}
            out.extend({"partition": partition, **r} for r in window_rows(k, whole))
        else:
            out.append({"partition": partition, "key": k, "value": value})
    return out


def render(data: list[dict[str, Any]], width: int = 60) -> str:
    """A plain text table; nested values as compact JSON cut to ``width`` characters."""
    if not data:
        return "(no rows)"
    cols = list(dict.fromkeys(c for row in data for c in row))

    def cell(v: Any) -> str:
        s = v if isinstance(v, str) else orjson.dumps(v).decode()
        return s if len(s) <= width else s[: width - 1] + "…"

    cells = [[cell(row.get(c, "")) for c in cols] for row in data]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells)
    return "\n".join(lines)
