"""The project's local MongoDB-compatible server: FerretDB v1.24.2 on SQLite.

`newscrawl db start|stop|status` drive it. The binary is built from the small
Go module in tools/ferretdb (go build through the module proxy) and cached
under .local/, keyed by a hash of that module, so a second start costs
seconds. With MONGO_URI set, nothing is started and that server is used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from newscrawl.localserver import (
    PROJECT_ROOT,
    free_port,
    launch_server,
    local_dir,
    read_state_file,
    stop_server,
    write_state,
)

TOOLS_DIR = PROJECT_ROOT / "tools" / "ferretdb"


class LocalDBError(RuntimeError):
    """The local database could not be built, started or reached."""


def _state_file() -> Path:
    return local_dir() / "ferretdb" / "state.json"


@dataclass
class DBState:
    pid: int
    uri: str
    data_dir: str
    log_file: str


def binary_path() -> Path:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((TOOLS_DIR / name).read_bytes())
    return local_dir() / "bin" / f"ferretdb-{digest.hexdigest()[:12]}"


def build_binary(*, quiet: bool = False) -> Path:
    """Build FerretDB once; later calls find the cached binary."""
    target = binary_path()
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise LocalDBError("Go is needed to build FerretDB and `go` is not on PATH")
    cache = local_dir() / "cache" / "go"
    env = {
        **os.environ,
        "GOMODCACHE": os.environ.get("GOMODCACHE") or str(cache / "mod"),
        "GOCACHE": os.environ.get("GOCACHE") or str(cache / "build"),
        "CGO_ENABLED": "0",
        # FerretDB 1.24.2 asks for go1.24; a newer local Go builds it as is.
        "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local"),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"building FerretDB into {target} (first time only) ...", file=sys.stderr, flush=True)
    tmp = target.with_suffix(".tmp")
    proc = subprocess.run(
        [go, "build", "-trimpath", "-o", str(tmp), "."],
        cwd=TOOLS_DIR, env=env, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise LocalDBError(f"go build of FerretDB failed:\n{proc.stderr[-4000:]}")
    tmp.rename(target)
    return target


def ping(uri: str, timeout: float = 2.0) -> bool:
    import pymongo  # imported here: `newscrawl db status` should not pay for it otherwise

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=int(timeout * 1000)
    )
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


def read_state() -> DBState | None:
    return read_state_file(_state_file(), DBState)


def running_uri() -> str | None:
    """MONGO_URI when set, else the URI of the local server if it runs."""
    if os.environ.get("MONGO_URI"):
        return os.environ["MONGO_URI"]
    state = read_state()
    return state.uri if state else None


def launch(port: int, data_dir: Path, log_file: Path, *, timeout: float = 60.0,
           quiet: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """Start FerretDB on 127.0.0.1:port with its data in data_dir; wait for ping."""
    binary = build_binary(quiet=quiet)
    data_dir.mkdir(parents=True, exist_ok=True)
    uri = f"mongodb://127.0.0.1:{port}/"
    proc = launch_server([str(binary), "-listen", f"127.0.0.1:{port}", "-data", str(data_dir)],
                         log_file, uri, lambda address: ping(address, timeout=1.0),
                         timeout=timeout, poll=0.2, error=LocalDBError, what="FerretDB")
    return proc, uri


def start(*, timeout: float = 60.0, quiet: bool = False) -> str:
    """Start the local server unless it (or MONGO_URI) is already there; return its URI."""
    if os.environ.get("MONGO_URI"):
        return os.environ["MONGO_URI"]
    state = read_state()
    if state and ping(state.uri):
        return state.uri
    base = local_dir() / "ferretdb"
    data_dir = base / "data"
    log_file = base / "ferretdb.log"
    proc, uri = launch(free_port(), data_dir, log_file, timeout=timeout, quiet=quiet)
    write_state(_state_file(), DBState(proc.pid, uri, str(data_dir), str(log_file)))
    return uri


def stop() -> bool:
    """Stop the local server; False when it was not running."""
    return stop_server(_state_file(), read_state())
