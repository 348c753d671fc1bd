"""Airflow's four services (api-server, scheduler, dag-processor, triggerer) as one supervised group.

``make api``, ``make toy-trigger`` and the test fixtures all start Airflow through
:func:`run_services`, so the three agree on everything that has to match between
components: one AIRFLOW_HOME, one JWT secret, the execution API's URL for the chosen
port, the admin's password, the ``gpu`` pool, and DAGs that are not paused at creation.

Each component runs as a child process in its own process group; stopping the group
(Ctrl-C or SIGTERM to the launcher) stops the component and everything it started,
such as LocalExecutor workers and the trainers they run.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dpo_lib.airflow_local.home import AdminCredentials, AirflowHome
from dpo_lib.orchestration.names import GPU_POOL
from dpo_lib.settings import PROJECT_DIR, Settings, SettingsError

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HEALTH_PATH = "/api/v2/monitor/health"
DPO_HEALTH_PATH = "/dpo/health"  # the plugin's: 200 only once a trigger would be accepted
STOP_GRACE_S = 30.0
DEFAULT_START_TIMEOUT_S = 240.0
MAX_RESTARTS = 3

# Local-development defaults, each overridable through its AIRFLOW__SECTION__KEY variable.
TUNABLE_DEFAULTS = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    # LocalExecutor starts this many workers (Airflow's default, 32, is for a server): one per core.
    "AIRFLOW__CORE__PARALLELISM": str(os.cpu_count() or 2),
    # A new DAG file shows up within seconds rather than the default five minutes.
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
    "AIRFLOW__API__EXPOSE_CONFIG": "False",
    # A task reports to the api-server (the execution API); after 3 failed heartbeats (Airflow's default)
    # its supervisor kills it. Each failed one takes ~20 s with the client's own retries, so an api-server
    # that the launcher restarts (30 s on two busy cores) used up 2 of the 3. Ten ride out about three
    # minutes, still within [scheduler] task_instance_heartbeat_timeout (300 s), after which the scheduler
    # fails the task anyway.
    "AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS": "10",
}


SQLITE_PATIENT_ARGS = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "dpo_lib.airflow_local.sqlite_args.CONNECT_ARGS",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "dpo_lib.airflow_local.sqlite_args.ASYNC_CONNECT_ARGS",
}


class ServicesError(RuntimeError):
    """The services could not be started (or stopped); the message says why and where to look."""


@dataclass(frozen=True)
class ServiceConfig:
    """Where the services live and how they are reached; see :meth:`from_env` for the variables."""

    home: Path
    host: str
    port: int
    base_url: str
    admin_user: str
    admin_password: str | None
    gpu_slots: int
    dags_folder: Path
    plugins_folder: Path
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServiceConfig:
        env = os.environ if env is None else env
        port = _int(env, "AIRFLOW_PORT", 8080)
        try:
            settings = Settings.from_env(env)
        except SettingsError as exc:
            raise ServicesError(str(exc)) from None
        return cls(
            home=Path(env.get("AIRFLOW_HOME") or PROJECT_DIR / ".airflow").resolve(),
            host=env.get("AIRFLOW_HOST") or "127.0.0.1",
            port=port,
            base_url=(env.get("AIRFLOW_BASE_URL") or f"http://localhost:{port}").rstrip("/"),
            admin_user=env.get("AIRFLOW_ADMIN_USER") or "admin",
            admin_password=env.get("AIRFLOW_ADMIN_PASSWORD") or None,
            gpu_slots=settings.gpu_slots,
            dags_folder=Path(env.get("AIRFLOW__CORE__DAGS_FOLDER") or PROJECT_DIR / "dags").resolve(),
            plugins_folder=Path(env.get("AIRFLOW__CORE__PLUGINS_FOLDER") or PROJECT_DIR / "plugins").resolve(),
            start_timeout_s=settings.services_start_timeout_s,
        )

    @property
    def local_url(self) -> str:
        """How processes on this machine reach the api-server (the execution API included)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "localhost", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def airflow_home(self) -> AirflowHome:
        return AirflowHome(self.home)


