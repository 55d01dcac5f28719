"""The project's local MongoDB-compatible server: FerretDB v1.24.2 on SQLite.

`newscrawl db start|stop|status` drive it. The binary is built from the small
Go module in tools/ferretdb (go build through the module proxy) and cached
under .local/, keyed by a hash of that module and its patches, so a second
start costs seconds. With MONGO_URI set, nothing is started and that server is used.

The patches (tools/ferretdb/patches/*.patch, applied in name order) change
FerretDB's SQLite backend: the module is taken from the proxy as released,
copied under .local/cache/ferretdb-src/<hash>, patched there, and the build
replaces the module with that copy (a generated go.mod, `go build -modfile`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from newscrawl.local.server import (
    PROJECT_ROOT,
    LocalServer,
    free_port,
    launch_server,
    local_dir,
    process_start,
)

TOOLS_DIR = PROJECT_ROOT / "tools" / "ferretdb"
PATCHES_DIR = TOOLS_DIR / "patches"
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"


class LocalDBError(RuntimeError):
    """The local database could not be built, started or reached."""


@dataclass
class DBState:
    pid: int
    uri: str
    data_dir: str
    log_file: str
    started: str = ""  # process start time: a reused pid is not ours (localserver)
    program: str = "ferretdb"  # (state files older than this field: the binary's name part)


def patch_files() -> list[Path]:
    return sorted(PATCHES_DIR.glob("*.patch"))


def build_digest(*, patched: bool = True) -> str:
    """What the binary is made of: the Go module and the patches."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((TOOLS_DIR / name).read_bytes())
    for patch in patch_files() if patched else ():
        digest.update(patch.name.encode() + b"\0" + patch.read_bytes())
    return digest.hexdigest()[:12]


def binary_path(*, patched: bool = True) -> Path:
    name = f"ferretdb-{build_digest(patched=patched)}"
    return local_dir() / "bin" / (name if patched else name.replace("-", "-unpatched-", 1))


def go_env() -> dict[str, str]:
    cache = local_dir() / "cache" / "go"
    return {
        **os.environ,
        "GOMODCACHE": os.environ.get("GOMODCACHE") or str(cache / "mod"),
        "GOCACHE": os.environ.get("GOCACHE") or str(cache / "build"),
        "CGO_ENABLED": "0",
        # FerretDB 1.24.2 asks for go1.24; a newer local Go builds it as is.
        "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local"),
    }


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise LocalDBError("Go is needed to build FerretDB and `go` is not on PATH")
    return go


def _run(args: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LocalDBError(f"{what} failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout


def ferretdb_version() -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(FERRETDB_MODULE)}\s+(v\S+)",
                      (TOOLS_DIR / "go.mod").read_text(), re.MULTILINE)
    if match is None:
        raise LocalDBError(f"tools/ferretdb/go.mod does not require {FERRETDB_MODULE}")
    return match.group(1)


def patched_source(*, quiet: bool = False) -> Path:
    """FerretDB's module as the proxy serves it, with the patches applied (cached)."""
    target = local_dir() / "cache" / "ferretdb-src" / build_digest()
    if (target / ".patched").exists():
        return target
    go, env = _go(), go_env()
    module = f"{FERRETDB_MODULE}@{ferretdb_version()}"
    info = json.loads(_run([go, "mod", "download", "-json", module], TOOLS_DIR, env,
                           f"go mod download {module}"))
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(info["Dir"], tmp)
    for path in [tmp, *tmp.rglob("*")]:  # the module cache is read-only
        path.chmod(path.stat().st_mode | 0o200)
    # git apply outside any repository (GIT_CEILING_DIRECTORIES: not the project's own).
    git_env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp.parent)}
    for patch in patch_files():
        if not quiet:
            print(f"patching FerretDB: {patch.name}", file=sys.stderr, flush=True)
        _run(["git", "apply", "--whitespace=nowarn", str(patch)], tmp, git_env,
             f"applying {patch.name} to {module}")
    # What FerretDB's `task gen-version` writes: its own tests need it (the module's zip lacks it).
    (tmp / "build" / "version" / "version.txt").write_text(ferretdb_version() + "\n")
    (tmp / ".patched").touch()
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def build_binary(*, quiet: bool = False, patched: bool = True) -> Path:
    """Build FerretDB once; later calls find the cached binary.

    `patched=False` builds FerretDB as released (to measure the patches against)."""
    target = binary_path(patched=patched)
    if target.exists():
        return target
    go, env = _go(), go_env()
    target.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"building FerretDB into {target} (first time only) ...", file=sys.stderr, flush=True)
    args = [go, "build", "-trimpath"]
    if patched and patch_files():
        source = patched_source(quiet=quiet)
        modfile_dir = local_dir() / "cache" / "ferretdb-build" / build_digest()
        modfile_dir.mkdir(parents=True, exist_ok=True)
        (modfile_dir / "go.mod").write_text(
            (TOOLS_DIR / "go.mod").read_text() + f"\nreplace {FERRETDB_MODULE} => {source}\n")
        shutil.copyfile(TOOLS_DIR / "go.sum", modfile_dir / "go.sum")
        args += ["-modfile", str(modfile_dir / "go.mod")]
    tmp = target.with_suffix(".tmp")
    _run([*args, "-o", str(tmp), "."], TOOLS_DIR, env, "go build of FerretDB")
    tmp.rename(target)
    return target


def ping(uri: str, timeout: float = 2.0) -> bool:
    import pymongo  # imported here: `newscrawl db status` should not pay for it otherwise

    from pipelines.config import mongo_client

    client = mongo_client(uri, timeout_ms=int(timeout * 1000))
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


def read_state() -> DBState | None:
    return SERVER.read_state()


def running_uri() -> str | None:
    """MONGO_URI when set, else the URI of the local server if it runs."""
    return SERVER.running_address()


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
    def launch_here(base: Path) -> DBState:
        data_dir, log_file = base / "data", base / "ferretdb.log"
        proc, uri = launch(free_port(), data_dir, log_file, timeout=timeout, quiet=quiet)
        return DBState(proc.pid, uri, str(data_dir), str(log_file), process_start(proc.pid) or "",
                       binary_path().name)

    return SERVER.start(launch_here)


def stop() -> bool:
    """Stop the local server; False when it was not running."""
    return SERVER.stop()


SERVER = LocalServer("ferretdb", "MONGO_URI", DBState, lambda state: state.uri, ping)
