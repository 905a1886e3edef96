"""The local stack: real Apache Kafka (KRaft), fakesnow (persistent DuckDB) and moto, on loopback.

``dev/stack up|down|status`` (a wrapper runs this with the project's virtualenv). Kafka's jars come
from Maven Central through ``mvn`` (``dev/pom.xml``) and are cached in ``.cache/kafka/libs``.
State, logs and PID files live under ``var/stack`` (or ``--var DIR``). ``up`` waits until every
service answers a real request; calling it twice is safe; ``down`` stops exactly the PIDs it
started. ``status`` prints ``KEY=value`` lines that the app's settings accept as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JARS = ROOT / ".cache" / "kafka" / "libs"
POM = ROOT / "dev" / "pom.xml"
SERVICES = ("kafka", "snowflake", "moto")


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ports:
    kafka: int
    controller: int
    snowflake: int
    moto: int

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Ports:
        env = dict(os.environ if env is None else env)
        kafka = int(env.get("FINOPS_KAFKA_PORT", "9092"))
        return cls(
            kafka=kafka,
            controller=int(env.get("FINOPS_CONTROLLER_PORT", str(kafka + 1))),
            snowflake=int(env.get("FINOPS_SNOWFLAKE_PORT", "8085")),
            moto=int(env.get("FINOPS_MOTO_PORT", "5005")),
        )


def endpoints(ports: Ports) -> dict[str, str]:
    return {
        "FINOPS_BROKER_URL": f"kafka://127.0.0.1:{ports.kafka}",
        "FINOPS_SNOWFLAKE_HOST": "127.0.0.1",
        "FINOPS_SNOWFLAKE_PORT": str(ports.snowflake),
        "FINOPS_SNOWFLAKE_PROTOCOL": "http",
        "FINOPS_AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports.moto}",
    }


# -- process bookkeeping ------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    with contextlib.suppress(OSError, ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def read_pid(var: Path, name: str) -> int | None:
    try:
        pid = int((var / f"{name}.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _spawn(var: Path, name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    log = open(var / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
    )
    (var / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _wait(name: str, var: Path, check, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if read_pid(var, name) is None:
            tail = (var / f"{name}.log").read_text(errors="replace")[-2000:]
            raise StackError(f"{name} exited during start-up; last log lines:\n{tail}")
        try:
            check()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
            time.sleep(0.2)
    raise StackError(
        f"{name} did not answer within {timeout:.0f} s (last error: {last}); see {var}/{name}.log"
    )


# -- Kafka ----------------------------------------------------------------------------------------


def fetch_kafka_jars() -> None:
    if JARS.is_dir() and any(JARS.glob("kafka_2.13-*.jar")):
        return
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed once to fetch the Kafka jars; install it and retry")
    print("fetching Apache Kafka jars with Maven (once) ...", file=sys.stderr)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={JARS}"],
        check=True,
    )


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("Java 17+ is needed for the local Kafka broker; install a JDK and retry")
    return java


def kafka_config(var: Path, ports: Ports, extra: str = "") -> Path:
    kdir = var / "kafka"
    kdir.mkdir(parents=True, exist_ok=True)
    props = kdir / "server.properties"
    props.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{ports.controller}",
                f"listeners=PLAINTEXT://127.0.0.1:{ports.kafka},CONTROLLER://127.0.0.1:{ports.controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{ports.kafka}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
                "SSL:SSL,SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={kdir / 'data'}",
                "num.partitions=1",
                "auto.create.topics.enable=false",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.retention.check.interval.ms=60000",
                "message.max.bytes=10485760",
                extra,
            ]
        )
        + "\n"
    )
    (kdir / "log4j2.properties").write_text(
        "rootLogger.level=INFO\nrootLogger.appenderRef.stdout.ref=STDOUT\n"
        "appender.stdout.type=Console\nappender.stdout.name=STDOUT\n"
        "appender.stdout.layout.type=PatternLayout\nappender.stdout.layout.pattern=[%d] %p %m (%c)%n\n"
        "logger.kafka.name=kafka\nlogger.kafka.level=WARN\n"
        "logger.apache.name=org.apache.kafka\nlogger.apache.level=WARN\n"
    )
    return props


def start_kafka(var: Path, ports: Ports, extra_config: str = "", heap: str = "768m") -> None:
    fetch_kafka_jars()
    java = _java()
    props = kafka_config(var, ports, extra_config)
    cp = f"{JARS}/*"
    data = var / "kafka" / "data"
    if not (data / "meta.properties").exists():
        cluster_id = (
            subprocess.run(
                [java, "-cp", cp, "kafka.tools.StorageTool", "random-uuid"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            or uuid.uuid4().hex[:22]
        )
        subprocess.run(
            [java, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
            check=True,
            capture_output=True,
        )
    _spawn(
        var,
        "kafka",
        [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={var / 'kafka' / 'log4j2.properties'}",
            "-cp",
            cp,
            "kafka.Kafka",
            str(props),
        ],
    )


def kafka_ready(port: int) -> None:
    """A real metadata request through aiokafka (broker registered and answering)."""
    import logging

    from aiokafka.admin import AIOKafkaAdminClient

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    asyncio.run(probe())


# -- fakesnow and moto ------------------------------------------------------------------------------


def start_snowflake(var: Path, ports: Ports) -> None:
    db = var / "snowflake"
    db.mkdir(parents=True, exist_ok=True)
    _spawn(
        var,
        "snowflake",
        [
            sys.executable,
            str(ROOT / "dev" / "fakesnow_server.py"),
            "--port",
            str(ports.snowflake),
            "--db-path",
            str(db),
        ],
    )


def http_ready(url: str, method: str = "GET") -> None:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:  # an HTTP answer, even an error, means the server is up
        if exc.code >= 500:
            raise


def start_moto(var: Path, ports: Ports) -> None:
    moto = Path(sys.executable).with_name("moto_server")
    cmd = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    _spawn(var, "moto", [*cmd, "-H", "127.0.0.1", "-p", str(ports.moto)])


# -- commands -----------------------------------------------------------------------------------------


def up(var: Path, ports: Ports, only: tuple[str, ...] = SERVICES) -> dict[str, str]:
    var.mkdir(parents=True, exist_ok=True)
    (var / "ports.json").write_text(json.dumps(ports.__dict__))
    plan = {
        "kafka": (ports.kafka, lambda: start_kafka(var, ports), lambda: kafka_ready(ports.kafka), 90.0),
        "snowflake": (
            ports.snowflake,
            lambda: start_snowflake(var, ports),
            lambda: http_ready(f"http://127.0.0.1:{ports.snowflake}/"),
            60.0,
        ),
        "moto": (
            ports.moto,
            lambda: start_moto(var, ports),
            lambda: http_ready(f"http://127.0.0.1:{ports.moto}/moto-api/"),
            60.0,
        ),
    }
    started = []
    for name in only:
        port, start, _, _ = plan[name]
        if read_pid(var, name) is not None:
            continue  # already running: `up` is idempotent
        if not port_free(port):
            raise StackError(
                f"port {port} for {name} is already taken by another process; stop it or choose another "
                f"port (FINOPS_{'KAFKA' if name == 'kafka' else name.upper()}_PORT)"
            )
        start()
        started.append(name)
    for name in only:
        _, _, check, timeout = plan[name]
        _wait(name, var, check, timeout)
    return endpoints(ports)


def down(var: Path, only: tuple[str, ...] = SERVICES, timeout: float = 20.0) -> list[str]:
    stopped = []
    for name in only:
        pid = read_pid(var, name)
        if pid is None:
            (var / f"{name}.pid").unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        (var / f"{name}.pid").unlink(missing_ok=True)
        stopped.append(name)
    return stopped


def status(var: Path) -> dict[str, str]:
    try:
        ports = Ports(**json.loads((var / "ports.json").read_text()))
    except FileNotFoundError:
        ports = Ports.from_env()
    out = {f"{name.upper()}_PID": str(read_pid(var, name) or "stopped") for name in SERVICES}
    out.update(endpoints(ports))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dev/stack",
        description="Start, stop or show the local stack: Apache Kafka (KRaft) on 127.0.0.1, "
        "fakesnow (Snowflake emulator, data in a DuckDB file) and moto (AWS emulator). "
        "Ports: FINOPS_KAFKA_PORT (9092), FINOPS_CONTROLLER_PORT (kafka+1), FINOPS_SNOWFLAKE_PORT (8085), "
        "FINOPS_MOTO_PORT (5005).",
    )
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--var", type=Path, default=ROOT / "var" / "stack", help="state, logs and PID files")
    parser.add_argument("--only", choices=SERVICES, action="append", help="limit to one service (repeatable)")
    args = parser.parse_args(argv)
    only = tuple(args.only) if args.only else SERVICES
    try:
        if args.command == "up":
            t0 = time.monotonic()
            info = up(args.var, Ports.from_env(), only)
            print(f"# stack up in {time.monotonic() - t0:.1f} s; logs in {args.var}", file=sys.stderr)
            for k, v in info.items():
                print(f"{k}={v}")
        elif args.command == "down":
            stopped = down(args.var, only)
            print(f"# stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
        else:
            for k, v in status(args.var).items():
                print(f"{k}={v}")
    except (StackError, subprocess.CalledProcessError) as exc:
        print(f"dev/stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
