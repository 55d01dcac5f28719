"""Run records: the documents (pure), the crawl_runs collection on the real server,
the RunRecorder extension in real crawls of the mirror, and `newscrawl runs`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.database import Database
from scrapy import Spider
from scrapy.utils.test import get_crawler

from newscrawl.components.run_recorder import (
    COUNT_STATS,
    RunRecorder,
    arguments_from_argv,
    counts_from_stats,
    end_document,
    ensure_run_indexes,
    errors_from_stats,
    make_run_id,
    run_status,
    safe_key,
    save_run,
    spider_arguments,
    start_document,
)
from newscrawl.ops.query import render_table
from newscrawl.ops.runs import counts_text, find_runs, format_duration, run_outcome, run_row, runs_table
from tests.helpers import newscrawl

T0 = datetime(2021, 12, 31, 8, 30, 0, 123456, tzinfo=UTC)

STATS: dict[str, Any] = {
    "response_received_count": 71,
    "newscrawl/article_pages": 67,
    "newscrawl/listing_pages": 4,
    "item_scraped_count": 60,
    "newscrawl/articles/stored": 52,
    "newscrawl/articles/updated": 3,
    "newscrawl/articles/unchanged": 5,
    "newscrawl/articles/skipped_stored": 7,
    "newscrawl/articles/rejected": 1,
    "log_count/INFO": 10,
    "log_count/WARNING": 4,
    "log_count/ERROR": 2,
    "downloader/exception_type_count/twisted.internet.error.TimeoutError": 3,
    "spider_exceptions/ValueError": 1,
    "downloader/response_status_count/200": 70,
    "downloader/response_status_count/404": 2,
    "downloader/response_status_count/503": 5,
}


# --- pure ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "expected"), [
    ("since", "since"), ("a.b", "a_b"), ("$where", "where"), ("$$x.y", "x_y"), ("$", "_"),
    ("", "_"), ("分类", "分类"),
])
def test_safe_key(key: str, expected: str) -> None:
    assert safe_key(key) == expected


def test_arguments_from_a_scrapy_command_line() -> None:
    # `scrapy crawl` removes "crawl" from sys.argv before the spider runs.
    argv = ["/venv/lib/python3.11/site-packages/scrapy/__main__.py", "finews", "-s", "A=1",
            "-a", "categories=emnews", "-alimit=5", "-a", "since=2021-12-30", "-a", "limit=7",
            "-a", "novalue", "-a", "a.b=x=y"]
    assert arguments_from_argv(argv) == {"categories": "emnews", "limit": "7",
                                         "since": "2021-12-30", "a.b": "x=y"}
    assert arguments_from_argv(["/venv/bin/scrapy", "finews", "-a", "x=1"]) == {"x": "1"}
    assert arguments_from_argv(["prog", "crawl", "finews", "-a", "x=1"]) == {"x": "1"}
    # Not a Scrapy command line: nothing is guessed.
    assert arguments_from_argv(["-m", "pytest", "-a", "x=1"]) == {}
    assert arguments_from_argv([]) == {}


def test_spider_arguments_prefer_what_the_spider_kept_and_sanitise_keys() -> None:
    spider = Spider(name="probe")
    spider.arguments = {"since": "2021-12-30", "a.b": "1", "$c": "2"}  # type: ignore[attr-defined]
    assert spider_arguments(spider, argv=["/bin/scrapy", "probe", "-a", "x=9"]) == {
        "since": "2021-12-30", "a_b": "1", "c": "2"}
    plain = Spider(name="probe")
    assert spider_arguments(plain, argv=["/bin/scrapy", "probe", "-a", "$x.y=9"]) == {"x_y": "9"}


def test_run_id_names_spider_time_and_process() -> None:
    assert make_run_id("finews", T0, 4242) == "finews-20211231T083000.123Z-4242"


@pytest.mark.parametrize(("reason", "status"), [
    ("finished", "finished"), ("limit", "finished"), ("closespider_itemcount", "finished"),
    ("closespider_timeout", "finished"), ("shutdown", "failed"),
    ("closespider_errorcount", "failed"), ("cancelled", "failed"),
])
def test_status_from_the_finish_reason(reason: str, status: str) -> None:
    assert run_status(reason) == status


def test_a_run_with_internal_errors_says_so_in_its_status_and_outcome() -> None:
    start = start_document("r1", "finews", {}, T0, host="h", pid=1)
    bugs = {**STATS, "newscrawl/storage/internal_errors": 2}
    end = end_document(start, "limit", bugs, T0 + timedelta(seconds=5))
    assert (end["status"], end["outcome"], end["counts"]["internal_errors"]) == ("internal_error", "limit", 2)
    assert run_outcome(end) == run_row(end)[2] == "limit, 2 internal errors"
    # A run that failed stays `failed`; its outcome still names the internal errors.
    failed = end_document(start, "shutdown", bugs, T0 + timedelta(seconds=5))
    assert (failed["status"], run_outcome(failed)) == ("failed", "shutdown, 2 internal errors")
    assert run_status("finished", 0) == "finished"
    assert counts_text(end["counts"]).endswith("(7 skipped as stored), 2 internal errors")
    assert "internal" not in counts_text(counts_from_stats(STATS))


def test_counts_take_every_counter_and_default_to_zero() -> None:
    counts = counts_from_stats(STATS)
    assert set(counts) == set(COUNT_STATS)
    assert counts["pages"] == 71
    assert counts["article_pages"] == 67
    assert counts["listing_pages"] == 4
    assert (counts["stored"], counts["updated"], counts["unchanged"]) == (52, 3, 5)
    assert counts["skipped_stored"] == 7
    assert counts["rejected"] == 1
    assert counts["spooled"] == 0
    assert counts["internal_errors"] == 0
    assert counts_from_stats({}) == dict.fromkeys(COUNT_STATS, 0)


def test_errors_by_type_have_their_names_as_values() -> None:
    assert errors_from_stats(STATS) == [
        {"type": "download/twisted.internet.error.TimeoutError", "count": 3},
        {"type": "http/503", "count": 5},
        {"type": "log/ERROR", "count": 2},
        {"type": "spider/ValueError", "count": 1},
    ]
    assert errors_from_stats({"log_count/WARNING": 3, "downloader/response_status_count/404": 1}) == []


def test_the_end_document_completes_the_start_document() -> None:
    start = start_document("r1", "finews", {"limit": "5"}, T0, host="h", pid=7)
    assert start["status"] == "running"
    assert start["started_at"] == T0.replace(microsecond=123000)  # BSON keeps milliseconds
    assert start["finished_at"] is None and start["outcome"] is None
    end = end_document(start, "finished", STATS, T0 + timedelta(seconds=90))
    assert {k: end[k] for k in ("_id", "spider", "arguments", "host", "pid", "started_at")} == {
        k: start[k] for k in ("_id", "spider", "arguments", "host", "pid", "started_at")}
    assert (end["outcome"], end["status"]) == ("finished", "finished")
    assert end["finished_at"] == (T0 + timedelta(seconds=90)).replace(microsecond=123000)
    assert end["counts"]["stored"] == 52
    assert {"type": "http/503", "count": 5} in end["errors"]


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59.6, "1m00s"), (61, "1m01s"), (3725, "1h02m05s"), (-3, "0s"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_running_run_whose_process_is_gone_is_lost() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = {"status": "running", "host": "here", "pid": gone.pid}
    assert run_outcome(run, host="here") == "lost"
    assert run_outcome({**run, "pid": os.getpid()}, host="here") == "running"
    assert run_outcome({**run, "host": "elsewhere"}, host="here") == "running"
    assert run_outcome({"status": "finished", "outcome": "limit"}, host="here") == "limit"


def test_the_runs_table_is_aligned() -> None:
    done = end_document(start_document("r1", "finews", {}, T0, host="h", pid=1), "finished", STATS,
                        T0 + timedelta(seconds=75))
    running = start_document("r2", "share", {}, T0 + timedelta(hours=1), host="h", pid=os.getpid())
    assert run_row(done) == ["2021-12-31 08:30:00", "finews", "finished", "1m15s", "71", "52", "3",
                             "5", "7", "1", "2", "-"]
    row = run_row(running, now=T0 + timedelta(hours=1, seconds=5))
    assert row[3] == "5s+" and row[4:] == ["-"] * 8
    lines = render_table(*runs_table([running, done]))
    assert lines[0].split() == ["start", "(UTC)", "spider", "outcome", "duration", "pages", "stored",
                                "updated", "unchanged", "skipped", "rejected", "errors", "health"]
    # numbers right-aligned to the errors column; health, the last, left-aligned and not padded
    assert len({len(line.rsplit("  ", 1)[0]) for line in lines}) == 1


# --- the collection on the real server ---------------------------------------------------------

def test_runs_are_saved_whole_and_listed_newest_first(mongo_db: Database[dict[str, Any]]) -> None:
    runs = mongo_db["crawl_runs"]
    ensure_run_indexes(runs)
    assert "started_at" in runs.index_information()
    for hour, spider in enumerate(["finews", "share", "finews"]):
        start = start_document(f"run{hour}", spider, {"a_b": "1"}, T0 + timedelta(hours=hour),
                               host="h", pid=hour)
        save_run(runs, start)
        save_run(runs, end_document(start, "finished", STATS, T0 + timedelta(hours=hour, minutes=1)))
    assert runs.count_documents({}) == 3  # the end write replaced the start write
    assert [r["_id"] for r in find_runs(runs)] == ["run2", "run1", "run0"]
    assert [r["_id"] for r in find_runs(runs, last=1)] == ["run2"]
    assert [r["_id"] for r in find_runs(runs, spider="finews")] == ["run2", "run0"]
    stored = runs.find_one({"_id": "run0"})
    assert stored is not None
    assert stored["errors"] == errors_from_stats(STATS)
    assert stored["started_at"] == T0.replace(microsecond=123000)


def recorder_for(uri: str, database: str, **settings: Any) -> tuple[RunRecorder, Any]:
    crawler = get_crawler(Spider, {"MONGO_URI": uri, "MONGO_DATABASE": database, **settings})
    return RunRecorder.from_crawler(crawler), crawler


def test_the_recorder_writes_running_then_the_end(mongo_uri: str,
                                                  mongo_db: Database[dict[str, Any]]) -> None:
    recorder, crawler = recorder_for(mongo_uri, mongo_db.name)
    spider = Spider(name="probe")
    spider.arguments = {"categories": "emnews", "x.y": "1"}  # type: ignore[attr-defined]
    start = recorder.record_start(spider, now=T0)
    running = mongo_db["crawl_runs"].find_one({"_id": start["_id"]})
    assert running == start  # nulls and empty fields included
    assert running is not None
    assert (running["status"], running["spider"], running["pid"]) == ("running", "probe", os.getpid())
    assert running["arguments"] == {"categories": "emnews", "x_y": "1"}
    assert "started_at" in mongo_db["crawl_runs"].index_information()
    for key, value in STATS.items():
        crawler.stats.set_value(key, value)
    recorder.record_end("closespider_errorcount", now=T0 + timedelta(minutes=2))
    ended = mongo_db["crawl_runs"].find_one({"_id": start["_id"]})
    assert ended is not None
    assert (ended["status"], ended["outcome"]) == ("failed", "closespider_errorcount")
    assert ended["counts"] == counts_from_stats(STATS)
    assert ended["finished_at"] - ended["started_at"] == timedelta(minutes=2)


def test_the_recorder_only_warns_when_the_database_is_away(
        caplog: pytest.LogCaptureFixture) -> None:
    recorder, _ = recorder_for("mongodb://127.0.0.1:9/", "nowhere", MONGO_RETRY_TIMES=0)
    recorder.timeout_ms = 300
    start = recorder.record_start(Spider(name="probe"))
    end = recorder.record_end("finished")
    assert start["status"] == "running"
    assert end is not None and end["status"] == "finished"
    warnings = [r.getMessage() for r in caplog.records if r.name == "newscrawl.components.run_recorder"]
    assert len(warnings) == 2
    assert all("not recorded" in w and "127.0.0.1:9" in w for w in warnings)


# --- real crawls of the mirror -----------------------------------------------------------------

@pytest.mark.integration
def test_a_crawl_records_its_run(crawl: Any, mirror: Any, mongo_uri: str,
                                 mongo_db: Database[dict[str, Any]]) -> None:
    # A write concern (MONGO_WRITE_CONCERN) on every write of the crawl, articles and run alike.
    result = crawl("finews", env={"MONGO_WRITE_CONCERN": "majority,journal"})
    runs = list(mongo_db["crawl_runs"].find())
    assert len(runs) == 1
    run = runs[0]
    assert run["spider"] == "finews"
    assert (run["status"], run["outcome"]) == ("finished", "finished")
    assert run["arguments"] == {}
    assert run["_id"].startswith("finews-") and run["_id"].endswith(f"-{run['pid']}")
    assert run["started_at"] <= run["finished_at"]
    assert run["host"]
    # The counts are the crawl's final stats: written after the pipelines' last flush.
    assert run["counts"] == counts_from_stats(result.stats)
    assert run["counts"]["stored"] == len(mirror.truth("articles"))
    assert run["counts"]["pages"] == result.stats["response_received_count"] > 0
    assert run["counts"]["rejected"] == result.stats.get("newscrawl/articles/rejected", 0)
    assert run["errors"] == errors_from_stats(result.stats)
    assert "started_at" in mongo_db["crawl_runs"].index_information()


@pytest.mark.integration
def test_runs_lists_every_crawl_newest_first(crawl: Any, mongo_uri: str,
                                             mongo_db: Database[dict[str, Any]]) -> None:
    crawl("finews")
    second = crawl("finews", args={"categories": "jingzhouribao", "a.b": "1", "$c": "2"})
    runs = find_runs(mongo_db["crawl_runs"])
    assert len(runs) == 2
    newest = runs[0]
    assert newest["arguments"] == {"categories": "jingzhouribao", "a_b": "1", "c": "2"}
    assert newest["counts"]["skipped_stored"] == second.stats["newscrawl/articles/skipped_stored"] > 0
    assert newest["counts"]["stored"] == 0

    env = {"MONGO_URI": mongo_uri, "MONGO_DATABASE": mongo_db.name}
    table = newscrawl("runs", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("start (UTC)") and len(lines) == 3
    assert [line.split()[2] for line in lines[1:]] == ["finews", "finews"]
    assert lines[1].split()[-7] == "0"  # the second crawl stored nothing
    assert lines[1].split()[-4] == str(newest["counts"]["skipped_stored"])
    assert lines[1].split()[-1] == "ok"  # its health: a rerun of an unchanged site stores nothing

    jsonl = newscrawl("runs", "--format", "jsonl", "--last", "1", env=env)
    assert jsonl.returncode == 0, jsonl.stderr
    records = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["_id"] for r in records] == [newest["_id"]]
    assert records[0]["started_at"].endswith("Z")
    assert records[0]["arguments"]["categories"] == "jingzhouribao"

    none = newscrawl("runs", "--spider", "share", env=env)
    assert (none.returncode, none.stdout) == (0, "")
    assert "no runs recorded" in none.stderr


@pytest.mark.integration
def test_a_crawl_without_its_database_still_finishes(crawl: Any) -> None:
    result = crawl("finews", args={"categories": "jingzhouribao", "limit": "2"},
                   settings={"MONGO_RETRY_TIMES": "0"},
                   env={"MONGO_URI": "mongodb://127.0.0.1:9/"}, check=False)
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["finish_reason"] in ("finished", "limit")
    recorder_lines = [line for line in result.log.splitlines()
                      if "[newscrawl.components.run_recorder]" in line]
    assert recorder_lines and all(" WARNING: " in line for line in recorder_lines)
    assert any("not recorded" in line for line in recorder_lines)
    # (Other components may log their own tracebacks here; the recorder never does.)
    assert "newscrawl/components/run_recorder.py" not in result.log
