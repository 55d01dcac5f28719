"""`newscrawl schedule`: the configuration (pure), its errors (the real command), and the
real scheduler as a process against the mirror and the real database: runs, skipped
firings, firings missed while it was down, SIGTERM."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pymongo.database import Database

from fixtures.server import Fault
from newscrawl.ops.schedule.config import (
    DEFAULT_PASS_ENV,
    ConfigError,
    JobSpec,
    check_spiders,
    parse_config,
    parse_duration,
)
from newscrawl.ops.schedule.runner import describe_jobs, missed_firings, skip_document
from pipelines.config import mongo_client as open_client
from tests.helpers import PROJECT_ROOT, newscrawl, wait_until

UNREACHABLE = "mongodb://127.0.0.1:9/"
FAST_CRAWL = 'settings = {AUTOTHROTTLE_ENABLED = "False", MONGO_FLUSH_INTERVAL = "0.5"}'


# --- the configuration (pure) --------------------------------------------------------------------

@pytest.mark.parametrize(("value", "seconds"), [
    (45, 45.0), (2.5, 2.5), ("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0),
    ("2d", 172800.0), ("1h 5s", 3605.0), ("500ms", 0.5),
])
def test_durations(value: Any, seconds: float) -> None:
    assert parse_duration(value, "interval") == seconds


@pytest.mark.parametrize("value", ["10 minutes", "", "m", "-5", 0, True, [1], "1x"])
def test_bad_durations_say_what_they_expected(value: Any) -> None:
    with pytest.raises(ConfigError, match="interval"):
        parse_duration(value, "interval")


def test_a_full_configuration() -> None:
    config = parse_config({
        "scheduler": {"timezone": "UTC", "misfire_grace_time": "10m", "job_store": "memory",
                      "log_dir": "logs", "stop_timeout": 5, "scrapyd_url": "http://s:6800/",
                      "pass_env": ["MONGO_DATABASE"]},
        "job": [
            {"name": "media", "spider": "finews", "cron": "*/15 * * * *",
             "args": {"categories": ["jingzhouribao", "emnews"], "limit": 5, "refresh": True}},
            {"name": "far", "spider": "finews", "interval": "1h", "target": "scrapyd",
             "timezone": "Asia/Shanghai", "scrapyd_project": "other",
             "settings": {"LOG_LEVEL": "INFO"}},
        ],
    }, source="s.toml", base_dir=Path("/etc/newscrawl"))
    media, far = config.jobs
    assert media == JobSpec(name="media", spider="finews",
                            args={"categories": "jingzhouribao,emnews", "limit": "5",
                                  "refresh": "1"},
                            cron="*/15 * * * *", timezone="UTC", misfire_grace_time=600.0,
                            scrapyd_url="http://s:6800/")
    assert (far.interval, far.target, far.scrapyd_project, far.timezone) == (
        3600.0, "scrapyd", "other", "Asia/Shanghai")
    assert far.settings == {"LOG_LEVEL": "INFO"}
    assert config.log_dir == Path("/etc/newscrawl/logs")
    assert (config.job_store, config.stop_timeout, config.pass_env) == ("memory", 5.0, ("MONGO_DATABASE",))
    assert JobSpec.from_dict(media.to_dict()) == media
    defaults = parse_config({"job": [{"name": "a", "spider": "feed", "interval": 60}]})
    assert defaults.job_store == "auto" and defaults.pass_env == DEFAULT_PASS_ENV
    assert defaults.jobs[0].timezone == "Asia/Shanghai" and defaults.jobs[0].target == "local"


@pytest.mark.parametrize(("data", "expected"), [
    ({}, "no jobs"),
    ({"job": [{"name": "a", "spider": "finews"}]}, "either cron"),
    ({"job": [{"name": "a", "spider": "finews", "cron": "* * * * *", "interval": 5}]}, "either cron"),
    ({"job": [{"name": "a", "spider": "finews", "cron": "* * *"}]}, "Wrong number of fields"),
    ({"job": [{"name": "a", "spider": "finews", "cron": "61 * * * *"}]}, "cron '61 * * * *'"),
    ({"job": [{"name": "a", "spider": "finews", "interval": "soon"}]}, "job 'a': interval"),
    ({"job": [{"name": "a", "spider": "finews", "interval": 5, "targte": "x"}]}, "unknown key targte"),
    ({"job": [{"name": "a", "spider": "finews", "interval": 5, "target": "cloud"}]}, "target"),
    ({"job": [{"name": "a b", "spider": "finews", "interval": 5}]}, "name: letters"),
    ({"job": [{"spider": "finews", "interval": 5}]}, "job 1: name"),
    ({"job": [{"name": "a", "interval": 5}]}, "job 'a': spider"),
    ({"job": [{"name": "a", "spider": "finews", "interval": 5, "args": {"x": {"y": 1}}}]}, "args.x"),
    ({"job": [{"name": "a", "spider": "finews", "interval": 5, "args": "limit=5"}]}, "args"),
    ({"job": [{"name": "a", "spider": "f", "interval": 5}, {"name": "a", "spider": "f", "interval": 6}]},
     "unique: a"),
    ({"job": [{"name": "a", "spider": "f", "interval": 5, "timezone": "Mars/Base"}]}, "Mars/Base"),
    ({"job": [{"name": "a", "spider": "f", "interval": 5, "target": "scrapyd",
               "scrapyd_url": "localhost:6800"}]}, "scrapyd_url"),
    ({"scheduler": {"job_store": "redis"}, "job": [{"name": "a", "spider": "f", "interval": 5}]},
     "job_store"),
    ({"scheduler": {"jobstore": "memory"}, "job": [{"name": "a", "spider": "f", "interval": 5}]},
     "unknown key jobstore"),
    ({"jobs": [{"name": "a", "spider": "f", "interval": 5}]}, "unknown key jobs"),
])
def test_configuration_errors_name_the_job_and_the_key(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data, source="s.toml")
    assert expected in str(error.value)


def test_local_jobs_must_name_a_spider_of_the_project() -> None:
    config = parse_config({"job": [{"name": "a", "spider": "finnews", "interval": 5},
                                   {"name": "b", "spider": "elsewhere", "interval": 5,
                                    "target": "scrapyd"}]}, source="s.toml")
    with pytest.raises(ConfigError, match=r"no spider 'finnews'.*feed, finews, share"):
        check_spiders(config, ["feed", "finews", "share"])
    check_spiders(parse_config({"job": [{"name": "b", "spider": "elsewhere", "interval": 5,
                                         "target": "scrapyd"}]}), ["finews"])


def test_describe_gives_each_job_its_next_firing() -> None:
    config = parse_config({"scheduler": {"timezone": "Asia/Shanghai"}, "job": [
        {"name": "media", "spider": "finews", "cron": "30 8 * * *", "args": {"limit": 5}},
        {"name": "poll", "spider": "feed", "interval": "10m", "target": "scrapyd"},
    ]})
    now = datetime(2021, 12, 31, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai
    assert describe_jobs(config, now) == [
        "media: finews -a limit=5 [local], cron '30 8 * * *' (Asia/Shanghai), next 2021-12-31 00:30:00Z",
        "poll: feed [scrapyd newscrawl], every 10m, next 2021-12-31 00:10:00Z",
    ]


def test_missed_firings_are_every_firing_due_since_the_stored_one() -> None:
    spec = JobSpec(name="a", spider="finews", interval=30.0)
    now = datetime(2021, 12, 31, 0, 0, 0, tzinfo=UTC)
    job = SimpleNamespace(next_run_time=now - timedelta(seconds=95), trigger=spec.trigger())
    assert [now - t for t in missed_firings(job, now)] == [
        timedelta(seconds=s) for s in (95, 65, 35, 5)]
    job.next_run_time = now + timedelta(seconds=1)
    assert missed_firings(job, now) == []


def test_a_skipped_firing_is_one_document_per_job_and_time() -> None:
    spec = JobSpec(name="media", spider="finews", interval=5.0)
    when = datetime(2021, 12, 31, 8, 30, 0, 123456, tzinfo=UTC)
    doc = skip_document("media", spec, when, when + timedelta(seconds=1), "running", "still going")
    assert doc["_id"] == "media-20211231T083000.123Z"
    assert (doc["job"], doc["spider"], doc["target"], doc["reason"]) == (
        "media", "finews", "local", "running")
    assert doc["scheduled_at"] == when.replace(microsecond=123000)


# --- the command's errors ------------------------------------------------------------------------

def one_error_line(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("newscrawl: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


@pytest.mark.parametrize(("toml", "expected"), [
    ("[[job]\nname = ", ["not valid TOML"]),
    ("[[job]]\nname = 'a'\nspider = 'finews'\ncron = '*/15 * * *'\n", ["job 'a'", "cron"]),
    ("[[job]]\nname = 'a'\nspider = 'finnews'\ninterval = '5m'\n", ["no spider 'finnews'"]),
    ("[[job]]\nname = 'a'\nspider = 'finews'\ninterval = '5 minutes'\n", ["interval", "5 minutes"]),
    ("[scheduler]\ntimezone = 'Nowhere'\n[[job]]\nname = 'a'\nspider = 'feed'\ninterval = 5\n",
     ["timezone", "Nowhere"]),
])
@pytest.mark.integration  # the command in its own process
def test_a_bad_schedule_file_is_one_error_line(tmp_path: Path, toml: str, expected: list[str]) -> None:
    config = tmp_path / "schedule.toml"
    config.write_text(toml, encoding="utf-8")
    proc = newscrawl("schedule", "--config", str(config), env={"MONGO_URI": UNREACHABLE})
    line = one_error_line(proc, str(config), *expected)
    assert proc.returncode == 2, line


@pytest.mark.integration  # the command in its own process
def test_a_missing_schedule_file_is_one_error_line(tmp_path: Path) -> None:
    proc = newscrawl("schedule", "--config", str(tmp_path / "nope.toml"))
    one_error_line(proc, "nope.toml", "No such file")
    assert proc.returncode == 2


@pytest.mark.integration  # the command in its own process
def test_check_prints_the_jobs_of_the_example_file() -> None:
    proc = newscrawl("schedule", "--check", env={"MONGO_URI": UNREACHABLE})
    assert proc.returncode == 0, proc.stderr
    names = [line.split(":")[0] for line in proc.stdout.splitlines()]
    assert names == ["media", "feed", "full", "digests"]
    assert "finews -a categories=jingzhouribao,emnews [local], cron '*/15 * * * *'" in proc.stdout
    help_text = newscrawl("schedule", "--help").stdout
    for text in ("--config", "--check", "schedule_skips", "schedule_jobs", "interval", "cron",
                 "scrapyd", "misfire_grace_time"):
        assert text in help_text


# --- the real scheduler --------------------------------------------------------------------------

@dataclass
class Scheduler:
    """`newscrawl schedule` in its own process; its log in a file."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@pytest.fixture
