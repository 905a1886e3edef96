"""Numbered SQL files in, applied schema out: ``sql/NNN_*.sql`` in order, each once, with a checksum.

Every applied file is recorded in ``finops_meta.schema_migrations`` (file name, SHA-256 of its
bytes, time). A second run applies nothing; a new file is applied; an applied file whose bytes
changed is an error (add a new numbered file instead of editing an applied one). Files are
idempotent on their own (IF NOT EXISTS / CREATE OR REPLACE VIEW), so a run interrupted halfway is
simply repeated.

``sql/snowflake_only/`` holds what the local emulator cannot run (tasks, procedures); it is applied
only when asked (``include_snowflake_only=True``), after the numbered files.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from finops_app.errors import FinOpsError

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

    from finops_app.config import Settings

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
SNOWFLAKE_ONLY = "snowflake_only"
_NUMBERED = re.compile(r"^\d{3}_[\w.-]+\.sql$")

_BOOTSTRAP = (
    "CREATE SCHEMA IF NOT EXISTS finops_meta",
    """CREATE TABLE IF NOT EXISTS finops_meta.schema_migrations (
        filename   STRING NOT NULL,
        checksum   STRING NOT NULL,
        applied_at TIMESTAMP_NTZ,
        PRIMARY KEY (filename)
    )""",
)


class MigrationError(FinOpsError, RuntimeError):
    """An applied migration file changed, or a statement of a migration failed."""


def migration_files(sql_dir: Path, include_snowflake_only: bool = False) -> list[tuple[str, Path]]:
    """(recorded name, path) of every migration, in the order they apply."""
    files = [(p.name, p) for p in sorted(sql_dir.iterdir()) if p.is_file() and _NUMBERED.match(p.name)]
    extra = sql_dir / SNOWFLAKE_ONLY
    if include_snowflake_only and extra.is_dir():
        files += [
            (f"{SNOWFLAKE_ONLY}/{p.name}", p)
            for p in sorted(extra.iterdir())
            if p.is_file() and _NUMBERED.match(p.name)
        ]
    return files


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def statements(text: str) -> list[str]:
    """Split a SQL script the way the Snowflake connector does (comments, quotes, $$ bodies)."""
    from snowflake.connector.util_text import split_statements

    out = []
    for raw, _is_put_or_get in split_statements(io.StringIO(text), remove_comments=True):
        stmt = raw.strip().rstrip(";").strip()
        if stmt:
            out.append(stmt)
    return out


def applied(conn: SnowflakeConnection) -> dict[str, str]:
    """File name -> checksum of every recorded migration."""
    cur = conn.cursor()
    try:
        for stmt in _BOOTSTRAP:
            cur.execute(stmt)
        cur.execute("SELECT filename, checksum FROM finops_meta.schema_migrations")
        return {str(name): str(digest) for name, digest in cur.fetchall()}
    finally:
        cur.close()


def migrate(
    conn: SnowflakeConnection, sql_dir: Path | str = SQL_DIR, *, include_snowflake_only: bool = False
) -> list[str]:
    """Apply the migrations of ``sql_dir`` not applied yet; return the names applied by this run."""
    sql_dir = Path(sql_dir)
    done = applied(conn)
    pending: list[tuple[str, Path, str]] = []
    for name, path in migration_files(sql_dir, include_snowflake_only):
        digest = checksum(path)
        if name in done:
            if done[name] != digest:
                raise MigrationError(
                    f"{name} was applied with checksum {done[name][:12]}… but now reads {digest[:12]}…: "
                    "applied migrations must not change; add a new numbered file instead"
                )
            continue
        pending.append((name, path, digest))
    ran: list[str] = []
    cur = conn.cursor()
    try:
        for name, path, digest in pending:
            for i, stmt in enumerate(statements(path.read_text(encoding="utf-8")), 1):
                try:
                    cur.execute(stmt)
                except Exception as exc:
                    raise MigrationError(f"{name}, statement {i}: {exc}") from exc
            cur.execute(
                "INSERT INTO finops_meta.schema_migrations (filename, checksum, applied_at) "
                "SELECT %(name)s, %(digest)s, SYSDATE()",
                {"name": name, "digest": digest},
            )
            logger.info("applied migration %s", name)
            ran.append(name)
    finally:
        cur.close()
    return ran


def run_migrations(
    settings: Settings, sql_dir: Path | str = SQL_DIR, *, include_snowflake_only: bool = False
) -> list[str]:
    """``finops migrate``: connect with ``settings``, apply pending migrations, return their names."""
    from finops_app.sinks.connection import connect

    conn = connect(settings)
    try:
        return migrate(conn, sql_dir, include_snowflake_only=include_snowflake_only)
    finally:
        conn.close()
