"""A local Spark standalone cluster with a Spark Connect server, for tests and users (#17).

One master, N workers (one core and a bounded memory each) and a Spark Connect server whose
executors run on those workers, all separate JVMs started from pip's pyspark (its `bin/spark-class`
and `bin/spark-submit`, and the Connect jar in `pyspark/jars/`). Every process listens on 127.0.0.1
only. Ports are free ones picked at start; the state directory (`.spark/` for `make spark-up`) holds
`cluster.json` (ports and pids), one log per process, the event log and the scratch folders.

    python -m potato_assets.lib.engine.spark_cluster up [--state-dir .spark]    # prints the sc:// URL
    python -m potato_assets.lib.engine.spark_cluster down [--state-dir .spark]
    python -m potato_assets.lib.engine.spark_cluster status [--state-dir .spark]

`up` is idempotent: a running, ready cluster in the state directory is reused; a partial one is
stopped first. Every process started carries `POTATO_SPARK_CLUSTER=<state dir>` in its environment
(inherited by the executors and their Python workers), so `down` finds and ends all of them, also
the ones the workers spawned.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
TAG = "POTATO_SPARK_CLUSTER"
STATE_FILE = "cluster.json"
CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# What makes spark-submit and pyspark's SparkSession.builder use Spark Connect (a process that
# used Connect has them set); a submitted classic job must not inherit them.
CONNECT_ENVIRONMENT = ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_API_MODE")


class SparkClusterError(RuntimeError):
    """The cluster could not be started or reached; the message names the log to read."""


@dataclass(frozen=True)
class SparkCluster:
    state_dir: str
    master_url: str  # spark://127.0.0.1:PORT, what executors register with
    master_ui: str  # http://127.0.0.1:PORT; /json/ lists workers and applications
    worker_uis: tuple[str, ...]  # http://127.0.0.1:PORT each; /json/ lists its executors
    connect_url: str  # sc://127.0.0.1:PORT, for SparkSession.builder.remote(...); "" without Connect
    driver_ui: str  # the Connect server's (the driver's) UI; /api/v1/applications/...; "" without
    pids: dict[str, int] = field(default_factory=dict)  # name -> pid of each JVM started

    @property
    def event_log_dir(self) -> Path:
        return Path(self.state_dir) / "events"


def spark_home() -> Path:
    """pip's pyspark folder: it is a Spark distribution (bin/, jars/)."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise SparkClusterError("pyspark is not installed: install the project's 'spark' extra (pyspark[connect])")
    return Path(spec.origin).parent


def java_missing_reason() -> str | None:
    """Why a cluster cannot start here (no Java 17+ on PATH or JAVA_HOME), or None."""
    java = _java()
    if java is None:
        return "no java on PATH or JAVA_HOME (install openjdk-17-jre-headless)"
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{java} -version failed: {error}"
    # 'openjdk version "17.0.21.1" ...' or 'java version "1.8.0_..."'
    try:
        quoted = out.split('"')[1]
        major = int(quoted.split(".")[1] if quoted.startswith("1.") else quoted.split(".")[0].split("-")[0])
    except (IndexError, ValueError):
        return f"cannot read the Java version from {java} -version: {out.strip()[:200]!r}"
    return None if major >= 17 else f"Spark 4 needs Java 17 or newer; {java} is Java {major}"


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def connect_jar(home: Path | None = None) -> Path:
    jars = sorted((home or spark_home()).joinpath("jars").glob("spark-connect_*.jar"))
    if not jars:
        raise SparkClusterError(f"no spark-connect_*.jar in {(home or spark_home()) / 'jars'}")
    return jars[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 30.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback http only)
        return json.load(response)


def master_state(cluster: SparkCluster) -> dict:
    """The master's JSON view: workers (state, cores), active and completed applications."""
    state = _get_json(cluster.master_ui + "/json/")
    assert isinstance(state, dict)
    return state


def worker_state(ui: str) -> dict:
    """One worker's JSON view: its executors (with their application ids)."""
    state = _get_json(ui + "/json/")
    assert isinstance(state, dict)
    return state


