"""The benches' database: the local FerretDB (or MONGO_URI), a fresh name per bench, the
server's process and CPU time."""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path

from bench.common import ROOT


# --- the database --------------------------------------------------------------
def database_uri() -> str:
    """MONGO_URI when set, else the project's local FerretDB (started if need be)."""
    from newscrawl.local import ferretdb

    return ferretdb.start(quiet=True)


_names = iter(range(1_000_000))


def database_name(bench: str) -> str:
    """A fresh database name of this bench process: bench_<name>_<pid>_<n>."""
    return f"bench_{bench}_{os.getpid()}_{next(_names)}"


def drop_database(uri: str, name: str) -> None:
    from pipelines.config import mongo_client

    client = mongo_client(uri, appname="newscrawl-bench")
    try:
        client.drop_database(name)
    finally:
        client.close()


def server_version(uri: str) -> str:
    from pipelines.config import mongo_client

    client = mongo_client(uri, appname="newscrawl-bench")
    try:
        info = client.admin.command("buildInfo")
    finally:
        client.close()
    if "ferretdbVersion" in info:
        version = info["ferretdbVersion"]
        if version == "unknown":  # built from the embeddable package: no version stamped in
            pinned = re.search(r"FerretDB/FerretDB (v\S+)", (ROOT / "tools/ferretdb/go.mod").read_text())
            version = f"{pinned[1]} (tools/ferretdb/go.mod)" if pinned else version
        return f"FerretDB {version}, SQLite backend (MongoDB wire {info.get('version')})"
    return f"MongoDB {info.get('version')}"


def database_pid(uri: str) -> int | None:
    """The local FerretDB's pid when `uri` is the project's local server (for its CPU time)."""
    from newscrawl.local import ferretdb

    state = ferretdb.read_state()
    return state.pid if state is not None and state.uri == uri else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process, all threads (here: the mirror server's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


