"""Personal data at the boundary: keyed-hash pseudonyms for user ids and metadata scrubbing."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Any

PREFIX = "p_"
_PSEUDONYM = re.compile(r"^p_[0-9a-f]{32}$")


def pseudonymise(value: str, key: str) -> str:
    """A stable pseudonym: HMAC-SHA256 of the value under ``key`` (not reversible without it)."""
    digest = hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:32]


def is_pseudonym(value: str) -> bool:
    return bool(_PSEUDONYM.match(value))


def scrub(
    metadata: Mapping[str, Any], drop: Iterable[str], hash_fields: Iterable[str], key: str
) -> dict[str, Any]:
    """Remove ``drop`` fields and replace ``hash_fields`` by their pseudonym (top level only)."""
    dropped = set(drop)
    hashed = set(hash_fields)
    out: dict[str, Any] = {}
    for name, value in metadata.items():
        if name in dropped:
            continue
        out[name] = pseudonymise(str(value), key) if name in hashed and value is not None else value
    return out


def protect_business(event: dict[str, Any], settings: Any) -> dict[str, Any]:
    """The business event with its user id pseudonymised (once) and metadata scrubbed."""
    key = settings.pseudonym_key.get()
    user = event["user_id"]
    protected = dict(event)
    if user != "anonymous" and not is_pseudonym(user):
        protected["user_id"] = pseudonymise(user, key)
    protected["metadata"] = scrub(
        event.get("metadata") or {}, settings.business_drop_fields, settings.business_hash_fields, key
    )
    return protected
