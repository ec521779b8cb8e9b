"""A Spark standalone cluster (a master and workers) and a Spark Connect server on this machine, started
from the pyspark package and bound to 127.0.0.1: to try the project on a real cluster, and for the
tests and the benchmark.

    python -m tools.local_cluster up [--connect]      # make cluster-up
    python -m tools.local_cluster down                # make cluster-down (stops the recorded PIDs)

The pip package has ``bin/spark-class`` and ``bin/spark-submit`` but none of Spark's ``sbin/start-*.sh``
scripts, so the daemons are started the way those scripts start them: ``spark-class <Master|Worker>``
and ``spark-submit --class SparkConnectServer``. Both exec java, so the PID recorded is the JVM's.
``up`` also writes ``<state_dir>/conf/spark-defaults.conf`` (the master, driver bound to 127.0.0.1, this
Python for the executors) and ``<state_dir>/env.sh`` to source, so ``mlflow run`` needs no change.

A recorded PID is signalled only while it is still the daemon started there: after a reboot or a crash
a stale cluster.json names PIDs another process may have. So each daemon's start time (it survives the
exec into java) is recorded at launch, and before any signal the process must have that start time and
the daemon's main class in its command line; one that has not is left alone, reported and forgotten.
The start time is /proc's; without /proc (macOS) it is ``ps``'s.

A port of 0 lets the daemon bind a free port itself; the port it got is read from its log. Tests and
benchmarks do that: a port picked beforehand could be taken by another process before the daemon binds it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from tools import processes

HOST = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
CONNECT_SERVICE_CLASS = "org.apache.spark.sql.connect.service.SparkConnectService"
STATE_FILE = "cluster.json"
# Each daemon's main class by its name (master, worker-<n>, connect): for state files that did not record it.
DAEMON_CLASSES = {"master": MASTER_CLASS, "worker": WORKER_CLASS, "connect": CONNECT_SERVER_CLASS}


def spark_home() -> Path:
    """$SPARK_HOME, else the pip-installed pyspark (it ships the jars and bin/ scripts)."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"])
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Cluster:
    """What ``up`` started: ports and PIDs, saved as <state_dir>/cluster.json for ``down``. A port of 0
    before ``start`` means "any free port"; after it, the port the daemon bound."""

    state_dir: str
    master_port: int = 7077
    master_ui_port: int = 8080
    worker_ui_ports: list[int] = field(default_factory=lambda: [8081, 8082])
    worker_cores: int = 1
    worker_memory: str = "2g"
    executor_memory: str = "1g"
    connect: bool = False  # also a Spark Connect server
    connect_port: int = 15002
    connect_master: str = "local[2]"
    # Extra JVM options for every daemon (SPARK_DAEMON_JAVA_OPTS) and the Connect server's driver.
    java_options: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    # What tells each daemon from a later process with its PID (see record_daemon); absent in old state files.
    start_times: dict[str, str] = field(default_factory=dict)
    main_classes: dict[str, str] = field(default_factory=dict)
    log_offsets: dict[str, int] = field(default_factory=dict)

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    @property
    def remote_url(self) -> str:
        return f"sc://{HOST}:{self.connect_port}"

    @property
    def conf_dir(self) -> Path:
        return Path(self.state_dir) / "conf"

    def driver_conf(self) -> dict[str, str]:
        """What a driver needs to use the standalone master (also written to spark-defaults.conf)."""
        return {
            "spark.master": self.master_url,
            "spark.driver.host": HOST,
            "spark.driver.bindAddress": HOST,
            # Executors start this Python: the same machine, so the same environment and packages.
            "spark.pyspark.python": sys.executable,
            "spark.executor.memory": self.executor_memory,
        }

    def env(self) -> dict[str, str]:
        """Environment for drivers that use this cluster through SPARK_CONF_DIR."""
        return {"SPARK_CONF_DIR": str(self.conf_dir), "SPARK_LOCAL_IP": HOST}

    def save(self) -> None:
        (Path(self.state_dir) / STATE_FILE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, state_dir: str) -> Cluster | None:
        path = Path(state_dir) / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None


def _daemon_env(cluster: Cluster) -> dict[str, str]:
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": HOST,
        # Without it, executors and the Connect server's Python workers run `python3` from PATH.
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(Path(cluster.state_dir) / "logs"),
        # No REST submission server: it would take port 6066 on every cluster of the machine.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        "SPARK_DAEMON_JAVA_OPTS": cluster.java_options,
    }
    for key in ("SPARK_REMOTE", "PYSPARK_SUBMIT_ARGS", "SPARK_CONF_DIR", "MASTER"):
        env.pop(key, None)  # a daemon must not inherit a driver's settings
    return env


