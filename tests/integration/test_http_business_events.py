"""The business-event endpoint through a real HTTP client against a running worker."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from finops_app import topics
from finops_app.config import Secret
from tests.support.kafka import read_topic

PATH = "/finops/business-events/"


def post(url: str, body: bytes, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + PATH, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def event(i: int, **extra: object) -> dict:
    return {
        "event_id": f"h{i}",
        "timestamp": "2026-03-01 12:00:00",
        "event_type": "feature_usage",
        "user_id": f"user_{i}",
        "feature": "checkout",
        "action": "completed_purchase",
        "revenue_impact": 10 + i,
        "business_unit": "ecommerce",
        "metadata": {"email": "x@y.z"},
        **extra,
    }


async def test_http_endpoint_batches_errors_limits_and_token(settings_factory, worker_factory) -> None:
    settings = settings_factory(web_token=Secret("s3cret-token"), http_max_body_bytes=100_000)
    worker = worker_factory.start(settings)
    worker.wait_healthy()
    url = worker.url

    assert post(url, json.dumps([event(1)]).encode())[0] == 401
    assert post(url, json.dumps([event(1)]).encode(), token="wrong")[0] == 401

    status, body = post(url, json.dumps([event(1), event(2), event(3)]).encode(), token="s3cret-token")
    assert (status, body) == (202, {"accepted": 3, "rejected": 0})
    status, body = post(url, json.dumps(event(4)).encode(), token="s3cret-token")  # a single object
    assert (status, body) == (202, {"accepted": 1, "rejected": 0})

    mixed = [event(5), {**event(6), "revenue_impact": "lots"}, {**event(7), "timestamp": None}]
    status, body = post(url, json.dumps(mixed).encode(), token="s3cret-token")
    assert status == 400 and body["accepted"] == 0 and body["rejected"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "revenue_impact"), (2, "timestamp")]

    status, body = post(url, b"{not json", token="s3cret-token")
    assert status == 400 and "not valid JSON" in body["errors"][0]["error"]
    status, body = post(url, b"[" + b'"x",' * 40_000 + b'"x"]', token="s3cret-token")
    assert status == 413

    produced = await read_topic(settings, topics.BUSINESS_EVENTS, lambda rs: len(rs) >= 4, timeout=30)
    assert sorted(r["event_id"] for r in produced) == ["h1", "h2", "h3", "h4"]
    for r in produced:
        assert r["user_id"].startswith("p_") and "user_" not in r["user_id"]
        assert "email" not in r["metadata"] and r["source"] == "http"
    assert worker.alive()