def driver_api(cluster: SparkCluster, path: str = "") -> object:
    """The Connect driver's monitoring REST API, e.g. driver_api(c, f"/{app_id}/executors")."""
    return _get_json(cluster.driver_ui + "/api/v1/applications" + path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our exited child, not yet reaped) is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cluster_processes(state_dir: Path) -> list[int]:
    """Every live process carrying this cluster's tag: the JVMs, their executors, Python workers."""
    tag = f"{TAG}={Path(state_dir).resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if tag in environ.split(b"\0") and _alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state the given processes hold, read
    from /proc (IPv4-mapped IPv6 addresses shown as IPv4)."""
    listening: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] != "0A":  # LISTEN
                continue
            address, port = parts[1].split(":")
            listening[parts[9]] = (_address(address), int(port, 16))
    found = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                found.append((pid, *listening[target[8:-1]]))
    return sorted(set(found))


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 stores four 32-bit words, each in host (little-endian) order.
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def read_state(state_dir: Path) -> SparkCluster | None:
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        data["worker_uis"] = tuple(data["worker_uis"])
        return SparkCluster(**data)
    except (ValueError, TypeError, KeyError):
        return None


def _ready(cluster: SparkCluster, workers: int) -> str | None:
    """None when the master lists `workers` ALIVE workers, the Connect app runs and answers a
    query; otherwise what is still missing."""
    dead = [name for name, pid in cluster.pids.items() if not _alive(pid)]
    if dead:
        return f"process {', '.join(dead)} exited"
    try:
        state = master_state(cluster)
    except (OSError, urllib.error.URLError, ValueError):
        return "the master's web UI does not answer yet"
    alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
    if len(alive) < workers:
        return f"{len(alive)} of {workers} workers ALIVE"
    if "connect" not in cluster.pids:
        return None  # started without a Connect server
    if not state.get("activeapps"):
        return "the Connect server has not registered with the master yet"
    try:
        with socket.create_connection((LOOPBACK, int(cluster.connect_url.rsplit(":", 1)[1])), timeout=2):
            pass
    except OSError:
        return "the Connect port does not accept connections yet"
    return _query(cluster.connect_url)


def _query(url: str) -> str | None:
    from pyspark.sql import SparkSession

    try:
        spark = SparkSession.builder.remote(url).getOrCreate()
        try:
            if spark.range(3).count() != 3:
                return "the Connect server answered a wrong count"
        finally:
            spark.stop()
    except Exception as error:  # any client error means "not ready yet"; the last one is reported
        return f"a Connect session failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return None


def start_cluster(
    state_dir: Path | str = ".spark",
    *,
    workers: int = 2,
    worker_cores: int = 1,
    worker_memory: str = "1g",
    executor_memory: str = "768m",
    driver_memory: str = "1g",
    python: str | None = None,
    timeout: float = 600.0,
    connect: bool = True,
) -> SparkCluster:
    """Start (or reuse) the cluster in `state_dir` and wait until it serves Spark Connect.

    `python` is what the executors' Python workers run (pandas UDFs): the calling interpreter,
    i.e. the project's .venv, by default. `connect=False` starts no Connect server (it would
    hold every core), for Spark jobs submitted with `spark_submit_command`. Raises
    SparkClusterError naming the log to read.
    """
    reason = java_missing_reason()
    if reason:
        raise SparkClusterError(reason)
    state_dir = Path(state_dir).resolve()
    running = read_state(state_dir)
    if (
        running is not None
        and len(running.worker_uis) == workers
        and ("connect" in running.pids) == connect
        and _ready(running, workers) is None
    ):
        return running
    stop_cluster(state_dir)

    home = spark_home()
    jar = connect_jar(home)
    python = python or sys.executable
    logs = state_dir / "logs"
    for sub in ("logs", "events", "work", "tmp", "warehouse"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)

    env = {
        **os.environ,
        TAG: str(state_dir),
        "SPARK_HOME": str(home),
        # The web UIs bind to SPARK_LOCAL_IP (0.0.0.0 otherwise); RPC, block managers too.
        "SPARK_LOCAL_IP": LOOPBACK,
        "SPARK_LOCAL_HOSTNAME": LOOPBACK,
        "SPARK_LOCAL_DIRS": str(state_dir / "tmp"),
        "SPARK_WORKER_DIR": str(state_dir / "work"),
        "SPARK_NO_DAEMONIZE": "1",
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
    }
    # Options every JVM of the cluster reads (master and workers take no --conf).
    daemon_opts = [
        "-Dspark.master.rest.enabled=false",
        "-Dspark.port.maxRetries=0",
        f"-Dspark.ui.bindAddress={LOOPBACK}",
    ]
    env["SPARK_MASTER_OPTS"] = " ".join(daemon_opts)
    env["SPARK_WORKER_OPTS"] = " ".join(daemon_opts)
    spark_class = str(home / "bin" / "spark-class")

    master_port, master_ui_port = free_port(), free_port()
    master_url = f"spark://{LOOPBACK}:{master_port}"
    commands: dict[str, list[str]] = {
        "master": [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            *("--host", LOOPBACK, "--port", str(master_port), "--webui-port", str(master_ui_port)),
        ]
    }
    worker_uis = []
    for n in range(1, workers + 1):
        ui_port = free_port()
        worker_uis.append(f"http://{LOOPBACK}:{ui_port}")
        commands[f"worker-{n}"] = [
            spark_class,
            "org.apache.spark.deploy.worker.Worker",
            *("--host", LOOPBACK, "--port", str(free_port()), "--webui-port", str(ui_port)),
            *("--cores", str(worker_cores), "--memory", worker_memory),
            *("--work-dir", str(state_dir / "work" / f"worker-{n}")),
            master_url,
        ]
    connect_port, driver_ui_port = free_port(), free_port()
    conf = {
        "spark.connect.grpc.binding.address": LOOPBACK,
        "spark.connect.grpc.binding.port": connect_port,
        "spark.driver.host": LOOPBACK,
        "spark.driver.bindAddress": LOOPBACK,
        "spark.ui.bindAddress": LOOPBACK,
        "spark.ui.port": driver_ui_port,
        "spark.port.maxRetries": 0,
        "spark.executor.cores": worker_cores,
        "spark.executor.memory": executor_memory,
        "spark.cores.max": workers * worker_cores,
        # Executors exist before the first query: readiness and the tests see them on the workers.
        "spark.dynamicAllocation.enabled": "false",
        "spark.pyspark.python": python,
        "spark.executorEnv.PYSPARK_PYTHON": python,
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": (state_dir / "events").as_uri(),
        "spark.local.dir": str(state_dir / "tmp"),
        "spark.sql.warehouse.dir": (state_dir / "warehouse").as_uri(),
        # Two one-core workers: the default 200 shuffle partitions would be 200 tiny tasks.
        "spark.sql.shuffle.partitions": workers * worker_cores * 2,
        "spark.ui.showConsoleProgress": "false",
    }
    if connect:
        commands["connect"] = [
            str(home / "bin" / "spark-submit"),
            *("--class", CONNECT_CLASS, "--name", "potato-spark-connect", "--master", master_url),
            *("--driver-memory", driver_memory),
            *(arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")),
            str(jar),
        ]

    pids: dict[str, int] = {}
    cluster = SparkCluster(
        state_dir=str(state_dir),
        master_url=master_url,
        master_ui=f"http://{LOOPBACK}:{master_ui_port}",
        worker_uis=tuple(worker_uis),
        connect_url=f"sc://{LOOPBACK}:{connect_port}" if connect else "",
        driver_ui=f"http://{LOOPBACK}:{driver_ui_port}" if connect else "",
        pids=pids,
    )
    try:
        for name, command in commands.items():
            with open(logs / f"{name}.log", "ab") as log:
                # Own session: `down` signals the JVM's whole process group (its executors too).
                process = subprocess.Popen(
                    command,
                    cwd=state_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            pids[name] = process.pid
            _write_state(cluster)
            if name == "master":
                _wait(cluster, lambda: _master_up(cluster), min(timeout, 180), logs / "master.log")
        _wait(cluster, lambda: _ready(cluster, workers), timeout, logs / ("connect.log" if connect else "master.log"))
    except BaseException:
        stop_cluster(state_dir)
        raise
    return cluster


def spark_submit_command(
    cluster: SparkCluster,
    entry: Path | str,
    arguments: Iterable[str] = (),
    *,
    py_files: Iterable[Path | str] = (),
    executor_memory: str = "512m",
    python: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """`spark-submit` of the Python script `entry` to the cluster (client mode: its driver runs
    here, on 127.0.0.1), and its environment: tagged, so `stop_cluster` ends a driver left
    behind. The cluster must have been started without Connect (which holds every core)."""
    home = spark_home()
    python = python or sys.executable
    conf = {
        "spark.driver.host": LOOPBACK,
        "spark.driver.bindAddress": LOOPBACK,
        "spark.ui.enabled": "false",
        "spark.executor.memory": executor_memory,
        "spark.cores.max": len(cluster.worker_uis),
        "spark.dynamicAllocation.enabled": "false",
        "spark.sql.shuffle.partitions": len(cluster.worker_uis) * 2,
        "spark.ui.showConsoleProgress": "false",
        "spark.local.dir": str(Path(cluster.state_dir) / "tmp"),
    }
    files = ",".join(str(f) for f in py_files)
    command = [
        # A classic job: Spark Connect settings of the submitting process go (spark-submit refuses
        # a master beside SPARK_REMOTE, and a Pipes client passes its whole environment on).
        "env",
        *(arg for name in CONNECT_ENVIRONMENT for arg in ("-u", name)),
        str(home / "bin" / "spark-submit"),
        *("--master", cluster.master_url),
        *(arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")),
        *(("--py-files", files) if files else ()),
        str(entry),
        *arguments,
    ]
    env = {
        **os.environ,
        TAG: cluster.state_dir,
        "SPARK_HOME": str(home),
        "SPARK_LOCAL_IP": LOOPBACK,
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
    }
    return command, env


def _master_up(cluster: SparkCluster) -> str | None:
    if not _alive(cluster.pids["master"]):
        return "the master exited"
    try:
        master_state(cluster)
    except (OSError, urllib.error.URLError, ValueError):
        return "the master's web UI does not answer yet"
    return None


def _wait(cluster: SparkCluster, check, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        missing = check()
        if missing is None:
            return
        if "exited" in missing or time.monotonic() > deadline:
            raise SparkClusterError(f"the Spark cluster in {cluster.state_dir} did not start ({missing}); see {log}")
        time.sleep(1.0)


def _write_state(cluster: SparkCluster) -> None:
    path = Path(cluster.state_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(cluster), indent=2))
    tmp.replace(path)


def stop_cluster(state_dir: Path | str = ".spark", timeout: float = 30.0) -> list[int]:
    """Stop every process of the cluster in `state_dir` (Connect server, workers with their
    executors, master); returns the pids that were running. Safe to call when nothing runs."""
    state_dir = Path(state_dir).resolve()
    cluster = read_state(state_dir)
    recorded = list(cluster.pids.values()) if cluster else []
    # Connect first (it owns the application), then the workers, then the master.
    order = sorted(recorded, key=lambda pid: 0 if cluster and cluster.pids.get("connect") == pid else 1)
    stopped = sorted(set(recorded) | set(cluster_processes(state_dir)))
    stopped = [pid for pid in stopped if _alive(pid)]
    for pid in order:
        _signal_group(pid, signal.SIGTERM)
    _reap(recorded)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in recorded if _alive(pid)] + cluster_processes(state_dir)
        if not left:
            break
        time.sleep(0.3)
        _reap(recorded)
    # What ignored SIGTERM, and any tagged process outside the recorded groups.
    for pid in recorded:
        _signal_group(pid, signal.SIGKILL)
    for pid in cluster_processes(state_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap(recorded)
    deadline = time.monotonic() + 10
    while cluster_processes(state_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        # Each JVM was started as the leader of its own session and process group.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pids: Iterable[int]) -> None:
    """Collect our own exited children (a cluster started in this process), so they are not zombies."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spark_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--state-dir", default=".spark", help="logs, pid file, scratch (default .spark)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-memory", default="1g")
    parser.add_argument("--executor-memory", default="768m")
    args = parser.parse_args(argv)
    if args.action == "down":
        stopped = stop_cluster(args.state_dir)
        print(f"stopped {len(stopped)} process(es)" if stopped else "no Spark cluster was running")
        return 0
    if args.action == "status":
        cluster = read_state(Path(args.state_dir))
        missing = _ready(cluster, len(cluster.worker_uis)) if cluster else "no cluster.json"
        if cluster is None or missing:
            print(f"not running ({missing})")
            return 1
        print(cluster.connect_url)
        return 0
    try:
        cluster = start_cluster(
            args.state_dir,
            workers=args.workers,
            worker_memory=args.worker_memory,
            executor_memory=args.executor_memory,
        )
    except SparkClusterError as error:
        print(f"spark-up: {error}", file=sys.stderr)
        return 1
    print(
        f"master {cluster.master_url} (UI {cluster.master_ui}), Connect driver UI {cluster.driver_ui}", file=sys.stderr
    )
    print(cluster.connect_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
