"""`newscrawl schedule`: crawls on a timetable, with APScheduler 3.

A TOML file (`schedule.toml`) names the jobs: a spider, its `-a` arguments,
a cron expression or an interval, and where the crawl runs: here (`local`: a
`python -m scrapy crawl` process with this process's environment) or on a
scrapyd server (`scrapyd`: `schedule.json`, then `listjobs.json` until it ends).

- A job never overlaps itself (`max_instances=1`): a firing that comes while
  the job's previous crawl is still going is skipped, logged, counted, and
  recorded in the `schedule_skips` collection (reason `running`).
- The timetable is kept in the `schedule_jobs` collection (APScheduler's
  MongoDBJobStore) when the server can hold it (checked at start; else the
  memory store, with one warning). Firings missed while the scheduler was
  down then run once when it is back (`coalesce`), if the last of them is
  within `misfire_grace_time`; the others are recorded as skipped (`coalesced`,
  or `missed` when even the last is too late).
- SIGTERM or SIGINT: no new crawls; running local crawls get one SIGTERM
  (Scrapy's graceful stop: the run is recorded with outcome `shutdown`) and
  are killed after `stop_timeout`; crawls on scrapyd go on there. Exit 0.

Every crawl records itself in `crawl_runs` (newscrawl.components.runs.RunRecorder): the
scheduler only logs one line per start and end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newscrawl.database import DatabaseUnreachable
from newscrawl.local import ferretdb

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.collection import Collection

logger = logging.getLogger("newscrawl.ops.schedule")

Document = dict[str, Any]

DEFAULT_CONFIG = "schedule.toml"
JOBS_COLLECTION = "schedule_jobs"
PROBE_COLLECTION = "schedule_jobs_probe"  # + "_<pid>": dropped after the check
SKIPS_COLLECTION = "schedule_skips"
DEFAULT_TIMEZONE = "Asia/Shanghai"  # the site's zone, as for since/until
DEFAULT_GRACE = 3600.0
DEFAULT_STOP_TIMEOUT = 60.0
DEFAULT_SCRAPYD_URL = "http://127.0.0.1:6800/"
DEFAULT_PASS_ENV = ("MONGO_DATABASE", "NEWSCRAWL_HOST_MAP")
# Settings that may hold a password: never sent as `-s`/`setting=` (scrapyd keeps those in
# its queue database and logs, and both show in `ps`). They come from the environment.
CREDENTIAL_SETTINGS = ("MONGO_URI", "NEWSCRAWL_REDIS_URL", "REDIS_URL")
CREDENTIAL_HINT = ("can hold a password, which scrapyd would keep in its queue and log and `ps` "
                   "would show: set it in the environment of the scrapyd service (or of the "
                   "scheduler, for local jobs) instead (README, \"scrapyd\")")
JOB_STORES = ("auto", "mongodb", "memory")
TARGETS = ("local", "scrapyd")
SCRAPYD_POLL = 2.0
DB_TIMEOUT_MS = 3000
FIRE_REF = "newscrawl.ops.schedule:fire"  # what a stored job calls: a name, never a pickled function
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


class ConfigError(ValueError):
    """The schedule file is wrong: one line that says where and what."""


class ScheduleDatabaseError(DatabaseUnreachable):
    """`job_store = "mongodb"` and the database cannot hold the timetable."""


# --- the configuration (pure) ------------------------------------------------------------------

def parse_duration(value: object, what: str) -> float:
    """Seconds from a number or a text such as `90s`, `10m`, `1h30m`, `2d`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{what}: expected seconds or a duration such as \"10m\", got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or _DURATION.sub("", text).strip():
                raise ConfigError(f"{what}: {value!r} is not a duration (examples: 45, \"90s\", "
                                  f"\"10m\", \"1h30m\", \"1d\")") from None
            seconds = sum(float(number) * _UNIT_SECONDS[unit.lower()] for number, unit in parts)
    if seconds <= 0:
        raise ConfigError(f"{what}: must be more than 0 seconds, got {value!r}")
    return seconds


