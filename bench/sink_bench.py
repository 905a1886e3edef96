"""Snowflake sink throughput: the bulk loader (Parquet / CSV, PUT + COPY + MERGE) against executemany.

Loads N canonical cost events into finops_curated.cost_events of a fresh database on the
Snowflake endpoint of the settings (the local fakesnow server by default) and prints rows/s:

- ``loader parquet``: BulkLoader.load (what the sink runs): Parquet file, PUT, COPY, MERGE;
- ``loader parquet (again)``: the same rows a second time (every row an UPDATE: a replay);
- ``csv``: the same path with a CSV file instead of Parquet (COPY CSV, then the same MERGE);
- ``executemany``: ``cursor.executemany(INSERT ... VALUES (%s, ...))`` into the landing table in
  chunks of 1,000 rows (the connector turns each into one multi-row INSERT; 10,000 rows in one
  call outlive the connector's 60 s read timeout on the emulator), then the same MERGE - the
  row-by-row path the loader replaces.

    .venv/bin/python bench/sink_bench.py --port 8085 --rows 10000 50000

Figures from the emulator are not Snowflake's: they compare paths, not predict production.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from finops_app.config import Settings
from finops_app.sinks.connection import Connector
from finops_app.sinks.loader import STAGE, BulkLoader, converter, merge_sql
from finops_app.sinks.migrate import SQL_DIR, migrate
from finops_app.sinks.rows import TABLES, event_row

TABLE = "finops_curated.cost_events"
EXECUTEMANY_CHUNK = 1000


def make_rows(n: int, tag: str) -> list[dict[str, Any]]:
    start = datetime(2025, 1, 1)
    rows = []
    for i in range(n):
        ts = (start + timedelta(seconds=37 * i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        event = {
            "event_id": f"{tag}-{i}",
            "timestamp": ts,
            "event_type": "cloud_cost_incurred",
            "service": ("ec2", "s3", "rds", "lambda")[i % 4],
            "region": "us-east-1",
            "cost_amount": str(Decimal(i % 9973) / Decimal(7919)),
            "currency": "USD",
            "resource_id": f"i-{i % 500}",
            "business_unit": ("engineering", "marketing", "sales")[i % 3],
            "project_id": f"p{i % 20}",
            "environment": "prod",
            "provider": "aws",
            "account_id": "123456789012",
            "charge_category": "usage",
            "charge_period_start": ts,
            "charge_period_end": ts,
            "source": "bench",
            "schema_version": 1,
            "metadata": {"instance_type": "m5.large", "i": i},
        }
        rows.append(event_row(TABLE, event, i % 4, i))
    return rows


def _landing_values(rows: list[dict[str, Any]], batch: str) -> list[list[Any]]:
    spec = TABLES[TABLE]
    convs = [converter(c) for c in spec.columns]
    return [
        [conv(row.get(c.name)) for c, conv in zip(spec.columns, convs, strict=True)] + [batch, i]
        for i, row in enumerate(rows)
    ]


def run_csv(connector: Connector, rows: list[dict[str, Any]], workdir: Path) -> None:
    spec = TABLES[TABLE]
    batch = uuid.uuid4().hex
    path = workdir / f"{batch}.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        for values in _landing_values(rows, batch):
            writer.writerow(["" if v is None else v for v in values])
    cur = connector().cursor()
    cur.execute(f"PUT 'file://{path.as_posix()}' @{STAGE}/bench AUTO_COMPRESS = FALSE OVERWRITE = TRUE")
    cur.execute(
        f"COPY INTO {spec.landing} FROM @{STAGE}/bench/{path.name} "
        "FILE_FORMAT = (TYPE = CSV FIELD_OPTIONALLY_ENCLOSED_BY = '\"') PURGE = TRUE FORCE = TRUE"
    )
    cur.execute(merge_sql(spec), {"batch": batch})
    cur.execute(f"DELETE FROM {spec.landing} WHERE _batch = %(batch)s", {"batch": batch})


def run_executemany(connector: Connector, rows: list[dict[str, Any]]) -> None:
    spec = TABLES[TABLE]
    batch = uuid.uuid4().hex
    names = [*spec.column_names(), "_batch", "_seq"]
    values = _landing_values(rows, batch)
    cur = connector().cursor()
    placeholders = ", ".join(["%s"] * len(names))
    sql = f"INSERT INTO {spec.landing} ({', '.join(names)}) VALUES ({placeholders})"
    for i in range(
        0, len(values), EXECUTEMANY_CHUNK
    ):  # one statement of 10k rows outlives the 60 s read timeout
        cur.executemany(sql, values[i : i + EXECUTEMANY_CHUNK])
    cur.execute(merge_sql(spec), {"batch": batch})
    cur.execute(f"DELETE FROM {spec.landing} WHERE _batch = %(batch)s", {"batch": batch})


def count(connector: Connector) -> int:
    cur = connector().cursor()
    cur.execute(f"SELECT COUNT(*) FROM {TABLE}")
    return int(cur.fetchone()[0])  # type: ignore[index]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument(
        "--skip-executemany", action="store_true", help="executemany is slow: minutes for 50k"
    )
    parser.add_argument("--only-executemany", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    settings = Settings(
        snowflake_host=args.host,
        snowflake_port=args.port,
        snowflake_database=f"BENCH_{uuid.uuid4().hex[:8].upper()}",
    )
    connector = Connector(settings)
    migrate(connector(), SQL_DIR)
    loader = BulkLoader(connector)
    loader.load(TABLES[TABLE], make_rows(10, "warmup"))  # creates the landing table and the stage
    results = []

    def timed(path: str, n: int, fn: Any) -> None:
        before = count(connector)
        started = time.perf_counter()
        fn()
        seconds = time.perf_counter() - started
        results.append(
            {"path": path, "rows": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds)}
        )
        added = count(connector) - before
        print(f"{path:<26} {n:>7,} rows {seconds:8.2f} s {n / seconds:>10,.0f} rows/s  (+{added} rows)")

    with TemporaryDirectory() as tmp:
        for n in args.rows:
            if not args.only_executemany:
                rows = make_rows(n, f"pq{n}")
                timed("loader parquet", n, lambda rows=rows: loader.load(TABLES[TABLE], rows))
                timed("loader parquet (again)", n, lambda rows=rows: loader.load(TABLES[TABLE], rows))
                csv_rows = make_rows(n, f"csv{n}")
                timed("csv put+copy+merge", n, lambda rows=csv_rows: run_csv(connector, rows, Path(tmp)))
            if not args.skip_executemany:
                em_rows = make_rows(n, f"em{n}")
                timed("executemany+merge", n, lambda rows=em_rows: run_executemany(connector, rows))
    connector.close()
    if args.json:
        endpoint = f"{settings.snowflake_host}:{settings.snowflake_port}"
        print(json.dumps({"endpoint": endpoint, "results": results}))


if __name__ == "__main__":
    main()
