"""Sources of cost and utilisation: FOCUS files, AWS Cost Explorer, CloudWatch.

Every source builds *wire* dicts and passes them through ``core.validate`` (``parse_cost`` or
``parse_resource``); nothing here validates on its own. This package module holds what the
sources share: deterministic event ids, the tag -> allocation mapping, and the AWS client
factory with its retry policy (aiobotocore is imported only when a client is made).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlparse

from finops_app.core.validate import MAX_TEXT, UNALLOCATED
from finops_app.errors import SourceError, ValidationError

__all__ = ["allocation_from_tags", "call_with_retry", "create_client", "is_retryable", "stable_id"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[Any]]
OnReject = Callable[[dict[str, Any], ValidationError], None]  # where a source sends invalid records
_THROTTLING = (
    "ThrottlingException Throttling LimitExceededException TooManyRequestsException RequestLimitExceeded"
)
_UNAVAILABLE = (
    "ServiceUnavailable ServiceUnavailableException InternalFailure InternalServerError RequestTimeout"
)
RETRYABLE_CODES = frozenset(f"{_THROTTLING} {_UNAVAILABLE} RequestTimeoutException".split())

_NORMALISE = re.compile(r"[^a-z0-9]")


def stable_id(prefix: str, *parts: object) -> str:
    """A deterministic event id: ``prefix:`` + 40 hex digits of sha256 over the parts.

    Parts are joined with a unit separator so that ``("a", "bc")`` and ``("ab", "c")`` differ;
    ``None`` hashes as an empty field. The same parts give the same id in every process and run.
    """
    joined = "\x1f".join("" if p is None else str(p) for p in parts)
    return f"{prefix}:{hashlib.sha256(joined.encode('utf-8', 'surrogateescape')).hexdigest()[:40]}"


def _norm(key: str) -> str:
    return _NORMALISE.sub("", key.lower())


def _usable(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and bool(str(value).strip())


def _pick(tags: Mapping[str, Any], keys: Iterable[str]) -> str | None:
    """The first non-empty tag value among ``keys``: exact key names first, then the same names
    compared case-, space- and separator-insensitively (``cost_center`` matches ``CostCenter``)."""
    keys = tuple(keys)
    found = next((tags[k] for k in keys if _usable(tags.get(k))), None)
    if found is None:
        by_norm: dict[str, Any] = {}
        for raw_key, value in tags.items():
            if isinstance(raw_key, str) and _usable(value):
                by_norm.setdefault(_norm(raw_key), value)
        found = next((by_norm[n] for n in map(_norm, keys) if n in by_norm), None)
    return None if found is None else str(found).strip()[:MAX_TEXT]  # a long tag must not lose the cost


def allocation_from_tags(tags: Mapping[str, Any] | None, settings: Any) -> dict[str, str]:
    """Resource tags -> ``business_unit``, ``project_id`` and ``environment`` wire fields.

    The tag keys come from ``Settings.tag_business_unit``, ``tag_project`` and
    ``tag_environment``; an untagged resource is ``unallocated`` (kept, never dropped).
    """
    tags = tags or {}
    return {
        "business_unit": _pick(tags, settings.tag_business_unit) or UNALLOCATED,
        "project_id": _pick(tags, settings.tag_project) or UNALLOCATED,
        "environment": _pick(tags, settings.tag_environment) or "unknown",
    }


# -- AWS clients and retries ---------------------------------------------------------------------


def create_client(settings: Any, service: str = "ce", session: Any = None) -> Any:
    """An aiobotocore client context manager (``async with create_client(s, "ce") as ce``).

    Endpoint, region and credentials come from Settings; botocore's own retries are off so that
    :func:`call_with_retry` alone decides. A loopback endpoint (the local moto server) without
    keys gets dummy credentials; otherwise an empty key means the default credential chain.
    """
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    kwargs: dict[str, Any] = {
        # Cost Explorer has a single endpoint, in us-east-1
        "region_name": "us-east-1" if service == "ce" else settings.aws_region,
        "config": AioConfig(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60),
    }
    endpoint = settings.aws_endpoint_url
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if settings.aws_access_key_id:
        kwargs["aws_access_key_id"] = settings.aws_access_key_id
        kwargs["aws_secret_access_key"] = settings.aws_secret_access_key.get()
    elif endpoint and urlparse(endpoint).hostname in ("127.0.0.1", "localhost", "::1"):
        kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = "testing", "testing"
    return (session or get_session()).create_client(service, **kwargs)


def is_retryable(exc: BaseException) -> bool:
    """Throttling, limit, 5xx, timeouts and connection errors are worth another attempt."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return err.get("Code") in RETRYABLE_CODES or int(status or 0) >= 500
    return isinstance(exc, ConnectionError | HTTPClientError | OSError)


def _is_aws_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError | OSError)


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    context: str,
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 20.0,
    sleep: Sleep = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> T:
    """Await ``call()``; retry retryable errors with exponential backoff and full jitter.

    After ``attempts`` tries, or on the first non-retryable AWS error, raise :class:`SourceError`
    naming ``context`` (the request) and the last error. Other exceptions are bugs: they surface
    unchanged. Never swallows an error.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            if not _is_aws_error(exc):
                raise
            if not is_retryable(exc):
                raise SourceError(f"{context}: {type(exc).__name__}: {exc}") from exc
            if attempt == attempts:
                raise SourceError(
                    f"{context}: gave up after {attempts} attempts: {type(exc).__name__}: {exc}"
                ) from exc
            delay = rand() * min(max_delay, base_delay * 2 ** (attempt - 1))
            logger.warning(
                "%s: %s (attempt %d/%d), retrying in %.2fs", context, exc, attempt, attempts, delay
            )
            await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