def argument_value(value: object, what: str) -> str:
    """A spider argument or setting as given on a command line."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return ",".join(str(v) for v in value)
    raise ConfigError(f"{what}: expected a string, a number, a boolean or a list of strings, "
                      f"got {value!r}")


def string_table(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: expected a table such as {{name = \"value\"}}, got {value!r}")
    return {str(k): argument_value(v, f"{what}.{k}") for k, v in value.items()}


@dataclass(frozen=True)
class JobSpec:
    """One `[[job]]`: what to crawl, when, and where."""

    name: str
    spider: str
    args: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    cron: str | None = None
    interval: float | None = None  # seconds
    timezone: str = DEFAULT_TIMEZONE
    misfire_grace_time: float = DEFAULT_GRACE
    target: str = "local"
    scrapyd_url: str = DEFAULT_SCRAPYD_URL
    scrapyd_project: str = "newscrawl"

    def to_dict(self) -> Document:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        return cls(**data)

    def trigger(self, now: datetime | None = None) -> Any:
        """The APScheduler trigger (raises ValueError for a bad cron expression); an
        interval's first firing is one interval after `now` (default: the present)."""
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        zone = ZoneInfo(self.timezone)
        if self.cron is not None:
            return CronTrigger.from_crontab(self.cron, timezone=zone)
        assert self.interval is not None
        first = (now or datetime.now(UTC)) + timedelta(seconds=self.interval)
        return IntervalTrigger(seconds=self.interval, timezone=zone, start_date=first)

    def when(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r} ({self.timezone})"
        return f"every {format_seconds(self.interval or 0)}"

    def command_line(self) -> str:
        return " ".join([self.spider, *(f"-a {k}={v}" for k, v in self.args.items())])


@dataclass(frozen=True)
class ScheduleConfig:
    jobs: tuple[JobSpec, ...]
    job_store: str = "auto"
    log_dir: Path = field(default_factory=lambda: ferretdb.local_dir() / "logs" / "schedule")
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    pass_env: tuple[str, ...] = DEFAULT_PASS_ENV
    source: str = DEFAULT_CONFIG


SCHEDULER_KEYS = {"timezone", "misfire_grace_time", "job_store", "log_dir", "stop_timeout",
                  "scrapyd_url", "scrapyd_project", "pass_env"}
JOB_KEYS = {"name", "spider", "args", "settings", "cron", "interval", "target", "timezone",
            "misfire_grace_time", "scrapyd_url", "scrapyd_project"}


def check_keys(table: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{what}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} (known: {', '.join(sorted(allowed))})")


def check_timezone(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise ConfigError(f"{what}: expected a zone name such as \"Asia/Shanghai\", got {name!r}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{what}: unknown time zone {name!r}") from None
    return name


def check_url(value: object, what: str) -> str:
    from newscrawl.local.scrapyd_server import split_credentials

    if not isinstance(value, str):
        raise ConfigError(f"{what}: expected a URL such as \"http://127.0.0.1:6800/\"")
    try:
        split_credentials(value)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    return value


def text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what}: expected a non-empty string, got {value!r}")
    return value.strip()


def parse_job(table: object, position: int, defaults: Mapping[str, Any]) -> JobSpec:
    if not isinstance(table, dict):
        raise ConfigError(f"job {position}: expected a table ([[job]])")
    label = f"job {table.get('name')!r}" if isinstance(table.get("name"), str) else f"job {position}"
    check_keys(table, JOB_KEYS, label)
    name = text(table.get("name"), f"{label}: name")
    if not _NAME.match(name):
        raise ConfigError(f"{label}: name: letters, digits, '.', '_' and '-' only")
    spider = text(table.get("spider"), f"{label}: spider")
    cron, interval = table.get("cron"), table.get("interval")
    if (cron is None) == (interval is None):
        raise ConfigError(f"{label}: give either cron = \"*/15 * * * *\" or interval = \"10m\"")
    target = table.get("target", "local")
    if target not in TARGETS:
        raise ConfigError(f"{label}: target: expected \"local\" or \"scrapyd\", got {target!r}")
    settings = string_table(table.get("settings"), f"{label}: settings")
    for setting in CREDENTIAL_SETTINGS:
        if setting in settings:
            raise ConfigError(f"{label}: settings: {setting} {CREDENTIAL_HINT}")
    spec = JobSpec(
        name=name,
        spider=spider,
        args=string_table(table.get("args"), f"{label}: args"),
        settings=settings,
        cron=text(cron, f"{label}: cron") if cron is not None else None,
        interval=parse_duration(interval, f"{label}: interval") if interval is not None else None,
        timezone=check_timezone(table.get("timezone", defaults["timezone"]), f"{label}: timezone"),
        misfire_grace_time=parse_duration(table.get("misfire_grace_time",
                                                    defaults["misfire_grace_time"]),
                                          f"{label}: misfire_grace_time"),
        target=target,
        scrapyd_url=check_url(table.get("scrapyd_url", defaults["scrapyd_url"]),
                              f"{label}: scrapyd_url"),
        scrapyd_project=text(table.get("scrapyd_project", defaults["scrapyd_project"]),
                             f"{label}: scrapyd_project"),
    )
    try:
        spec.trigger()
    except ValueError as exc:
        raise ConfigError(f"{label}: cron {spec.cron!r}: {exc}") from None
    return spec