def start_scheduler(tmp_path: Path, mongo_uri: str, mirror_server: Any,
                    mongo_db: Database[dict[str, Any]]) -> Iterator[Callable[..., Scheduler]]:
    started: list[Scheduler] = []

    def start(toml: str, *, env: dict[str, str] | None = None) -> Scheduler:
        config = tmp_path / f"schedule-{len(started)}.toml"
        config.write_text(toml, encoding="utf-8")
        log = tmp_path / f"scheduler-{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "newscrawl.ops.cli", "schedule", "--config", str(config)],
                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env={
                    **os.environ,
                    "MONGO_URI": mongo_uri, "MONGO_DATABASE": mongo_db.name,
                    "NEWSCRAWL_HOST_MAP": json.dumps(mirror_server.host_map),
                    "NEWSCRAWL_SPOOL_DIR": str(tmp_path / "spool"),
                    **(env or {})})
        scheduler = Scheduler(process, log)
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        if scheduler.process.poll() is None:
            scheduler.process.kill()
            scheduler.process.wait()
    mirror_server.clear_faults()


def wait_for(what: str, condition: Callable[[], Any], timeout: float,
             scheduler: Scheduler | None = None) -> Any:
    """wait_until, giving up early when the scheduler has ended; failures show its output."""
    def ready() -> Any:
        value = condition()
        if not value and scheduler is not None and scheduler.process.poll() is not None:
            raise AssertionError(f"the scheduler ended while waiting for {what}")
        return value

    try:
        return wait_until(ready, timeout, what, interval=0.2)
    except AssertionError as failed:
        if scheduler is None:
            raise
        raise AssertionError(f"{failed}; scheduler output:\n{scheduler.output[-4000:]}") from None


