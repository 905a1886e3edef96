"""Row dicts in, rows MERGEd into a Snowflake table out: the sink's bulk path, no row-by-row inserts.

One load is: rows checked and converted against the table's column types in Python (a row that
can never fit comes back in ``LoadResult.rejected``), the batch written as one Parquet file with a
deterministic name (a hash of its content: a retried batch overwrites its own file), ``PUT`` to
the internal stage, ``COPY INTO`` the table's permanent landing table ``<schema>.<table>__landing``
(typed columns; VARIANT columns travel as JSON text), then ``MERGE INTO`` the target on its
natural key from a source de-duplicated with ``QUALIFY ROW_NUMBER() OVER (PARTITION BY key ORDER
BY revision DESC, _seq DESC) = 1`` (the later revision, then the later row, wins; Snowflake rejects
duplicate source keys with error 100090, the emulator does not), ``PARSE_JSON`` applied in that
source. Landing rows carry their batch id and are deleted after the MERGE, so several sink
workers can share a landing table (a TRUNCATE by one would empty another's batch mid-load).

If Snowflake still refuses a batch for a data reason (a data exception, SQLSTATE 22xxx), the batch
is bisected until the offending rows are isolated; the rest loads. Anything else (connection,
authentication, a missing table) raises :class:`~finops_app.errors.SinkError`: retry later.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from finops_app.errors import SinkError

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

logger = logging.getLogger(__name__)

STAGE = "finops_staging.sink_stage"
_DUPLICATE_SOURCE_ROW = 100090  # MERGE with duplicate source keys: a bug in the QUALIFY, not a data row


MAX_TEXT_BYTES = 16 * 1024 * 1024  # Snowflake's classic VARCHAR / VARIANT limit
_INT64 = 2**63 - 1
_WIDE = Context(prec=80)  # quantizing a 38-digit NUMBER needs more than the default 28 digits


@dataclass(frozen=True)
class Column:
    """One column of a target table: Snowflake type, precision/scale for NUMBER, nullability."""

    name: str
    type: str = "STRING"  # STRING | NUMBER | FLOAT | BOOLEAN | TIMESTAMP_NTZ | DATE | VARIANT
    precision: int = 38
    scale: int = 0
    nullable: bool = True

    @property
    def sql_type(self) -> str:
        return f"NUMBER({self.precision}, {self.scale})" if self.type == "NUMBER" else self.type

    @property
    def landing_type(self) -> str:
        """VARIANT travels as JSON text (PARSE_JSON in the MERGE); the rest as the target type."""
        return "STRING" if self.type == "VARIANT" else self.sql_type


def parquet_type(col: Column) -> Any:
    import pyarrow as pa

    if col.type == "NUMBER":
        return pa.int64() if col.scale == 0 else pa.decimal128(col.precision, col.scale)
    return {
        "STRING": pa.string(),
        "VARIANT": pa.string(),
        "FLOAT": pa.float64(),
        "BOOLEAN": pa.bool_(),
        "TIMESTAMP_NTZ": pa.timestamp("us"),
        "DATE": pa.date32(),
    }[col.type]


def converter(col: Column) -> Callable[[Any], Any]:
    """A function: a row value -> the value the column holds, or ValueError/TypeError why not."""
    convert = _CONVERTERS[col.type](col)
    nullable = col.nullable
    empty_is_null = col.type not in ("STRING", "VARIANT")

    def run(value: Any) -> Any:
        if value is None or (empty_is_null and value == ""):
            if not nullable:
                raise ValueError("is required (NOT NULL)")
            return None
        return convert(value)

    return run


def _text(col: Column) -> Callable[[Any], Any]:
    def conv(value: Any) -> str:
        if type(value) is str:
            text: str = value
        elif isinstance(value, dict | list | bytes):
            raise TypeError(f"expected text, got {type(value).__name__}")
        else:
            text = str(value)
        if len(text) * 4 > MAX_TEXT_BYTES and len(text.encode()) > MAX_TEXT_BYTES:
            raise ValueError(f"longer than {MAX_TEXT_BYTES} bytes")
        return text

    return conv


def _variant(col: Column) -> Callable[[Any], Any]:
    def conv(value: Any) -> str:
        text = orjson.dumps(value, default=str).decode()
        if len(text) > MAX_TEXT_BYTES:
            raise ValueError(f"JSON longer than {MAX_TEXT_BYTES} bytes")
        return text

    return conv


def _decimal(value: Any) -> Decimal:
    kind = type(value)
    if kind is bool:
        raise TypeError("expected a number, got a boolean")
    try:
        if kind is str or kind is int or kind is Decimal:
            d = Decimal(value)  # surrounding blanks are accepted
        elif kind is float:
            d = Decimal(repr(value))  # the shortest repr: 0.1 is 0.1, not 0.1000000000000000055...
        else:
            raise TypeError(f"expected a number, got {kind.__name__}")
    except ArithmeticError:
        raise ValueError(f"{str(value)[:40]!r} is not a number") from None
    if not d.is_finite():
        raise ValueError("must be finite")
    return d


def _number(col: Column) -> Callable[[Any], Any]:
    digits = col.precision - col.scale  # integer digits that fit
    scale = col.scale
    exp = Decimal(1).scaleb(-scale)
    name = f"NUMBER({col.precision}, {scale})"

    def conv(value: Any) -> Any:
        if type(value) is int and scale == 0:
            if -_INT64 <= value <= _INT64 and len(str(abs(value))) <= digits:
                return value
            raise ValueError(f"{value!r} does not fit {name}")
        d = _decimal(value)
        if scale == 0:
            if d and d.adjusted() >= digits:  # before int(): "1e999999999" would take forever
                raise ValueError(f"{str(value)[:40]} does not fit {name}")
            if d != d.to_integral_value():
                raise ValueError(f"{str(value)[:40]} is not a whole number")
            n = int(d)
            if abs(n) > _INT64 or len(str(abs(n))) > digits:
                raise ValueError(f"{value!r} does not fit {name}")
            return n
        exponent = d.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -scale:  # more places than the column keeps
            d = d.quantize(exp, rounding=ROUND_HALF_EVEN, context=_WIDE)
        if d and d.adjusted() >= digits:
            raise ValueError(f"{str(value)[:40]} does not fit {name}")
        return d

    return conv


def _float(col: Column) -> Callable[[Any], Any]:
    def conv(value: Any) -> float:
        if isinstance(value, bool):
            raise TypeError("expected a number, got a boolean")
        f = float(value)
        if math.isnan(f) and not isinstance(value, float):
            raise ValueError(f"{str(value)[:40]!r} is not a number")
        return f

    return conv


def _boolean(col: Column) -> Callable[[Any], Any]:
    def conv(value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"{str(value)[:40]!r} is not a boolean")

    return conv


def _timestamp(col: Column) -> Callable[[Any], Any]:
    def conv(value: Any) -> datetime:
        if type(value) is str and value.endswith("Z"):  # the pipeline's own format: UTC already
            dt = datetime.fromisoformat(value[:-1])
            if dt.tzinfo is None:
                return dt
        if isinstance(value, datetime):
            dt = value
        elif isinstance(value, str):
            dt = datetime.fromisoformat(value.strip())
        elif isinstance(value, int) and not isinstance(value, bool):
            dt = datetime.fromtimestamp(value / 1000, UTC)  # epoch milliseconds, as the pipeline keeps
        else:
            raise TypeError(f"expected a timestamp, got {type(value).__name__}")
        return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt

    return conv


def _date(col: Column) -> Callable[[Any], Any]:
    def conv(value: Any) -> date:
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            return date.fromisoformat(value.strip()[:10])
        raise TypeError(f"expected a date, got {type(value).__name__}")

    return conv


_CONVERTERS: dict[str, Callable[[Column], Callable[[Any], Any]]] = {
    "STRING": _text,
    "VARIANT": _variant,
    "NUMBER": _number,
    "FLOAT": _float,
    "BOOLEAN": _boolean,
    "TIMESTAMP_NTZ": _timestamp,
    "DATE": _date,
}


@dataclass(frozen=True)
class TableSpec:
    """A target table as the loader sees it: columns (in DDL order), natural key, merge policy."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    revision: str | None = None  # a column: a row only replaces one with a lower or equal revision
    insert_only: bool = False  # staging: a known key is never rewritten
    loaded_at: bool = True  # the target has a loaded_at column set by the MERGE

    @property
    def fqn(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def landing(self) -> str:
        return f"{self.schema}.{self.name}__landing"

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class RejectedRow:
    """A row Snowflake will never accept: ``index`` is its position in the list given to ``load``."""

    index: int
    row: dict[str, Any]
    error: str


@dataclass
class LoadResult:
    table: str
    rows: int
    inserted: int = 0
    updated: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    attempts: int = 0  # COPY + MERGE round trips (more than one when a batch was bisected)
    seconds: float = 0.0

    @property
    def accepted(self) -> int:
        """Rows Snowflake took (merged, or de-duplicated against a row it already had)."""
        return self.rows - len(self.rejected)


@dataclass
class _Batch:
    """Rows that passed the Python checks: original positions, rows, converted columns."""

    indices: list[int]
    rows: list[dict[str, Any]]
    columns: list[list[Any]]

    def slice(self, start: int, stop: int) -> _Batch:
        return _Batch(self.indices[start:stop], self.rows[start:stop], [c[start:stop] for c in self.columns])


class _RowDataError(Exception):
    """Snowflake refused the batch because of the data in it (SQLSTATE class 22)."""


ConnFactory = Callable[[], "SnowflakeConnection"]


class BulkLoader:
    """Loads batches of row dicts into Snowflake tables through stage + COPY + MERGE.

    ``conn_factory`` returns an open connection (a :class:`~finops_app.sinks.connection.Connector`
    or any callable); if it has ``invalidate()``, it is called after a connection failure. One
    loader is used by one thread at a time.
    """

    def __init__(
        self, conn_factory: ConnFactory, *, stage: str = STAGE, workdir: Path | str | None = None
    ) -> None:
        self.conn_factory = conn_factory
        self.stage = stage
        self.workdir = Path(workdir or Path(tempfile.gettempdir()) / "finops-sink")
        self._ready: set[str] = set()

    # -- public ---------------------------------------------------------------------------------

    def load(self, spec: TableSpec, rows: Sequence[dict[str, Any]]) -> LoadResult:
        started = time.perf_counter()
        result = LoadResult(table=spec.fqn, rows=len(rows))
        if rows:
            good, result.rejected = self._convert(spec, rows)
            if good.rows:
                self._ensure(spec)
                self._bisect(spec, good, result)
        result.rejected.sort(key=lambda r: r.index)
        result.seconds = time.perf_counter() - started
        return result

    # -- conversion -----------------------------------------------------------------------------

    def _convert(self, spec: TableSpec, rows: Sequence[dict[str, Any]]) -> tuple[_Batch, list[RejectedRow]]:
        """Every column converted (a fast pass, then row by row where a value fails)."""
        errors: dict[int, str] = {}
        columns: list[list[Any]] = []
        for col in spec.columns:
            conv, name = converter(col), col.name
            try:
                values = [conv(row.get(name)) for row in rows]
            except (ValueError, TypeError, ArithmeticError):
                values = []
                for i, row in enumerate(rows):
                    try:
                        values.append(conv(row.get(name)))
                    except (ValueError, TypeError, ArithmeticError) as exc:
                        values.append(None)
                        errors.setdefault(i, f"{name}: {exc}")
            columns.append(values)
        rejected = [RejectedRow(i, dict(rows[i]), err) for i, err in sorted(errors.items())]
        keep = [i for i in range(len(rows)) if i not in errors]
        if errors:
            columns = [[values[i] for i in keep] for values in columns]
        return _Batch(keep, [rows[i] for i in keep], columns), rejected

    def _parquet(self, spec: TableSpec, batch: _Batch) -> tuple[str, bytes]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        digest = hashlib.sha256(spec.fqn.encode())
        for row in batch.rows:
            digest.update(orjson.dumps(row, default=str, option=orjson.OPT_SORT_KEYS))
        batch_id = digest.hexdigest()[:32]
        n = len(batch.rows)
        arrays = [
            pa.array(values, type=parquet_type(col))
            for col, values in zip(spec.columns, batch.columns, strict=True)
        ]
        arrays += [pa.array([batch_id] * n, pa.string()), pa.array(range(n), pa.int64())]
        table = pa.Table.from_arrays(arrays, names=[*spec.column_names(), "_batch", "_seq"])
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="snappy")
        return batch_id, buf.getvalue()

    # -- loading --------------------------------------------------------------------------------

    def _bisect(self, spec: TableSpec, batch: _Batch, result: LoadResult) -> None:
        try:
            self._load_once(spec, batch, result)
        except _RowDataError as exc:
            if len(batch.rows) == 1:
                index, row = batch.indices[0], batch.rows[0]
                logger.warning("%s: row %d rejected by Snowflake: %s", spec.fqn, index, exc)
                result.rejected.append(RejectedRow(index, dict(row), str(exc)))
                return
            mid = len(batch.rows) // 2
            self._bisect(spec, batch.slice(0, mid), result)  # earlier rows first: later rows still win
            self._bisect(spec, batch.slice(mid, len(batch.rows)), result)

    def _load_once(self, spec: TableSpec, batch: _Batch, result: LoadResult) -> None:
        result.attempts += 1
        batch_id, data = self._parquet(spec, batch)
        prefix = f"{spec.schema}__{spec.name}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"{prefix}-{batch_id}.parquet"
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        partial.write_bytes(data)
        os.replace(partial, path)  # atomic: a PUT never sees half a file
        conn = self._conn()
        cur = conn.cursor()
        landed = False
        try:
            self._run(
                cur,
                f"PUT 'file://{path.as_posix()}' @{self.stage}/{prefix} "
                "AUTO_COMPRESS = FALSE OVERWRITE = TRUE",
                spec,
            )
            copied = self._run(
                cur,
                f"COPY INTO {spec.landing} FROM @{self.stage}/{prefix}/{path.name} "
                "FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE "
                "PURGE = TRUE FORCE = TRUE",
                spec,
            )
            landed = True
            loaded = sum(int(r[3] or 0) for r in copied if len(r) > 3 and str(r[1]).upper() == "LOADED")
            if loaded != len(batch.rows):
                raise SinkError(
                    f"{spec.fqn}: COPY loaded {loaded} of {len(batch.rows)} rows ({copied!r:.200})"
                )
            counts = self._run(cur, merge_sql(spec), spec, {"batch": batch_id}, describe=True)
            result.inserted += counts.get("number of rows inserted", 0)
            result.updated += counts.get("number of rows updated", 0)
        finally:
            try:
                if landed:
                    self._run(
                        cur, f"DELETE FROM {spec.landing} WHERE _batch = %(batch)s", spec, {"batch": batch_id}
                    )
            finally:
                cur.close()
                path.unlink(missing_ok=True)

    def _run(
        self,
        cur: Any,
        sql: str,
        spec: TableSpec,
        params: dict[str, Any] | None = None,
        describe: bool = False,
    ) -> Any:
        """Execute one statement; classify failures as row data errors or SinkErrors."""
        from snowflake.connector import errors

        try:
            cur.execute(sql, params)
            rows = cur.fetchall()
        except errors.ProgrammingError as exc:
            if _is_data_error(exc):
                raise _RowDataError(_first_line(exc)) from None
            self._ready.discard(spec.fqn)  # perhaps a table is missing: check again next time
            verb = sql.split(maxsplit=1)[0]
            hint = MISSING_HINT if getattr(exc, "errno", None) == MISSING_OBJECT else ""
            raise SinkError(f"{spec.fqn}: Snowflake refused {verb}: {_first_line(exc)}{hint}") from None
        except errors.Error as exc:
            self._invalidate(_first_line(exc))
            raise SinkError(f"{spec.fqn}: Snowflake unavailable: {_first_line(exc)}") from None
        if describe:
            names = [d[0].lower() for d in cur.description or ()]
            return {n: int(v or 0) for n, v in zip(names, rows[0] if rows else (), strict=False)}
        return rows

    def _ensure(self, spec: TableSpec) -> None:
        """Create the stage and the landing table if needed (once per loader and table)."""
        if spec.fqn in self._ready:
            return
        from snowflake.connector import errors

        cur = self._conn().cursor()
        try:
            self._run(cur, f"CREATE STAGE IF NOT EXISTS {self.stage}", spec)
            self._run(cur, landing_ddl(spec, replace=False), spec)
            try:
                cur.execute(
                    f"SELECT {', '.join(spec.column_names())}, _batch, _seq FROM {spec.landing} LIMIT 0"
                )
            except errors.ProgrammingError:  # columns changed since it was created: rebuild it
                logger.info("recreating %s: its columns changed", spec.landing)
                self._run(cur, landing_ddl(spec, replace=True), spec)
        finally:
            cur.close()
        self._ready.add(spec.fqn)

    def _conn(self) -> SnowflakeConnection:
        try:
            return self.conn_factory()
        except SinkError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to connect is retryable
            raise SinkError(f"cannot connect to Snowflake: {_first_line(exc)}") from None

    def _invalidate(self, reason: str) -> None:
        invalidate = getattr(self.conn_factory, "invalidate", None)
        if callable(invalidate):
            invalidate(reason)


