"""End-to-end benchmarks of the finops pipeline against a real local Kafka (and fakesnow).

    bench/run [--events N] [--pipeline-events M] [--recovery-keys K] [--live-seconds S] ...

One run, under ten minutes on a 2-CPU machine, against the running dev stack (``dev/stack status``)
or a private stack it starts and stops. Every run uses fresh app ids / topic prefixes
(``bench<run id><phase>.``); every phase is bounded by timeouts and the run's time budget.
Figures are printed as they come; bench/results.md, bench/results.json and bench/profile.md are
written at the end (also after a failure or SIGTERM), artefacts (worker logs, py-spy stacks)
under bench/.runs/<run id>/.

1. Raw baselines: N CostEvents shaped like ``finops_app.demo._cost`` (demo fleet, keyed by
   resource_id) produced with ``finops_app.cli.produce_all`` (a plain AIOKafkaProducer) ->
   msgs/s; a plain AIOKafkaConsumer (no group) reads them and orjson-decodes each -> msgs/s.
   Then a bare Faust agent (bench/faust_bare.py: ``take_events`` + orjson.loads, no other work) as
   a worker subprocess reads the first min(N, --bare-events) of them, with stock faust-streaming and
   with ``finops_app.faust_fixes.install(True)`` -> msgs/s and CPU per record: the ceiling of any
   Faust agent on this machine (Faust's per-record delivery cost), which (2) is also compared with.
2. Pipeline: the first M of those events pre-filled into ``<prefix>finops.cost.events``, then
   ONE ``finops worker`` (sink off) drains the backlog. Done = the worker's
   ``finops_events_in_total{topic=<prefix>finops.cost.events}`` reached M AND the committed offsets
   of group ``<app_id>-intake`` on the input and of group ``<app_id>`` on every internal
   ``finops.stream.*`` topic equal their end offsets.
   events/s = M / (done - ready), ready = first 200 with recovery finished from /finops/health/.
   M is sized from the previous run's rate to take ~75 s (at most the N events of (1)); a cap ends
   the drain and reports the events the slower stateful agent applied / elapsed.
   py-spy samples the worker meanwhile (bench/profile.md, via bench/pyspy_summary.py).
3. Latency at half of (2)'s rate: a fresh worker (60 s anomaly buckets, 10 s windows, 1 s
   lateness) warmed with 64 min of event time, then real-time traffic with one cost spike per
   (service, unit) series: anomaly e2e = CostAnomaly received - spike send(); window totals raw
   (from the window's last event) and adjusted (from the event that closes it). Then a short
   low-load segment (0.1 x) as a diagnostic. Baseline: plain producer -> consumer latency.
4. Sink: ``BulkLoader`` rows/s into fakesnow vs executemany + MERGE (as bench/sink_bench.py).
5. Recovery: K records written into ``<app_id>-resource_state-changelog`` in the format the
   worker of (2) wrote to its changelog, then a fresh worker with an empty data dir: process start
   -> healthy with recovery finished; restore time from its log; K = 1,000,000 (the brief's
   table; ``--recovery-keys`` changes it); a restore still running after 300 s reports its rate so
   far and an extrapolation, clearly labelled as such.
6. Peak RSS (VmHWM) of every worker; CPU used and run-queue wait (contention) where it matters.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime as dt
import json
import logging
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "dev"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import orjson  # noqa: E402
import pyspy_summary  # noqa: E402
import stack as devstack  # noqa: E402  (dev/stack.py)
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from finops_app import demo, kafka, topics  # noqa: E402
from finops_app.cli import produce_all  # noqa: E402
from finops_app.config import ENV_PREFIX, FAUST_ENV, Secret, Settings  # noqa: E402
from finops_app.core.validate import iso  # noqa: E402
from finops_app.errors import ConfigError  # noqa: E402

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
for noisy in ("aiokafka", "kafka", "snowflake", "faust", "mode"):
    logging.getLogger(noisy).setLevel(logging.CRITICAL)  # retried metadata/leader errors while topics appear

PY = sys.executable
PYSPY = Path(PY).with_name("py-spy")
TARGET_EVENTS_PER_S = 20_000
TARGET_RAW_SHARE = 1 / 3
TARGET_P99_MS = 250.0


# -- small helpers ----------------------------------------------------------------------------


def say(msg: str = "") -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    data = sorted(values)
    k = max(0, min(len(data) - 1, math.ceil(q / 100 * len(data)) - 1))
    return data[k]


def dist(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p95": pct(values, 95),
        "p99": pct(values, 99),
        "max": max(values) if values else None,
        "mean": statistics.fmean(values) if values else None,
    }


def fmt_ms(d: dict[str, Any] | None) -> str:
    if not d or not d.get("n"):
        return "n/a"
    return f"p50 {d['p50']:.0f} / p95 {d['p95']:.0f} / p99 {d['p99']:.0f} ms (n={d['n']})"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its living descendants (a worker and its intake child process), from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def _own_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _tree_total(pid: int, own: Callable[[int], float | None]) -> float | None:
    """``own(pid)`` plus ``own`` of each living descendant; None when ``pid`` itself is gone."""
    first = own(pid)
    if first is None:
        return None
    return first + sum(own(p) or 0 for p in process_tree(pid)[1:])


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of ``pid`` and its living descendants (a worker's intake child included).

    A child started and ended between two readings is missed (the intake child lives as long as
    its worker unless it crashes, which the worker's log and health report)."""
    return _tree_total(pid, _own_cpu_seconds)


def _own_vm_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def vm_hwm_kb(pid: int) -> int | None:
    """Peak resident memory of ``pid`` plus that of each living descendant (the sum of the peaks:
    an upper bound of the tree's peak, since the processes may peak at different times)."""
    total = _tree_total(pid, _own_vm_hwm_kb)
    return None if total is None else int(total)


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    jars = sorted((ROOT / ".cache" / "kafka" / "libs").glob("kafka_2.13-*.jar"))
    kafka_version = jars[0].name[len("kafka_2.13-") : -len(".jar")] if jars else "unknown"
    import aiokafka
    import faust

    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "kafka": kafka_version,
        "faust": getattr(faust, "__version__", "?"),
        "aiokafka": getattr(aiokafka, "__version__", "?"),
        "kernel": platform.release(),
    }


def code_state() -> dict[str, Any]:
    """The code under test: HEAD commit and uncommitted changes of the package (read-only git calls)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line for line in git("status", "--porcelain", "--", "finops_app").splitlines() if line.strip()]
    return {
        "head": git("rev-parse", "--short", "HEAD"),
        "subject": git("log", "-1", "--format=%s")[:160],
        "uncommitted_package_files": len(dirty),
        "uncommitted": dirty[:40],
    }


def busy_processes(exclude: set[int], top: int = 6) -> list[str]:
    """The busiest other processes right now (documenting concurrent load from other work)."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,rss,args", "--sort=-pcpu", "--no-headers"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or int(parts[0]) in exclude or parts[3].startswith("ps "):
            continue
        if float(parts[1]) < 1.0:
            break
        rows.append(f"pid {parts[0]} {parts[1]}% cpu: {parts[3][:110]}")
        if len(rows) >= top:
            break
    return rows


