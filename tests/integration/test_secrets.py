"""Secret settings never show up where people look: logs, CLI output, health, metrics, dashboard.

- unit level: ``repr``/``str``/``format`` of a Settings and of every Secret-typed field hide the
  value; so do the settings table and the error for a malformed value;
- a real ``finops worker`` (debug logging) with distinctive values for the Snowflake password,
  the private-key passphrase (no key file, so it is inert), the pseudonym key, the web token and
  the AWS secret key does real work: cost and business events on Kafka, business events POSTed
  with the bearer token (and once with a wrong one), rows loaded into the shared fakesnow with
  the password; then none of the values appears in the worker's log file, in ``finops --help``,
  ``finops settings`` (plain and ``--markdown``) and ``finops migrate`` output, or in any answer
  of the web server (health, metrics, dashboard page and assets, result lists, the 401 answer).

``kafka_sasl_password`` only matters on a SASL listener (the shared broker is PLAINTEXT), so it is
covered by the unit-level checks only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from finops_app import topics
from finops_app.config import Secret, Settings, settings_table
from finops_app.errors import ConfigError
from finops_app.sinks.migrate import run_migrations
from tests.support.kafka import produce
from tests.support.workers import Worker, WorkerFactory

SECRET_FIELDS = sorted(
    f.name for f in dataclasses.fields(Settings) if isinstance(getattr(Settings(), f.name), Secret)
)


def secret_values() -> dict[str, str]:
    run = uuid.uuid4().hex
    return {
        "snowflake_password": f"SfPw{run[:12]}Zq",
        "snowflake_private_key_passphrase": f"SfPp{run[12:24]}Zq",
        "pseudonym_key": f"PsKey{run[:10]}Xy",
        "web_token": f"WebTok{run[10:22]}Vw",
        "aws_secret_access_key": f"AwsSk{run[4:20]}Ut",
        "kafka_sasl_password": f"SaslPw{run[8:20]}Rs",
    }


def leaks(text: str, values: dict[str, str]) -> list[str]:
    return [name for name, value in values.items() if value in text]


# -- unit level ----------------------------------------------------------------------------------


def test_every_secret_field_is_covered() -> None:
    assert set(SECRET_FIELDS) == set(secret_values()), SECRET_FIELDS


def test_settings_repr_and_str_hide_every_secret() -> None:
    values = secret_values()
    settings = Settings(**{k: Secret(v) for k, v in values.items()})  # type: ignore[arg-type]
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}", repr(vars(settings))):
        assert not leaks(text, values), text
    assert not leaks(repr({f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}), values)
    for name in SECRET_FIELDS:
        secret = getattr(settings, name)
        assert isinstance(secret, Secret)
        assert secret.get() == values[name]  # the value is there for the code that uses it ...
        for text in (repr(secret), str(secret), f"{secret}", "%s %r" % (secret, secret)):  # noqa: UP031
            assert values[name] not in text, (name, text)  # ... and nowhere else
    env = {f"FINOPS_{k.upper()}": v for k, v in values.items()}
    from_env = Settings.from_env(env)
    assert all(getattr(from_env, k).get() == v for k, v in values.items())
    assert not leaks(repr(from_env), values)
    assert not leaks(repr(settings_table()), values)


def test_a_malformed_value_error_does_not_echo_secrets() -> None:
    values = secret_values()
    env = {f"FINOPS_{k.upper()}": v for k, v in values.items()} | {"FINOPS_WEB_PORT": "not-a-port"}
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert "FINOPS_WEB_PORT" in str(info.value)
    assert not leaks(str(info.value), values)


# -- a real worker ---------------------------------------------------------------------------------


class DebugWorker(Worker):
    """``finops worker -l debug``: the most talkative log is the one that must stay clean."""

    def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
        env.update(self.settings.as_environ())
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "finops_app", "worker", "-l", "debug"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        return self


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")} | settings.as_environ()
    return subprocess.run(
        [sys.executable, "-m", "finops_app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cost(i: int) -> dict[str, Any]:
    return {
        "event_id": f"sec-c{i}",
        "timestamp": f"2026-03-04T09:{i:02d}:00Z",
        "service": "ec2",
        "cost_amount": f"{i + 1}.25",
        "business_unit": "ecommerce",
        "resource_id": f"r-{i % 3}",
    }


def business(i: int) -> dict[str, Any]:
    return {
        "event_id": f"sec-b{i}",
        "timestamp": f"2026-03-04 09:{i:02d}:30",
        "event_type": "feature_usage",
        "user_id": f"user_{i}",
        "feature": "checkout",
        "action": "completed_purchase",
        "revenue_impact": 10 + i,
        "business_unit": "ecommerce",
        "metadata": {"email": f"u{i}@example.com", "order_id": f"o-{i}"},
    }


async def test_no_secret_in_logs_cli_or_web_answers(settings_factory, tmp_path: Path) -> None:
    values = secret_values()
    values.pop("kafka_sasl_password")  # the shared broker is PLAINTEXT: see the module docstring
    settings = settings_factory(
        **{k: Secret(v) for k, v in values.items()},
        sink_batch_rows=200,
        sink_max_age_seconds=0.5,
        sql_jobs_interval_seconds=0,
        log_level="debug",
    )
    outputs: dict[str, str] = {}
    t0 = time.monotonic()

    # the CLI: help, the settings table, and a command that logs in to Snowflake with the password
    for args in (("--help",), ("settings",), ("settings", "--markdown"), ("migrate",)):
        done = await asyncio.to_thread(cli, settings, *args)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        outputs["finops " + " ".join(args)] = done.stdout + done.stderr
    assert "applied" in outputs["finops migrate"]
    await asyncio.to_thread(run_migrations, settings)  # no-op now: migrate applied everything
    t_cli = time.monotonic() - t0

    workers = WorkerFactory(tmp_path)
    worker = DebugWorker(settings, tmp_path / "worker-debug.log")
    workers.workers.append(worker)
    try:
        worker.start()
        worker.wait_healthy()
        costs = [cost(i) for i in range(12)]
        await produce(settings, topics.COST_EVENTS, [(str(e["resource_id"]), e) for e in costs])
        await produce(settings, topics.BUSINESS_EVENTS_RAW, [(f"user_{i}", business(i)) for i in range(6)])
        url = worker.url + "/finops/business-events/"
        body = json.dumps([business(i) for i in range(6, 10)]).encode()
        status, text = await asyncio.to_thread(
            http,
            url,
            body,
            {"Content-Type": "application/json", "Authorization": f"Bearer {values['web_token']}"},
        )
        assert status == 202, text
        status, denied = await asyncio.to_thread(
            http, url, body, {"Content-Type": "application/json", "Authorization": "Bearer wrong"}
        )
        assert status == 401
        outputs["POST 401 answer"] = denied

        # wait until the sink has loaded rows into Snowflake (it logged in with the password)
        deadline = time.monotonic() + 90
        sink: dict[str, Any] = {}
        while time.monotonic() < deadline:
            _, health = worker.get("/finops/health/")
            sink = (health.get("sink") or {}) if isinstance(health, dict) else {}
            if sink.get("rows_loaded", 0) >= 12 + 10 and sink.get("buffered_rows", 1) == 0:
                break
            await asyncio.sleep(1)
        assert sink.get("rows_loaded", 0) >= 22 and sink.get("connected"), (sink, worker.log_tail())

        paths = [
            "/finops/health/",
            "/metrics",
            "/dashboard/",
            "/dashboard/static/dashboard.js",
            "/dashboard/static/dashboard.css",
            "/finops/business-events/",
            "/finops/kpis/",
            "/finops/windows/",
            "/finops/roi/",
            "/finops/anomalies/?status=all",
            "/finops/recommendations/",
            "/finops/budgets/",
            "/finops/deadletters/",
        ]
        for path in paths:
            status, text = await asyncio.to_thread(http, worker.url + path)
            assert status < 500 or path == "/finops/health/", (path, status, text[:500])
            outputs[f"GET {path}"] = text
        assert "<html" in outputs["GET /dashboard/"].lower()
        assert "finops_" in outputs["GET /metrics"]
    finally:
        workers.stop_all()
    log = worker.log_path.read_text(errors="replace")
    assert "DEBUG" in log or "debug" in log.lower()  # the log really is the talkative one
    assert "connected to Snowflake" in log  # the password was used by this process
    outputs["worker log (debug)"] = log

    found = {where: leaks(text, values) for where, text in outputs.items()}
    assert not {k: v for k, v in found.items() if v}, f"secret values found: {found}"
    print(
        f"checked {len(outputs)} outputs ({sum(map(len, outputs.values()))} chars); "
        f"cli {t_cli:.1f}s, total {time.monotonic() - t0:.1f}s"
    )
