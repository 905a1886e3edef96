"""require_token: no token configured lets everything through; otherwise 401 with a clear reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from finops_app.config import Secret
from finops_app.web.auth import REALM, require_token, token_problem


@dataclass
class FakeWeb:
    calls: list[dict[str, Any]] = field(default_factory=list)

    def json(self, value: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Any:
        self.calls.append({"value": value, "status": status, "headers": headers})
        return SimpleNamespace(status=status, body=json.dumps(value), headers=headers)


def ctx_with(token: str) -> Any:
    return SimpleNamespace(
        settings=SimpleNamespace(web_token=Secret(token)), app=SimpleNamespace(web=FakeWeb())
    )


def request(authorization: str | None) -> Any:
    headers = {} if authorization is None else {"Authorization": authorization}
    return SimpleNamespace(
        headers=headers, method="POST", path="/finops/business-events/", remote="127.0.0.1"
    )


def test_no_token_configured_allows_every_request() -> None:
    assert require_token(ctx_with(""), request(None)) is None


def test_the_right_token_passes_whatever_the_scheme_case() -> None:
    assert require_token(ctx_with("s3cret"), request("Bearer s3cret")) is None
    assert require_token(ctx_with("s3cret"), request("bearer  s3cret ")) is None


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "needs an 'Authorization: Bearer <token>' header"),
        ("Basic dXNlcjpwYXNz", "must be 'Bearer <token>'"),
        ("Bearer", "must be 'Bearer <token>'"),
        ("Bearer wrong", "not valid"),
    ],
)
def test_a_missing_or_wrong_token_gets_401_with_the_reason(header: str | None, reason: str) -> None:
    ctx = ctx_with("s3cret")
    response = require_token(ctx, request(header))
    assert response is not None and response.status == 401
    (call,) = ctx.app.web.calls
    assert reason in call["value"]["detail"]
    assert call["headers"]["WWW-Authenticate"] == REALM
    assert "s3cret" not in response.body


def test_token_problem_is_none_only_for_a_match() -> None:
    assert token_problem("", "anything") is None
    assert token_problem("t", "Bearer t") is None
    assert token_problem("t", "Bearer tt") is not None
