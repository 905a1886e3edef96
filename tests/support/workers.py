"""Real ``finops worker`` subprocesses for integration tests: start, wait healthy, kill, restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from finops_app.config import Settings


class Worker:
    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_")}
        env.update(self.settings.as_environ())
        env.update(self.extra_env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "finops_app", "worker", "-l", "info"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        return self

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def wait_healthy(self, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body = self.get("/finops/health/", timeout=2)
                last = body
                if status == 200:
                    return dict(body)
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.3)
        raise AssertionError(f"worker not healthy after {timeout}s (last: {last}):\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"


class WorkerFactory:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.workers: list[Worker] = []

    def start(self, settings: Settings, extra_env: dict[str, str] | None = None) -> Worker:
        log = self.tmp_path / f"worker-{len(self.workers)}-{settings.web_port}.log"
        worker = Worker(settings, log, extra_env).start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=15)
