"""Business events over HTTP: POST ``/finops/business-events/`` -> finops.business.events.

The body is one JSON event or a JSON array of them. Every item is validated by
``core.validate.parse_business``; if all are valid they are pseudonymised (user id as a keyed
hash, metadata scrubbed) before they leave this boundary, produced, and acknowledged by Kafka,
and the answer is ``202 {"accepted": n}``. If any item is invalid nothing is produced and the
answer is ``400`` with one error per bad item (index, field, reason): the client fixes and
re-sends the batch, and event ids make the re-send idempotent downstream. A body over
``FINOPS_HTTP_MAX_BODY_BYTES`` gets 413; a configured ``FINOPS_WEB_TOKEN`` is required as a
bearer token (401 otherwise).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import replace
from typing import Any

import orjson
from faust.web import Request, Response, View

from finops_app.context import Context
from finops_app.core.privacy import protect_business
from finops_app.core.validate import load_json, parse_business
from finops_app.errors import ValidationError

logger = logging.getLogger(__name__)
PATH = "/finops/business-events/"


def check_token(ctx: Context, request: Request) -> str | None:
    """None when the request may proceed, else the reason it may not."""
    token = ctx.settings.web_token.get()
    if not token:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return "missing or wrong bearer token: send 'Authorization: Bearer <FINOPS_WEB_TOKEN>'"
    return None


def validate_items(ctx: Context, body: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(valid protected events, per-item errors) for a request body."""
    try:
        doc = load_json(body, replace(ctx.limits, max_bytes=ctx.settings.http_max_body_bytes))
    except ValidationError as exc:
        return [], [{"index": None, "field": None, "error": str(exc)}]
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        return [], [{"index": None, "field": None, "error": "empty array: send at least one event"}]
    if len(items) > ctx.settings.http_max_items:
        return [], [
            {
                "index": None,
                "field": None,
                "error": f"{len(items)} events in one request; at most {ctx.settings.http_max_items}",
            }
        ]
    good, errors = [], []
    for i, item in enumerate(items):
        try:
            event = parse_business(item, ctx.limits)
        except ValidationError as exc:
            errors.append({"index": i, "field": exc.field, "error": exc.reason})
            continue
        event["source"] = "http"
        good.append(protect_business(event, ctx.settings))
    return good, errors


def register(ctx: Context) -> None:
    app, settings, topics, metrics = ctx.app, ctx.settings, ctx.topics, ctx.metrics
    limit = settings.http_max_body_bytes

    @app.page(PATH)
    class BusinessEvents(View):
        """POST business events (one object or an array); GET explains the endpoint."""

        async def get(self, request: Request) -> Response:
            return self.json(
                {
                    "post": PATH,
                    "body": "one business event or a JSON array of them",
                    "max_body_bytes": limit,
                    "max_items": settings.http_max_items,
                }
            )

        async def post(self, request: Request) -> Response:
            reason = check_token(ctx, request)
            if reason is not None:
                return self.json({"error": reason}, status=401)
            declared = request.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                return self.json({"error": f"body of {declared} bytes exceeds {limit} bytes"}, status=413)
            body = await request.content.read(limit + 1)  # type: ignore[attr-defined]
            if len(body) > limit:
                return self.json({"error": f"body exceeds {limit} bytes"}, status=413)
            good, errors = validate_items(ctx, body)
            metrics.inc("http_requests_total", labels={"status": "400" if errors else "202"})
            if errors:
                metrics.inc("http_events_rejected_total", len(errors))
                return self.json({"accepted": 0, "rejected": len(errors), "errors": errors}, status=400)
            futures = [await ctx.send(topics.business_events, e["user_id"], orjson.dumps(e)) for e in good]
            await asyncio.gather(*futures)  # 202 only once Kafka acknowledged every event
            metrics.inc("events_in_total", len(good), labels={"topic": "http"})
            return self.json({"accepted": len(good), "rejected": 0}, status=202)