# -- SQL ----------------------------------------------------------------------------------------


def landing_ddl(spec: TableSpec, replace: bool) -> str:
    cols = ",\n    ".join(f"{c.name} {c.landing_type}" for c in spec.columns)
    head = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE IF NOT EXISTS"
    return f"{head} {spec.landing} (\n    {cols},\n    _batch STRING,\n    _seq NUMBER(10, 0)\n)"


def merge_sql(spec: TableSpec) -> str:
    """MERGE INTO the target from one landing batch (``%(batch)s``), de-duplicated on the key."""
    names = spec.column_names()
    select = [f"PARSE_JSON({c.name}) AS {c.name}" if c.type == "VARIANT" else c.name for c in spec.columns]
    targets = list(names)
    if spec.loaded_at:
        select.append("SYSDATE() AS loaded_at")
        targets.append("loaded_at")
    order = ([f"{spec.revision} DESC"] if spec.revision else []) + ["_seq DESC"]
    on = " AND ".join(f"t.{k} = src.{k}" for k in spec.key)
    sql = (
        f"MERGE INTO {spec.fqn} t USING (\n"
        f"    SELECT {', '.join(select)}\n"
        f"    FROM {spec.landing}\n"
        f"    WHERE _batch = %(batch)s\n"
        f"    QUALIFY ROW_NUMBER() OVER (PARTITION BY {', '.join(spec.key)} "
        f"ORDER BY {', '.join(order)}) = 1\n"
        f") src ON {on}\n"
    )
    if not spec.insert_only:
        cond = f" AND src.{spec.revision} >= t.{spec.revision}" if spec.revision else ""
        sets = ", ".join(f"{c} = src.{c}" for c in targets if c not in spec.key)
        sql += f"WHEN MATCHED{cond} THEN UPDATE SET {sets}\n"
    values = ", ".join(f"src.{c}" for c in targets)
    sql += f"WHEN NOT MATCHED THEN INSERT ({', '.join(targets)}) VALUES ({values})"
    return sql


def _is_data_error(exc: Any) -> bool:
    """True when Snowflake refused a statement because of a value (SQLSTATE 22xxx / 100xxx)."""
    errno = int(getattr(exc, "errno", 0) or 0)
    if errno == _DUPLICATE_SOURCE_ROW:
        return False
    sqlstate = str(getattr(exc, "sqlstate", "") or "")
    return sqlstate.startswith("22") or 100000 <= errno < 101000


MISSING_OBJECT = 2003  # Snowflake's "object does not exist or not authorized" (fakesnow's too)
MISSING_HINT = (
    " (run `finops migrate` with the same FINOPS_SNOWFLAKE_* settings to create the schemas and"
    " tables, or grant the sink's role access to them)"
)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:500] if lines else type(exc).__name__