def finished_runs(db: Database[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(db["crawl_runs"].find({"status": {"$ne": "running"}}).sort("started_at", 1))


def job_toml(*, log_dir: Path, interval: str, extra: str = "", name: str = "media",
             scheduler: str = "") -> str:
    return (f"[scheduler]\nlog_dir = '{log_dir}'\nstop_timeout = '30s'\n{scheduler}\n"
            f"[[job]]\nname = '{name}'\nspider = 'finews'\ninterval = {interval}\n{FAST_CRAWL}\n{extra}")


@pytest.mark.integration
def test_a_job_runs_again_and_its_second_run_skips_every_stored_article(
        start_scheduler: Callable[..., Scheduler], mongo_db: Database[dict[str, Any]],
        mirror: Any, tmp_path: Path) -> None:
    # the job's own threshold (schedule.toml, over the defaults): a run that stores nothing warns
    scheduler = start_scheduler(job_toml(log_dir=tmp_path / "logs", interval="3",
                                         extra="monitors = {stored = {warn = 1}}"))
    runs = wait_for("two finished runs", lambda: len(finished_runs(mongo_db)) >= 2 and
                    finished_runs(mongo_db), 90, scheduler)
    first, second = runs[:2]
    verdict = wait_for("the second run's verdict", lambda: (mongo_db["crawl_runs"].find_one(
        {"_id": second["_id"]}) or {}).get("health"), 30)
    assert scheduler.stop() == 0, scheduler.output[-3000:]
    assert (first["status"], second["status"]) == ("finished", "finished")
    assert first["counts"]["stored"] == len(mirror.truth("articles"))
    assert second["started_at"] >= first["finished_at"]  # never two at once
    assert second["counts"]["skipped_stored"] > 0
    assert second["counts"]["stored"] == 0
    assert second["counts"]["article_pages"] == 0
    # The runs are the job's (NEWSCRAWL_JOB), judged with its thresholds.
    assert (first["job"], second["job"]) == ("media", "media")
    assert first["health"]["status"] == "ok"
    assert [(f["monitor"], f["level"]) for f in verdict["failed"]] == [("stored", "warn")]
    assert mongo_db["articles"].count_documents({}) == len(mirror.truth("articles"))
    # The timetable lives in the database (FerretDB and MongoDB can both hold it).
    assert mongo_db["schedule_jobs"].count_documents({"_id": "media"}) == 1
    output = scheduler.output
    assert "timetable in " + mongo_db.name + ".schedule_jobs" in output
    assert "media: started finews" in output and "Traceback" not in output
    assert "schedule: stopped:" in output
    assert (tmp_path / "logs" / "media.log").exists()


@pytest.mark.integration
def test_a_firing_while_the_previous_run_goes_on_is_skipped_and_recorded(
        start_scheduler: Callable[..., Scheduler], mongo_db: Database[dict[str, Any]],
        mirror_server: Any, tmp_path: Path) -> None:
    # The home page answers after 5 s: a crawl outlasts the 1 s interval.
    mirror_server.add_fault(Fault(path=r"^/$", host="finews.withounder.com", delay=5, times=None))
    scheduler = start_scheduler(job_toml(log_dir=tmp_path / "logs", interval="1"))
    skips = wait_for("a skipped firing", lambda: list(mongo_db["schedule_skips"].find()), 60,
                     scheduler)
    # Stop while a crawl is going (waiting for the slow home page): it stops cleanly.
    wait_for("a crawl under way", lambda: mongo_db["crawl_runs"].find_one(
        {"status": "running", "started_at": {"$lt": datetime.now(UTC) - timedelta(seconds=1.5)}}),
        60, scheduler)
    assert scheduler.stop() == 0, scheduler.output[-3000:]
    mirror_server.clear_faults()

    skip = skips[0]
    assert (skip["job"], skip["spider"], skip["reason"]) == ("media", "finews", "running")
    assert skip["scheduled_at"] <= skip["skipped_at"]
    assert "previous run is still going" in skip["detail"]
    output = scheduler.output
    assert "media: firing of" in output and "skipped: its previous run is still going" in output
    assert "firings skipped (media " in output
    runs = list(mongo_db["crawl_runs"].find().sort("started_at", 1))
    assert runs, output
    for earlier, later in itertools.pairwise(runs):
        assert later["started_at"] >= earlier["finished_at"]  # never two at once
    # The crawl running at SIGTERM was stopped gracefully and recorded its end.
    last = runs[-1]
    assert (last["status"], last["outcome"]) == ("failed", "shutdown"), last
    assert "stopping its crawl" in output and "killing" not in output


@pytest.mark.integration
def test_firings_missed_while_the_scheduler_was_down_run_once(
        start_scheduler: Callable[..., Scheduler], mongo_db: Database[dict[str, Any]],
        mongo_uri: str, tmp_path: Path) -> None:
    from apscheduler.jobstores.mongodb import MongoDBJobStore

    toml = job_toml(log_dir=tmp_path / "logs", interval="'30s'",
                    scheduler="misfire_grace_time = '10m'")
    first = start_scheduler(toml)
    wait_for("the job stored", lambda: "media: next firing" in first.output, 60, first)
    assert first.stop() == 0, first.output
    assert mongo_db["crawl_runs"].count_documents({}) == 0

    # The scheduler "was down" for 95 s: its stored next firing is 95 s ago, and three more
    # firings have passed since (APScheduler's own store API moves it).
    client = open_client(mongo_uri, appname="newscrawl-test")
    store = MongoDBJobStore(database=mongo_db.name, collection="schedule_jobs", client=client)
    job = store.lookup_job("media")
    assert job is not None
    job.next_run_time = datetime.now(UTC) - timedelta(seconds=95)
    store.update_job(job)
    client.close()

    second = start_scheduler(toml)
    runs = wait_for("the catch-up run", lambda: finished_runs(mongo_db), 60, second)
    # Letting time pass is the check, not a wait for an event: no second catch-up run starts
    # within these 2 s (an absence cannot be polled for).
    time.sleep(2)
    assert second.stop() == 0, second.output
    assert len(runs) == 1 and mongo_db["crawl_runs"].count_documents({}) == 1
    assert runs[0]["status"] == "finished"
    assert "media: 4 firings missed while the scheduler was down" in second.output
    assert "one run now" in second.output
    coalesced = list(mongo_db["schedule_skips"].find({"reason": "coalesced"}))
    assert len(coalesced) == 3


@pytest.mark.integration
def test_a_changed_job_starts_its_timetable_anew(
        start_scheduler: Callable[..., Scheduler], mongo_db: Database[dict[str, Any]],
        tmp_path: Path) -> None:
    first = start_scheduler(job_toml(log_dir=tmp_path, interval="'1h'") +
                            "\n[[job]]\nname = 'gone'\nspider = 'feed'\ninterval = '1h'\n")
    wait_for("the jobs stored", lambda: "gone: next firing" in first.output, 60, first)
    assert first.stop() == 0
    assert mongo_db["schedule_jobs"].count_documents({}) == 2
    second = start_scheduler(job_toml(log_dir=tmp_path, interval="'2h'"))
    wait_for("the job stored", lambda: "media: next firing" in second.output, 60, second)
    assert second.stop() == 0
    assert "media: definition changed" in second.output
    assert "gone: no longer in" in second.output
    assert [d["_id"] for d in mongo_db["schedule_jobs"].find()] == ["media"]


@pytest.mark.integration
def test_without_the_database_the_timetable_is_in_memory_with_one_warning(
        start_scheduler: Callable[..., Scheduler], tmp_path: Path) -> None:
    scheduler = start_scheduler(job_toml(log_dir=tmp_path, interval="'1h'"),
                                env={"MONGO_URI": UNREACHABLE})
    wait_for("the job scheduled", lambda: "media: next firing" in scheduler.output, 60, scheduler)
    assert scheduler.stop() == 0
    warnings = [line for line in scheduler.output.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, scheduler.output
    assert "kept in memory" in warnings[0] and "cannot reach the database" in warnings[0]
    assert "Traceback" not in scheduler.output

    strict = start_scheduler(job_toml(log_dir=tmp_path, interval="'1h'",
                                      scheduler="job_store = 'mongodb'"),
                             env={"MONGO_URI": UNREACHABLE})
    assert strict.process.wait(60) == 1
    lines = strict.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("newscrawl: error: job_store = \"mongodb\"")


def test_a_job_names_its_runs_and_sets_its_monitor_thresholds() -> None:
    import json

    config = parse_config({"job": [{"name": "full", "spider": "finews", "interval": 60,
                                    "settings": {"LOG_LEVEL": "INFO"},
                                    "monitors": {"stored": {"warn": 1}, "errors": {"fail": False}}},
                                   {"name": "feed", "spider": "feed", "interval": 60}]})
    full, feed = config.jobs
    settings = full.crawl_settings()
    assert settings["NEWSCRAWL_JOB"] == "full" and settings["LOG_LEVEL"] == "INFO"
    assert json.loads(settings["NEWSCRAWL_JOB_MONITORS"]) == {"stored": {"warn": 1},
                                                              "errors": {"fail": False}}
    assert feed.crawl_settings() == {"NEWSCRAWL_JOB": "feed"}
    assert JobSpec.from_dict(full.to_dict()) == full
    with pytest.raises(ConfigError, match=r"job 'x': monitors: unknown monitor 'nope'"):
        parse_config({"job": [{"name": "x", "spider": "f", "interval": 5,
                               "monitors": {"nope": {"warn": 1}}}]})