def _log_path(cluster: Cluster, name: str) -> Path:
    return Path(cluster.state_dir) / "logs" / f"{name}.log"


def _launch(cluster: Cluster, name: str, command: list[str], main_class: str) -> int:
    path = _log_path(cluster, name)
    cluster.log_offsets[name] = path.stat().st_size if path.exists() else 0  # this start's lines come after
    with open(path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_daemon_env(cluster),
            start_new_session=True,
        )
    record_daemon(cluster, name, process.pid, main_class)
    return process.pid


def record_daemon(cluster: Cluster, name: str, pid: int, main_class: str) -> None:
    """Record ``pid`` as daemon ``name`` running ``main_class``, with its start time, and save the state.
    Called right after Popen: the command line may still be spark-class's shell, but the start time stays
    the same across its exec into java."""
    identity = processes.identity(pid)
    cluster.pids[name] = pid
    cluster.main_classes[name] = main_class
    if identity and identity[0]:
        cluster.start_times[name] = identity[0]
    else:
        cluster.start_times.pop(name, None)
    cluster.save()


def _not_ours(cluster: Cluster, name: str) -> str | None:
    """Why the running process at ``name``'s recorded PID is not the daemon started there (its PID was
    reused), or None if it is, or if nothing runs there any more."""
    pid = cluster.pids[name]
    if not processes.running(pid):
        return None
    identity = processes.identity(pid)
    if identity is None:
        return None if not processes.running(pid) else f"pid {pid} cannot be inspected"
    start, command = identity
    recorded = cluster.start_times.get(name)
    main_class = cluster.main_classes.get(name) or DAEMON_CLASSES.get(name.split("-")[0])
    if not main_class or main_class not in command or (recorded and start and start != recorded):
        shown = command if len(command) <= 100 else command[:97] + "..."
        return f"pid {pid} is now another process: {shown}"
    return None


def _forget(cluster: Cluster, name: str) -> None:
    for recorded in (cluster.pids, cluster.start_times, cluster.main_classes):
        recorded.pop(name, None)


def forget_foreign(cluster: Cluster) -> dict[str, str]:
    """Drop from the state, without a signal, every recorded PID that is now another process: {name: why}."""
    foreign = {name: why for name in list(cluster.pids) if (why := _not_ours(cluster, name))}
    for name in foreign:
        _forget(cluster, name)
    if foreign:
        cluster.save()
    return foreign


def _service_port(service: str) -> str:
    """Spark's log line for a service bound to a port (org.apache.spark.util.Utils.startServiceOnPort)."""
    return rf"Successfully started service '{re.escape(service)}' on port (\d+)"


def _logged_port(cluster: Cluster, name: str, pattern: str, deadline: float) -> int:
    """The port daemon ``name`` logged since its start (``pattern``'s one group), waiting until ``deadline``."""
    path = _log_path(cluster, name)
    while True:
        with open(path, "rb") as log:
            log.seek(cluster.log_offsets.get(name, 0))
            match = re.search(pattern, log.read().decode(errors="replace"))
        if match:
            return int(match.group(1))
        if not processes.running(cluster.pids[name]):
            raise click.ClickException(f"{name} exited at start: see {path}")
        if time.monotonic() > deadline:
            raise click.ClickException(f"{name} did not say which port it bound: see {path}")
        time.sleep(0.2)


def _check_ports_free(ports: list[int]) -> None:
    taken = [p for p in ports if p and port_open(p)]
    if taken:
        raise click.ClickException(
            f"port(s) {', '.join(map(str, taken))} on {HOST} are in use (another Spark?): "
            "stop it, or choose other ports (make cluster-up CLUSTER_ARGS='--master-port ...')."
        )


