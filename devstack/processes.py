"""One local server process, started, probed, stopped and never leaked: the base of the real service runners.

CDS tests never mock the broker or the database: they start the real programs from Debian's packages (see
:mod:`devstack.mosquitto` and :mod:`devstack.influxdb`), each in its own folder, on free ports of 127.0.0.1, with
our own configuration — a system-wide instance installed by apt (ports 1883/8086/8088) is never used or touched.
What both runners share lives here, once, so a crash test against the broker and one against the database stop,
kill and restart their process in exactly the same way:

- :class:`ManagedProcess` offers ``start()`` (returns once the service answers its readiness probe), ``stop()``
  (SIGTERM, graceful), ``kill()`` (SIGKILL, for crash tests) and ``restart()``; the ports stay the same across
  restarts so clients can reconnect.
- Each process runs in its own process group and is stopped by ``__exit__``, at interpreter exit (an ``atexit``
  hook over every live process), and (via ``setpriv --pdeathsig``) when the Python process that started it dies —
  start services from a thread that lives as long as they do (normally the main thread).
- :func:`free_port` and :data:`HOST` are also what tests and benchmarks use for the servers they run themselves.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Final, Self

HOST: Final = "127.0.0.1"
SETUP_HINT: Final = "run `bash scripts/setup.sh` to install it"


class ServiceError(RuntimeError):
    """A local service could not be started, stopped or used."""


class ServiceNotInstalledError(ServiceError):
    """The service's binary is not installed."""


class ServiceStartError(ServiceError):
    """The service exited or did not answer in time while starting; the message carries its log tail."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_binary(name: str, *fallbacks: str) -> str:
    """Path of ``name`` on PATH or at one of ``fallbacks`` (Debian puts mosquitto in /usr/sbin)."""
    found = shutil.which(name)
    if found:
        return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    raise ServiceNotInstalledError(
        f"{name} is not installed (looked on PATH and in {', '.join(fallbacks)}); {SETUP_HINT}"
    )


_LIVE: set[ManagedProcess] = set()


@atexit.register
def _stop_all() -> None:
    for service in list(_LIVE):
        with contextlib.suppress(Exception):
            service.stop(timeout=5)


class ManagedProcess(abc.ABC):
    """Start/stop/kill of one server process in its own process group, with a readiness probe."""

    name: ClassVar[str] = "service"
    _log_name: ClassVar[str] = "service.log"

    def __init__(self, workdir: Path, *, auto_ports: bool) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._auto_ports = auto_ports
        self._started_once = False

    # --- what subclasses provide -------------------------------------------------------------------------

    @abc.abstractmethod
    def _write_config(self) -> None: ...

    @abc.abstractmethod
    def _command(self) -> list[str]: ...

    @abc.abstractmethod
    def _ready(self) -> bool: ...

    @abc.abstractmethod
    def _choose_ports(self) -> None: ...

    def _env(self) -> dict[str, str] | None:
        return None

    # --- lifecycle ----------------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.workdir / self._log_name

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float = 15.0) -> None:
        """Spawn the process and return once it answers; no-op when already running.

        Raises :class:`ServiceStartError` with the log tail when it exits or stays silent for ``timeout`` s.
        An automatically chosen port that was taken meanwhile is replaced, but only before the first
        successful start: afterwards the ports never change.
        """
        if self.running:
            return
        attempts = 3 if self._auto_ports and not self._started_once else 1
        for attempt in range(attempts):
            try:
                self._spawn_and_wait(timeout)
            except ServiceStartError as exc:
                if attempt + 1 < attempts and "address already in use" in str(exc).lower():
                    self._choose_ports()
                    continue
                raise
            self._started_once = True
            return

    def _spawn_and_wait(self, timeout: float) -> None:
        self._write_config()
        command = self._command()
        setpriv = shutil.which("setpriv")
        if setpriv:  # SIGTERM the service if our process dies without cleaning up (e.g. pytest killed)
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, env=self._env(), start_new_session=True,
            )  # fmt: skip
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                _LIVE.discard(self)
                raise ServiceStartError(
                    f"{self.name} exited with status {code} while starting; {self.log_path}:\n{self._log_since(offset)}"
                )
            if self._ready() and self._proc.poll() is None:  # ours answered, not a squatter on the port
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceStartError(
                    f"{self.name} did not answer within {timeout:.0f} s; {self.log_path}:\n{self._log_since(offset)}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop: SIGTERM to the process group, then wait (SIGKILL after ``timeout`` s)."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Crash stop: SIGKILL, nothing is flushed (what ``kill -9`` or a power cut does)."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self, timeout: float = 15.0) -> None:
        """Graceful stop, then start on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        try:
            if proc is None or proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10.0)
        finally:
            _LIVE.discard(self)
            self._after_exit()

    def _after_exit(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Hook for subclasses to drop connections to the stopped process."""

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of the service's log file, for failure messages."""
        if not self.log_path.exists():
            return ""
        size = self.log_path.stat().st_size
        return self._log_since(max(0, size - max_bytes))

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        return data[-4000:].decode("utf-8", "replace")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
