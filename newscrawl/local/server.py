"""What the project's local servers (FerretDB, Redis) share.

Each keeps a JSON state file under .local/ naming its process (pid, start
time, program); `launch` starts a server in its own session (it outlives the
command that started it) and waits until it answers; `stop_server` ends it,
politely first. A state file whose pid now belongs to another process (the
server died, the pid was reused) is stale: that process is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from newscrawl.redaction import redact
from pipelines.config import pid_alive

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class HasPid(Protocol):
    pid: int
    started: str  # the process's start time (/proc/<pid>/stat), "" if unknown
    program: str  # the server binary's file name


State = TypeVar("State", bound=HasPid)
ServerStateT = TypeVar("ServerStateT", bound="ServerState")


def local_dir() -> Path:
    """The ignored folder the project owns (.local/, or NEWSCRAWL_LOCAL_DIR)."""
    return Path(os.environ.get("NEWSCRAWL_LOCAL_DIR") or PROJECT_ROOT / ".local")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int) -> bool:
    # Reap it first if it is our own exited child, or it looks alive as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return pid_alive(pid)


def process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces: count fields after its ')'.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of proc(5)


def process_command(pid: int) -> str | None:
    """The command line of process `pid`; None if it cannot be read."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pass
    try:
        found = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True,
                               timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None


def is_our_server(state: HasPid) -> bool:
    """Whether state.pid is still the server we started, not a process that reused its pid."""
    if state.started:
        started = process_start(state.pid)
        if started is not None:
            return started == state.started
    command = process_command(state.pid)
    if command is None:
        return True  # nothing to tell by (no /proc, no ps): trust the state file
    return bool(state.program) and state.program in command


def read_state_file(path: Path, kind: Callable[..., State]) -> State | None:
    """The state in `path` if its process still runs and is the server it names."""
    try:
        state = kind(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    return state if alive(state.pid) and is_our_server(state) else None


def write_state(path: Path, state: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state.__dict__))


def launch_server(command: Sequence[str], log_file: Path, address: str, ping: Callable[[str], bool], *,
           timeout: float, poll: float, error: Callable[[str], Exception],
           what: str) -> subprocess.Popen[bytes]:
    """Start `command` logging to log_file; wait until `ping(address)` answers."""
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the command that started it
        )
    deadline = time.monotonic() + timeout
    while not ping(address):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            tail = log_file.read_text(errors="replace")[-2000:]
            raise error(f"{what} did not answer on {redact(address)}:\n{tail}")
        time.sleep(poll)
    return proc


def signal_group(process: subprocess.Popen[Any], sig: int) -> None:
    """`sig` to `process` and everything it started (it leads a session of its own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def finish_or_kill(process: subprocess.Popen[Any], deadline: float, *,
                   force: Callable[[], bool] = lambda: False) -> int:
    """Wait for `process` until `deadline` (time.monotonic()) or until `force()`; then SIGKILL
    its group. Its exit code."""
    while process.poll() is None:
        if force() or time.monotonic() >= deadline:
            signal_group(process, signal.SIGKILL)
            return process.wait()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(min(0.1, max(deadline - time.monotonic(), 0.0)))
    return process.returncode


def stop_process(process: subprocess.Popen[Any], timeout: float, *,
                 force: Callable[[], bool] = lambda: False) -> int:
    """The one stop of a process the project started in its own session: SIGTERM to its
    group (a crawl then finishes cleanly), SIGKILL after `timeout` or when `force()`."""
    signal_group(process, signal.SIGTERM)
    return finish_or_kill(process, time.monotonic() + timeout, force=force)


def stop_server(path: Path, state: HasPid | None) -> bool:
    """Stop the process of `state` (TERM, then KILL after 5 s); False when none ran."""
    path.unlink(missing_ok=True)
    if state is None or not is_our_server(state):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    for _ in range(50):
        if not alive(state.pid):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGKILL)
    return True


class ServerState(HasPid, Protocol):
    data_dir: str
    log_file: str


@dataclass(frozen=True)
class LocalServer(Generic[ServerStateT]):
    """One kind of local server: its folder under .local/, the environment variable that
    names a server to use instead (then nothing starts), its state file, its address."""

    folder: str  # under local_dir(): the state file, the data, the log
    env: str  # MONGO_URI, NEWSCRAWL_REDIS_URL
    state_kind: Callable[..., ServerStateT]
    address_of: Callable[[ServerStateT], str]
    ping: Callable[[str], bool]

    def base(self) -> Path:
        return local_dir() / self.folder

    def state_file(self) -> Path:
        return self.base() / "state.json"

    def read_state(self) -> ServerStateT | None:
        return read_state_file(self.state_file(), self.state_kind)

    def running_address(self) -> str | None:
        """The variable's server when it is set, else the address of the local one if it runs."""
        if os.environ.get(self.env):
            return os.environ[self.env]
        state = self.read_state()
        return self.address_of(state) if state else None

    def start(self, launch: Callable[[Path], ServerStateT]) -> str:
        """The variable's server, or the local one running, or one `launch(base folder)`
        starts (its state written); the address."""
        if os.environ.get(self.env):
            return os.environ[self.env]
        state = self.read_state()
        if state and self.ping(self.address_of(state)):
            return self.address_of(state)
        self.base().mkdir(parents=True, exist_ok=True)
        state = launch(self.base())
        write_state(self.state_file(), state)
        return self.address_of(state)

    def stop(self) -> bool:
        """Stop the local server; False when it was not running."""
        return stop_server(self.state_file(), self.read_state())
