"""Fixtures shared by every tier: a clean environment, the local stack, settings and workers.

- ``clean_env`` (autouse): strips FINOPS_* and Faust's own variables, which would silently
  override the settings a test builds.
- ``stack`` (session): the running local stack (``dev/stack up``) if there is one, else a private
  one started under ``var/test-stack`` on free ports and stopped at the end.
- ``settings_factory``: Settings bound to the stack with a unique app id, topic prefix and data
  directory per call, so tests never see each other's topics or tables.
- ``worker_factory``: real ``finops worker`` subprocesses with those settings.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))
sys.path.insert(0, str(ROOT))

import stack as devstack  # noqa: E402  (dev/stack.py)

from finops_app.config import FAUST_ENV, Secret, Settings  # noqa: E402
from tests.support.workers import WorkerFactory  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder: unit, functional or integration."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in ("unit", "functional", "integration"):
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FINOPS_") or name in FAUST_ENV:
            monkeypatch.delenv(name, raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Stack:
    var: Path
    ports: devstack.Ports
    started_here: bool

    @property
    def broker_url(self) -> str:
        return f"kafka://127.0.0.1:{self.ports.kafka}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def snowflake_host(self) -> str:
        return "127.0.0.1"

    @property
    def snowflake_port(self) -> int:
        return self.ports.snowflake

    @property
    def aws_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.moto}"


def _running_dev_stack() -> Stack | None:
    var = ROOT / "var" / "stack"
    if all(devstack.read_pid(var, name) for name in devstack.SERVICES):
        info = devstack.status(var)
        ports = devstack.Ports(
            kafka=int(info["FINOPS_BROKER_URL"].rsplit(":", 1)[1]),
            controller=0,
            snowflake=int(info["FINOPS_SNOWFLAKE_PORT"]),
            moto=int(info["FINOPS_AWS_ENDPOINT_URL"].rsplit(":", 1)[1]),
        )
        return Stack(var=var, ports=ports, started_here=False)
    return None


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    existing = _running_dev_stack()
    if existing is not None:
        yield existing
        return
    var = ROOT / "var" / "test-stack"
    devstack.down(var)
    # a fresh broker per session: the topics of earlier local sessions piled up (thousands of
    # partitions), made topic creation and metadata slow, and new consumer groups then often started
    # without partitions (a CI clone always starts empty)
    shutil.rmtree(var, ignore_errors=True)
    ports = devstack.Ports(
        kafka=_free_port(), controller=_free_port(), snowflake=_free_port(), moto=_free_port()
    )
    devstack.up(var, ports)
    try:
        yield Stack(var=var, ports=ports, started_here=True)
    finally:
        devstack.down(var)


@pytest.fixture(scope="session")
def snowflake_server(stack: Stack) -> Stack:
    return stack


@pytest.fixture(scope="session")
def aws_endpoint_url(stack: Stack) -> str:
    return stack.aws_endpoint_url


@pytest.fixture
def settings_factory(stack: Stack, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings for the stack; each call gets its own app id, topic prefix and data dir."""

    def make(**overrides: object) -> Settings:
        run = uuid.uuid4().hex[:8]
        values: dict[str, object] = {
            "app_id": f"t{run}",
            "topic_prefix": f"t{run}.",
            "broker_url": stack.broker_url,
            "data_dir": tmp_path / f"data-{run}",
            "web_port": _free_port(),
            "topic_partitions": 2,
            "snowflake_host": stack.snowflake_host,
            "snowflake_port": stack.snowflake_port,
            "snowflake_database": f"T{run.upper()}",
            "aws_endpoint_url": stack.aws_endpoint_url,
            "aws_access_key_id": "test",
            "aws_secret_access_key": Secret("test"),
            "idle_timeout_seconds": 2.0,
            "batch_within_seconds": 0.02,
        }
        if os.environ.get("TEST_INTAKE_PROCESS"):  # run the suite with intake in or out of process
            values["intake_process"] = os.environ["TEST_INTAKE_PROCESS"] == "1"
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()