def start(cluster: Cluster, workers: int = 2, timeout: float = 120) -> Cluster:
    """Start the master, ``workers`` workers and (when ``connect``) a Connect server; wait until ready.
    Ports given as 0 are bound by the daemons themselves and read back from their logs."""
    state_dir = Path(cluster.state_dir)
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    cluster.worker_ui_ports = list(cluster.worker_ui_ports)[:workers]
    while len(cluster.worker_ui_ports) < workers:
        last = max(cluster.worker_ui_ports + [cluster.master_ui_port])
        cluster.worker_ui_ports.append(last + 1 if last else 0)
    _check_ports_free(
        [
            cluster.master_port,
            cluster.master_ui_port,
            *cluster.worker_ui_ports,
            cluster.connect_port if cluster.connect else 0,
        ]
    )
    spark_class = str(spark_home() / "bin" / "spark-class")
    try:
        _launch(
            cluster,
            "master",
            [
                spark_class,
                MASTER_CLASS,
                "--host",
                HOST,
                "--port",
                str(cluster.master_port),
                "--webui-port",
                str(cluster.master_ui_port),
            ],
            MASTER_CLASS,
        )
        cluster.master_port = _logged_port(cluster, "master", _service_port("sparkMaster"), deadline)
        cluster.master_ui_port = _logged_port(cluster, "master", _service_port("MasterUI"), deadline)
        write_spark_conf(cluster)
        for index, ui_port in enumerate(cluster.worker_ui_ports, start=1):
            work_dir = state_dir / f"worker-{index}"
            work_dir.mkdir(exist_ok=True)
            _launch(
                cluster,
                f"worker-{index}",
                [
                    spark_class,
                    WORKER_CLASS,
                    cluster.master_url,
                    "--host",
                    HOST,
                    "--cores",
                    str(cluster.worker_cores),
                    "--memory",
                    cluster.worker_memory,
                    "--webui-port",
                    str(ui_port),
                    "--work-dir",
                    str(work_dir),
                ],
                WORKER_CLASS,
            )
        for index in range(1, workers + 1):
            cluster.worker_ui_ports[index - 1] = _logged_port(
                cluster, f"worker-{index}", _service_port("WorkerUI"), deadline
            )
        if cluster.connect:
            start_connect_server(cluster)
            cluster.connect_port = _logged_port(cluster, "connect", _service_port(CONNECT_SERVICE_CLASS), deadline)
            cluster.save()
        write_spark_conf(cluster)
        wait_until_ready(cluster, workers, max(1.0, deadline - time.monotonic()))
    except BaseException:
        stop(cluster)
        raise
    return cluster


def start_connect_server(cluster: Cluster) -> int:
    """What sbin/start-connect-server.sh runs (the pip package lacks it), bound to 127.0.0.1."""
    master = cluster.master_url if cluster.connect_master == "standalone" else cluster.connect_master
    conf = {
        "spark.connect.grpc.binding.address": HOST,  # otherwise it listens on every interface
        "spark.connect.grpc.binding.port": str(cluster.connect_port),
        "spark.driver.host": HOST,
        "spark.driver.bindAddress": HOST,
        "spark.driver.memory": "1g",
        "spark.executor.memory": cluster.executor_memory,
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
    }
    if cluster.java_options:
        conf["spark.driver.extraJavaOptions"] = cluster.java_options
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        "--class",
        CONNECT_SERVER_CLASS,
        "--name",
        "Spark Connect server",
        "--master",
        master,
    ]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return _launch(cluster, "connect", command, CONNECT_SERVER_CLASS)


def restart_connect_server(cluster: Cluster, port: int = 0, timeout: float = 120) -> float:
    """Stop the cluster's Connect server (if running) and start a new one on ``port`` (0: any free port);
    return the seconds until it accepts connections: what a client of a cold server waits."""
    started = time.monotonic()
    if "connect" in cluster.pids:
        _stop_pid(cluster, "connect", timeout=30)
    cluster.connect, cluster.connect_port = True, port
    start_connect_server(cluster)
    deadline = started + timeout
    cluster.connect_port = _logged_port(cluster, "connect", _service_port(CONNECT_SERVICE_CLASS), deadline)
    cluster.save()
    write_spark_conf(cluster)
    while not port_open(cluster.connect_port):
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"the Connect server did not listen in time: see {_log_path(cluster, 'connect')}"
            )
        time.sleep(0.2)
    return time.monotonic() - started


def alive_workers(cluster: Cluster) -> int:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{cluster.master_ui_port}/json/", timeout=2) as response:
            return int(json.load(response).get("aliveworkers", 0))
    except (OSError, ValueError):
        return 0


