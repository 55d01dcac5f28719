"""A crawl in a process of its own: the one way newscrawl starts `scrapy crawl`.

The demo, the scheduler, backfill, the benchmarks and the tests start crawls
with `start_crawl`: the project's settings module, this process's environment
plus what the caller adds, the project's folder as working directory, output
appended to a log file, and a session of its own (a Ctrl-C at the terminal
reaches only the caller, which decides). NEWSCRAWL_STATS_FILE makes the crawl
write its stats, read back with `read_stats`. `stop_crawl` is the one stop:
SIGTERM (Scrapy finishes cleanly and records the run), SIGKILL after a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newscrawl.local.server import PROJECT_ROOT, finish_or_kill, signal_group, stop_process

if TYPE_CHECKING:
    from scrapy.settings import Settings

SETTINGS_MODULE = "newscrawl.settings"
# A caller's exported frontier makes its crawls distributed; `isolated` crawls drop it.
FRONTIER_ENV = ("NEWSCRAWL_REDIS_URL", "NEWSCRAWL_RUN_ID")
STOP_TIMEOUT = 60.0

__all__ = ["STOP_TIMEOUT", "CrawlResult", "crawl_command", "crawl_env", "crawl_settings",
           "finish_or_kill", "read_stats", "run_crawl", "signal_group", "start_crawl", "stop_crawl"]


def crawl_env(extra: Mapping[str, str] | None = None, *, isolated: bool = False) -> dict[str, str]:
    """This process's environment (MONGO_URI, MONGO_DATABASE, NEWSCRAWL_HOST_MAP, …) for a
    crawl, with `extra` on top; `isolated` leaves out the caller's distributed frontier."""
    inherited = {k: v for k, v in os.environ.items() if not (isolated and k in FRONTIER_ENV)}
    return {**inherited, "SCRAPY_SETTINGS_MODULE": SETTINGS_MODULE, **(extra or {})}


def crawl_settings(overrides: Mapping[str, str] | None = None) -> Settings:
    """The settings a crawl started here runs with, as seen from this process: the project's
    settings module, then `overrides` (its `-s NAME=VALUE`) at the command line's priority."""
    from scrapy.settings import Settings

    settings = Settings()
    settings.setmodule(SETTINGS_MODULE, priority="project")
    settings.setdict(dict(overrides or {}), priority="cmdline")
    return settings


def crawl_command(spider: str, args: Mapping[str, str] | None = None,
                  settings: Mapping[str, str] | None = None, *,
                  python_args: Sequence[str] = ("-m", "scrapy"),
                  wrapper: Sequence[str] = ()) -> list[str]:
    """`python -m scrapy crawl spider -a name=value … -s NAME=value …`; `python_args`
    replaces `-m scrapy` (a profiler's module), `wrapper` goes in front (e.g. `perf stat`)."""
    command = [*wrapper, sys.executable, *python_args, "crawl", spider]
    for name, value in (args or {}).items():
        command += ["-a", f"{name}={value}"]
    for name, value in (settings or {}).items():
        command += ["-s", f"{name}={value}"]
    return command


def start_crawl(spider: str, args: Mapping[str, str] | None = None,
                settings: Mapping[str, str] | None = None, *, log_file: Path,
                env: Mapping[str, str] | None = None, stats_file: Path | None = None,
                cwd: Path = PROJECT_ROOT, python_args: Sequence[str] = ("-m", "scrapy"),
                wrapper: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start the crawl; its output and log go to `log_file` (appended), its stats to
    `stats_file` when given (an old one is removed first). `env` is the whole environment
    (crawl_env() when None)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    settings = {"LOG_FILE": str(log_file), **(settings or {})}
    if stats_file is not None:
        stats_file.parent.mkdir(parents=True, exist_ok=True)
        stats_file.unlink(missing_ok=True)
        settings["NEWSCRAWL_STATS_FILE"] = str(stats_file)
    command = crawl_command(spider, args, settings, python_args=python_args, wrapper=wrapper)
    with log_file.open("ab") as log:
        return subprocess.Popen(command, cwd=cwd, env=dict(env if env is not None else crawl_env()),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def read_stats(path: Path) -> dict[str, Any]:
    """The stats a crawl wrote (NEWSCRAWL_STATS_FILE); {} if it wrote none."""
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def stop_crawl(process: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT, *,
               force: Callable[[], bool] = lambda: False) -> int:
    """SIGTERM, then SIGKILL after `timeout` seconds or when `force()`; the exit code."""
    return stop_process(process, timeout, force=force)


@dataclass
class CrawlResult:
    returncode: int
    stats: dict[str, Any]
    log_file: Path


def run_crawl(spider: str, args: Mapping[str, str] | None = None,
              settings: Mapping[str, str] | None = None, *, log_file: Path, stats_file: Path,
              env: Mapping[str, str] | None = None, timeout: float | None = None) -> CrawlResult:
    """start_crawl and wait for it (stopped after `timeout` seconds when given)."""
    process = start_crawl(spider, args, settings, log_file=log_file, env=env, stats_file=stats_file)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        code = stop_crawl(process)
    except BaseException:
        stop_crawl(process)
        raise
    return CrawlResult(code, read_stats(stats_file), log_file)

