"""The timetable of `newscrawl schedule`: schedule.toml parsed and checked (pure).

See newscrawl.ops.schedule for what the scheduler does with it.
"""


from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from newscrawl.local.server import local_dir

if TYPE_CHECKING:
    pass


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
FIRE_REF = "newscrawl.ops.schedule.runner:fire"  # what a stored job calls: a name, never a pickled function
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


# What the scheduler tells each crawl of a job (local and scrapyd alike): the job's name (its runs'
# `job`) and its monitor thresholds (over NEWSCRAWL_MONITORS).
JOB_SETTING = "NEWSCRAWL_JOB"
JOB_MONITORS_SETTING = "NEWSCRAWL_JOB_MONITORS"


class ConfigError(ValueError):
    """The schedule file is wrong: one line that says where and what."""


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
    monitors: dict[str, Any] = field(default_factory=dict)  # thresholds over NEWSCRAWL_MONITORS

    def crawl_settings(self) -> dict[str, str]:
        """The settings each crawl of the job gets (local or on scrapyd): the job's own, its name
        (its runs' `job`) and its monitor thresholds."""
        settings = {**self.settings, JOB_SETTING: self.name}
        if self.monitors:
            settings[JOB_MONITORS_SETTING] = json.dumps(self.monitors, sort_keys=True)
        return settings

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
    log_dir: Path = field(default_factory=lambda: local_dir() / "logs" / "schedule")
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    pass_env: tuple[str, ...] = DEFAULT_PASS_ENV
    source: str = DEFAULT_CONFIG


SCHEDULER_KEYS = {"timezone", "misfire_grace_time", "job_store", "log_dir", "stop_timeout",
                  "scrapyd_url", "scrapyd_project", "pass_env"}
JOB_KEYS = {"name", "spider", "args", "settings", "cron", "interval", "target", "timezone",
            "misfire_grace_time", "scrapyd_url", "scrapyd_project", "monitors"}



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
    monitors = table.get("monitors")
    if monitors is not None:
        from newscrawl.monitoring.monitors import ThresholdError, parse_thresholds

        try:
            parse_thresholds(monitors, f"{label}: monitors")
        except ThresholdError as exc:
            raise ConfigError(str(exc)) from None
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
        monitors=dict(monitors or {}),
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
        log_path = local_dir() / "logs" / "schedule"
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