def wait_until_ready(cluster: Cluster, workers: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [name for name, pid in cluster.pids.items() if not processes.running(pid)]
        if dead:
            raise click.ClickException(f"{', '.join(dead)} exited at start: see {Path(cluster.state_dir) / 'logs'}")
        ready = alive_workers(cluster) >= workers
        if cluster.connect:
            ready = ready and port_open(cluster.connect_port)
        if ready:
            return
        time.sleep(1)
    raise click.ClickException(
        f"the cluster was not ready after {timeout:.0f} s: see {Path(cluster.state_dir) / 'logs'}"
    )


def _stop_pid(cluster: Cluster, name: str, timeout: float) -> bool:
    """SIGTERM daemon ``name``'s recorded PID, SIGKILL after ``timeout``, and forget it; whether it was
    running. A PID that is now another process is forgotten without a signal."""
    why, pid = _not_ours(cluster, name), cluster.pids[name]
    _forget(cluster, name)
    cluster.save()
    if why:
        click.echo(f"not stopped: {name} ({why})", err=True)
        return False
    if not processes.running(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while processes.running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if processes.running(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def stop(cluster: Cluster, timeout: float = 30) -> list[str]:
    """Stop every recorded PID (SIGTERM, then SIGKILL after ``timeout``); never by process name. A PID
    that is now another process is not signalled, only forgotten (``forget_foreign`` says which)."""
    forget_foreign(cluster)
    stopped = []
    for name, pid in reversed(list(cluster.pids.items())):
        if processes.running(pid):
            os.kill(pid, signal.SIGTERM)
            stopped.append(name)
    deadline = time.monotonic() + timeout  # one deadline for all: they stop in parallel
    for pid in cluster.pids.values():
        while processes.running(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if processes.running(pid):  # still the process checked above: a PID is not reused while its process runs
            os.kill(pid, signal.SIGKILL)
    cluster.pids, cluster.start_times, cluster.main_classes = {}, {}, {}
    cluster.save()
    return stopped


def write_spark_conf(cluster: Cluster) -> None:
    cluster.conf_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{key} {value}" for key, value in cluster.driver_conf().items()]
    (cluster.conf_dir / "spark-defaults.conf").write_text("\n".join(lines) + "\n")
    env_lines = [f"export {key}={value}" for key, value in cluster.env().items()]
    (Path(cluster.state_dir) / "env.sh").write_text(
        "# Drivers started after `source` use the standalone master (spark-defaults.conf).\n"
        + "\n".join(env_lines)
        + "\n"
        + (f"# Spark Connect instead: export SPARK_REMOTE={cluster.remote_url}\n" if cluster.connect else "")
    )


@click.group()
def cli():
    """A local Spark standalone cluster (and Connect server) bound to 127.0.0.1."""


@cli.command()
@click.option("--state-dir", default=".cluster", show_default=True, help="PIDs, logs, spark-defaults.conf.")
@click.option("--workers", default=2, show_default=True)
@click.option("--worker-cores", default=1, show_default=True)
@click.option("--worker-memory", default="2g", show_default=True)
@click.option("--master-port", default=7077, show_default=True, help="0 = any free port.")
@click.option("--master-ui-port", default=8080, show_default=True, help="0 = any free port (workers' too).")
@click.option("--connect/--no-connect", default=False, show_default=True, help="Also start a Spark Connect server.")
@click.option("--connect-port", default=15002, show_default=True, help="0 = any free port.")
@click.option(
    "--connect-master",
    default="local[2]",
    show_default=True,
    help="The Connect server's master: local[N], or 'standalone' for this cluster's master.",
)
def up(
    state_dir, workers, worker_cores, worker_memory, master_port, master_ui_port, connect, connect_port, connect_master
):
    """Start the master, the workers and optionally a Connect server; wait until they are ready."""
    state = Path(state_dir).resolve()
    previous = Cluster.load(str(state))
    # PIDs of a stale state file that other processes now have do not count (nor are they signalled).
    if previous and any(
        processes.running(pid) and not _not_ours(previous, name) for name, pid in previous.pids.items()
    ):
        raise click.ClickException(f"a cluster from {state} is running: make cluster-down first.")
    cluster = Cluster(
        state_dir=str(state),
        master_port=master_port,
        master_ui_port=master_ui_port,
        worker_ui_ports=[master_ui_port + i if master_ui_port else 0 for i in range(1, workers + 1)],
        worker_cores=worker_cores,
        worker_memory=worker_memory,
        connect=connect,
        connect_port=connect_port,
        connect_master=connect_master,
    )
    started = time.monotonic()
    start(cluster, workers=workers)
    click.echo(
        f"master {cluster.master_url} (UI http://{HOST}:{cluster.master_ui_port}), {workers} workers"
        + (f", Spark Connect {cluster.remote_url}" if cluster.connect else "")
        + f", ready in {time.monotonic() - started:.0f} s; PIDs {cluster.pids}"
    )
    click.echo(f"Use it: source {state / 'env.sh'}   (then `mlflow run . --env-manager local` runs on it)")
    if cluster.connect:
        click.echo(f"Or over Spark Connect: SPARK_REMOTE={cluster.remote_url} mlflow run . --env-manager local")


@cli.command()
@click.option("--state-dir", default=".cluster", show_default=True)
def down(state_dir):
    """Stop what `up` started, by the PIDs it recorded."""
    cluster = Cluster.load(str(Path(state_dir).resolve()))
    if cluster is None:
        click.echo(f"no cluster recorded in {state_dir}")
        return
    foreign = forget_foreign(cluster)
    for name, why in foreign.items():
        click.echo(f"not stopped: {name} ({why})")
    stopped = stop(cluster)
    if stopped or not foreign:
        click.echo(f"stopped {', '.join(stopped) or 'nothing (already stopped)'}")


if __name__ == "__main__":
    cli()
