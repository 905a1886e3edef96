"""Agents through ``agent.test_context()`` on a ``memory://`` store, with sends captured."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from finops_app.app import create_app
from finops_app.config import Settings


class Sent:
    """Every record an agent sent, by topic (values decoded from JSON)."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[Any, Any]]] = {}

    def on(self, topic: str) -> list[Any]:
        return [v for _, v in self.records.get(topic, [])]

    async def wait_for(self, predicate: Callable[[Sent], bool], timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"timed out; sent so far: { {k: len(v) for k, v in self.records.items()} }"
                )
            await asyncio.sleep(0.02)


@pytest.fixture
def app_factory(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    def make(**overrides: Any) -> tuple[Any, Any, Sent]:
        values: dict[str, Any] = {"data_dir": tmp_path, "batch_within_seconds": 0.01, "topic_partitions": 2}
        values.update(overrides)
        app = create_app(Settings(**values))
        app.finalize()
        app.conf.store = "memory://"
        app.flow_control.resume()
        ctx = app.finops  # type: ignore[attr-defined]
        sent = Sent()

        async def send(topic: Any, key: Any, value: bytes, partition: Any = None) -> None:
            decoded = orjson.loads(value) if isinstance(value, bytes) else value
            key = key.decode() if isinstance(key, bytes) else key
            sent.records.setdefault(topic.get_topic_name(), []).append((key, decoded))

        monkeypatch.setattr(ctx, "send", send)
        return app, ctx, sent

    return make
