"""Kafka connection settings for Faust and for every plain aiokafka client the app creates.

One place turns ``Settings`` (bootstrap servers, TLS files, SASL mechanism and credentials) into
keyword arguments, so the worker, the sink's consumer, the CLI producers and the benchmarks all
connect the same way.
"""

from __future__ import annotations

import ssl
from typing import Any

from finops_app.config import Settings
from finops_app.errors import ConfigError


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A TLS context from the CA/cert/key files, or None for plaintext protocols."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        ctx = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
        if settings.kafka_ssl_certfile:
            ctx.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the Kafka TLS files (FINOPS_KAFKA_SSL_CAFILE / _CERTFILE / _KEYFILE): {exc}"
        ) from None
    return ctx


# How often every client refreshes its metadata (aiokafka's default is 5 minutes). A group leader
# assigns only the topics in its metadata: topics created just before it joined (the preflight
# creates them all on a fresh cluster) could be missing there, and the group then sat without
# partitions until the next refresh (seen for Faust's group in the scaling test, and for the intake
# group in tests/integration/test_agent_failures.py on a broker started a moment before).
METADATA_MAX_AGE_MS = 10_000


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.broker_hosts,
        "security_protocol": settings.kafka_security_protocol,
        "metadata_max_age_ms": METADATA_MAX_AGE_MS,
    }
    ctx = ssl_context(settings)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL"):
        if not settings.kafka_sasl_username:
            raise ConfigError("FINOPS_KAFKA_SASL_USERNAME is required with a SASL security protocol")
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get(),
        )
    return kwargs


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for faust.App (None for plaintext)."""
    import faust

    ctx = ssl_context(settings)
    protocol = settings.kafka_security_protocol
    if protocol == "SSL":
        return faust.SSLCredentials(ctx)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get(),
            ssl_context=ctx,
            mechanism=settings.kafka_sasl_mechanism,
        )
    return None


def topic_name(settings: Settings, name: str) -> str:
    return settings.topic_prefix + name


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create the app's topics that do not exist yet (auto-creation is off); returns those created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    from finops_app import topics

    wanted = [topic_name(settings, n) for n in (names or list(topics.ALL))]
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:  # bad credentials/TLS, or an unreachable broker: say which
        raise await connection_error(settings, exc) from None
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if missing:
            configs = {}
            for n in missing:
                base = n[len(settings.topic_prefix) :]
                if base in topics.RETENTION_MS:
                    configs[n] = {"retention.ms": str(topics.RETENTION_MS[base])}
            await admin.create_topics(
                [
                    NewTopic(
                        n,
                        settings.topic_partitions,
                        settings.topic_replication,
                        topic_configs=configs.get(n, {}),
                    )
                    for n in missing
                ]
            )
        return missing
    finally:
        await admin.close()


async def first_connect_error(settings: Settings) -> BaseException | None:
    """Open one connection to the bootstrap servers exactly as aiokafka does; the first error, or None.

    aiokafka's bootstrap only logs why a server failed (TLS, SASL) and then raises a bare
    ``KafkaConnectionError('Unable to bootstrap from ...')``; this recovers the cause.
    """
    from aiokafka.conn import create_conn

    kwargs = client_kwargs(settings)
    del kwargs["bootstrap_servers"], kwargs["metadata_max_age_ms"]  # client options, not connection ones
    first: BaseException | None = None
    for server in settings.broker_hosts.split(","):
        host, sep, port = server.rpartition(":")
        if not sep:
            host, port = server, "9092"
        try:
            conn = await create_conn(host, int(port), request_timeout_ms=10_000, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the cause we are looking for, whatever it is
            first = first or exc
            continue
        conn.close()
        return None
    return first


def explain(settings: Settings, exc: BaseException) -> Exception:
    """A ConfigError naming the setting to fix (credentials, mechanism, TLS files), else a
    ConnectionError saying where the broker was expected. Never contains the password."""
    from aiokafka.errors import (
        AuthenticationFailedError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    where = f"the Kafka broker at {settings.broker_url}"
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        return ConfigError(
            f"Kafka authentication failed: {where} refused user {settings.kafka_sasl_username!r} "
            f"({settings.kafka_sasl_mechanism}): {exc}. Check FINOPS_KAFKA_SASL_USERNAME, "
            "FINOPS_KAFKA_SASL_PASSWORD and FINOPS_KAFKA_SASL_MECHANISM."
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return ConfigError(
            f"Kafka authentication failed: {exc}. Set FINOPS_KAFKA_SASL_MECHANISM to one of those."
        )
    if isinstance(exc, ssl.SSLError):
        return ConfigError(
            f"TLS handshake with {where} failed: {exc}. Check FINOPS_KAFKA_SSL_CAFILE (the CA that "
            "signed the broker certificate), FINOPS_KAFKA_SSL_CERTFILE / _KEYFILE and "
            "FINOPS_KAFKA_SECURITY_PROTOCOL."
        )
    return ConnectionError(broker_hint(settings, exc))


async def connection_error(settings: Settings, exc: BaseException) -> Exception:
    """The error to raise when an aiokafka client's ``start()`` failed with ``exc``."""
    from aiokafka.errors import KafkaConnectionError

    if isinstance(exc, KafkaConnectionError):  # the bare "Unable to bootstrap": find the cause
        exc = await first_connect_error(settings) or exc
    return explain(settings, exc)


async def check_connection(settings: Settings) -> None:
    """Raise ConfigError/ConnectionError (see ``explain``) unless a bootstrap server lets us in."""
    exc = await first_connect_error(settings)
    if exc is not None:
        raise explain(settings, exc)


def broker_hint(settings: Settings, exc: BaseException | None = None) -> str:
    detail = f" ({exc})" if exc else ""
    return (
        f"cannot reach the Kafka broker at {settings.broker_url}{detail}. Start the local stack with "
        "`dev/stack up`, or point FINOPS_BROKER_URL at your cluster."
    )


def producer(settings: Settings, **overrides: Any) -> Any:
    """An AIOKafkaProducer for CLI commands and tests (acks=all, idempotent, orjson values)."""
    from aiokafka import AIOKafkaProducer

    kwargs: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "max_request_size": 8 * 1024 * 1024,
    }
    kwargs.update(client_kwargs(settings))
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)
