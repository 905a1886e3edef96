"""A request in, ``None`` (go ahead) or a 401 JSON response out: the bearer token of state-changing views.

When ``FINOPS_WEB_TOKEN`` is set, a state-changing endpoint calls ``require_token(ctx, request)``
first and returns the response it gets, if any::

    denied = require_token(ctx, request)
    if denied is not None:
        return denied

The comparison takes constant time; the token never reaches a log line or a response.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from faust.web import Response

from finops_app.context import Context

logger = logging.getLogger(__name__)

REALM = 'Bearer realm="finops"'


def token_problem(expected: str, authorization: str | None) -> str | None:
    """Why ``authorization`` (the header's value) does not carry ``expected``; None when it does."""
    if not expected:
        return None
    if not authorization:
        return "this endpoint needs an 'Authorization: Bearer <token>' header (FINOPS_WEB_TOKEN is set)"
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "the Authorization header must be 'Bearer <token>'"
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return "the bearer token is not valid"
    return None


def require_token(ctx: Context, request: Any) -> Response | None:
    """None when the request may proceed, else a 401 response saying what is missing."""
    problem = token_problem(ctx.settings.web_token.get(), request.headers.get("Authorization"))
    if problem is None:
        return None
    remote = getattr(request, "remote", None)
    logger.warning("refused %s %s from %s: %s", request.method, request.path, remote, problem)
    response: Response = ctx.app.web.json(
        {"error": "unauthorized", "detail": problem}, status=401, headers={"WWW-Authenticate": REALM}
    )
    return response
