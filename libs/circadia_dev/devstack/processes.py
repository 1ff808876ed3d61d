"""Background processes with pid files: start detached, find again later, stop cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from circadia_dev.paths import PROJECT_ROOT


class LaunchError(RuntimeError):
    """A server of the local stack could not be installed, started or reached."""


INSTALLER = PROJECT_ROOT / "deploy" / "local" / "install-system-packages.sh"


def system_command(command: str, *commands: str, error: type[LaunchError] | None = None) -> str:
    """The path of a Debian-packaged ``command``, installed by the project's installer script (with
    ``commands``, others of the same package) when missing; ``error`` (LaunchError) when it cannot be."""
    path = shutil.which(command)
    if path is None:
        # the project's own installer script, run by the PATH's bash
        result = subprocess.run(["bash", str(INSTALLER), command, *commands],  # noqa: S607  # nosec B607
                                capture_output=True, text=True)
        path = shutil.which(command)
        if result.returncode != 0 or path is None:
            raise (error or LaunchError)(f"cannot install {command}:\n{result.stdout}{result.stderr}")
    return path


def http_answers(url: str, timeout: float = 1.0) -> bool:
    """True when ``url`` answers 200 (a readiness probe)."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False  # not listening yet


@dataclass(frozen=True)
class ManagedProcess:
    """A process started in its own session so that stopping it stops its children too."""

    name: str
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        """The pid of the running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _alive(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> int:
        running = self.pid()
        if running is not None:
            return running
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        return process.pid

    def exited_early(self) -> bool:
        return self.pid_file.exists() and self.pid() is None

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
        """Poll ``ready`` until it holds; fail with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.exited_early():
                raise LaunchError(f"{what} exited during start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise LaunchError(f"{what} not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(interval)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the process group, SIGKILL it after ``timeout``; True if something was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid) and not _group_alive(pid):
                break
            time.sleep(0.1)
        else:
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL the whole group at once (crash simulation)."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
            self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our own exited child, so it does not linger as a zombie.
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