def parse_config(data: Mapping[str, Any], *, source: str = DEFAULT_CONFIG,
                 base_dir: Path | None = None) -> ScheduleConfig:
    """The configuration from a parsed TOML document."""
    check_keys(data, {"scheduler", "job"}, source)
    options = data.get("scheduler", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{source}: [scheduler] must be a table")
    check_keys(options, SCHEDULER_KEYS, f"{source}: [scheduler]")
    defaults = {
        "timezone": check_timezone(options.get("timezone", DEFAULT_TIMEZONE), "[scheduler] timezone"),
        "misfire_grace_time": parse_duration(options.get("misfire_grace_time", DEFAULT_GRACE),
                                             "[scheduler] misfire_grace_time"),
        "scrapyd_url": check_url(options.get("scrapyd_url", DEFAULT_SCRAPYD_URL),
                                 "[scheduler] scrapyd_url"),
        "scrapyd_project": text(options.get("scrapyd_project", "newscrawl"),
                                "[scheduler] scrapyd_project"),
    }
    job_store = options.get("job_store", "auto")
    if job_store not in JOB_STORES:
        raise ConfigError(f"[scheduler] job_store: expected one of {', '.join(JOB_STORES)}, "
                          f"got {job_store!r}")
    pass_env = options.get("pass_env", list(DEFAULT_PASS_ENV))
    if not isinstance(pass_env, list) or not all(isinstance(n, str) for n in pass_env):
        raise ConfigError("[scheduler] pass_env: expected a list of variable names")
    for name in pass_env:
        if name in CREDENTIAL_SETTINGS:
            raise ConfigError(f"[scheduler] pass_env: {name} {CREDENTIAL_HINT}")
    tables = data.get("job")
    if not tables:
        raise ConfigError(f"{source}: no jobs: add at least one [[job]] table")
    if not isinstance(tables, list):
        raise ConfigError(f"{source}: job: use [[job]] tables (one per job)")
    jobs = tuple(parse_job(table, position, defaults) for position, table in enumerate(tables, 1))
    names = Counter(job.name for job in jobs)
    twice = sorted(name for name, count in names.items() if count > 1)
    if twice:
        raise ConfigError(f"{source}: job names must be unique: {', '.join(twice)}")
    log_dir = options.get("log_dir")
    if log_dir is not None:
        log_path = Path(text(log_dir, "[scheduler] log_dir")).expanduser()
        if not log_path.is_absolute() and base_dir is not None:
            log_path = base_dir / log_path
    else:
        log_path = ferretdb.local_dir() / "logs" / "schedule"
    return ScheduleConfig(
        jobs=jobs, job_store=job_store, log_dir=log_path,
        stop_timeout=parse_duration(options.get("stop_timeout", DEFAULT_STOP_TIMEOUT),
                                    "[scheduler] stop_timeout"),
        pass_env=tuple(pass_env), source=source)


def load_config(path: Path) -> ScheduleConfig:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(data, source=str(path), base_dir=path.resolve().parent)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def check_spiders(config: ScheduleConfig, known: Iterable[str]) -> None:
    """Local jobs must name a spider of this project."""
    names = set(known)
    for job in config.jobs:
        if job.target == "local" and job.spider not in names:
            raise ConfigError(f"{config.source}: job {job.name!r}: no spider {job.spider!r} "
                              f"(this project has {', '.join(sorted(names))})")


def project_spiders() -> list[str]:
    from scrapy.spiderloader import SpiderLoader
    from scrapy.utils.project import get_project_settings

    with temporary_env({"SCRAPY_SETTINGS_MODULE": "newscrawl.settings"}):
        settings = get_project_settings()
    return list(SpiderLoader.from_settings(settings.frozencopy()).list())


@contextlib.contextmanager
def temporary_env(values: Mapping[str, str]) -> Any:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def format_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# --- a crawl in its own process (also used by newscrawl backfill) --------------------------------

def crawl_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment (MONGO_URI, MONGO_DATABASE, NEWSCRAWL_HOST_MAP, …) for a crawl."""
    return {**os.environ, "SCRAPY_SETTINGS_MODULE": "newscrawl.settings", **(extra or {})}


def crawl_command(spider: str, args: Mapping[str, str], settings: Mapping[str, str]) -> list[str]:
    command = [sys.executable, "-m", "scrapy", "crawl", spider]
    for name, value in args.items():
        command += ["-a", f"{name}={value}"]
    for name, value in settings.items():
        command += ["-s", f"{name}={value}"]
    return command


def start_crawl(spider: str, args: Mapping[str, str], settings: Mapping[str, str], *,
                log_file: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """`scrapy crawl` from the project's folder, in a session of its own (a Ctrl-C at the
    terminal reaches only its parent, which decides), its output appended to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        return subprocess.Popen(
            crawl_command(spider, args, {"LOG_FILE": str(log_file), **settings}),
            cwd=ferretdb.PROJECT_ROOT, env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)