def airflow_env(config: ServiceConfig, secrets: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict:
    """The environment every component (and ``airflow db migrate``) runs with."""
    env = dict(os.environ if base is None else base)
    for key, value in TUNABLE_DEFAULTS.items():
        env.setdefault(key, value)
    env.update(
        {
            "AIRFLOW_HOME": str(config.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(config.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(config.plugins_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{config.admin_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(config.airflow_home.passwords_file),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": secrets["api_secret_key"],
            "AIRFLOW__API__BASE_URL": config.base_url,
            "AIRFLOW__API__HOST": config.host,
            "AIRFLOW__API__PORT": str(config.port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{config.local_url}/execution/",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def uses_sqlite(env: Mapping[str, str]) -> bool:
    """Whether the metadata database is SQLite: Airflow's default, unless the environment or
    ``airflow.cfg`` names another (a ``_CMD``/``_SECRET`` one counts as another).
    """
    if env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD") or env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET"):
        return False
    conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if conn is None:
        parser = configparser.ConfigParser(interpolation=None)
        config_file = env.get("AIRFLOW_CONFIG") or str(Path(env.get("AIRFLOW_HOME", "")) / "airflow.cfg")
        with contextlib.suppress(OSError, configparser.Error):
            parser.read(config_file)
        conn = parser.get("database", "sql_alchemy_conn", fallback="sqlite")
    return conn.startswith("sqlite")


def prepare(config: ServiceConfig, *, out: IO[str] = sys.stdout) -> tuple[dict, AdminCredentials]:
    """Create AIRFLOW_HOME and its secrets, record the admin's password, and migrate the database.

    (The ``gpu`` pool is made once the api-server answers, by :func:`ensure_gpu_pool`.)
    """
    home = config.airflow_home
    home.create()
    env = airflow_env(config, home.secrets())
    admin = home.write_admin(config.admin_user, config.admin_password)
    if admin.generated:
        print(
            f"AIRFLOW_ADMIN_PASSWORD is not set: generated a password for {admin.username!r}: {admin.password}\n"
            f"  (kept in {home.passwords_file}; set AIRFLOW_ADMIN_PASSWORD to choose one)",
            file=out,
            flush=True,
        )
    _airflow(env, ["db", "migrate"], "migrating the metadata database", out)
    return env, admin


def ensure_gpu_pool(config: ServiceConfig, admin: AdminCredentials) -> None:
    """Create (or resize) the ``gpu`` pool through the REST API, as the admin."""
    from dpo_lib.api.client import AirflowAPI, AirflowAPIError, Credentials, fetch_token

    try:
        api = AirflowAPI(config.local_url, fetch_token(Credentials(config.local_url, admin.username, admin.password)))
        api.ensure_pool(GPU_POOL, config.gpu_slots, "GPU slots: train tasks run in this pool (DPO_GPU_SLOTS)")
    except AirflowAPIError as exc:
        raise ServicesError(f"cannot create the {GPU_POOL!r} pool: {exc}") from None


def _airflow(env: Mapping[str, str], args: list[str], what: str, out: IO[str]) -> None:
    print(f"== {what}: airflow {' '.join(args[:3])} ...", file=out, flush=True)
    started = time.monotonic()
    result = subprocess.run([airflow_executable(), *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise ServicesError(f"{what} failed (exit {result.returncode}):\n{tail}")
    print(f"   done in {time.monotonic() - started:.1f}s", file=out, flush=True)


def airflow_executable() -> str:
    """The ``airflow`` script next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("airflow")
    return str(beside) if beside.exists() else "airflow"


class ServiceGroup:
    """The four components as child processes, each in its own process group, output prefixed."""

    def __init__(self, config: ServiceConfig, env: Mapping[str, str], out: IO[str] = sys.stdout) -> None:
        self.config = config
        self.env = dict(env)
        self.out = out
        self.procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._out_lock = threading.Lock()

    def start(self) -> None:
        for name in COMPONENTS:
            self._start(name)

    def _start(self, name: str) -> None:
        args = [airflow_executable(), name]
        env = self.env
        if name == "api-server":
            args += ["--host", self.config.host, "--port", str(self.config.port)]
        elif uses_sqlite(self.env):
            env = {**SQLITE_PATIENT_ARGS, **self.env}  # see dpo_lib.airflow_local.sqlite_args
        proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole, immune to the tty's Ctrl-C
        )
        self.procs[name] = proc
        thread = threading.Thread(target=self._relay, args=(name, proc), daemon=True)
        thread.start()
        self._threads.append(thread)

    def restart(self, name: str) -> None:
        """Start a component that exited again, after killing whatever it left in its process group."""
        _signal_group(self.procs[name], signal.SIGKILL)
        self._start(name)

    def _relay(self, name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            with self._out_lock:
                try:
                    print(f"[{name}] {line}", file=self.out, flush=True)
                except (OSError, ValueError):
                    pass

    def exited(self) -> dict[str, int]:
        """Components that have stopped, with their exit codes."""
        return {name: proc.returncode for name, proc in self.procs.items() if proc.poll() is not None}

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every component's process group, then SIGKILL whatever is left after ``grace_s``."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)  # also reaps grandchildren left in the group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for thread in self._threads:
            thread.join(timeout=2)


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid


def health(url: str, timeout: float = 3.0) -> dict | None:
    """Airflow's ``/api/v2/monitor/health`` answer, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url + HEALTH_PATH, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def unhealthy_components(answer: dict | None) -> list[str]:
    """Which components a health answer reports as not healthy (all of them when there is none)."""
    if answer is None:
        return ["api-server"]
    names = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    return [name for name in names if (answer.get(name) or {}).get("status") != "healthy"]


def dags_ready(url: str, timeout: float = 5.0) -> bool:
    """Whether ``/dpo/health`` says both DAGs are registered and unpaused: a trigger would be accepted."""
    try:
        with urllib.request.urlopen(url + DPO_HEALTH_PATH, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 names what is not healthy; storage may be, without mattering here
        try:
            answer = json.loads(exc.read())
        except ValueError:
            return False
    except (OSError, ValueError):
        return False
    return (answer.get("components", {}).get("dags") or {}).get("status") == "healthy"


def wait_healthy(config: ServiceConfig, group: ServiceGroup | None = None, *, timeout_s: float | None = None) -> None:
    """Block until every component reports healthy and both DAGs would accept a trigger;
    :class:`ServicesError` if a component dies or time runs out."""
    timeout_s = config.start_timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    missing = ["api-server"]
    while time.monotonic() < deadline:
        if group is not None and (dead := group.exited()):
            raise ServicesError(f"{', '.join(f'{n} (exit {c})' for n, c in dead.items())} stopped while starting")
        missing = unhealthy_components(health(config.local_url))
        if not missing and dags_ready(config.local_url):
            return
        missing = missing or ["the DAGs (not yet registered and unpaused)"]
        time.sleep(1.0)
    raise ServicesError(f"not ready after {timeout_s:.0f}s: {', '.join(missing)}")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "") else host, port)) == 0


class _StopRequested(Exception):
    pass


def run_services(config: ServiceConfig, *, out: IO[str] = sys.stdout) -> int:
    """Prepare, start and supervise the services in the foreground until SIGINT/SIGTERM.

    Returns 0 after a requested stop, 1 when a component kept dying (see :func:`supervise`;
    the others are then stopped too, so a half-running Airflow never lingers).
    """
    home = config.airflow_home
    lock = home.lock()
    if lock is None:
        raise ServicesError(
            f"the services of AIRFLOW_HOME={config.home} are already running (pid {_read_pid(home)}); "
            "stop them first (python -m dpo_lib services --stop)"
        )
    home.pidfile.write_text(f"{os.getpid()}\n")
    try:
        return _run_locked(config, out)
    finally:
        home.pidfile.unlink(missing_ok=True)
        os.close(lock)


def _run_locked(config: ServiceConfig, out: IO[str]) -> int:
    if port_in_use(config.host, config.port):
        raise ServicesError(
            f"port {config.port} is already in use"
            + (" by an Airflow api-server" if health(config.local_url) else "")
            + "; stop it or choose another AIRFLOW_PORT"
        )
    home = config.airflow_home
    env, admin = prepare(config, out=out)

    def request_stop(signum, frame):
        raise _StopRequested()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    group = ServiceGroup(config, env, out)
    home.ready_file.unlink(missing_ok=True)
    try:
        group.start()
        wait_healthy(config, group)
        ensure_gpu_pool(config, admin)
        home.ready_file.write_text(f"{config.local_url}\n")
        print(
            f"== Airflow is up: {config.base_url} (user {admin.username!r}; AIRFLOW_HOME={config.home}). "
            "Ctrl-C stops all services.",
            file=out,
            flush=True,
        )
        return supervise(group, out)
    except _StopRequested:
        print("== stopping Airflow's services ...", file=out, flush=True)
        return 0
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the orderly stop
        group.stop()
        home.ready_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("== all services stopped", file=out, flush=True)


def supervise(group: ServiceGroup, out: IO[str], max_restarts: int = MAX_RESTARTS) -> int:
    """Restart a component that exits (a transient error, such as SQLite's lock, can kill one),
    at most ``max_restarts`` times each; beyond that give up and return 1, which stops them all.
    """
    restarts = dict.fromkeys(COMPONENTS, 0)
    while True:
        for name, code in group.exited().items():
            if restarts[name] >= max_restarts:
                print(f"== {name} exited ({code}) after {max_restarts} restarts: stopping the others", file=out)
                return 1
            restarts[name] += 1
            print(f"== {name} exited ({code}): restarting it ({restarts[name]}/{max_restarts})", file=out, flush=True)
            group.restart(name)
        time.sleep(1.0)


def ensure_running(config: ServiceConfig, *, out: IO[str] = sys.stdout) -> bool:
    """Start the services in the background unless they already answer; wait until healthy.

    Returns whether this call started them. The background launcher's output goes to
    ``$AIRFLOW_HOME/dpo-services.log``; ``python -m dpo_lib services --stop`` stops it.
    """
    home = config.airflow_home
    if home.launcher_running() or health(config.local_url) is not None:
        print(f"== waiting for the running services ({config.base_url}) ...", file=out, flush=True)
        if home.launcher_running():
            _wait_ready_file(config)
        wait_healthy(config)
        return False
    home.create()
    home.ready_file.unlink(missing_ok=True)  # left by a launcher that was killed: nobody holds the lock
    # Owner-only: a generated admin password is printed into it on the first start.
    log_fd = os.open(home.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(log_fd, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dpo_lib", "services"],
            env={**os.environ, "AIRFLOW_HOME": str(config.home), "AIRFLOW_PORT": str(config.port)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"== starting Airflow in the background (pid {proc.pid}, log {home.logfile}) ...", file=out, flush=True)
    deadline = time.monotonic() + config.start_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServicesError(f"the services exited ({proc.returncode}) while starting:\n{_tail(home.logfile)}")
        if home.ready_file.exists():
            print(
                f"== Airflow is up: {config.base_url}; it keeps running in the background "
                "(stop it with `make api-stop` or `python -m dpo_lib services --stop`)",
                file=out,
                flush=True,
            )
            return True
        time.sleep(1.0)
    raise ServicesError(f"the services were not healthy after {config.start_timeout_s:.0f}s:\n{_tail(home.logfile)}")


def _wait_ready_file(config: ServiceConfig) -> None:
    """Wait until the launcher holding the home's lock reports ready (or goes away)."""
    home = config.airflow_home
    deadline = time.monotonic() + config.start_timeout_s
    while not home.ready_file.exists():
        if not home.launcher_running():
            raise ServicesError(f"the services of AIRFLOW_HOME={config.home} stopped while starting")
        if time.monotonic() > deadline:
            raise ServicesError(f"the services were not ready after {config.start_timeout_s:.0f}s")
        time.sleep(1.0)


def _read_pid(home: AirflowHome) -> str:
    try:
        return home.pidfile.read_text().strip() or "?"
    except FileNotFoundError:
        return "?"


def stop_running(config: ServiceConfig, *, timeout_s: float = STOP_GRACE_S + 15) -> bool:
    """Stop the launcher recorded in ``$AIRFLOW_HOME/dpo-services.pid``; False when none is running."""
    pidfile = config.airflow_home.pidfile
    if not config.airflow_home.launcher_running():  # a pid file without the lock is stale
        pidfile.unlink(missing_ok=True)
        return False
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    raise ServicesError(f"the launcher (pid {pid}) did not stop within {timeout_s:.0f}s")


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log)"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ServicesError(f"{name} must be an integer, not {raw!r}") from None
