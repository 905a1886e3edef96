"""A bare Faust agent: how fast can ANY Faust agent read a pre-filled topic on this machine?

    BENCH_BARE_BROKER=kafka://127.0.0.1:9092 BENCH_BARE_TOPIC=<topic> BENCH_BARE_N=100000 \\
    BENCH_BARE_APP_ID=<unique id> BENCH_BARE_OUT=/tmp/bare.json [BENCH_BARE_FIX=true] \\
        .venv/bin/python bench/faust_bare.py worker -l warn

(`faust worker -l` takes crit, error, warn, info or debug.) bench/pipeline.py runs it as a
subprocess in its baseline phase, once with stock faust-streaming and once with
``finops_app.faust_fixes.install(True)``.

One agent iterates ``stream.take_events(batch, within)`` on the topic (raw values, no model),
``orjson.loads`` every value (as the raw aiokafka baseline decodes) and counts; nothing else. The
app uses the Faust settings of ``finops_app.app.create_app`` that matter for consumption
(stream_buffer_maxsize, broker_commit_every, broker_commit_interval, earliest offsets) with a
memory store and no web server. When N records have been seen it writes a JSON file and exits
with ``os._exit(0)`` (no shutdown to wait for):

- ``msgs_per_s`` = records after the first batch / seconds from the first batch to the last (the
  first batch is handed over only when it is full, so its records and Faust's start-up are out);
- ``cpu_seconds``, ``cpu_us_per_record``: process CPU time over the same interval (all threads);
- ``runqueue_wait_s``: time the process was runnable but waiting for a CPU (schedstat) meanwhile.

While it runs it rewrites the file (``complete: false``) about once a second, so a run stopped by
its timeout still leaves a partial figure. The app id must be unique per run (the consumer group
keeps its offsets); the process ends itself after BENCH_BARE_TIMEOUT seconds as a last resort.

Environment: BENCH_BARE_BROKER, BENCH_BARE_TOPIC, BENCH_BARE_N, BENCH_BARE_APP_ID, BENCH_BARE_OUT
(required); BENCH_BARE_FIX (false), BENCH_BARE_BATCH (2000), BENCH_BARE_WITHIN (0.05),
BENCH_BARE_PARTITIONS (4), BENCH_BARE_DATADIR (./<app id>-data), BENCH_BARE_TIMEOUT (120).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

T_START = time.monotonic()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faust  # noqa: E402
import orjson  # noqa: E402

from finops_app import faust_fixes  # noqa: E402


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get("BENCH_BARE_" + name, default)
    if value is None:
        sys.exit(f"faust_bare: BENCH_BARE_{name} is not set")
    return value


BROKER = env("BROKER")
TOPIC = env("TOPIC")
N = int(env("N"))
APP_ID = env("APP_ID")
OUT = Path(env("OUT"))
FIX = env("FIX", "false").strip().lower() in ("1", "true", "yes", "on")
BATCH = int(env("BATCH", "2000"))
WITHIN = float(env("WITHIN", "0.05"))
PARTITIONS = int(env("PARTITIONS", "4"))
DATADIR = env("DATADIR", f"{APP_ID}-data")
TIMEOUT = float(env("TIMEOUT", "120"))

faust_fixes.install(FIX)

app = faust.App(
    APP_ID,
    broker=BROKER,
    store="memory://",
    datadir=DATADIR,
    web_enabled=False,
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    topic_allow_declare=True,  # only Faust's own leader topic (<app id>-__assignor-__leader) is created
    consumer_auto_offset_reset="earliest",
    stream_buffer_maxsize=8192,
    broker_commit_every=10_000,
    broker_commit_interval=1.0,
    autodiscover=False,
    loghandlers=[],
)
topic = app.topic(TOPIC, key_serializer="raw", value_serializer="raw")


def schedstat_wait_s() -> float | None:
    """Seconds this process's threads spent runnable but waiting for a CPU."""
    total = 0
    try:
        for task in Path("/proc/self/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        return None
    return total / 1e9


class Counter:
    def __init__(self) -> None:
        self.records = 0
        self.first_batch = 0
        self.t_first: float | None = None
        self.cpu_first = 0.0
        self.wait_first: float | None = None
        self.last_write = 0.0

    def result(self, complete: bool) -> dict[str, Any]:
        now, cpu, wait = time.monotonic(), time.process_time(), schedstat_wait_s()
        out: dict[str, Any] = {
            "complete": complete,
            "records": self.records,
            "fix_installed": faust_fixes.installed(),
            "batch_size": BATCH,
            "within_s": WITHIN,
            "faust": getattr(faust, "__version__", "?"),
            "cpu_seconds_process": round(cpu, 2),
            "seconds_since_start": round(now - T_START, 2),
        }
        if self.t_first is None:
            return out
        measured = self.records - self.first_batch
        seconds = now - self.t_first
        cpu_s = cpu - self.cpu_first
        out.update(
            first_batch_records=self.first_batch,
            first_batch_after_start_s=round(self.t_first - T_START, 2),
            measured_records=measured,
            seconds=round(seconds, 3),
            msgs_per_s=round(measured / seconds, 1) if seconds > 0 else None,
            cpu_seconds=round(cpu_s, 2),
            cpu_us_per_record=round(cpu_s / measured * 1e6, 1) if measured > 0 else None,
            cpu_cores=round(cpu_s / seconds, 2) if seconds > 0 else None,
            runqueue_wait_s=(
                round(wait - self.wait_first, 2) if wait is not None and self.wait_first is not None else None
            ),
        )
        return out

    def write(self, complete: bool) -> None:
        tmp = OUT.with_name(f"{OUT.name}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(self.result(complete), indent=2) + "\n")
        tmp.replace(OUT)  # the reader never sees half a file
        self.last_write = time.monotonic()


COUNTER = Counter()


@app.agent(topic)  # type: ignore[misc]  # Faust's decorators are untyped
async def bare(stream: Any) -> None:
    c = COUNTER
    loads = orjson.loads
    async for batch in stream.take_events(BATCH, within=WITHIN):
        for event in batch:
            loads(event.value)
        c.records += len(batch)
        if c.t_first is None:
            c.t_first, c.cpu_first, c.wait_first = time.monotonic(), time.process_time(), schedstat_wait_s()
            c.first_batch = len(batch)
        if c.records >= N:
            c.write(complete=True)
            os._exit(0)
        if time.monotonic() - c.last_write >= 1.0:
            c.write(complete=False)


def _watchdog() -> None:
    time.sleep(TIMEOUT)
    try:
        COUNTER.write(complete=False)
    finally:
        os._exit(3)


if __name__ == "__main__":
    threading.Thread(target=_watchdog, name="bare-watchdog", daemon=True).start()
    app.main()