def read_stats(path: Path) -> dict[str, Any]:
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stats if isinstance(stats, dict) else {}


def terminate(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def stats_line(stats: Mapping[str, Any]) -> str:
    from newscrawl.components.runs import counts_from_stats

    counts = counts_from_stats(stats)
    return (f"{counts['pages']} pages, {counts['stored']} stored, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged, {counts['skipped_stored']} skipped as stored, "
            f"{counts['rejected']} rejected")


# --- the job store -------------------------------------------------------------------------------

def job_store_problem(probe: Collection[Document]) -> str | None:
    """What MongoDBJobStore needs, tried on a scratch collection: None when all works."""
    import pickle

    from bson.binary import Binary
    from pymongo import ASCENDING
    from pymongo.errors import DuplicateKeyError, PyMongoError

    from newscrawl.database import one_line

    now = time.time()
    state = pickle.dumps({"probe": "é"}, pickle.HIGHEST_PROTOCOL)
    try:
        probe.drop()
        probe.create_index("next_run_time", sparse=True)
        probe.insert_many([
            {"_id": "due", "next_run_time": now - 10, "job_state": Binary(state)},
            {"_id": "paused", "next_run_time": None, "job_state": Binary(state)},
            {"_id": "later", "next_run_time": now + 10, "job_state": Binary(state)},
        ])
        due = [d["_id"] for d in probe.find({"next_run_time": {"$lte": now}}, ["_id", "job_state"],
                                            sort=[("next_run_time", ASCENDING)])]
        if due != ["due"]:
            return f"a due-jobs query ($lte on a float, nulls excluded) found {due}"
        first = probe.find_one({"next_run_time": {"$ne": None}}, projection=["next_run_time"],
                               sort=[("next_run_time", ASCENDING)])
        if not first or first["_id"] != "due":
            return "the next-run-time query ($ne null, sorted) found the wrong job"
        stored = probe.find_one("due", ["job_state"])
        if not stored or bytes(stored["job_state"]) != state:
            return "a binary job state did not come back unchanged"
        try:
            probe.insert_one({"_id": "due"})
            return "a second insert of the same _id was accepted"
        except DuplicateKeyError:
            pass
        if probe.update_one({"_id": "later"}, {"$set": {"next_run_time": now}}).matched_count != 1:
            return "update_one did not report its match"
        if probe.delete_one({"_id": "paused"}).deleted_count != 1:
            return "delete_one did not report its deletion"
        return None
    except PyMongoError as exc:
        return one_line(exc)
    finally:
        with contextlib.suppress(PyMongoError):
            probe.drop()


def connect(uri: str | None) -> tuple[MongoClient[Document] | None, str | None]:
    """A client of the database, checked with a ping; or None and why not."""
    from newscrawl.database import DatabaseError
    from newscrawl.database import connect as connect_database

    if uri is None:
        return None, "no database configured (MONGO_URI unset and no local database running)"
    try:
        return connect_database("newscrawl-schedule", uri=uri, timeout_ms=DB_TIMEOUT_MS,
                                socket_timeout_ms=30_000), None
    except DatabaseError as exc:
        return None, str(exc)


def choose_job_store(kind: str, uri: str | None, client: MongoClient[Document] | None,
                     database: str, problem: str | None) -> tuple[Any, str]:
    """The job store and its name; warns once when it falls back to memory.

    `client` is a reachable client (else `problem` says why there is none)."""
    from apscheduler.jobstores.memory import MemoryJobStore

    if kind == "memory":
        return MemoryJobStore(), "memory (job_store = \"memory\")"
    if client is not None and uri is not None:
        problem = job_store_problem(client[database][f"{PROBE_COLLECTION}_{os.getpid()}"])
        if problem is None:
            from apscheduler.jobstores.mongodb import MongoDBJobStore

            from pipelines.storage import mongo_client

            # A client of its own: the store closes it when the scheduler shuts down.
            store_client = mongo_client(uri, appname="newscrawl-schedule-jobs", timeout_ms=DB_TIMEOUT_MS,
                                        socket_timeout_ms=30_000)
            return (MongoDBJobStore(database=database, collection=JOBS_COLLECTION,
                                    client=store_client), f"{database}.{JOBS_COLLECTION}")
    if kind == "mongodb":
        raise ScheduleDatabaseError(f"job_store = \"mongodb\": the database cannot keep the "
                                    f"timetable: {problem}")
    logger.warning("schedule: the timetable is kept in memory, not in %s.%s: %s; firings missed "
                   "while the scheduler is down will not be run", database, JOBS_COLLECTION, problem)
    return MemoryJobStore(), "memory"


# --- running the jobs ----------------------------------------------------------------------------

@dataclass
class RunningCrawl:
    job: str
    started_at: datetime
    process: subprocess.Popen[bytes] | None = None  # local
    scrapyd_job: str | None = None  # scrapyd

    def describe(self) -> str:
        where = f"pid {self.process.pid}" if self.process else f"scrapyd job {self.scrapyd_job}"
        return f"{where}, started {self.started_at.astimezone(UTC):%H:%M:%S}Z"


class Runner:
    """Starts the crawls of fired jobs, follows them, and counts what was skipped."""

    def __init__(self, config: ScheduleConfig, *, skips: Collection[Document] | None,
                 env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.specs = {job.name: job for job in config.jobs}
        self.skips = skips
        self.env = dict(env) if env is not None else crawl_env()
        self.running: dict[str, RunningCrawl] = {}
        self.runs: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.stats_dir = Path(tempfile.mkdtemp(prefix="newscrawl-schedule-"))

    # -- a firing
    def run(self, spec: JobSpec) -> None:
        """Called by APScheduler in a worker thread; returns when the crawl has ended."""
        if self.stopping.is_set():
            return
        try:
            if spec.target == "scrapyd":
                self.run_scrapyd(spec)
            else:
                self.run_local(spec)
        except Exception as exc:  # one line, and the next firing tries again
            logger.error("schedule: %s: %s: %s", spec.name, type(exc).__name__, exc)
        finally:
            with self.lock:
                self.running.pop(spec.name, None)
                self.idle.notify_all()

    def begin(self, spec: JobSpec, crawl: RunningCrawl) -> bool:
        with self.lock:
            if self.stopping.is_set():
                return False
            self.running[spec.name] = crawl
            self.runs[spec.name] += 1
            return True

    def run_local(self, spec: JobSpec) -> None:
        started = datetime.now(UTC)
        log_file = self.config.log_dir / f"{spec.name}.log"
        stats_file = self.stats_dir / f"{spec.name}-{started:%Y%m%dT%H%M%S%f}.json"
        crawl = RunningCrawl(spec.name, started)
        with self.lock:  # started under the lock: a stop cannot miss it
            if self.stopping.is_set():
                return
            crawl.process = start_crawl(spec.spider, spec.args,
                                        {**spec.settings, "NEWSCRAWL_STATS_FILE": str(stats_file)},
                                        log_file=log_file, env=self.env)
            self.running[spec.name] = crawl
            self.runs[spec.name] += 1
        logger.info("schedule: %s: started %s (pid %d, log %s)", spec.name, spec.command_line(),
                    crawl.process.pid, log_file)
        code = crawl.process.wait()
        stats = read_stats(stats_file)
        stats_file.unlink(missing_ok=True)
        took = format_seconds(round((datetime.now(UTC) - started).total_seconds()))
        outcome = stats.get("finish_reason") or "no stats"
        line = f"{spec.name}: {spec.spider} ended ({outcome}, exit {code}, {took})"
        if stats:
            line += ": " + stats_line(stats)
        if code == 0 and outcome in ("finished", "limit"):
            logger.info("schedule: %s", line)
        else:
            logger.warning("schedule: %s; see %s", line, log_file)

    def run_scrapyd(self, spec: JobSpec) -> None:
        from newscrawl.local.scrapyd_server import ScrapydClient, ScrapydError, redact_url

        client = ScrapydClient(spec.scrapyd_url, spec.scrapyd_project)
        settings = {name: self.env[name] for name in self.config.pass_env if self.env.get(name)}
        settings.update(spec.settings)
        crawl = RunningCrawl(spec.name, datetime.now(UTC))
        if not self.begin(spec, crawl):
            return
        crawl.scrapyd_job = client.schedule(spec.spider, spec.args, settings)
        where = f"scrapyd {redact_url(spec.scrapyd_url)} project {spec.scrapyd_project}"
        logger.info("schedule: %s: scheduled %s on %s (job %s)", spec.name, spec.command_line(),
                    where, crawl.scrapyd_job)
        state = "pending"
        while not self.stopping.wait(SCRAPYD_POLL):
            try:
                found = client.job(crawl.scrapyd_job)
            except ScrapydError as exc:
                logger.warning("schedule: %s: %s (asking again)", spec.name, exc)
                continue
            if found is None:
                logger.warning("schedule: %s: %s no longer lists job %s", spec.name, where,
                               crawl.scrapyd_job)
                return
            state, entry = found
            if state == "finished":
                logger.info("schedule: %s: scrapyd job %s ended%s (log %s)", spec.name,
                            crawl.scrapyd_job, self.recorded_end(crawl.scrapyd_job),
                            entry.get("log_url"))
                return
        logger.info("schedule: %s: scrapyd job %s left %s on scrapyd", spec.name, crawl.scrapyd_job,
                    state)

    def recorded_end(self, scrapyd_job: str) -> str:
        """`: <outcome>, <counts>` from the crawl's run record (scrapyd gives the spider its job
        id as the argument `_job`), when it is in this database."""
        if self.skips is None:
            return ""
        from newscrawl.components.runs import DEFAULT_RUNS_COLLECTION
        from newscrawl.database import one_line

        name = self.env.get("MONGO_RUNS_COLLECTION") or DEFAULT_RUNS_COLLECTION
        try:
            run = self.skips.database[name].find_one({"arguments._job": scrapyd_job})
        except Exception as exc:
            return f" (its run record: {one_line(exc)})"
        if not run or run.get("status") == "running":
            return " (no run record of its end in this database)"
        counts = run.get("counts") or {}
        return (f": {run.get('outcome')}, {counts.get('pages', 0)} pages, "
                f"{counts.get('stored', 0)} stored, {counts.get('updated', 0)} updated, "
                f"{counts.get('skipped_stored', 0)} skipped as stored")

    # -- firings that did not run
    def skip(self, job_id: str, scheduled: Sequence[datetime], reason: str, detail: str) -> None:
        spec = self.specs.get(job_id)
        now = datetime.now(UTC)
        with self.lock:
            self.skipped[job_id] += len(scheduled)
            total = self.skipped[job_id]
        for when in scheduled:
            logger.warning("schedule: %s: firing of %s skipped: %s (%d skipped so far)", job_id,
                           when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ"), detail, total)
        if self.skips is None or not scheduled:
            return
        documents = [skip_document(job_id, spec, when, now, reason, detail) for when in scheduled]
        try:
            for document in documents:
                self.skips.replace_one({"_id": document["_id"]}, document, upsert=True)
        except Exception as exc:
            from newscrawl.database import one_line

            logger.warning("schedule: %s: skipped firing not recorded in %s: %s", job_id,
                           SKIPS_COLLECTION, one_line(exc))

    def max_instances(self, event: Any) -> None:
        with self.lock:
            crawl = self.running.get(event.job_id)
        detail = ("its previous run is still going" +
                  (f" ({crawl.describe()})" if crawl else ""))
        self.skip(event.job_id, list(event.scheduled_run_times), "running", detail)

    def missed(self, event: Any) -> None:
        spec = self.specs.get(event.job_id)
        grace = format_seconds(spec.misfire_grace_time) if spec else "?"
        late = datetime.now(UTC) - event.scheduled_run_time
        self.skip(event.job_id, [event.scheduled_run_time], "missed",
                  f"{format_seconds(round(late.total_seconds()))} late, more than "
                  f"misfire_grace_time {grace}")

    def failed(self, event: Any) -> None:
        logger.error("schedule: %s: %s", event.job_id, event.exception)

    # -- stopping
    def stop(self, timeout: float, *, force: Callable[[], bool] = lambda: False) -> None:
        """No new crawls; SIGTERM to the running local ones, SIGKILL after `timeout`."""
        self.stopping.set()
        with self.lock:
            local = [c for c in self.running.values() if c.process is not None]
        for crawl in local:
            assert crawl.process is not None
            logger.info("schedule: %s: stopping its crawl (pid %d)", crawl.job, crawl.process.pid)
            terminate(crawl.process)
        deadline = time.monotonic() + timeout
        for crawl in local:
            assert crawl.process is not None
            while crawl.process.poll() is None:
                if force() or time.monotonic() > deadline:
                    logger.warning("schedule: %s: killing its crawl (pid %d)", crawl.job,
                                   crawl.process.pid)
                    terminate(crawl.process, signal.SIGKILL)
                    crawl.process.wait()
                    break
                time.sleep(0.1)
        with self.lock:
            self.idle.wait_for(lambda: not self.running, timeout=SCRAPYD_POLL + 5)

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            for leftover in self.stats_dir.iterdir():
                leftover.unlink()
            self.stats_dir.rmdir()

    def summary(self) -> str:
        runs = ", ".join(f"{name} {self.runs[name]}" for name in self.specs if self.runs[name])
        skipped = ", ".join(f"{name} {self.skipped[name]}" for name in self.specs
                            if self.skipped[name])
        return (f"{sum(self.runs.values())} runs started ({runs or 'none'}), "
                f"{sum(self.skipped.values())} firings skipped ({skipped or 'none'})")


def skip_document(job_id: str, spec: JobSpec | None, when: datetime, now: datetime, reason: str,
                  detail: str) -> Document:
    """One skipped firing: `_id` is the job and its firing time, so it is recorded once."""
    from pipelines.records import bson_time

    scheduled = when.astimezone(UTC)
    return {
        "_id": f"{job_id}-{scheduled:%Y%m%dT%H%M%S.%f}"[:-3] + "Z",
        "job": job_id,
        "spider": spec.spider if spec else None,
        "target": spec.target if spec else None,
        "scheduled_at": bson_time(scheduled),
        "skipped_at": bson_time(now),
        "reason": reason,
        "detail": detail,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


_RUNNER: Runner | None = None


def fire(spec: Mapping[str, Any]) -> None:
    """What every scheduled job calls (by name: the job store keeps `newscrawl.ops.schedule:fire`)."""
    runner = _RUNNER
    if runner is None:
        raise RuntimeError("no scheduler is running in this process")
    runner.run(JobSpec.from_dict(spec))


# --- the scheduler -------------------------------------------------------------------------------

def missed_firings(job: Any, now: datetime, limit: int = 1000) -> list[datetime]:
    """The firings of a stored job due by `now` (its next run time, and those after it)."""
    times: list[datetime] = []
    when = job.next_run_time
    while when is not None and when <= now and len(times) < limit:
        times.append(when)
        when = job.trigger.get_next_fire_time(when, now)
    return times


def sync_jobs(scheduler: Any, config: ScheduleConfig, runner: Runner, now: datetime) -> None:
    """Make the stored timetable match the file: a job defined as before keeps its next run
    time (so firings missed while the scheduler was down are seen); the others start anew."""
    wanted = {job.name: job for job in config.jobs}
    for stored in scheduler.get_jobs():
        if stored.id not in wanted:
            logger.info("schedule: %s: no longer in %s, removed", stored.id, config.source)
            scheduler.remove_job(stored.id)
    for spec in config.jobs:
        stored = scheduler.get_job(spec.name)
        if stored is not None and stored.kwargs.get("spec") == spec.to_dict() \
                and stored.func_ref == FIRE_REF:
            missed = missed_firings(stored, now)
            if missed:
                last = missed[-1]
                coalesced = missed[:-1]
                within = (now - last).total_seconds() <= spec.misfire_grace_time
                logger.info("schedule: %s: %d firing%s missed while the scheduler was down "
                            "(%s .. %s): %s", spec.name, len(missed), "s" if len(missed) > 1 else "",
                            f"{missed[0].astimezone(UTC):%Y-%m-%d %H:%M:%S}Z",
                            f"{last.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z",
                            "one run now" if within else "too late to run (misfire_grace_time)")
                if coalesced:
                    runner.skip(spec.name, coalesced, "coalesced",
                                "missed while the scheduler was down; one run for all of them")
            continue
        if stored is not None:
            logger.info("schedule: %s: definition changed, its timetable starts anew", spec.name)
        scheduler.add_job(FIRE_REF, spec.trigger(), id=spec.name, name=spec.name,
                          kwargs={"spec": spec.to_dict()}, replace_existing=True,
                          coalesce=True, max_instances=1,
                          misfire_grace_time=int(max(spec.misfire_grace_time, 1)))


def database_settings(database: str | None) -> tuple[str | None, str]:
    from newscrawl.database import configured_uri, database_name

    return configured_uri(), database_name(database)


def describe_jobs(config: ScheduleConfig, now: datetime | None = None) -> list[str]:
    """One line per job: name, target, what, when, next firing (for --check and the start)."""
    now = now or datetime.now(UTC)
    lines = []
    for job in config.jobs:
        next_time = job.trigger(now).get_next_fire_time(None, now.astimezone(ZoneInfo(job.timezone)))
        where = "local" if job.target == "local" else f"scrapyd {job.scrapyd_project}"
        upcoming = (f"next {next_time.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z" if next_time
                    else "never fires")
        lines.append(f"{job.name}: {job.command_line()} [{where}], {job.when()}, {upcoming}")
    return lines


def serve(config: ScheduleConfig, *, database: str | None = None,
          stop: threading.Event | None = None) -> int:
    """Run the timetable until SIGTERM/SIGINT (or `stop`); 0 once everything has stopped."""
    global _RUNNER

    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from pymongo.errors import PyMongoError

    stop = stop or threading.Event()
    forced = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            forced.set()  # a second signal: kill the crawls now
        stop.set()

    uri, name = database_settings(database)
    client, problem = connect(uri)
    scheduler: Any = None
    runner: Runner | None = None
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        store, store_name = choose_job_store(config.job_store, uri, client, name, problem)
        skips = client[name][SKIPS_COLLECTION] if client is not None else None
        if skips is not None:
            with contextlib.suppress(PyMongoError):
                skips.create_index([("job", 1), ("scheduled_at", -1)], name="job_scheduled_at")
        runner = Runner(config, skips=skips,
                        env=crawl_env({"MONGO_DATABASE": name} if database else None))
        _RUNNER = runner
        scheduler = BackgroundScheduler(
            jobstores={"default": store},
            executors={"default": ThreadPoolExecutor(max_workers=max(len(config.jobs), 1))},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC)
        scheduler.add_listener(runner.max_instances, EVENT_JOB_MAX_INSTANCES)
        scheduler.add_listener(runner.missed, EVENT_JOB_MISSED)
        scheduler.add_listener(runner.failed, EVENT_JOB_ERROR)
        scheduler.start(paused=True)
        sync_jobs(scheduler, config, runner, datetime.now(UTC))
        logger.info("schedule: %d job%s from %s, timetable in %s, crawls logged in %s",
                    len(config.jobs), "s" if len(config.jobs) > 1 else "", config.source,
                    store_name, config.log_dir)
        for job in scheduler.get_jobs():
            when = job.next_run_time
            logger.info("schedule: %s: next firing %s", job.id,
                        f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z" if when else "never")
        scheduler.resume()
        while not stop.wait(0.5):
            pass
        logger.info("schedule: stopping")
        scheduler.shutdown(wait=False)
        runner.stop(config.stop_timeout, force=forced.is_set)
        logger.info("schedule: stopped: %s", runner.summary())
        return 0
    finally:
        _RUNNER = None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)
        if runner is not None:
            if not runner.stopping.is_set():
                runner.stop(config.stop_timeout, force=forced.is_set)
            runner.cleanup()
        if client is not None:
            client.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def setup_logging() -> None:
    """Timestamped lines on stderr; APScheduler's own lines only for errors (ours say more)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if not os.environ.get("NEWSCRAWL_DEBUG"):
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
    logging.getLogger("pymongo").setLevel(logging.WARNING)


def check_and_describe(config: ScheduleConfig) -> list[str]:
    """Validate what needs the project (spider names) and describe the jobs."""
    check_spiders(config, project_spiders())
    return describe_jobs(config)