class Deadline:
    """The run's time budget; phases ask how much is left."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def cap(self, timeout: float, reserve: float = 0.0) -> float:
        return max(1.0, min(timeout, self.left() - reserve))


# -- the stack ------------------------------------------------------------------------------------


@dataclass
class Stack:
    var: Path
    ports: devstack.Ports
    started_here: bool

    @property
    def broker_url(self) -> str:
        return f"kafka://127.0.0.1:{self.ports.kafka}"


def find_or_start_stack(run_dir: Path, private: bool = False) -> Stack:
    var = ROOT / "var" / "stack"
    if not private and all(devstack.read_pid(var, name) for name in devstack.SERVICES):
        info = devstack.status(var)
        ports = devstack.Ports(
            kafka=int(info["FINOPS_BROKER_URL"].rsplit(":", 1)[1]),
            controller=0,
            snowflake=int(info["FINOPS_SNOWFLAKE_PORT"]),
            moto=int(info["FINOPS_AWS_ENDPOINT_URL"].rsplit(":", 1)[1]),
        )
        say(f"using the running dev stack ({var}): Kafka on {ports.kafka}, fakesnow on {ports.snowflake}")
        return Stack(var, ports, started_here=False)
    var = run_dir / "stack"
    ports = devstack.Ports(kafka=free_port(), controller=free_port(), snowflake=free_port(), moto=free_port())
    say(
        f"{'--private-stack' if private else 'no dev stack running'}: starting a private stack under {var} "
        f"(Kafka on {ports.kafka}) ..."
    )
    t0 = time.monotonic()
    STATE.stack = Stack(var, ports, started_here=True)
    devstack.up(var, ports)
    say(f"private stack up in {time.monotonic() - t0:.1f} s")
    return STATE.stack


# -- worker subprocesses ------------------------------------------------------------------------


class Worker:
    """One ``finops worker`` subprocess in its own session (stopped by its process group id)."""

    def __init__(self, settings: Settings, log_path: Path, name: str) -> None:
        self.settings = settings
        self.log_path = log_path
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.t_start = 0.0
        self.t_ready: float | None = None
        self.peak_kb: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.web_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_") and k not in FAUST_ENV}
        env.update(self.settings.as_environ())
        env["PYTHONUNBUFFERED"] = "1"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(
            [PY, "-m", "finops_app", "worker", "-l", "info"],
            cwd=str(ROOT),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        log.close()
        STATE.workers.append(self)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def get(self, session: Any, path: str, timeout: float = 3.0) -> tuple[int, Any]:
        import aiohttp

        async with session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def wait_ready(self, session: Any, timeout: float, poll: float = 0.05) -> float:
        """Seconds from process start until /finops/health/ answers 200 with recovery finished."""
        import aiohttp

        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"worker {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )  # type: ignore[union-attr]
            try:
                status, body = await self.get(session, "/finops/health/", timeout=2)
                last = body
                if status == 200 and isinstance(body, dict) and body.get("recovery_finished"):
                    self.t_ready = time.monotonic()
                    return self.t_ready - self.t_start
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                last = exc
            await asyncio.sleep(poll)
        raise TimeoutError(f"worker {self.name} not healthy after {timeout:.0f}s (last: {str(last)[:300]})")

    async def metrics(self, session: Any) -> dict[str, float]:
        _, text = await self.get(session, "/metrics", timeout=5)
        out: dict[str, float] = {}
        for line in str(text).splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def counter(self, metrics: dict[str, float], name: str, **labels: str) -> float:
        want = (
            "finops_"
            + name
            + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        )
        return metrics.get(want, 0.0)

    def record_peak(self) -> int | None:
        if self.alive():
            kb = vm_hwm_kb(self.pid)
            if kb:
                self.peak_kb = kb
        return self.peak_kb

    def stop(self, timeout: float = 20.0) -> None:
        self.record_peak()
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"


@dataclass
class RunState:
    workers: list[Worker] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stack: Stack | None = None


STATE = RunState()


def cleanup_processes() -> None:
    for w in STATE.workers:
        with contextlib.suppress(Exception):
            w.stop(timeout=10)
    for p in STATE.procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


# -- Kafka helpers --------------------------------------------------------------------------------


async def group_lag(
    admin: AIOKafkaAdminClient, probe: AIOKafkaConsumer, group: str, tps: list[TopicPartition]
) -> int:
    """Sum over ``tps`` of end offset - committed offset of ``group`` (uncommitted = from 0)."""
    committed = await admin.list_consumer_group_offsets(group)
    ends = await probe.end_offsets(tps)
    lag = 0
    for tp in tps:
        meta = committed.get(tp)
        pos = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag += max(0, ends[tp] - pos)
    return lag


async def create_topics(settings: Settings, specs: list[tuple[str, int, dict[str, str]]]) -> None:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, p, 1, topic_configs=c) for n, p, c in specs if n not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def delete_run_topics(settings: Settings, prefix: str) -> int:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        for i in range(0, len(names), 50):
            await admin.delete_topics(names[i : i + 50])
        return len(names)
    finally:
        await admin.close()


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2), as aiokafka and Faust use it for keyed records."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


# -- events ---------------------------------------------------------------------------------------


def cost_events(n: int, end_ms: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """N demo-fleet CostEvents (``demo._cost`` shape), one per resource per minute, ending at end_ms."""
    rng = random.Random(seed)
    fleet = demo.fleet(random.Random(seed))
    _cache_demo_iso()
    steps = math.ceil(n / len(fleet))
    start = end_ms - steps * demo.STEP_MS
    start -= start % demo.STEP_MS
    out: list[tuple[str, bytes]] = []
    order = 0
    for s in range(steps):
        ts = start + s * demo.STEP_MS
        level = demo.traffic(ts)
        for res in fleet:
            if len(out) >= n:
                break
            usage = level if res.service != "s3" else 1.0
            cost = res.hourly / 60 * usage * rng.gauss(1.0, 0.05)
            order += 1
            out.append((res.resource_id, orjson.dumps(demo._cost(res, ts, max(cost, 0.0), order))))
    return out


def _cache_demo_iso() -> None:
    """Memoise ``iso`` as demo._cost sees it (bench process only; same output, ~30x faster generation)."""
    import functools

    if not hasattr(demo.iso, "cache_info"):
        demo.iso = functools.lru_cache(maxsize=65536)(iso)  # type: ignore[attr-defined]


def progress_bar(total: int, desc: str, unit: str = "msg") -> Any:
    try:
        from tqdm import tqdm

        return tqdm(
            total=total, desc=desc, unit=unit, unit_scale=True, mininterval=1.0, leave=False, file=sys.stdout
        )
    except ImportError:  # pragma: no cover

        class _Bar:
            def update(self, n: int) -> None: ...
            def close(self) -> None: ...

        return _Bar()


async def raw_consume(
    settings: Settings, topic: str, n: int, timeout: float, decode: bool = True
) -> dict[str, Any]:
    """A plain AIOKafkaConsumer (no group) reads ``n`` messages of ``topic`` from the start."""
    consumer = AIOKafkaConsumer(
        topic,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka.client_kwargs(settings),
    )
    await consumer.start()
    count = 0
    nbytes = 0
    t0 = time.monotonic()
    c0 = time.process_time()
    deadline = t0 + timeout
    bar = progress_bar(n, "raw consumer")
    try:
        while count < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            got = 0
            for messages in batch.values():
                for m in messages:
                    if decode:
                        orjson.loads(m.value)
                    nbytes += len(m.value or b"")
                    got += 1
            count += got
            bar.update(got)
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - c0
    finally:
        bar.close()
        await consumer.stop()
    return {
        "messages": count,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(count / elapsed, 1) if elapsed > 0 else None,
        "mb_per_s": round(nbytes / elapsed / 1e6, 2) if elapsed > 0 else None,
        "cpu_seconds": round(cpu, 2),
        "msgs_per_cpu_s": round(count / cpu, 1) if cpu > 0 else None,
        "complete": count >= n,
    }


async def produce_records(
    settings: Settings, records: Iterable[tuple[str, str | None, bytes]], total: int, desc: str
) -> dict[str, Any]:
    bar = progress_bar(total, desc)
    t0 = time.monotonic()
    try:
        sent = await produce_all(settings, records, progress=bar.update)
    finally:
        bar.close()
    elapsed = time.monotonic() - t0
    return {"messages": sent, "seconds": round(elapsed, 3), "msgs_per_s": round(sent / elapsed, 1)}


# -- phase 1 + 2: raw baselines and pipeline throughput ---------------------------------------------


def _own_sched_wait_seconds(pid: int) -> float | None:
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[1])
    except OSError:
        return None
    return total / 1e9


def sched_wait_seconds(pid: int) -> float | None:
    """Seconds the threads of ``pid`` and its descendants spent runnable but waiting for a CPU
    (/proc/<pid>/task/*/schedstat)."""
    return _tree_total(pid, _own_sched_wait_seconds)


async def offsets_summary(
    admin: AIOKafkaAdminClient, probe: AIOKafkaConsumer, group: str, names: list[str], partitions: int
) -> dict[str, tuple[int, int]]:
    """topic -> (sum of committed offsets of ``group``, sum of end offsets)."""
    tps = [TopicPartition(t, p) for t in names for p in range(partitions)]
    committed = await admin.list_consumer_group_offsets(group)
    ends = await probe.end_offsets(tps)
    out: dict[str, tuple[int, int]] = {}
    for tp in tps:
        meta = committed.get(tp)
        c = meta.offset if meta is not None and meta.offset >= 0 else 0
        a, b = out.get(tp.topic, (0, 0))
        out[tp.topic] = (a + c, b + ends[tp])
    return out


def previous_results() -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return json.loads((BENCH / "results.json").read_text())
    return {}


async def phase_baseline(cfg: Config, R: dict[str, Any]) -> None:
    s = cfg.settings("b")
    n = cfg.events
    say(f"\n== 1. raw baselines: {n:,} CostEvents (demo fleet, `demo._cost` shape, keyed by resource_id)")
    t0 = time.monotonic()
    events = cost_events(n, int(time.time() * 1000) - 3_600_000)
    avg = sum(len(v) for _, v in events) / len(events)
    say(f"   generated in {time.monotonic() - t0:.1f} s, {avg:.0f} bytes per event")
    await kafka.ensure_topics(s, [topics.COST_EVENTS])
    topic = kafka.topic_name(s, topics.COST_EVENTS)
    prod = await produce_records(
        s, ((topics.COST_EVENTS, k, v) for k, v in events), n, "produce (produce_all)"
    )
    R["producer"] = {**prod, "avg_bytes": round(avg), "topic": topic}
    say(
        "   plain aiokafka producer (produce_all: acks=all, idempotent, linger 5 ms): "
        f"{prod['msgs_per_s']:,.0f} msgs/s ({prod['seconds']} s)"
    )
    cons = await raw_consume(s, topic, n, timeout=cfg.deadline.cap(90, 300))
    R["raw_consumer"] = {**cons, "topic": topic}
    say(f"   plain aiokafka consumer + orjson.loads: {cons['msgs_per_s']:,.0f} msgs/s ({cons['seconds']} s)")
    R["_events"] = events
    save_partial(cfg, R)
    n_bare = min(n, cfg.bare_events)
    if n_bare <= 0:
        return
    bare: dict[str, Any] = {"events": n_bare, "topic": topic}
    R["bare_faust"] = bare
    for variant, fix in (("stock", False), ("fixed", True)):
        res = await bare_faust(cfg, s, topic, n_bare, fix, f"bare{variant}")
        raw = cons.get("msgs_per_s")
        if raw and res.get("msgs_per_s"):
            res["ratio_to_raw_consumer"] = round(res["msgs_per_s"] / raw, 4)
        bare[variant] = res
        label = "stock faust-streaming" if not fix else "with finops_app/faust_fixes.py"
        say(
            f"   bare Faust agent (take_events, no work), {label}: {_n(res.get('msgs_per_s'))} msgs/s "
            f"({res.get('seconds')} s for {_n(res.get('measured_records'))} records after the first batch; "
            f"{res.get('cpu_us_per_record')} µs CPU per record"
            + ("" if res.get("complete") else f"; INCOMPLETE: {res.get('note')}")
            + ")"
        )
        save_partial(cfg, R)


async def bare_faust(cfg: Config, s: Settings, topic: str, n: int, fix: bool, suffix: str) -> dict[str, Any]:
    """bench/faust_bare.py as a worker subprocess on ``topic`` until it has read ``n`` records.

    Its own app id (consumer group) per variant and run; bounded by a timeout, after which the
    process is stopped by its PID and the last progress it wrote (about every second) is reported.
    """
    app_id = f"{s.app_id}{suffix}"
    out = cfg.run_dir / f"faust-{suffix}.json"
    out.unlink(missing_ok=True)
    timeout = cfg.deadline.cap(cfg.bare_timeout, 300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINOPS_") and k not in FAUST_ENV}
    env.update(
        PYTHONUNBUFFERED="1",
        BENCH_BARE_BROKER=s.faust_broker_url,
        BENCH_BARE_TOPIC=topic,
        BENCH_BARE_N=str(n),
        BENCH_BARE_APP_ID=app_id,
        BENCH_BARE_OUT=str(out),
        BENCH_BARE_FIX="true" if fix else "false",
        BENCH_BARE_BATCH=str(s.batch_size),
        BENCH_BARE_WITHIN=str(s.batch_within_seconds),
        BENCH_BARE_PARTITIONS=str(s.topic_partitions),
        BENCH_BARE_DATADIR=str(cfg.run_dir / f"data-{app_id}"),
        BENCH_BARE_TIMEOUT=str(round(timeout + 10)),  # its own last resort, after ours
    )
    log_path = cfg.run_dir / f"faust-{suffix}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [PY, str(BENCH / "faust_bare.py"), "worker", "-l", "warn"],
            cwd=str(ROOT),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    STATE.procs.append(proc)
    t0 = time.monotonic()
    peak_kb: int | None = None
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        peak_kb = vm_hwm_kb(proc.pid) or peak_kb
        await asyncio.sleep(0.2)
    timed_out = proc.poll() is None
    if timed_out:  # stop it by its PID: SIGTERM, then SIGKILL
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    res: dict[str, Any] = {"fix": fix, "app_id": app_id, "returncode": proc.returncode}
    with contextlib.suppress(OSError, ValueError):
        res.update(json.loads(out.read_text()))
    res["wall_seconds_process"] = round(time.monotonic() - t0, 2)
    res["peak_rss_mib"] = round(peak_kb / 1024, 1) if peak_kb else None
    if not res.get("complete"):
        res["complete"] = False
        res["note"] = (
            f"stopped after the {timeout:.0f} s timeout" if timed_out else f"exited with {proc.returncode}"
        ) + f" having read {_n(res.get('records', 0))} of {n:,} records (log: {log_path.relative_to(ROOT)})"
        if not res.get("records"):
            tail = log_path.read_text(errors="replace")[-1500:]
            say(f"   !! bare Faust agent ({suffix}) read nothing; log tail:\n{tail}")
    return res


async def phase_pipeline(
    cfg: Config,
    R: dict[str, Any],
    key: str = "pipeline",
    suffix: str = "p",
    overrides: dict[str, Any] | None = None,
) -> None:
    """One worker drains the backlog; ``key`` "pipeline" is the main figure (profiled), another key
    runs the same backlog with the settings ``overrides`` (an A/B in the same run, not profiled)."""
    import aiohttp

    main_run = key == "pipeline"
    s = cfg.settings(suffix, **(overrides or {}))
    events = R.get("_events") or cost_events(cfg.pipeline_events, int(time.time() * 1000) - 3_600_000)
    n = min(cfg.pipeline_events, len(events))
    res: dict[str, Any] = {
        "events": n,
        "sizing": cfg.pipeline_sizing,
        "overrides": overrides or {},
        "intake_process": s.intake_process,
    }
    R[key] = res
    say(
        f"\n== 2. pipeline throughput: one `finops worker` on a backlog of the first {n:,} of those events "
        f"(sink off; {cfg.pipeline_sizing}){f'; settings {overrides}' if overrides else ''}"
    )
    await kafka.ensure_topics(s)
    cost_topic = kafka.topic_name(s, topics.COST_EVENTS)
    prod = await produce_records(s, ((topics.COST_EVENTS, k, v) for k, v in events[:n]), n, "pre-fill")
    res["prefill"] = prod
    internal = [kafka.topic_name(s, t) for t in topics.INTERNAL]
    watched = [cost_topic, *internal]
    worker = Worker(s, cfg.run_dir / f"worker-{key}.log", key).start()
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(s))
    probe = AIOKafkaConsumer(group_id=None, **kafka.client_kwargs(s))
    await admin.start()
    await probe.start()
    spy: subprocess.Popen[bytes] | None = None
    spy_path = cfg.run_dir / "pyspy-pipeline.txt"
    try:
        async with aiohttp.ClientSession() as session:
            startup = await worker.wait_ready(session, timeout=cfg.deadline.cap(90, 240))
            res["startup_s"] = round(startup, 2)
            t_ready = worker.t_ready
            assert t_ready is not None
            cpu0, wait0 = proc_cpu_seconds(worker.pid), sched_wait_seconds(worker.pid)
            kpid = devstack.read_pid(cfg.stack.var, "kafka")
            kcpu0 = proc_cpu_seconds(kpid) if kpid else None
            say(f"   worker ready {startup:.1f} s after start (pid {worker.pid}); draining ...")
            timeout = cfg.deadline.cap(cfg.pipeline_timeout, cfg.reserve_after_pipeline)
            res["cap_s"] = round(timeout, 1)
            spy_at = t_ready + min(cfg.profile_delay, max(0.0, timeout - cfg.profile_seconds - 2))
            spy_t0 = spy_at
            t_intake_done: float | None = None
            t_done: float | None = None
            last_print = 0.0
            samples: list[tuple[float, int]] = []  # (seconds since ready, events completed downstream)
            timeline: list[
                tuple[float, int, int, int]
            ] = []  # about every second: (s, intake, completed, lag)
            events_in, completed, summary = 0.0, 0, {}
            while time.monotonic() - t_ready < timeout:
                now = time.monotonic()
                if cfg.profile and main_run and spy is None and now >= spy_at:
                    spy = subprocess.Popen(
                        [
                            str(PYSPY),
                            "record",
                            "-f",
                            "raw",
                            "-r",
                            "100",
                            "-d",
                            str(cfg.profile_seconds),
                            "--threads",
                            "--subprocesses",
                            "-p",
                            str(worker.pid),
                            "-o",
                            str(spy_path),
                        ],
                        stdout=open(cfg.run_dir / "pyspy-pipeline.log", "ab"),  # noqa: SIM115
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                    STATE.procs.append(spy)
                    res["profile_started_after_ready_s"] = round(now - t_ready, 2)
                    res["profile_cpu0"] = proc_cpu_seconds(worker.pid)
                    spy_t0 = now
                if spy is not None and spy.poll() is not None and "profile_cpu1" not in res:
                    res["profile_cpu1"] = proc_cpu_seconds(worker.pid)
                    res["profile_seconds_actual"] = round(now - spy_t0, 1)
                if not worker.alive():
                    raise RuntimeError(f"pipeline worker died:\n{worker.log_tail()}")
                m = await worker.metrics(session)
                events_in = worker.counter(m, "events_in_total", topic=cost_topic)
                summary = await offsets_summary(admin, probe, s.app_id, internal, s.topic_partitions)
                summary.update(
                    await offsets_summary(
                        admin, probe, f"{s.app_id}-intake", [cost_topic], s.topic_partitions
                    )
                )
                # internal topics carry batch envelopes (many events per record): completed events are
                # what the two stateful agents counted as applied, the slower of the two
                completed = int(
                    min(
                        worker.counter(m, "events_applied_total", agent="unit_windows"),
                        worker.counter(m, "events_applied_total", agent="cost_anomalies"),
                    )
                )
                samples.append((now - t_ready, completed))
                lag = sum(max(0, summary[t][1] - summary[t][0]) for t in watched)
                if not timeline or now - t_ready - timeline[-1][0] >= 1.0:
                    timeline.append((round(now - t_ready, 2), int(events_in), completed, lag))
                if events_in >= n and t_intake_done is None:
                    t_intake_done = now
                if events_in >= n and lag == 0:
                    t_done = now
                    break
                if now - last_print >= 5:
                    last_print = now
                    el = now - t_ready
                    say(
                        f"   t+{el:5.1f}s intake {events_in:>9,.0f}/{n:,}, completed downstream "
                        f"{completed:>9,} "
                        f"({completed / max(el, 1e-9):,.0f}/s), internal lag {lag:,}, load {loadavg()[0]}"
                    )
                await asyncio.sleep(0.25)
            t_end = t_done or time.monotonic()
            el = t_end - t_ready
            if spy is not None and spy.poll() is None:  # drained before py-spy's duration: stop it now
                res["profile_cpu1"] = proc_cpu_seconds(worker.pid)
                res["profile_seconds_actual"] = round(time.monotonic() - spy_t0, 1)
                spy.send_signal(signal.SIGINT)
            cpu1, wait1 = proc_cpu_seconds(worker.pid), sched_wait_seconds(worker.pid)
            kcpu1 = proc_cpu_seconds(kpid) if kpid else None
            worker.record_peak()
            if cpu0 is not None and cpu1 is not None:
                res["worker_cpu_seconds"] = round(cpu1 - cpu0, 1)
                res["worker_cpu_cores"] = round((cpu1 - cpu0) / el, 2)
            if wait0 is not None and wait1 is not None:
                res["worker_runqueue_wait_s"] = round(wait1 - wait0, 1)
            if kcpu0 is not None and kcpu1 is not None:
                res["broker_cpu_cores"] = round((kcpu1 - kcpu0) / el, 2)
            res["timeline_s_intake_completed_lag"] = timeline
            first = next((t for t, c in samples if c >= min(n, 100)), None)
            res["downstream_first_100_completed_s"] = round(first, 1) if first is not None else None
            # steady state: completed events between 30 % of the run and its end
            base = next(((t, c) for t, c in samples if t >= 0.3 * el), None)
            if base and el - base[0] > 1:
                res["steady_events_per_s"] = round((completed - base[1]) / (el - base[0]), 1)
            if t_done is not None:
                res.update(
                    complete=True,
                    seconds=round(el, 2),
                    events_per_s=round(n / el, 1),
                    events_per_s_incl_startup=round(n / (t_done - worker.t_start), 1),
                    intake_seconds=round((t_intake_done or t_done) - t_ready, 2),
                )
                say(
                    f"   done {el:.1f} s after ready: {n / el:,.0f} events/s (intake finished at "
                    f"{res['intake_seconds']} s)"
                )
            else:
                res.update(
                    complete=False,
                    seconds=round(el, 2),
                    events_completed=completed,
                    events_in=int(events_in),
                    events_per_s=round(completed / el, 1),
                    events_per_s_incl_startup=round(completed / (t_end - worker.t_start), 1),
                    note=(
                        f"backlog not drained within the {el:.0f} s cap: {completed:,} of {n:,} events "
                        "completed "
                        "(the slower of unit_windows and cost_anomalies, `finops_events_applied_total`); "
                        "events/s = completed / elapsed"
                    ),
                )
                say(
                    f"   !! cap reached after {el:.0f} s: {completed:,} of {n:,} events completed "
                    "downstream = "
                    f"{completed / el:,.0f} events/s (intake {events_in:,.0f})"
                )
            if res.get("worker_cpu_seconds"):
                done_events = n if t_done is not None else completed
                res["events_per_worker_cpu_s"] = round(done_events / res["worker_cpu_seconds"], 1)
            say(
                f"   worker CPU {res.get('worker_cpu_cores')} cores ({res.get('events_per_worker_cpu_s')} "
                "events per "
                f"CPU-second), runnable-but-waiting for a CPU {res.get('worker_runqueue_wait_s')} s of "
                f"{el:.0f} s; "
                f"broker CPU {res.get('broker_cpu_cores')} cores"
            )
            final = await worker.metrics(session)
            res["deadletters"] = sum(v for k, v in final.items() if k.startswith("finops_deadletters_total"))
            # Python's garbage collector over the whole run (finops_app/gc_tuning.py)
            res["gc_threshold"], res["gc_freeze"] = s.gc_threshold, s.gc_freeze
            res["gc_seconds"] = round(
                sum(v for k, v in final.items() if k.startswith("finops_gc_seconds_total")), 2
            )
            gc_counts = [(k, v) for k, v in final.items() if k.startswith("finops_gc_collections_total")]
            res["gc_collections"] = {k.split('"')[1]: int(v) for k, v in gc_counts}
            res["outputs"] = {
                k.split('topic="', 1)[1].split('"', 1)[0].removeprefix(s.topic_prefix): v
                for k, v in final.items()
                if k.startswith("finops_events_out_total")
            }
            res["anomaly_records"] = sum(
                v for k, v in final.items() if k.startswith("finops_anomalies_total")
            )
            raw = R.get("raw_consumer", {}).get("msgs_per_s")
            if raw and res.get("events_per_s"):
                res["ratio_to_raw_consumer"] = round(res["events_per_s"] / raw, 4)
            ceiling = ((R.get("bare_faust") or {}).get("fixed") or {}).get("msgs_per_s")
            if ceiling and res.get("events_per_s"):
                res["ratio_to_bare_faust_fixed"] = round(res["events_per_s"] / ceiling, 4)
        if spy is not None:
            try:
                spy.wait(timeout=max(5.0, spy_t0 + cfg.profile_seconds + 5 - time.monotonic()))
            except subprocess.TimeoutExpired:
                spy.send_signal(signal.SIGINT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(timeout=10)
            if spy_path.exists():
                res["profile_raw"] = str(spy_path.relative_to(ROOT))
        if main_run:
            R["changelog_format"] = await sample_changelog(s, f"{s.app_id}-unit_state-changelog")
    finally:
        await probe.stop()
        await admin.close()
        worker.stop()
        res["peak_rss_mib"] = round((worker.peak_kb or 0) / 1024, 1)
        res["slow_commits"] = commit_overlaps(worker.log_tail(50_000_000))
    save_partial(cfg, R)


def commit_overlaps(log: str) -> dict[str, Any]:
    """Faust's "Timer commit is overlapping (interval=1.0 runtime=X)" warnings: commits slower than 1 s."""
    runs = [
        float(x) for x in re.findall(r"Timer commit is overlapping \(interval=[0-9.]+ runtime=([0-9.]+)", log)
    ]
    return {
        "count": len(runs),
        "median_s": round(statistics.median(runs), 2) if runs else None,
        "max_s": round(max(runs), 2) if runs else None,
    }


async def sample_changelog(settings: Settings, topic: str, n: int = 5) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        topic,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka.client_kwargs(settings),
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 10
        while len(out) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=n)
            for messages in batch.values():
                for m in messages:
                    out.append(
                        {
                            "partition": m.partition,
                            "key": repr(m.key),
                            "value_head": (m.value or b"")[:120].decode(errors="replace"),
                            "value_bytes": len(m.value or b""),
                            "headers": [h[0] for h in (m.headers or ())],
                        }
                    )
    finally:
        await consumer.stop()
    return {"topic": topic, "records": out[:n]}


# -- phase 3: latency at half load ------------------------------------------------------------------

LAT_UNITS = ("ecommerce", "analytics", "platform", "marketing", "search", "payments", "logistics", "support")
LAT_SERVICES = tuple(demo.SERVICES)
WINDOW_S, ROI_S, LATENESS_S, BUCKET_S = 10, 60, 1, 60


def lat_fleet(seed: int = 11) -> list[demo.Resource]:
    rng = random.Random(seed)
    out = []
    for u, unit in enumerate(LAT_UNITS):
        for service, base in demo.SERVICES.items():
            for i in range(1):  # one resource per (service, unit) series keeps the warm-up short
                out.append(
                    demo.Resource(
                        resource_id=f"{service}-{unit}-{i}",
                        service=service,
                        region=demo.REGIONS[(u + i) % len(demo.REGIONS)],
                        business_unit=unit,
                        hourly=float(base) * 60 * (1 + u * 0.1) * rng.uniform(0.7, 1.3),  # tens of $/h
                        instance_type=demo.INSTANCE_TYPES[(u + i) % len(demo.INSTANCE_TYPES)],
                        environment="production" if i == 0 else "staging",
                    )
                )
    return out


async def latency_baseline(s: Settings, rate: float, seconds: float) -> dict[str, Any]:
    """Plain producer -> broker -> plain consumer latency at ``rate`` msgs/s (the raw baseline)."""
    topic = f"{s.topic_prefix}bench.latency-probe"
    await create_topics(s, [(topic, s.topic_partitions, {})])
    producer = kafka.producer(s)
    await producer.start()
    await producer.partitions_for(topic)  # waits until the new topic is in the metadata
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **kafka.client_kwargs(s))
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(s.topic_partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    lat: list[float] = []
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for messages in batch.values():
                for m in messages:
                    lat.append((now - orjson.loads(m.value)["t"]) * 1000)

    task = asyncio.create_task(consume())
    fleet = lat_fleet()
    try:
        sent = await paced(
            rate,
            seconds,
            lambda i, now: producer.send(
                topic,
                orjson.dumps({"t": now, "pad": "x" * 500}),
                key=fleet[i % len(fleet)].resource_id.encode(),
            ),
        )
        await producer.flush()
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await task
        await producer.stop()
        await consumer.stop()
    return {"sent": sent, **dist(lat)}


async def paced(
    rate: float,
    seconds: float,
    send: Callable[[int, float], Awaitable[Any]],
    extra: Callable[[float], Awaitable[None]] | None = None,
) -> int:
    """Call ``send(i, wall_time)`` ``rate`` times a second for ``seconds`` (catching up in bursts)."""
    t0 = time.monotonic()
    i = 0
    while True:
        el = time.monotonic() - t0
        if el >= seconds:
            break
        due = int(rate * el)
        while i < due:
            await send(i, time.time())
            i += 1
        if extra is not None:
            await extra(el)
        await asyncio.sleep(0.004)
    return i


async def phase_latency(cfg: Config, R: dict[str, Any]) -> None:
    import aiohttp

    rate_max = R.get("pipeline", {}).get("events_per_s")
    if cfg.latency_rate:
        rate, basis = cfg.latency_rate, "fixed by --latency-rate (A/B runs; not the brief's half load)"
        rate_max = 2 * rate
    elif rate_max:
        rate = max(2, round(0.5 * rate_max))
        basis = f"0.5 x measured pipeline rate {rate_max:,.0f}/s"
    else:
        rate = cfg.fallback_rate
        basis = f"fallback (pipeline rate not measured): {rate}/s"
        rate_max = 2 * rate
    low_rate = max(2, round(cfg.low_load_factor * rate_max))
    live = cfg.live_seconds
    res: dict[str, Any] = {
        "rate": rate,
        "rate_basis": basis,
        "live_seconds": live,
        "bucket_s": BUCKET_S,
        "window_s": WINDOW_S,
        "lateness_s": LATENESS_S,
    }
    R["latency"] = res
    say(
        f"\n== 3. latency at half load: {rate:,} events/s ({basis}) for {live:.0f} s"
        + (
            f"; then {low_rate:,} events/s ({cfg.low_load_factor:g} x) for {cfg.low_live_seconds:.0f} s"
            if cfg.low_live_seconds
            else ""
        )
    )
    s = cfg.settings(
        "l",
        anomaly_bucket_seconds=BUCKET_S,
        window_seconds=WINDOW_S,
        roi_window_seconds=ROI_S,
        allowed_lateness_seconds=LATENESS_S,
        idle_timeout_seconds=5.0,
    )
    await kafka.ensure_topics(s)
    base = await latency_baseline(s, rate, cfg.baseline_seconds)
    res["baseline_kafka_rtt_ms"] = base
    say(f"   raw baseline, plain producer -> consumer at {rate:,}/s: {fmt_ms(base)}")
    save_partial(cfg, R)

    fleet = lat_fleet()
    nres = len(fleet)
    now_ms = int(time.time() * 1000)
    bucket_ms = BUCKET_S * 1000
    window_ms = WINDOW_S * 1000
    hist_end = now_ms - now_ms % bucket_ms  # history fills whole buckets before the current one
    hist_start = hist_end - cfg.warm_minutes * 60_000
    rng = random.Random(5)
    history: list[tuple[str, str | None, bytes]] = []
    order = 0
    for ts in range(hist_start, hist_end, demo.STEP_MS):
        for r in fleet:
            order += 1
            cost = r.hourly / 60 * rng.gauss(1.0, 0.03)
            history.append((topics.COST_EVENTS, r.resource_id, orjson.dumps(demo._cost(r, ts, cost, order))))

    # spikes: one per (service, unit) series; the half-load segment gets the first units,
    # the low-load one the rest
    low_units = LAT_UNITS[-cfg.low_load_units :] if cfg.low_live_seconds else ()
    half_units = [u for u in LAT_UNITS if u not in low_units]

    def pairs_for(units: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
        """Every (service, unit) pair once, round-robin over the units with the service rotating."""
        n = len(LAT_SERVICES)
        return [(LAT_SERVICES[(u + j) % n], unit) for j in range(n) for u, unit in enumerate(units)]

    normal = {(r.service, r.business_unit): r.hourly / 60 for r in fleet}
    worker = Worker(s, cfg.run_dir / "worker-latency.log", "latency").start()
    cost_topic = kafka.topic_name(s, topics.COST_EVENTS)
    tps = [
        TopicPartition(kafka.topic_name(s, t), p)
        for t in (topics.BY_UNIT, topics.BY_SERVICE)
        for p in range(s.topic_partitions)
    ]
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(s))
    probe = AIOKafkaConsumer(group_id=None, **kafka.client_kwargs(s))
    await admin.start()
    await probe.start()
    results_consumer = AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100, **kafka.client_kwargs(s)
    )
    await results_consumer.start()
    producer = kafka.producer(s)
    await producer.start()
    anomalies: list[tuple[float, dict[str, Any]]] = []
    totals: list[tuple[float, dict[str, Any]]] = []
    stop = asyncio.Event()
    consumer_task: asyncio.Task[None] | None = None
    unit_part = {u: partition_of(u.encode(), s.topic_partitions) for u in LAT_UNITS}
    # every live event: (unit, window start) -> last send time; per by-unit partition: (ts, send time)
    last_send: dict[tuple[str, int], float] = {}
    sends_by_part: dict[int, tuple[list[int], list[float]]] = {p: ([], []) for p in range(s.topic_partitions)}
    seq = [0]
    sent_total = [len(history)]
    try:
        async with aiohttp.ClientSession() as session:
            startup = await worker.wait_ready(session, timeout=cfg.deadline.cap(90, 150))
            say(
                f"   worker ready in {startup:.1f} s; warming the detector with {len(history):,} events "
                f"({cfg.warm_minutes} min of event time, {BUCKET_S} s buckets) ..."
            )
            await produce_all(s, history)
            t_w = time.monotonic()
            while time.monotonic() - t_w < cfg.deadline.cap(90, 120):
                m = await worker.metrics(session)
                if (
                    worker.counter(m, "events_in_total", topic=cost_topic) >= len(history)
                    and await group_lag(admin, probe, s.app_id, tps) == 0
                ):
                    break
                await asyncio.sleep(0.25)
            else:
                raise TimeoutError("the latency worker did not finish the warm-up history")
            res["warmup_events"] = len(history)
            res["warmup_seconds"] = round(time.monotonic() - t_w, 1)
            m = await worker.metrics(session)
            res["warmup_anomalies"] = sum(v for k, v in m.items() if k.startswith("finops_anomalies_total"))
            say(
                f"   warm-up processed in {res['warmup_seconds']} s ({res['warmup_anomalies']:.0f} anomaly "
                "records during history)"
            )

            # results consumer positioned at the end of the anomaly and aggregation topics
            out_tps = [
                TopicPartition(kafka.topic_name(s, t), p)
                for t in (topics.ANOMALIES, topics.AGGREGATIONS)
                for p in range(s.topic_partitions)
            ]
            results_consumer.assign(out_tps)
            await results_consumer.seek_to_end(*out_tps)
            for tp in out_tps:
                await results_consumer.position(tp)
            anomaly_name = kafka.topic_name(s, topics.ANOMALIES)

            async def consume() -> None:
                while not stop.is_set():
                    batch = await results_consumer.getmany(timeout_ms=100)
                    now = time.time()
                    for tp, messages in batch.items():
                        for msg in messages:
                            rec = orjson.loads(msg.value)
                            (anomalies if tp.topic == anomaly_name else totals).append((now, rec))

            consumer_task = asyncio.create_task(consume())

            async def segment(
                name: str, seg_rate: int, seconds: float, pairs: list[tuple[str, str]]
            ) -> dict[str, Any]:
                """Paced real-time traffic at seg_rate with one spike per pair; then drain."""
                per_event_share = nres / seg_rate  # seconds of a resource's cost each event carries
                spikes: list[dict[str, Any]] = []
                spike_start = min(5.0, seconds / 4)
                spike_every = max(0.25, (seconds - spike_start - 3) / max(1, len(pairs)))

                async def send_event(i: int, now: float) -> None:
                    r = fleet[i % nres]
                    ts = int(now * 1000)
                    seq[0] += 1
                    value = orjson.dumps(demo._cost(r, ts, r.hourly / 3600 * per_event_share, seq[0]))
                    t_send = time.time()
                    await producer.send(cost_topic, value, key=r.resource_id.encode())
                    last_send[(r.business_unit, ts - ts % window_ms)] = t_send
                    tsl, sl = sends_by_part[unit_part[r.business_unit]]
                    tsl.append(ts)
                    sl.append(t_send)

                async def maybe_spike(el: float) -> None:
                    k = len(spikes)
                    if k >= len(pairs) or el < spike_start + k * spike_every:
                        return
                    svc, unit = pairs[k]
                    r = next(x for x in fleet if x.service == svc and x.business_unit == unit)
                    t_send = time.time()
                    ts = int(t_send * 1000)
                    seq[0] += 1
                    amount = 6 * normal[(svc, unit)] + 5
                    value = orjson.dumps(
                        {**demo._cost(r, ts, amount, seq[0]), "event_id": f"spike-{slug}-{k}-{ts}"}
                    )
                    await producer.send(cost_topic, value, key=r.resource_id.encode())
                    spikes.append(
                        {
                            "series": f"{svc}|bu={unit}",
                            "bucket": iso(ts - ts % bucket_ms),
                            "t_send": t_send,
                            "amount": round(amount, 2),
                        }
                    )

                seg: dict[str, Any] = {"rate": seg_rate, "live_seconds": seconds}
                slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")  # event ids must be identifiers
                cpu0, wait0 = proc_cpu_seconds(worker.pid), sched_wait_seconds(worker.pid)
                kpid = devstack.read_pid(cfg.stack.var, "kafka")
                # start where a whole window (plus the allowed lateness) fits before the end, else a
                # short segment (the low-load one, 20 s of 10 s windows) can have no window to measure
                lead = (window_ms + LATENESS_S * 1000 + 500) / 1000
                if seconds >= lead + 1.5:
                    room = seconds - lead  # the first whole window must start within this
                    wait = (window_ms / 1000 - time.time() % (window_ms / 1000)) - room
                    if wait > 0:
                        await asyncio.sleep(wait + 0.05)
                others0 = {"bench": time.process_time(), "broker": proc_cpu_seconds(kpid) if kpid else None}
                t0 = time.time()
                sent = await paced(seg_rate, seconds, send_event, maybe_spike)
                t1 = time.time()
                await producer.flush()
                cpu1, wait1 = proc_cpu_seconds(worker.pid), sched_wait_seconds(worker.pid)
                others1 = {"bench": time.process_time(), "broker": proc_cpu_seconds(kpid) if kpid else None}
                for who, c0 in others0.items():  # the load generator and the broker share the 2 CPUs
                    c1 = others1[who]
                    if c0 is not None and c1 is not None:
                        seg[f"{who}_cpu_cores"] = round((c1 - c0) / (t1 - t0), 2)
                if cpu0 is not None and cpu1 is not None:
                    seg["worker_cpu_cores"] = round((cpu1 - cpu0) / (t1 - t0), 2)
                if wait0 is not None and wait1 is not None:
                    seg["worker_runqueue_wait_s"] = round(wait1 - wait0, 1)
                sent_total[0] += sent + len(spikes)
                seg.update(sent=sent, achieved_rate=round(sent / (t1 - t0), 1), spikes=len(spikes))
                m = await worker.metrics(session)
                behind = sent_total[0] - worker.counter(m, "events_in_total", topic=cost_topic)
                seg["intake_behind_at_end"] = int(behind)
                say(
                    f"   [{name}] sent {sent:,} events ({seg['achieved_rate']:,.0f}/s) and {len(spikes)} "
                    "spikes; intake "
                    f"{behind:,.0f} events behind at the end; draining (everything consumed and committed) "
                    "..."
                )
                t_drain = time.monotonic()
                drain_cap = cfg.deadline.cap(cfg.latency_drain_cap, 80)
                while time.monotonic() - t_drain < drain_cap:
                    m = await worker.metrics(session)
                    if (
                        worker.counter(m, "events_in_total", topic=cost_topic) >= sent_total[0]
                        and await group_lag(admin, probe, s.app_id, tps) == 0
                    ):
                        break
                    await asyncio.sleep(0.25)
                else:
                    seg["note"] = f"not fully drained {drain_cap:.0f} s after the live traffic"
                seg["drain_seconds"] = round(time.monotonic() - t_drain, 1)
                await asyncio.sleep(1.5)  # outputs are published with the commit; let the consumer fetch them
                seg.update(
                    analyse_latency(
                        spikes, anomalies, totals, last_send, sends_by_part, unit_part, t0, t1, window_ms
                    )
                )
                say(
                    f"   [{name}] anomaly e2e (spike send -> CostAnomaly received): "
                    f"{fmt_ms(seg['anomaly_e2e_ms'])}; "
                    f"no record for {seg['spikes_missed']} of {len(spikes)} spikes"
                )
                say(
                    f"   [{name}] detection_latency_ms reported by the worker: "
                    f"{fmt_ms(seg['anomaly_worker_reported_ms'])}"
                )
                say(
                    f"   [{name}] window total, raw (last event send -> WindowTotal): "
                    f"{fmt_ms(seg['window_raw_ms'])}"
                )
                say(
                    f"   [{name}] window total, adjusted (closing event send -> WindowTotal): "
                    f"{fmt_ms(seg['window_adjusted_ms'])}; {seg['windows_missing']} of "
                    f"{seg['windows_expected']} never arrived"
                )
                return seg

            half = await segment("half load", rate, live, pairs_for(half_units))
            res.update(half)  # the primary figures
            if cfg.low_live_seconds and cfg.deadline.left() > 130 + cfg.low_live_seconds:
                res["low_load"] = await segment(
                    f"{cfg.low_load_factor:g} x load", low_rate, cfg.low_live_seconds, pairs_for(low_units)
                )
            worker.record_peak()
    finally:
        stop.set()
        if consumer_task is not None:
            with contextlib.suppress(Exception):
                await consumer_task
        with contextlib.suppress(Exception):
            await producer.stop()
        with contextlib.suppress(Exception):
            await results_consumer.stop()
        await probe.stop()
        await admin.close()
        worker.stop()
        res["peak_rss_mib"] = round((worker.peak_kb or 0) / 1024, 1)
        res["slow_commits"] = commit_overlaps(worker.log_tail(50_000_000))
    save_partial(cfg, R)


def analyse_latency(
    spikes: list[dict[str, Any]],
    anomalies: list[tuple[float, dict[str, Any]]],
    totals: list[tuple[float, dict[str, Any]]],
    last_send: dict[tuple[str, int], float],
    sends_by_part: dict[int, tuple[list[int], list[float]]],
    unit_part: dict[str, int],
    t0: float,
    t1: float,
    window_ms: int,
) -> dict[str, Any]:
    """Match spikes to CostAnomaly records and live windows to WindowTotals; latency distributions."""
    out: dict[str, Any] = {}
    first_open: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
    for t_recv, rec in anomalies:
        if rec.get("status") == "open":
            first_open.setdefault((rec["series"], rec["window_start"]), (t_recv, rec))
    e2e: list[float] = []
    reported: list[float] = []
    missed = 0
    for sp in spikes:
        hit = first_open.get((sp["series"], sp["bucket"]))
        if hit is None or hit[0] < sp["t_send"]:
            missed += 1
            continue
        e2e.append((hit[0] - sp["t_send"]) * 1000)
        reported.append(float(hit[1].get("detection_latency_ms") or 0))
    units = {sp["series"].split("|bu=", 1)[1] for sp in spikes}
    spiked = {(sp["series"], sp["bucket"]) for sp in spikes}
    out["unexpected_unit_series_opens"] = sum(
        1
        for (series, ws), (t, _) in first_open.items()
        if "|bu=" in series and series.split("|bu=", 1)[1] in units and (series, ws) not in spiked and t >= t0
    )
    out["spikes_missed"] = missed
    seg_records = [rec for t, rec in anomalies if t >= t0]
    out["anomaly_records_received"] = len(seg_records)
    out["anomaly_records_by_status"] = dict(Counter(str(rec.get("status")) for rec in seg_records))
    if missed:
        out["missed_examples"] = [
            (sp["series"], sp["bucket"])
            for sp in spikes
            if (sp["series"], sp["bucket"])
            not in {k for k, (t, _) in first_open.items() if t >= sp["t_send"]}
        ][:3]
        out["open_examples"] = [k for k, (t, _) in first_open.items() if t >= t0][:5]
    out["anomaly_e2e_ms"] = dist(e2e)
    out["anomaly_worker_reported_ms"] = dist(reported)

    first_window = (int(t0 * 1000) // window_ms + 1) * window_ms
    last_ts = int(t1 * 1000)

    def closable(start: int) -> bool:
        return start >= first_window and start + window_ms + LATENESS_S * 1000 <= last_ts - 500

    expected = {(u, w) for (u, w) in last_send if closable(w)}
    raw_w: list[float] = []
    adj_w: list[float] = []
    seen: set[tuple[str, int]] = set()
    for t_recv, rec in totals:
        if rec.get("revision", 1) != 1:
            continue
        unit = rec["business_unit"]
        start = int(dt.datetime.fromisoformat(rec["window_start"].replace("Z", "+00:00")).timestamp() * 1000)
        if (unit, start) not in expected or (unit, start) in seen:
            continue
        seen.add((unit, start))
        raw_w.append((t_recv - last_send[(unit, start)]) * 1000)
        tsl, sl = sends_by_part[unit_part[unit]]
        j = bisect.bisect_left(tsl, start + window_ms + LATENESS_S * 1000)
        if j < len(sl):
            adj_w.append((t_recv - sl[j]) * 1000)
    out["windows_expected"] = len(expected)
    out["windows_missing"] = len(expected - seen)
    out["window_raw_ms"] = dist(raw_w)
    out["window_adjusted_ms"] = dist(adj_w)
    out["window_raw_minus_lateness_ms"] = dist([x - LATENESS_S * 1000 for x in raw_w])
    out["samples_ms"] = {
        "anomaly_e2e": [round(x, 1) for x in e2e],
        "anomaly_worker_reported": reported,
        "window_raw": [round(x, 1) for x in raw_w],
        "window_adjusted": [round(x, 1) for x in adj_w],
    }
    return out


# -- phase 4: sink ------------------------------------------------------------------------------------


def phase_sink(cfg: Config, R: dict[str, Any]) -> None:
    from finops_app.core.validate import Limits, parse_cost
    from finops_app.sinks.connection import Connector, connect
    from finops_app.sinks.loader import BulkLoader, converter, merge_sql
    from finops_app.sinks.migrate import migrate
    from finops_app.sinks.rows import COST_EVENTS, TABLES, event_row

    res: dict[str, Any] = {}
    R["sink"] = res
    if (BENCH / "sink_bench.py").exists():
        res["note_sink_bench"] = (
            "The executemany path follows bench/sink_bench.py (another engineer's, which also "
            "compares a CSV path and a replay); this phase runs on the run's own CostEvents."
        )
    s = cfg.settings("s")
    say(f"\n== 4. sink: BulkLoader into fakesnow (database {s.snowflake_database}) vs executemany")
    events = R.get("_events") or []
    if len(events) < cfg.sink_rows + cfg.executemany_rows + 200:
        events = cost_events(cfg.sink_rows + cfg.executemany_rows + 200, int(time.time() * 1000))
    limits = Limits.from_settings(s)
    need = cfg.sink_rows + 200
    rows = [event_row(COST_EVENTS, parse_cost(v, limits), 0, i) for i, (_, v) in enumerate(events[:need])]
    warm, rows = rows[:200], rows[200:]
    t0 = time.monotonic()
    conn = connect(s)
    migrate(conn)
    res["migrate_seconds"] = round(time.monotonic() - t0, 2)
    spec = TABLES[COST_EVENTS]
    connector = Connector(s)
    loader = BulkLoader(connector, workdir=cfg.run_dir / "sink")
    loader.load(spec, warm)  # stage + landing table creation, outside the timing
    batch = s.sink_batch_rows
    t0 = time.monotonic()
    loaded = 0
    loads = []
    bar = progress_bar(len(rows), "BulkLoader", unit="row")
    for i in range(0, len(rows), batch):
        if time.monotonic() - t0 > cfg.deadline.cap(90, 150):
            res["note"] = "stopped early (time budget)"
            break
        r = loader.load(spec, rows[i : i + batch])
        loaded += r.accepted
        loads.append(round(r.seconds, 3))
        bar.update(r.rows)
    bar.close()
    el = time.monotonic() - t0
    res["bulk"] = {
        "rows": loaded,
        "seconds": round(el, 2),
        "rows_per_s": round(loaded / el, 1),
        "batch_rows": batch,
        "load_seconds": loads,
    }
    say(
        f"   BulkLoader: {loaded:,} rows in {el:.1f} s = {loaded / el:,.0f} rows/s ({len(loads)} loads of "
        f"{batch})"
    )

    # executemany as bench/sink_bench.py runs it: rows converted with the loader's converters,
    # INSERTed into the landing table with cursor.executemany in chunks of 1,000 (the connector
    # sends one multi-row INSERT per chunk), then the same MERGE and landing clean-up the loader
    # runs. Rows: the next CostEvents (same shape, not in the table yet, so every row is an INSERT
    # as in the bulk run).
    import uuid as _uuid

    em_events = events[need : need + cfg.executemany_rows]
    em_rows = [
        event_row(COST_EVENTS, parse_cost(v, limits), 0, need + i) for i, (_, v) in enumerate(em_events)
    ]
    convs = [converter(c) for c in spec.columns]
    batch_id = _uuid.uuid4().hex
    values = [
        [conv(row.get(c.name)) for c, conv in zip(spec.columns, convs, strict=True)] + [batch_id, i]
        for i, row in enumerate(em_rows)
    ]
    names = [*spec.column_names(), "_batch", "_seq"]
    sql = f"INSERT INTO {spec.landing} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
    cur = conn.cursor()
    cur.execute(f"SELECT COUNT(*) FROM {spec.fqn}")
    before = cur.fetchone()[0]
    t0 = time.monotonic()
    for i in range(0, len(values), 1000):
        cur.executemany(sql, values[i : i + 1000])
    t_insert = time.monotonic() - t0
    cur.execute(merge_sql(spec), {"batch": batch_id})
    cur.execute(f"DELETE FROM {spec.landing} WHERE _batch = %(batch)s", {"batch": batch_id})
    el = time.monotonic() - t0
    cur.execute(f"SELECT COUNT(*) FROM {spec.fqn}")
    count = cur.fetchone()[0] - before
    res["executemany"] = {
        "rows": count,
        "seconds": round(el, 2),
        "rows_per_s": round(count / el, 1),
        "insert_seconds": round(t_insert, 2),
        "path": "executemany INSERT into landing + MERGE (as bench/sink_bench.py)",
    }
    res["bulk"]["rows_in_table_before_executemany"] = before
    cur.close()
    conn.close()
    connector.close()
    res["ratio"] = round(res["bulk"]["rows_per_s"] / res["executemany"]["rows_per_s"], 2)
    say(
        f"   executemany (plain connector, INSERT ... VALUES in chunks of 1,000, then MERGE): {count:,} "
        "rows in "
        f"{el:.2f} s = {count / el:,.0f} rows/s"
    )
    save_partial(cfg, R)


# -- phase 5: recovery ----------------------------------------------------------------------------------


def resource_value(i: int, rid: str, ts: int) -> dict[str, Any]:
    """A resource_state value as the recommendations agent stores it after one utilisation sample."""
    from finops_app.core import rightsizing

    sample = {
        "event_id": f"bench-util-{rid}-{ts}", "timestamp": iso(ts), "ts_ms": ts, "resource_id": rid,
        "resource_type": "instance", "instance_type": "m5.xlarge", "metric": "cpu",
        "utilisation": round((i % 97) / 100, 2), "hourly_cost": "0.1920", "service": "ec2",
        "region": demo.REGIONS[i % 3], "business_unit": demo.UNITS[i % 4], "project_id": "bench",
        "environment": "production", "provider": "aws", "stateless": False, "source": "bench",
        "schema_version": 1, "metadata": {},
    }  # fmt: skip
    return {"r": rightsizing.observe(None, sample), "h": {f"r{i % 4}": i}, "res": sample}


async def phase_recovery(cfg: Config, R: dict[str, Any]) -> None:
    import aiohttp

    s = cfg.settings("r")
    keys = cfg.recovery_keys
    res: dict[str, Any] = {"keys": keys, "sizing": cfg.recovery_sizing}
    R["recovery"] = res
    fmt = R.get("changelog_format", {}).get("records") or []
    # the key a real worker wrote: raw UTF-8 of the str key, or its JSON encoding (the tables'
    # default key serializer, assumed when the pipeline phase did not run to show it)
    json_keys = fmt[0]["key"].startswith("b'\"") if fmt else True
    res["key_format"] = "json string" if json_keys else "raw utf-8"
    res["format_checked_against"] = R.get("changelog_format", {}).get("topic")
    topic = f"{s.app_id}-resource_state-changelog"
    say(f"\n== 5. recovery: {keys:,} keys written into {topic} (key {res['key_format']}, JSON values)")
    await create_topics(s, [(topic, s.topic_partitions, {"cleanup.policy": "compact"})])
    await kafka.ensure_topics(s)
    ts = int(time.time() * 1000) - 3_600_000
    template = resource_value(0, "i-0000000", ts)
    tb = orjson.dumps(template)
    res["value_bytes"] = len(tb)

    def records() -> Iterable[tuple[str, str | None, bytes]]:
        for i in range(keys):
            rid = f"i-{i:07d}"
            template["res"]["resource_id"] = rid
            template["res"]["event_id"] = f"bench-util-{rid}-{ts}"
            template["h"] = {f"r{i % 4}": i}
            key = orjson.dumps(rid).decode() if json_keys else rid
            yield topic, key, orjson.dumps(template)

    # produce_all prefixes app topics with topic_prefix; the changelog is named by app id instead
    raw_settings = Settings(**{**s.__dict__, "topic_prefix": ""})
    prod = await produce_records(raw_settings, records(), keys, "produce changelog")
    res["produce"] = prod
    say(f"   produced in {prod['seconds']:.1f} s ({prod['msgs_per_s']:,.0f}/s)")
    base = await raw_consume(s, topic, keys, timeout=cfg.deadline.cap(120, 150))
    res["baseline_consumer"] = base
    say(
        f"   raw baseline, plain consumer reading the changelog + orjson.loads: {base['msgs_per_s']:,.0f} "
        "records/s"
    )
    save_partial(cfg, R)

    worker = Worker(s, cfg.run_dir / "worker-recovery.log", "recovery").start()
    try:
        async with aiohttp.ClientSession() as session:
            timeout = cfg.deadline.cap(cfg.recovery_timeout, 25)
            try:
                t = await worker.wait_ready(session, timeout=timeout, poll=0.1)
            except TimeoutError:
                res["complete"] = False
                res["note"] = f"recovery not finished within {timeout:.0f} s"
                say(f"   !! not recovered within {timeout:.0f} s")
            else:
                res.update(complete=True, seconds_to_healthy=round(t, 2), keys_per_s=round(keys / t, 1))
                say(f"   fresh worker healthy with recovery_finished after {t:.1f} s: {keys / t:,.0f} keys/s")
                checks = []
                for i in (0, keys // 2, keys - 1):
                    key = f"i-{i:07d}"
                    status, body = await worker.get(
                        session, f"/finops/tables/resource_state/{key}/", timeout=10
                    )
                    checks.append(
                        bool(
                            status == 200
                            and isinstance(body, dict)
                            and body.get("found")
                            and body["value"]["res"]["resource_id"] == key
                        )
                    )
                res["keys_verified"] = f"{sum(checks)}/{len(checks)}"
                say(f"   table lookups of restored keys: {res['keys_verified']} found")
            worker.record_peak()
    finally:
        worker.stop()
        res["peak_rss_mib"] = round((worker.peak_kb or 0) / 1024, 1)
        res["slow_commits"] = commit_overlaps(worker.log_tail(50_000_000))
    # the restore itself, from the worker's log:
    # "Bulk restore of" (finops_app/faust_restore.py) or Faust's "Restoring state from changelog
    # topics", whichever comes first -> "Recovery complete"
    log = worker.log_tail(50_000_000)
    stamps = {}
    res["bulk"] = [
        {"records": int(a), "seconds": float(b)}
        for a, b in re.findall(r"bulk restore: (\d+) records of .* in ([\d.]+) s", log)
    ]
    for key, marker in (
        ("restore_start", "(?:Bulk restore of|Restoring state from changelog topics)"),
        ("restore_end", re.escape("Recovery complete")),
    ):
        m = re.search(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*" + marker, log, re.M)
        if m:
            stamps[key] = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    if not res.get("complete") and "restore_start" in stamps:
        # not finished in time: the restore rate so far from Faust's progress lines ("total remaining=N")
        progress = re.findall(
            r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*total remaining=(\d+)", log, re.M
        )
        if progress:
            when = dt.datetime.strptime(progress[-1][0], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            done = keys - int(progress[-1][1])
            if when > stamps["restore_start"] and done > 0:
                res["partial_restored_keys"] = done
                res["restore_keys_per_s"] = round(done / (when - stamps["restore_start"]), 1)
                res["note"] = (
                    res.get("note", "") + f"; partial: {done:,} keys restored "
                    f"{when - stamps['restore_start']:.0f} s into the restore (Faust's progress log)"
                )
    if len(stamps) == 2 and res.get("complete"):
        restore = stamps["restore_end"] - stamps["restore_start"]
        res["restore_seconds_from_log"] = round(restore, 2)
        res["restore_keys_per_s"] = round(keys / restore, 1) if restore > 0 else None
        overhead = res["seconds_to_healthy"] - restore
        res["start_overhead_s"] = round(overhead, 2)
        if keys < 1_000_000 and res["restore_keys_per_s"]:
            res["extrapolated_1m_seconds_to_healthy"] = round(
                overhead + 1_000_000 / res["restore_keys_per_s"], 1
            )
    if base.get("msgs_per_s") and res.get("keys_per_s"):
        res["ratio"] = round(res["keys_per_s"] / base["msgs_per_s"], 4)
    if base.get("msgs_per_s") and res.get("restore_keys_per_s"):
        res["restore_ratio"] = round(res["restore_keys_per_s"] / base["msgs_per_s"], 4)
    if res.get("extrapolated_1m_seconds_to_healthy"):
        say(
            f"   restore alone (worker log) {res['restore_seconds_from_log']} s = "
            f"{res['restore_keys_per_s']:,.0f} keys/s; "
            f"EXTRAPOLATED to 1,000,000 keys: ~{res['extrapolated_1m_seconds_to_healthy']:,.0f} s to healthy"
        )
    save_partial(cfg, R)


# -- report ---------------------------------------------------------------------------------------


@dataclass
class Config:
    run_id: str
    run_dir: Path
    stack: Stack
    deadline: Deadline
    events: int
    pipeline_events: int
    pipeline_sizing: str
    recovery_keys: int
    recovery_sizing: str
    reserve_after_pipeline: float
    live_seconds: float
    baseline_seconds: float
    warm_minutes: int
    sink_rows: int
    executemany_rows: int
    profile: bool
    profile_seconds: int
    profile_delay: float
    pipeline_timeout: float
    recovery_timeout: float
    fallback_rate: int
    latency_rate: int
    latency_drain_cap: float = 45.0
    low_load_factor: float = 0.1
    low_live_seconds: float = 20.0
    low_load_units: int = 2
    bare_events: int = 80_000
    bare_timeout: float = 45.0  # per variant; a run stopped by it reports what it had read
    worker_settings: dict[str, Any] = field(default_factory=dict)  # --set NAME=VALUE

    def settings(self, suffix: str, **overrides: Any) -> Settings:
        app_id = f"bench{self.run_id}{suffix}"
        values: dict[str, Any] = {
            "app_id": app_id,
            "topic_prefix": f"{app_id}.",
            "broker_url": self.stack.broker_url,
            "data_dir": self.run_dir / f"data-{app_id}",
            "web_port": free_port(),
            "snowflake_host": "127.0.0.1",
            "snowflake_port": self.stack.ports.snowflake,
            "snowflake_database": f"BENCH_{self.run_id.upper()}",
            "aws_endpoint_url": f"http://127.0.0.1:{self.stack.ports.moto}",
            "aws_access_key_id": "test",
            "aws_secret_access_key": Secret("test"),
            "sink_enabled": False,
            "sql_jobs_interval_seconds": 0.0,
        }
        values.update(self.worker_settings)
        values.update(overrides)
        return Settings(**values)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set NAME=VALUE`` items as Settings fields, converted as from FINOPS_NAME=VALUE."""
    env, names = {}, []
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise ValueError(f"--set {item!r}: use NAME=VALUE, e.g. batch_within_seconds=0.1")
        env[ENV_PREFIX + name.upper()] = raw
        names.append(name)
    parsed = Settings.from_env(env)  # unknown names and bad values fail here, as in a worker
    return {name: getattr(parsed, name) for name in names}


def save_partial(cfg: Config, R: dict[str, Any]) -> None:
    data = {k: v for k, v in R.items() if not k.startswith("_")}
    (cfg.run_dir / "results.partial.json").write_text(json.dumps(data, indent=2, default=str))


def fmt_commits(c: dict[str, Any] | None) -> str:
    if not c:
        return "n/a"
    if not c.get("count"):
        return "none"
    return f"{c['count']} (median {c['median_s']} s, max {c['max_s']} s)"


def _n(x: Any, digits: int = 0) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def _ratio(a: Any, b: Any, digits: int = 2) -> str:
    return f"{a / b:.{digits}f}" if a and b else "n/a"


def report(cfg: Config | None, R: dict[str, Any]) -> str:
    m, meta, code = R.get("machine", {}), R.get("run", {}), R.get("code", {})
    p, rc, pr = R.get("pipeline", {}), R.get("raw_consumer", {}), R.get("producer", {})
    lat, sink, rec = R.get("latency", {}), R.get("sink", {}), R.get("recovery", {})
    inloop = R.get("pipeline_inloop") or {}
    raw = rc.get("msgs_per_s")
    rate = p.get("events_per_s")
    base = lat.get("baseline_kafka_rtt_ms") or {}
    bf = R.get("bare_faust") or {}
    bare_stock, bare_fixed = bf.get("stock") or {}, bf.get("fixed") or {}
    ceiling = bare_fixed.get("msgs_per_s")
    ceiling_cpu = 1e6 / bare_fixed["cpu_us_per_record"] if bare_fixed.get("cpu_us_per_record") else None

    def bare_note(d: dict[str, Any]) -> str:
        if not d:
            return ""
        text = f"{_n(d.get('cpu_us_per_record'), 1)} µs CPU per record"
        if d.get("runqueue_wait_s") is not None:
            text += f", waited {d['runqueue_wait_s']} s for a CPU in {d.get('seconds')} s"
        if not d.get("complete"):
            text += f"; **incomplete**: {d.get('note')}"
        return text

    def trio(d: dict[str, Any] | None) -> str:
        if not d or not d.get("n"):
            return "n/a"
        return f"{d['p50']:,.0f} / {d['p95']:,.0f} / {d['p99']:,.0f}"

    def ratio_trio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
        if not a or not b or not a.get("n") or not b.get("n"):
            return "n/a"
        return " / ".join(f"{a[q] / b[q]:,.1f}" if b[q] else "n/a" for q in ("p50", "p95", "p99"))

    def yes(ok: bool | None) -> str:
        return "n/a" if ok is None else ("**met**" if ok else "**not met**")

    e2e = lat.get("anomaly_e2e_ms") or {}
    p99 = e2e.get("p99")
    low = lat.get("low_load") or {}
    lowp99 = (low.get("anomaly_e2e_ms") or {}).get("p99")
    partial = p and not p.get("complete")
    pipe_label = (
        "Pipeline throughput, 1 worker"
        + (" (its event loop + its intake child process)" if p.get("intake_process") else "")
        + f", cost events/s (backlog {_n(p.get('events'))}; worker ready → "
        + (
            "all done)"
            if not partial
            else f"**cap {p.get('seconds')} s: {_n(p.get('events_completed'))} completed, "
            "backlog not drained**)"
        )
    )
    bulk, em = sink.get("bulk") or {}, sink.get("executemany") or {}
    rows = [
        (
            pipe_label,
            _n(rate),
            f"raw consumer {_n(raw)} msgs/s",
            _ratio(rate, raw, 4),
            f"≥ {TARGET_EVENTS_PER_S:,}/s: {yes(rate >= TARGET_EVENTS_PER_S if rate else None)}; "
            f"≥ 1/3 of raw: {yes(rate / raw >= TARGET_RAW_SHARE if rate and raw else None)}"
            + (
                f"; ÷ bare Faust agent with the fix ({_n(ceiling)} msgs/s, the ceiling of any Faust agent "
                f"here): {_ratio(rate, ceiling, 3)}"
                if ceiling
                else ""
            ),
        ),
        (
            "… steady state (events completed downstream per s over the last 70 % of the drain)",
            _n(p.get("steady_events_per_s")),
            f"raw consumer {_n(raw)} msgs/s",
            _ratio(p.get("steady_events_per_s"), raw, 4),
            "",
        ),
        (
            "… including worker start-up (process start → done)",
            _n(p.get("events_per_s_incl_startup")),
            f"raw consumer {_n(raw)} msgs/s",
            _ratio(p.get("events_per_s_incl_startup"), raw, 4),
            "",
        ),
        (
            "… per CPU-second of the worker's processes (events per CPU-s; less sensitive to the shared "
            "CPUs)",
            _n(p.get("events_per_worker_cpu_s")),
            f"raw consumer {_n(rc.get('msgs_per_cpu_s'))} msgs per CPU-s",
            _ratio(p.get("events_per_worker_cpu_s"), rc.get("msgs_per_cpu_s"), 4),
            (
                f"bare Faust agent with the fix: {_n(ceiling_cpu)} records per CPU-s "
                f"(ratio {_ratio(p.get('events_per_worker_cpu_s'), ceiling_cpu, 3)})"
                if ceiling_cpu
                else ""
            ),
        ),
        *(
            [
                (
                    "… the same backlog with intake in the worker's event loop (`FINOPS_INTAKE_PROCESS=false`"
                    ", one process), events/s",
                    _n(inloop.get("events_per_s")),
                    f"raw consumer {_n(raw)} msgs/s",
                    _ratio(inloop.get("events_per_s"), raw, 4),
                    "intake child process (the row above) ÷ this: "
                    f"{_ratio(rate, inloop.get('events_per_s'))}; "
                    f"{inloop.get('worker_cpu_cores')} cores here against {p.get('worker_cpu_cores')}, "
                    f"{_n(inloop.get('events_per_worker_cpu_s'))} events per CPU-s against "
                    f"{_n(p.get('events_per_worker_cpu_s'))}; peak RSS {inloop.get('peak_rss_mib')} MiB "
                    "against "
                    f"{p.get('peak_rss_mib')} (worker + child)"
                    + ("" if inloop.get("complete") else f"; **incomplete**: {inloop.get('note')}"),
                )
            ]
            if inloop
            else []
        ),
        (
            f"Raw aiokafka consumer + orjson.loads, msgs/s ({_n(rc.get('messages'))} msgs)",
            _n(raw),
            "(baseline)",
            "1",
            "",
        ),
        (
            "Bare Faust agent (take_events, no work), stock faust-streaming, msgs/s "
            f"({_n(bf.get('events'))} msgs)",
            _n(bare_stock.get("msgs_per_s")),
            f"raw consumer {_n(raw)} msgs/s",
            _ratio(bare_stock.get("msgs_per_s"), raw, 4),
            bare_note(bare_stock),
        ),
        (
            "… with finops_app/faust_fixes.py, msgs/s",
            _n(bare_fixed.get("msgs_per_s")),
            f"raw consumer {_n(raw)} msgs/s",
            _ratio(bare_fixed.get("msgs_per_s"), raw, 4),
            bare_note(bare_fixed)
            + (
                f"; {_ratio(bare_fixed.get('msgs_per_s'), bare_stock.get('msgs_per_s'))} × stock"
                if bare_fixed and bare_stock
                else ""
            ),
        ),
        (
            f"Raw aiokafka producer (produce_all), msgs/s ({_n(pr.get('messages'))} msgs)",
            _n(pr.get("msgs_per_s")),
            "(baseline)",
            "1",
            "",
        ),
        (
            f"Anomaly latency e2e at {_n(lat.get('achieved_rate'))} ev/s: spike send → CostAnomaly received, "
            "p50 / p95 / p99 ms",
            trio(e2e),
            f"Kafka produce→consume {trio(base)}",
            ratio_trio(e2e, base),
            f"p99 < {TARGET_P99_MS:.0f} ms: {yes(p99 < TARGET_P99_MS if p99 is not None else None)}",
        ),
        (
            "Anomaly latency as the worker reports it (`detection_latency_ms`), p50 / p95 / p99 ms",
            trio(lat.get("anomaly_worker_reported_ms")),
            f"Kafka produce→consume {trio(base)}",
            ratio_trio(lat.get("anomaly_worker_reported_ms"), base),
            "",
        ),
        (
            "Window total latency, raw: last event of the window sent → WindowTotal received, p50 / p95 / "
            "p99 ms",
            trio(lat.get("window_raw_ms")),
            f"Kafka produce→consume {trio(base)}",
            ratio_trio(lat.get("window_raw_ms"), base),
            f"includes the {LATENESS_S} s allowed lateness by design",
        ),
        (
            "Window total latency, adjusted: closing event (first past end + lateness) sent → WindowTotal, "
            "p50 / p95 / p99 ms",
            trio(lat.get("window_adjusted_ms")),
            f"Kafka produce→consume {trio(base)}",
            ratio_trio(lat.get("window_adjusted_ms"), base),
            "",
        ),
        (
            f"Diagnostic, low load ({_n(low.get('achieved_rate'))} ev/s = "
            f"{cfg.low_load_factor if cfg else '?'} × the "
            "pipeline rate, same worker afterwards): anomaly e2e p50 / p95 / p99 ms",
            trio(low.get("anomaly_e2e_ms")),
            f"Kafka produce→consume {trio(base)}",
            ratio_trio(low.get("anomaly_e2e_ms"), base),
            f"p99 < {TARGET_P99_MS:.0f} ms: {yes(lowp99 < TARGET_P99_MS if lowp99 is not None else None)}",
        ),
        (
            "Diagnostic, low load: window total adjusted p50 / p95 / p99 ms",
            trio(low.get("window_adjusted_ms")),
            f"Kafka produce→consume {trio(base)}",
            ratio_trio(low.get("window_adjusted_ms"), base),
            "",
        ),
        (
            f"Sink: BulkLoader (Parquet → PUT → COPY → MERGE) into fakesnow, rows/s ({_n(bulk.get('rows'))} "
            "rows)",
            _n(bulk.get("rows_per_s")),
            f"executemany {_n(em.get('rows_per_s'))} rows/s ({_n(em.get('rows'))} rows)",
            _n(sink.get("ratio"), 1),
            "",
        ),
        (
            f"Recovery of {_n(rec.get('keys'))} changelog keys: process start → healthy, keys/s",
            _n(rec.get("keys_per_s")),
            f"plain consumer of the changelog {_n((rec.get('baseline_consumer') or {}).get('msgs_per_s'))} "
            "rec/s",
            _n(rec.get("ratio"), 4),
            f"{_n(rec.get('seconds_to_healthy'), 1)} s to healthy",
        ),
        (
            '… restore alone (log: "Bulk restore of" or "Restoring state" → "Recovery complete"), keys/s',
            _n(rec.get("restore_keys_per_s")),
            f"plain consumer of the changelog {_n((rec.get('baseline_consumer') or {}).get('msgs_per_s'))} "
            "rec/s",
            _n(rec.get("restore_ratio"), 4),
            (
                f"EXTRAPOLATED to 1,000,000 keys: ~{_n(rec.get('extrapolated_1m_seconds_to_healthy'))} s to "
                "healthy"
                if rec.get("extrapolated_1m_seconds_to_healthy")
                else ""
            ),
        ),
        (
            "Peak RSS (VmHWM), MiB: pipeline / latency / recovery worker",
            f"{_n(p.get('peak_rss_mib'))} / {_n(lat.get('peak_rss_mib'))} / {_n(rec.get('peak_rss_mib'))}",
            "—",
            "—",
            "",
        ),
    ]
    out = [
        "# Benchmarks: finops_app pipeline on a local Kafka",
        "",
        f"Run `{meta.get('run_id')}`, {meta.get('date')}, {meta.get('wall_seconds', 'n/a')} s end to end "
        f"(phases: {R.get('phase_seconds')}).",
        "",
        f"Command: `{meta.get('command')}`",
        "",
        f"Code: HEAD `{code.get('head')}` ({code.get('subject')}) plus "
        f"{code.get('uncommitted_package_files')} "
        "uncommitted files under finops_app/ (others edit this checkout; list in results.json `code`).",
        "",
        f"Machine: {m.get('nproc')} CPUs ({m.get('cpu_model')}), {m.get('ram_gib')} GiB RAM; Python "
        f"{m.get('python')}; "
        f"Apache Kafka {m.get('kafka')} (KRaft, one local node); faust-streaming {m.get('faust')}, aiokafka "
        f"{m.get('aiokafka')}. "
        f"Load average (1/5/15 min): {meta.get('load_start')} at the start, {meta.get('load_end')} at the "
        "end "
        "(2 CPUs: anything above 2 means runnable processes were queueing for a CPU).",
        "",
        "| figure | value | raw baseline | ratio | target / note |",
        "|---|---:|---|---:|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    out += [
        "",
        "## Machine and load",
        "",
        f"- {m.get('nproc')} CPUs: {m.get('cpu_model')}; {m.get('ram_gib')} GiB RAM; Linux {m.get('kernel')}",
        f"- Python {m.get('python')}; Apache Kafka {m.get('kafka')}; faust-streaming {m.get('faust')}; "
        f"aiokafka {m.get('aiokafka')}",
        f"- stack: {meta.get('stack')}",
        f"- `uptime` at start: `{meta.get('uptime_start')}`; at end: `{meta.get('uptime_end')}`",
        f"- 1-minute load average at the start and end of each phase: {meta.get('load_phases')}",
        "- busiest other processes at the start (other engineers' tests share these CPUs):",
    ]
    out += [f"  - `{b}`" for b in meta.get("busy_start", [])] or ["  - (none)"]
    out += ["", "## How each figure is measured", ""]
    if rc:
        out += [
            f"- **Raw baselines**: {_n(pr.get('messages'))} CostEvents shaped like `finops_app.demo._cost` "
            "(the demo "
            f"fleet of 32 resources, one event per resource per minute, {pr.get('avg_bytes')} bytes each, "
            "keyed by "
            "resource_id) produced with `finops_app.cli.produce_all` (AIOKafkaProducer, acks=all, "
            "idempotent, linger "
            f"5 ms, 256 KiB batches) to `{pr.get('topic')}` ({pr.get('seconds')} s), then read by a plain "
            f"AIOKafkaConsumer (no group, defaults) that `orjson.loads` every value ({rc.get('seconds')} s, "
            f"{rc.get('mb_per_s')} MB/s, {_n(rc.get('msgs_per_cpu_s'))} msgs per CPU-second of the bench "
            "process).",
        ]
    if bf:
        raw_us = 1e6 / rc["msgs_per_cpu_s"] if rc.get("msgs_per_cpu_s") else None
        any_bare = bare_fixed or bare_stock
        out += [
            "- **Bare Faust agent** (the ceiling of any Faust agent here): `bench/faust_bare.py` as a "
            "`faust worker` subprocess (its own app id, i.e. consumer group, per variant; memory store, no "
            "web server; the Faust settings of `finops_app.app` that matter for consumption: "
            "stream_buffer_maxsize 8192, commit every 10,000 records or 1 s, earliest offsets) with ONE "
            f"agent that iterates `stream.take_events({any_bare.get('batch_size')}, "
            f"within={any_bare.get('within_s')})` over the first "
            f"{_n(bf.get('events'))} records of the same topic (raw values), `orjson.loads` every value as "
            "the raw consumer does, and does nothing else. msgs/s = records after the first batch / time "
            "from the first batch to the last record (Faust's start-up and the rebalance left out); CPU per "
            "record = the process's CPU time over that interval / those records. Run twice on the same "
            "topic: stock faust-streaming, then with `finops_app.faust_fixes.install(True)`. Why: Faust "
            "hands every record to its stream with `await self.wait_first(callback(message), "
            "self.suspend_flow.wait())` in `Consumer._drain_messages`, four asyncio tasks and an "
            "`asyncio.wait` per record, so an agent costs "
            f"{_n(bare_stock.get('cpu_us_per_record'))} µs of CPU per record before doing any work "
            f"(raw consumer: {_n(raw_us, 1)} µs); faust_fixes.py starts each delivery in place and races it "
            f"against `suspend_flow` only when it has to wait ({_n(bare_fixed.get('cpu_us_per_record'))} "
            "µs). That is why intake is not a Faust agent: it is stateless and reads the input topics with "
            "aiokafka's `getmany` (its own consumer group), and the Faust agents receive one batch "
            "envelope per key and source partition per batch instead of every event. The pipeline row "
            "also shows its events/s ÷ the bare agent with the fix: above 1 means the pipeline is faster "
            "than any design that hands every event to a Faust agent could be here.",
        ]
    if p:
        out += [
            f"- **Pipeline**: the first {_n(p.get('events'))} of the same events ({p.get('sizing')}) "
            "pre-filled into "
            "`<prefix>finops.cost.events` of a fresh app id, THEN one `finops worker` started (sink off, "
            "default "
            f"batch size; intake in a child process: {p.get('intake_process')}; its CPU, run-queue wait "
            "and peak memory are counted with the worker's, memory as the sum of the two processes' "
            "peaks). A second worker of another fresh app id then drains the same backlog with "
            "`FINOPS_INTAKE_PROCESS=false` (intake on the worker's event loop), for the A/B row. "
            f"Start → ready (health 200): {p.get('startup_s')} s. **Done** = "
            '`finops_events_in_total{topic="<prefix>finops.cost.events"}` = N **and** the committed '
            "offsets of group `<app_id>-intake` equal the end offsets of the input topic **and** those of "
            "group `<app_id>` equal the end offsets on every internal topic (`finops.stream.by-unit`, "
            "`.by-service`, `.by-resource`, `.by-id`): everything acknowledged downstream. Faust commits "
            "every 1 s and intake every 0.5 s, so done is seen up to ~1 s late (conservative). events/s = "
            "N / (done − ready). If the cap is hit first, events/s = events applied by the slower of the "
            "two stateful agents (`finops_events_applied_total`, unit_windows and cost_anomalies) / "
            f"elapsed. Drain: {p.get('seconds')} s"
            + (f", intake finished at {p.get('intake_seconds')} s" if p.get("intake_seconds") else "")
            + "; the first 100 events were complete downstream only "
            + f"{p.get('downstream_first_100_completed_s')} s after ready "
            "(per-second progress in results.json `timeline_s_intake_completed_lag`)"
            + f". Worker CPU {p.get('worker_cpu_cores')} cores ({p.get('worker_cpu_seconds')} CPU-s), "
            "runnable but "
            f"waiting for a CPU {p.get('worker_runqueue_wait_s')} s (schedstat), broker CPU "
            f"{p.get('broker_cpu_cores')} "
            f"cores. Outputs: {p.get('outputs')}; anomaly records {p.get('anomaly_records')}; dead letters "
            f"{p.get('deadletters')}. Faust commits slower than their 1 s interval "
            '(worker log "Timer commit is '
            f'overlapping"): {fmt_commits(p.get("slow_commits"))}. '
            f"Python's garbage collector over the worker's whole run: {p.get('gc_seconds')} s in "
            f"{p.get('gc_collections')} collections by generation (`gc_threshold` "
            f"{p.get('gc_threshold')}, freeze {p.get('gc_freeze')}). "
            + (
                "py-spy sampled the worker (100 Hz) for "
                f"{p.get('profile_seconds_actual') or (cfg.profile_seconds if cfg else '?')} s of the drain "
                "(see bench/profile.md); sampling pauses the worker briefly and costs some CPU on a 2-CPU "
                "machine."
                if p.get("profile_raw")
                else "Not profiled (`--no-profile`, or py-spy not installed): bench/profile.md is from "
                "an earlier run."
            ),
        ]
        if p.get("note"):
            out.append(f"  - {p['note']}")
    if lat:
        out += [
            f"- **Latency**: fresh worker with {lat.get('bucket_s')} s anomaly buckets, "
            f"{lat.get('window_s')} s windows "
            f"(ROI {ROI_S} s), {lat.get('lateness_s')} s allowed lateness, 5 s idle timeout; "
            f"{len(LAT_UNITS)} business "
            f"units × {len(LAT_SERVICES)} services, one resource each; warmed with "
            f"{_n(lat.get('warmup_events'))} events "
            f"({cfg.warm_minutes if cfg else '?'} min of event time, processed in "
            f"{lat.get('warmup_seconds')} s); then "
            f"{lat.get('live_seconds')} s of real-time-stamped traffic at {_n(lat.get('achieved_rate'))} "
            "ev/s "
            f"({lat.get('rate_basis')}), each event carrying its share of the resource's cost so bucket "
            "sums match the "
            f"warm-up, with {lat.get('spikes')} spikes, one per (service, unit) series (~6× the series' "
            "bucket sum + "
            "$5). Anomaly e2e = first `open` CostAnomaly of series `<service>|bu=<unit>` in the spike's "
            "bucket, "
            "received by a consumer in the bench process − the spike's `send()` call. Missed spikes: "
            f"{lat.get('spikes_missed')}; `open` records on other unit series: "
            f"{lat.get('unexpected_unit_series_opens')}. "
            f"Did the worker keep up? Intake was {_n(lat.get('intake_behind_at_end'))} events behind when "
            "the live "
            f"traffic stopped; everything was consumed and committed {lat.get('drain_seconds')} s later. "
            "Worker CPU "
            f"during the live phase {lat.get('worker_cpu_cores')} cores, runnable but waiting for a CPU "
            f"{lat.get('worker_runqueue_wait_s')} s of {lat.get('live_seconds')} s; meanwhile the bench "
            f"process (load generator and result consumer) used {lat.get('bench_cpu_cores')} cores "
            f"and the broker {lat.get('broker_cpu_cores')}. Slow commits (> 1 s) "
            "over the "
            "whole latency run: "
            f"{fmt_commits(lat.get('slow_commits'))}. "
            "`detection_latency_ms` (worker) = the worker's clock when it builds the record − the Kafka "
            "CreateTime of "
            "the spike; it leaves out the anomaly's own produce and the consumer's fetch. Baseline: a plain "
            "producer → broker → plain consumer at the same rate for "
            f"{cfg.baseline_seconds if cfg else '?'} s "
            f"(n={base.get('n')}).",
            "- **Window totals**: a window closes when its partition's watermark passes end + "
            f"{lat.get('lateness_s')} s, "
            "i.e. when an event stamped at or after that arrives, so the raw figure (last event of the "
            "window sent → "
            f"WindowTotal received) includes ~{lat.get('lateness_s')} s by design (raw − lateness: "
            f"{trio(lat.get('window_raw_minus_lateness_ms'))} ms). Adjusted = received − send of the first "
            "event stamped "
            "≥ end + lateness in the same by-unit partition (the event that closes it): the pipeline's own "
            "delay. "
            f"Windows counted: {(lat.get('window_raw_ms') or {}).get('n')} (started after the live traffic "
            "began, "
            f"closable by events before it ended); {lat.get('windows_missing')} of "
            f"{lat.get('windows_expected')} such "
            "windows had no WindowTotal by the end of the drain (not in the percentiles).",
        ]
        if low:
            out += [
                "- **Low-load diagnostic** (not part of the brief's targets): after the half-load traffic "
                "drained, the "
                f"same worker got {low.get('live_seconds')} s at {_n(low.get('achieved_rate'))} ev/s with "
                f"{low.get('spikes')} spikes on the series of the last {cfg.low_load_units if cfg else '?'} "
                "units (not "
                f"spiked before). Intake {_n(low.get('intake_behind_at_end'))} events behind at the end; "
                "worker CPU "
                f"{low.get('worker_cpu_cores')} cores; waiting for a CPU "
                f"{low.get('worker_runqueue_wait_s')} s. "
                f"Anomaly e2e {trio(low.get('anomaly_e2e_ms'))} ms (worker-reported "
                f"{trio(low.get('anomaly_worker_reported_ms'))}); windows raw "
                f"{trio(low.get('window_raw_ms'))}, adjusted "
                f"{trio(low.get('window_adjusted_ms'))} ms ({low.get('windows_missing')} of "
                f"{low.get('windows_expected')} "
                "missing). This separates the pipeline's own delay from queueing behind a backlog.",
            ]
    if sink:
        out += [
            f"- **Sink**: {_n(bulk.get('rows'))} `finops_curated.cost_events` rows (the same CostEvents, "
            "validated by "
            "`core.validate.parse_cost` and mapped by `sinks.rows.event_row`) loaded with "
            "`BulkLoader.load` in batches of "
            f"{bulk.get('batch_rows')} (seconds per load: {bulk.get('load_seconds')}), after a 200-row "
            "warm-up load "
            f"(stage and landing table creation, not timed). executemany: the next {_n(em.get('rows'))} "
            "CostEvents (not yet "
            "in the table), converted with the loader's converters, `cursor.executemany(\"INSERT INTO "
            "<landing> ... "
            'VALUES (%s, ...)")` in chunks of 1,000 rows, then the same MERGE and landing clean-up '
            f"(INSERTs alone {em.get('insert_seconds')} s of {em.get('seconds')} s). Against fakesnow "
            "(DuckDB), not "
            "Snowflake: the figures compare the two paths, they do not predict a warehouse. "
            + (sink.get("note_sink_bench") or ""),
        ]
    if rec:
        ex = rec.get("extrapolated_1m_seconds_to_healthy")
        out += [
            f"- **Recovery**: {_n(rec.get('keys'))} keys ({rec.get('sizing')}) written straight into "
            "`<app_id>-resource_state-changelog` (4 partitions, compacted, default partitioner on the key) "
            "in the format "
            f"the pipeline worker's own `unit_state` changelog showed: key = {rec.get('key_format')}, value "
            "= JSON "
            f"({rec.get('value_bytes')} bytes: a resource_state value after one utilisation sample). Then a "
            "fresh worker "
            "with an empty data dir: process start → /finops/health/ 200 with `recovery_finished` true = "
            f"{rec.get('seconds_to_healthy')} s; of which the restore "
            '(log "Bulk restore of" or, without it, "Restoring state from changelog topics" → '
            f'"Recovery complete") {rec.get("restore_seconds_from_log")} s'
            + (
                f", of which the bulk read (finops_app/faust_restore.py) "
                f"{_n(sum(b['records'] for b in rec['bulk']))} records in "
                f"{sum(b['seconds'] for b in rec['bulk']):.2f} s. "
                if rec.get("bulk")
                else ". "
            )
            + "Restored keys checked with table lookups: "
            f"{rec.get('keys_verified')}. Baseline: a plain consumer reading the same changelog and "
            "decoding the values."
            + (
                f" **Extrapolation, not measured**: 1,000,000 keys ≈ {rec.get('start_overhead_s')} s "
                "start-up + "
                f"1,000,000 / {_n(rec.get('restore_keys_per_s'))} keys/s ≈ {_n(ex)} s, assuming the restore "
                "rate stays "
                "linear."
                if ex
                else ""
            )
            + (f" {rec['note']}" if rec.get("note") else ""),
        ]
    out += ["- **Peak memory**: VmHWM from /proc/<pid>/status of each worker just before it was stopped."]
    notes = R.get("notes") or []
    if notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    errors = R.get("errors") or []
    if errors:
        out += ["", "## Phases that failed or were skipped", ""] + [f"- {e}" for e in errors]
    out += [
        "",
        "Raw numbers: `bench/results.json`; hotspots: `bench/profile.md`; logs and py-spy stacks: "
        f"`{meta.get('artefacts')}/`.",
        "",
    ]
    return "\n".join(out)


def write_profile_md(cfg: Config, R: dict[str, Any], out: Path = BENCH) -> None:
    p = R.get("pipeline", {})
    raw = p.get("profile_raw")
    path = out / "profile.md"
    if not raw or not (ROOT / raw).exists():
        path.write_text("# Profile\n\nNo profile was recorded in the last run.\n")
        return
    prof = pyspy_summary.load(ROOT / raw)
    cpu = None
    if p.get("profile_cpu0") is not None and p.get("profile_cpu1") is not None:
        cpu = round(
            (p["profile_cpu1"] - p["profile_cpu0"])
            / (p.get("profile_seconds_actual") or cfg.profile_seconds),
            2,
        )
    threads = ", ".join(f"{t}: {c}" for t, c in prof.by_thread.most_common()) or "n/a"
    dur = p.get("profile_seconds_actual") or cfg.profile_seconds
    app_share = sum(c for f, c in prof.app_self_line.items() if f != pyspy_summary.FRAMEWORK)
    text = [
        "# Profile of one `finops worker` draining the cost-event backlog",
        "",
        f"Run `{cfg.run_id}` ({R.get('run', {}).get('date')}): `py-spy record -f raw -r 100 -d "
        f"{cfg.profile_seconds} "
        "--threads --subprocesses -p <worker pid>` (the worker and, with FINOPS_INTAKE_PROCESS, its "
        f"intake child process), started {p.get('profile_started_after_ready_s')} s after the worker "
        "was ready, while it "
        f"drained {p.get('events'):,} CostEvents at {_n(p.get('events_per_s'))} events/s (see "
        "bench/results.md). "
        f"Raw stacks: `{raw}`; aggregate them again with `.venv/bin/python bench/pyspy_summary.py {raw}`.",
        "",
        "How to read it:",
        "",
        f"- py-spy recorded {prof.samples} busy samples ({threads}; a thread can give at most "
        f"{round(100 * dur)} in {dur} "
        f"s{', stopped when the backlog was drained' if dur < cfg.profile_seconds - 0.5 else ''}); the "
        f"worker used {cpu if cpu is not None else 'n/a'} CPU cores in that window (/proc/<pid>/stat) "
        f"and was runnable but waiting for a CPU {p.get('worker_runqueue_wait_s')} s of the "
        f"{p.get('seconds')} s "
        "drain (schedstat; other processes shared the 2 CPUs, load average "
        f"{R.get('run', {}).get('load_phases', {}).get('pipeline')}). "
        "A sample counts as busy when the thread is not sleeping in a system call, so busy samples include "
        "time "
        "spent runnable in the CPU queue: shares are of the worker's active wall time, and a thread that is "
        "descheduled in a system call (typically `socket.send` waking the local broker) shows up there.",
        "- *Self* is the sample's innermost frame (where the time went); *total* counts a frame anywhere "
        "on the stack.",
        f"- {app_share / prof.samples:.0%} of the busy samples have a `finops_app` frame below the entry "
        "point; "
        "the rest is Faust, mode, aiokafka and the asyncio loop running on their own (consumer fetches, "
        "producer "
        "sends, commits, timers, stream delivery).",
        "- Waiting does not show in a CPU profile: Faust flushes the producer and waits for the acks of "
        "what was sent before it commits consumed offsets (faust/transport/consumer.py `_commit_offsets`), "
        "so a slow commit also delays progress; `slow_commits` in "
        "results.json counts commits that took longer than their 1 s interval (worker log).",
        "",
        pyspy_summary.markdown(prof, top=25, title="Hotspots"),
    ]
    path.write_text("\n".join(text) + "\n")


# -- main ---------------------------------------------------------------------------------------


async def run_phases(cfg: Config, R: dict[str, Any], only: set[str]) -> None:
    phases: list[tuple[str, Callable[[], Awaitable[None]], float]] = [
        ("baseline", lambda: phase_baseline(cfg, R), 60),
        ("pipeline", lambda: phase_pipeline(cfg, R), 90),
        # the same backlog with intake in the worker's event loop: what the intake child process gives
        (
            "pipeline_inloop",
            lambda: phase_pipeline(cfg, R, "pipeline_inloop", "q", {"intake_process": False}),
            90,
        ),
        ("latency", lambda: phase_latency(cfg, R), 60),
        ("sink", lambda: asyncio.to_thread(phase_sink, cfg, R), 40),
        ("recovery", lambda: phase_recovery(cfg, R), 60),
    ]
    for name, fn, minimum in phases:
        if only and name not in only:
            continue
        if cfg.deadline.left() < minimum:
            R.setdefault("errors", []).append(
                f"{name}: skipped, only {cfg.deadline.left():.0f} s of the budget left"
            )
            say(f"\n!! skipping {name}: {cfg.deadline.left():.0f} s left")
            continue
        t0 = time.monotonic()
        l0 = loadavg()[0]
        try:
            await fn()
        except Exception as exc:  # noqa: BLE001 - a failed phase is reported, the run goes on
            R.setdefault("errors", []).append(f"{name}: {type(exc).__name__}: {str(exc)[:600]}")
            say(f"!! phase {name} failed: {exc}")
            traceback.print_exc()
        R.setdefault("phase_seconds", {})[name] = round(time.monotonic() - t0, 1)
        R["run"].setdefault("load_phases", {})[name] = [l0, loadavg()[0]]
        say(
            f"   [{name}: {time.monotonic() - t0:.0f} s; {cfg.deadline.elapsed():.0f} s elapsed of the "
            f"{cfg.deadline.seconds:.0f} s budget]"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="finops_app benchmarks (see bench/pipeline.py's docstring)")
    ap.add_argument(
        "--events", type=int, default=200_000, help="N CostEvents for the raw baselines (phase 1)"
    )
    ap.add_argument(
        "--pipeline-events",
        type=int,
        default=None,
        help="backlog for the worker (default: sized from the previous bench/results.json to fit the cap)",
    )
    ap.add_argument("--pipeline-target-seconds", type=float, default=75.0)
    ap.add_argument("--pipeline-cap", type=float, default=120.0, help="longest drain of the pipeline backlog")
    ap.add_argument(
        "--recovery-keys",
        type=int,
        default=None,
        help="changelog keys to restore (default 1,000,000, the brief's table; a restore still running "
        "after 300 s reports its rate so far)",
    )
    ap.add_argument("--live-seconds", type=float, default=40.0, help="half-load live traffic")
    ap.add_argument(
        "--latency-rate",
        type=int,
        default=0,
        help="events/s of the latency phase instead of half the measured pipeline rate (to compare code "
        "versions at one load)",
    )
    ap.add_argument(
        "--low-live-seconds",
        type=float,
        default=20.0,
        help="then live traffic at 0.1 x the pipeline rate (diagnostic; 0 skips it)",
    )
    ap.add_argument(
        "--bare-events",
        type=int,
        default=80_000,
        help="records the bare Faust agent reads, per variant (phase 1; at most --events; 0 skips it)",
    )
    ap.add_argument("--baseline-seconds", type=float, default=8.0)
    ap.add_argument(
        "--warm-minutes",
        type=int,
        default=64,
        help="event time pre-loaded before the latency run (detector warm-up: 30 buckets and 1 h)",
    )
    ap.add_argument("--sink-rows", type=int, default=20_000)
    ap.add_argument("--executemany-rows", type=int, default=1_000)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-seconds", type=int, default=20)
    ap.add_argument(
        "--budget", type=float, default=570.0, help="seconds for the whole run (phases shrink/skip)"
    )
    ap.add_argument(
        "--only",
        action="append",
        choices=("baseline", "pipeline", "pipeline_inloop", "latency", "sink", "recovery"),
    )
    ap.add_argument(
        "--private-stack", action="store_true", help="start a private stack even if the dev stack runs"
    )
    ap.add_argument("--keep-topics", action="store_true", help="do not delete the run's topics at the end")
    ap.add_argument("--out", type=Path, default=BENCH, help="where results.md/json go (default bench/)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker setting for every phase, as its FINOPS_ variable would give it (name without "
        "the prefix, e.g. --set batch_within_seconds=0.1); repeatable; for A/B runs of settings",
    )
    args = ap.parse_args(argv)
    try:
        worker_settings = parse_sets(args.set)
    except (ValueError, ConfigError) as exc:
        ap.error(str(exc))

    deadline = Deadline(args.budget)
    run_id = dt.datetime.now(dt.UTC).strftime("%m%d%H%M") + uuid.uuid4().hex[:4]
    run_dir = BENCH / ".runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    command = os.environ.get("BENCH_COMMAND") or " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    R: dict[str, Any] = {
        "run": {
            "run_id": run_id,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": command,
            "load_start": loadavg(),
            "uptime_start": subprocess.run(
                ["uptime"], check=False, capture_output=True, text=True
            ).stdout.strip(),
            "busy_start": busy_processes({os.getpid()}),
            "artefacts": str(run_dir.relative_to(ROOT)),
        },
        "machine": machine_info(),
        "code": code_state(),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": {
            "events_per_s": TARGET_EVENTS_PER_S,
            "share_of_raw": TARGET_RAW_SHARE,
            "p99_anomaly_ms": TARGET_P99_MS,
        },
    }
    say(f"bench run {run_id}: {R['run']['uptime_start']}")
    say(
        f"machine: {R['machine']['nproc']} x {R['machine']['cpu_model']}, {R['machine']['ram_gib']} GiB, "
        f"Python {R['machine']['python']}, Kafka {R['machine']['kafka']}"
    )

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    prev = previous_results()
    prev_rate = (prev.get("pipeline") or {}).get("events_per_s")
    if args.pipeline_events:
        n_pipe, pipe_sizing = min(args.pipeline_events, args.events), "backlog size from --pipeline-events"
    elif prev_rate:
        n_pipe = int(min(args.events, max(10_000, prev_rate * args.pipeline_target_seconds)))
        pipe_sizing = (
            f"backlog sized to ~{args.pipeline_target_seconds:.0f} s at the previous run's "
            f"{prev_rate:,.0f} events/s"
        )
    else:
        n_pipe, pipe_sizing = min(args.events, 12_000), "default backlog (no previous run to size it from)"
    if args.recovery_keys:
        n_keys, keys_sizing = args.recovery_keys, "from --recovery-keys"
    else:
        n_keys, keys_sizing = 1_000_000, "the brief's table of 1,000,000 keys"
    cfg: Config | None = None
    rc = 0
    try:
        stack = find_or_start_stack(run_dir, private=args.private_stack)
        R["run"]["stack"] = (
            f"private, started by this run under {stack.var.relative_to(ROOT)} (Kafka port "
            f"{stack.ports.kafka})"
            if stack.started_here
            else f"the running dev stack (var/stack, Kafka port {stack.ports.kafka}, "
            f"fakesnow port {stack.ports.snowflake})"
        )
        cfg = Config(
            run_id=run_id, run_dir=run_dir, stack=stack, deadline=deadline, events=args.events,
            live_seconds=args.live_seconds, baseline_seconds=args.baseline_seconds,
            warm_minutes=args.warm_minutes, sink_rows=args.sink_rows, executemany_rows=args.executemany_rows,
            profile=not args.no_profile and PYSPY.exists(), profile_seconds=args.profile_seconds,
            profile_delay=3.0,
            pipeline_timeout=args.pipeline_cap, recovery_timeout=300.0, fallback_rate=100,
            latency_rate=args.latency_rate,
            low_live_seconds=args.low_live_seconds, pipeline_events=n_pipe, pipeline_sizing=pipe_sizing,
            recovery_keys=n_keys, recovery_sizing=keys_sizing,
            reserve_after_pipeline=240.0, bare_events=args.bare_events, worker_settings=worker_settings,
        )  # fmt: skip
        asyncio.run(run_phases(cfg, R, set(args.only or ())))
    except KeyboardInterrupt as exc:
        R.setdefault("errors", []).append(f"interrupted ({exc}); results are partial")
        say(f"\n!! interrupted: {exc}")
        rc = 130
    except Exception as exc:  # noqa: BLE001
        R.setdefault("errors", []).append(f"run failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        rc = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        cleanup_processes()
        if cfg is not None and not args.keep_topics and not (STATE.stack and STATE.stack.started_here):
            try:
                n = asyncio.run(asyncio.wait_for(delete_run_topics(cfg.settings("p"), f"bench{run_id}"), 30))
                say(f"deleted {n} topics of this run")
            except Exception as exc:  # noqa: BLE001
                say(f"could not delete this run's topics: {exc}")
        for d in run_dir.glob("data-*"):
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(run_dir / "sink", ignore_errors=True)
        if STATE.stack is not None and STATE.stack.started_here:
            say("stopping the private stack ...")
            devstack.down(STATE.stack.var)
            for sub in ("kafka/data", "snowflake"):  # data of a throw-away stack; its logs stay
                shutil.rmtree(STATE.stack.var / sub, ignore_errors=True)
        R["run"]["load_end"] = loadavg()
        R["run"]["uptime_end"] = subprocess.run(
            ["uptime"], check=False, capture_output=True, text=True
        ).stdout.strip()
        R["run"]["wall_seconds"] = round(deadline.elapsed(), 1)
        R.pop("_events", None)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(R, indent=2, default=str) + "\n")
        (args.out / "results.md").write_text(report(cfg, R))
        if cfg is not None and R.get("pipeline", {}).get("profile_raw"):
            write_profile_md(cfg, R, args.out)
        say(f"\nwrote {args.out / 'results.md'} and results.json ({R['run']['wall_seconds']} s end to end)")
        say(report(cfg, R).split("## Machine")[0])
    return rc


if __name__ == "__main__":
    sys.exit(main())
