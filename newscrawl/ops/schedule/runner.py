"""`newscrawl schedule` at work: the APScheduler that fires the jobs and the Runner that
starts each crawl (here, or on scrapyd), never two of one job at once, and stops them.
"""


from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from newscrawl.ops.crawl import crawl_env, finish_or_kill, read_stats, signal_group, start_crawl

if TYPE_CHECKING:
    from pymongo.collection import Collection
from newscrawl.components.run_recorder import counts_from_stats
from newscrawl.ops.runs import counts_text, internal_errors_text
from newscrawl.ops.schedule import commands as schedule_commands
from newscrawl.ops.schedule.commands import COMMANDS_COLLECTION
from newscrawl.ops.schedule.config import (
    FIRE_REF,
    SCRAPYD_POLL,
    SKIPS_COLLECTION,
    Document,
    JobSpec,
    ScheduleConfig,
    check_spiders,
    format_seconds,
    project_spiders,
)
from newscrawl.ops.schedule.jobstore import choose_job_store, connect

logger = logging.getLogger("newscrawl.ops.schedule")


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
            crawl.process = start_crawl(spec.spider, spec.args, spec.crawl_settings(), log_file=log_file,
                                        stats_file=stats_file, env=self.env)
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
            line += ": " + counts_text(counts_from_stats(stats))
        if code == 0 and outcome in ("finished", "limit"):
            logger.info("schedule: %s", line)
        else:
            logger.warning("schedule: %s; see %s", line, log_file)

    def run_scrapyd(self, spec: JobSpec) -> None:
        from newscrawl.local.scrapyd_server import ScrapydClient, ScrapydError, redact_url

        client = ScrapydClient(spec.scrapyd_url, spec.scrapyd_project)
        settings = {name: self.env[name] for name in self.config.pass_env if self.env.get(name)}
        settings.update(spec.crawl_settings())
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
        from newscrawl.database import one_line
        from pipelines.config import StorageConfig

        name = StorageConfig.from_env(self.env).runs  # the crawls' environment
        try:
            run = self.skips.database[name].find_one({"arguments._job": scrapyd_job})
        except Exception as exc:
            return f" (its run record: {one_line(exc)})"
        if not run or run.get("status") == "running":
            return " (no run record of its end in this database)"
        counts = run.get("counts") or {}
        return (f": {run.get('outcome')}, {counts.get('pages', 0)} pages, "
                f"{counts.get('stored', 0)} stored, {counts.get('updated', 0)} updated, "
                f"{counts.get('skipped_stored', 0)} skipped as stored{internal_errors_text(counts)}")

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
        for crawl in local:  # all of them first: they stop side by side
            assert crawl.process is not None
            logger.info("schedule: %s: stopping its crawl (pid %d)", crawl.job, crawl.process.pid)
            signal_group(crawl.process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for crawl in local:
            assert crawl.process is not None
            finish_or_kill(crawl.process, deadline, force=force)
            if crawl.process.returncode == -signal.SIGKILL:
                logger.warning("schedule: %s: killed its crawl (pid %d)", crawl.job, crawl.process.pid)
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
    from newscrawl.database import storage_config

    config = storage_config(database=database, require_server=False)
    return config.uri or None, config.database


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
        commands = client[name][COMMANDS_COLLECTION] if client is not None else None
        if commands is not None:
            with contextlib.suppress(PyMongoError):
                schedule_commands.ensure_indexes(commands)
        scheduler.resume()
        while not stop.wait(schedule_commands.POLL_SECONDS):
            if commands is not None:  # the web console's actions (newscrawl.ops.schedule.commands)
                try:
                    schedule_commands.poll(commands, scheduler)
                except PyMongoError as exc:
                    from newscrawl.database import one_line

                    logger.warning("schedule: %s not read: %s", COMMANDS_COLLECTION, one_line(exc))
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
