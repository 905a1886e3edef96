"""Settings in, Snowflake connection out: a real account (password or key pair) or the local server.

- Key-pair auth: ``FINOPS_SNOWFLAKE_PRIVATE_KEY_FILE`` (PEM, optionally encrypted with
  ``FINOPS_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE``) is loaded with ``cryptography`` and handed to the
  connector as DER (PKCS#8) bytes; the password is then not sent.
- ``FINOPS_SNOWFLAKE_HOST`` set: connect to that host/port/protocol (the local fakesnow server, or
  a private-link host); empty: the account's own host over HTTPS.
- Every session runs with ``TIMEZONE = 'UTC'``: curated times are UTC wall-clock TIMESTAMP_NTZ.

:class:`Connector` is the lazily opened, re-opened-after-failure connection the sink and the jobs
share. Nothing here logs a secret: :func:`describe` is what log lines show.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finops_app.errors import ConfigError, SinkError

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

    from finops_app.config import Settings

logger = logging.getLogger(__name__)

SESSION_PARAMETERS = {"TIMEZONE": "UTC"}


def private_key_der(path: str, passphrase: str = "") -> bytes:
    """Read a PEM private key (encrypted or not) and return it as unencrypted PKCS#8 DER bytes."""
    from cryptography.hazmat.primitives import serialization

    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"FINOPS_SNOWFLAKE_PRIVATE_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as exc:
        # the message says "bad decrypt" / "password was not given" ... never the passphrase itself
        raise ConfigError(
            f"FINOPS_SNOWFLAKE_PRIVATE_KEY_FILE: cannot load the key in {path} "
            f"(wrong or missing FINOPS_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE?): {exc}"
        ) from None
    return key.private_bytes(
        encoding=serialization.Encoding.DER,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def connect_kwargs(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``snowflake.connector.connect`` (contains secrets: never log it)."""
    kwargs: dict[str, Any] = {
        "account": settings.snowflake_account,
        "user": settings.snowflake_user,
        "session_parameters": dict(SESSION_PARAMETERS),
        # every statement qualifies its names; a current schema is still needed by the emulator,
        # whose MERGE keeps a temporary table in it (PUBLIC exists in every Snowflake database)
        "schema": "PUBLIC",
        "application": "finops_app",
        "login_timeout": settings.snowflake_login_timeout_seconds,
        "network_timeout": settings.snowflake_network_timeout_seconds,
    }
    if settings.snowflake_private_key_file:
        kwargs["private_key"] = private_key_der(
            settings.snowflake_private_key_file, settings.snowflake_private_key_passphrase.get()
        )
        kwargs["authenticator"] = "SNOWFLAKE_JWT"
    else:
        kwargs["password"] = settings.snowflake_password.get()
    for name in ("role", "warehouse", "database"):
        value = getattr(settings, f"snowflake_{name}")
        if value:
            kwargs[name] = value
    if settings.snowflake_host:
        kwargs.update(
            host=settings.snowflake_host,
            port=settings.snowflake_port,
            protocol=settings.snowflake_protocol,
        )
    kwargs.update(overrides)
    return kwargs


def describe(settings: Settings) -> str:
    """Where a connection goes, for log lines and errors (no secrets)."""
    where = (
        f"{settings.snowflake_protocol}://{settings.snowflake_host}:{settings.snowflake_port}"
        if settings.snowflake_host
        else f"account {settings.snowflake_account}"
    )
    auth = "key pair" if settings.snowflake_private_key_file else "password"
    return f"{where} as {settings.snowflake_user} ({auth}), database {settings.snowflake_database}"


def connect(settings: Settings, **overrides: Any) -> SnowflakeConnection:
    """Open one connection; connection failures become :class:`SinkError` (retryable)."""
    import snowflake.connector

    kwargs = connect_kwargs(settings, **overrides)
    try:
        return snowflake.connector.connect(**kwargs)
    except snowflake.connector.errors.Error as exc:
        raise SinkError(f"cannot connect to Snowflake at {describe(settings)}: {_brief(exc)}") from None


def _brief(exc: BaseException) -> str:
    """The first line of an error (connector messages can be long)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Connector:
    """A lazily opened connection, re-opened after :meth:`invalidate` (call it after a failure).

    Calling the connector returns the open connection (a connection factory for
    :class:`~finops_app.sinks.loader.BulkLoader`). Thread-safe; the connection itself should be
    used by one thread at a time (the sink runs its loads on a single worker thread).
    """

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self.settings = settings
        self.overrides = overrides
        self._conn: SnowflakeConnection | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def __call__(self) -> SnowflakeConnection:
        with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._conn = None
            try:
                self._conn = connect(self.settings, **self.overrides)
            except SinkError as exc:
                self.last_error = str(exc)
                raise
            logger.info("connected to Snowflake: %s", describe(self.settings))
            self.last_error = None
            return self._conn

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed()

    def invalidate(self, reason: str | None = None) -> None:
        """Drop the connection (it failed); the next call opens a new one."""
        with self._lock:
            conn, self._conn = self._conn, None
            if reason:
                self.last_error = reason
        if conn is not None:
            _close_quietly(conn)

    def close(self) -> None:
        self.invalidate()


def _close_quietly(conn: SnowflakeConnection) -> None:
    try:
        conn.close()
    except Exception as exc:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
        logger.debug("closing a failed Snowflake connection: %s", exc)
