"""`newscrawl backfill`: the plan, the counting and the progress line (pure), the command's
errors, and real backfills of the mirror into the real database: complete, idempotent,
counting what failed, stopping cleanly."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from fixtures.server import Fault
from newscrawl.ops.backfill import (
    LogTail,
    Progress,
    failed_count,
    plan,
    read_ids,
    retry_http_codes,
    step_counts,
    summary_line,
    totals,
)
from tests.helpers import PROJECT_ROOT, newscrawl, wait_until

UNREACHABLE = "mongodb://127.0.0.1:9/"
SHANGHAI = timezone(timedelta(hours=8))
SINCE, UNTIL = "2021-12-29", "2021-12-31"  # the mirror's window, in Shanghai days
FAST = ["-s", "AUTOTHROTTLE_ENABLED=False", "-s", "MONGO_FLUSH_INTERVAL=0.5",
        "-s", "NEWSCRAWL_RETRY_BACKOFF_BASE=0.05"]


# --- pure ----------------------------------------------------------------------------------------

def test_the_plan_is_finews_then_share_by_ids_then_share_for_digests(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    steps = plan(date(2021, 12, 29), date(2021, 12, 31), categories=["emnews", "jingzhouribao"],
                 ids_file=ids)
    assert [(s.spider, s.args) for s in steps] == [
        ("finews", {"since": "2021-12-29", "until": "2021-12-31",
                    "categories": "emnews,jingzhouribao"}),
        ("share", {"ids_file": str(ids)}),
        ("share", {"from_db": "1", "since": "2021-12-29", "until": "2021-12-31"}),
    ]
    plain = plan(date(2021, 12, 31), date(2021, 12, 31))
    assert [s.describe() for s in plain] == [
        "finews since=2021-12-31 until=2021-12-31",
        "share from_db=1 since=2021-12-31 until=2021-12-31"]
    with pytest.raises(ValueError, match="empty range"):
        plan(date(2021, 12, 31), date(2021, 12, 30))


def test_ids_files_are_checked_as_the_share_spider_reads_them(tmp_path: Path) -> None:
    good = tmp_path / "ids.txt"
    good.write_text("# unlisted\nNW202112112212051385\n\n202112112368306177\nnw202112112368306177\n")
    assert read_ids(good) == ["202112112212051385", "202112112368306177"]
    bad = tmp_path / "bad.txt"
    bad.write_text("NW2021121122\n")
    with pytest.raises(ValueError, match=r"--ids-file .*bad.txt: 'NW2021121122' is not an article id"):
        read_ids(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no ids"):
        read_ids(empty)
    with pytest.raises(ValueError, match="No such file"):
        read_ids(tmp_path / "missing.txt")


def test_the_retried_statuses_are_the_crawls_settings() -> None:
    from newscrawl import settings

    assert retry_http_codes() == set(settings.RETRY_HTTP_CODES) and 503 in retry_http_codes()
    # A status the crawls do not retry (here by `-s`) is an error answer when it is ignored.
    codes = retry_http_codes({"RETRY_HTTP_CODES": "500,502"})
    assert codes == {500, 502}
    assert failed_count({"httperror/response_ignored_status_count/503": 2}, codes) == 2
    assert failed_count({"httperror/response_ignored_status_count/503": 2}, retry_http_codes()) == 0


def test_failed_counts_each_page_given_up_once() -> None:
    stats = {
        "retry/max_reached": 2,  # a timeout and a 503, after every retry
        "httperror/response_ignored_count": 4,
        "httperror/response_ignored_status_count/503": 1,  # that 503, counted above
        "httperror/response_ignored_status_count/404": 2,
        "httperror/response_ignored_status_count/410": 1,
        "spider_exceptions/ValueError": 1,
        "downloader/response_status_count/404": 9,  # answers, handled or not: not counted
        "newscrawl/share/not_found": 3,  # a share link's final 404: the post is kept
    }
    codes = retry_http_codes()
    assert failed_count(stats, codes) == 2 + 3 + 1
    assert failed_count({}, codes) == 0
    counts = step_counts({"newscrawl/articles/stored": 5, "retry/max_reached": 1,
                          "response_received_count": 9}, codes)
    assert (counts["stored"], counts["failed"], counts["pages"]) == (5, 1, 9)
    summed = totals([counts, {**counts, "stored": 1}])
    assert (summed["stored"], summed["failed"]) == (6, 2)
    assert summary_line(summed, 2, 75) == ("total (2 crawls, 1m15s): 18 pages, 6 stored, "
                                           "0 updated, 0 unchanged, 0 rejected, 2 failed "
                                           "(0 skipped as stored)")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_off_a_terminal_is_a_plain_line_at_most_every_interval() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, tty=False, every=10, clock=clock)
    progress.line("[1/3] finews since=…")
    for second, pages in [(1, 5), (5, 40), (11, 80), (12, 90), (21, 90), (25, 120)]:
        clock.now = second
        progress.update(f"[1/3] finews: {pages} pages")
    progress.line("[1/3] finews finished")
    assert out.getvalue().splitlines() == [
        "backfill: [1/3] finews since=…",
        "backfill: [1/3] finews: 80 pages",  # 11 s after the last line
        "backfill: [1/3] finews: 120 pages",  # unchanged at 21 s: nothing printed
        "backfill: [1/3] finews finished",
    ]


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, tty=True, every=10, clock=clock)
    progress.update("finews: 100 pages")
    progress.update("finews: 5 pages")
    progress.line("finews finished")
    text = out.getvalue()
    assert text == ("\rbackfill: finews: 100 pages"
                    "\rbackfill: finews: 5 pages  "
                    "\rbackfill: finews finished\n")


def test_the_log_tail_follows_scrapys_logstats_lines(tmp_path: Path) -> None:
    log = tmp_path / "crawl.log"
    log.write_text("2021-12-31 08:00:00 [scrapy.extensions.logstats] INFO: Crawled 3 pages "
                   "(at 3 pages/min), scraped 1 items (at 1 items/min)\n")
    tail = LogTail(log)  # starts at the end: an earlier crawl's lines are not this one's
    assert tail.poll() == (0, 0)
    with log.open("a") as out:
        out.write("2021-12-31 08:00:01 [scrapy.extensions.logstats] INFO: Crawled 120 pages "
                  "(at 600 pages/min), scraped 80 items (at 400 items/min)\n"
                  "2021-12-31 08:00:02 [scrapy.extensions.logstats] INFO: Crawled 130 pa")
    assert tail.poll() == (120, 80)
    with log.open("a") as out:
        out.write("ges (at 60 pages/min), scraped 85 items (at 30 items/min)\n")
    assert tail.poll() == (130, 85)


# --- the command's errors ------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected", "code"), [
    (["--until", UNTIL], ["--since"], 2),
    (["--since", "2021-12-32", "--until", UNTIL], ["--since", "YYYY-MM-DD", "2021-12-32"], 2),
    (["--since", UNTIL, "--until", SINCE], ["empty range"], 2),
    (["--since", SINCE, "--until", UNTIL, "--categories", ","], ["--categories"], 2),
    (["--since", SINCE, "--until", UNTIL, "-s", "LOG_LEVEL"], ["NAME=VALUE"], 2),
    (["--since", SINCE, "--until", UNTIL, "--ids-file", "/nonexistent/ids.txt"],
     ["--ids-file", "/nonexistent/ids.txt"], 2),
    (["--since", SINCE, "--until", UNTIL], ["cannot reach the database", "127.0.0.1:9"], 1),
])
@pytest.mark.integration  # the command in its own process
def test_bad_arguments_are_one_error_line_and_nothing_runs(
        tmp_path: Path, args: list[str], expected: list[str], code: int) -> None:
    proc = newscrawl("backfill", *args, "--log-dir", str(tmp_path), env={"MONGO_URI": UNREACHABLE})
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("newscrawl: error: "), proc.stderr
    for text in expected:
        assert text in lines[0]
    assert list(tmp_path.iterdir()) == []  # no crawl was started


@pytest.mark.integration  # the command in its own process
def test_backfill_explains_itself() -> None:
    proc = newscrawl("backfill", "--help")
    assert proc.returncode == 0
    for text in ("--since", "--until", "--categories", "--ids-file", "finews", "share",
                 "digest", "stored, updated, unchanged, rejected", "failed", "Asia/Shanghai"):
        assert text in proc.stdout
    assert "newscrawl backfill" in newscrawl("--help").stdout


# --- real backfills of the mirror ----------------------------------------------------------------

@pytest.fixture
def backfill_env(mongo_uri: str, mirror_server: Any, mongo_db: Database[dict[str, Any]],
                 tmp_path: Path) -> Any:
    env = {"MONGO_URI": mongo_uri, "MONGO_DATABASE": mongo_db.name,
           "NEWSCRAWL_HOST_MAP": json.dumps(mirror_server.host_map),
           "NEWSCRAWL_SPOOL_DIR": str(tmp_path / "spool")}
    yield env
    mirror_server.clear_faults()


def summary_of(stdout: str) -> dict[str, int]:
    line = next(line for line in stdout.splitlines() if line.startswith("backfill: total"))
    return {name: int(number)
            for number, name in re.findall(r"(\d+) ([a-z][a-z ]*[a-z])", line.split(":", 2)[2])}


def shanghai_day(truth: dict[str, Any]) -> str:
    published = datetime.fromisoformat(truth["published_at"].replace("Z", "+00:00"))
    return published.astimezone(SHANGHAI).date().isoformat()


def without_last_seen(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without what every rerun's write moves: last_seen_at and the write counter."""
    return [{k: v for k, v in doc.items() if k not in ("last_seen_at", "writes")} for doc in docs]


@pytest.mark.integration
def test_a_backfill_stores_the_range_and_a_second_one_changes_nothing(
        backfill_env: dict[str, str], mirror: Any, mongo_db: Database[dict[str, Any]],
        tmp_path: Path) -> None:
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(mirror.manifest["unlisted_info_codes"]) + "\n")
    command = ["backfill", "--since", SINCE, "--until", UNTIL, "--ids-file", str(ids_file),
               "--log-dir", str(tmp_path / "logs"), "--progress-every", "1", *FAST]

    first = newscrawl(*command, env=backfill_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stderr == ""
    articles = mongo_db["articles"]
    once = list(articles.find().sort("_id", 1))
    counts_once = {name: mongo_db[name].count_documents({}) for name in ("articles", "rejects")}

    # Everything the range has: listed articles, the unlisted ids, the digests' full texts.
    listed = {t["_id"] for t in mirror.truth("articles") if SINCE <= shanghai_day(t) <= UNTIL}
    unlisted = {t["_id"] for t in mirror.truth("unlisted")}
    assert {doc["_id"] for doc in once} == listed | unlisted
    for truth in mirror.truth("digest_backfill"):
        stored = articles.find_one({"_id": truth["_id"]})
        assert stored is not None
        assert (stored["body_kind"], stored["text"]) == ("share", truth["text"])

    lines = first.stdout.splitlines()
    assert all(line.startswith("backfill: ") for line in lines), first.stdout
    for step in ("[1/3] finews since=2021-12-29 until=2021-12-31",
                 f"[2/3] share ids_file={ids_file}",
                 "[3/3] share from_db=1 since=2021-12-29 until=2021-12-31"):
        assert any(line.startswith(f"backfill: {step}") for line in lines), first.stdout
    assert sum(" finished in " in line for line in lines) == 3
    summary = summary_of(first.stdout)
    assert summary["stored"] == len(once)
    # The third step gives the digest-only articles their full text; within the first, a
    # twin seen in a later batch than its article can update it too (batches follow timing).
    third = next(line for line in lines if line.startswith("backfill: [3/3] share finished"))
    assert f" {len(mirror.truth('digest_backfill'))} updated," in third, first.stdout
    assert summary["failed"] == 0
    assert summary["rejected"] == counts_once["rejects"] > 0
    runs = list(mongo_db["crawl_runs"].find().sort("started_at", 1))
    assert [(r["spider"], r["status"]) for r in runs] == [
        ("finews", "finished"), ("share", "finished"), ("share", "finished")]
    assert runs[1]["arguments"] == {"ids_file": str(ids_file)}
    assert sum(r["counts"]["stored"] for r in runs) == summary["stored"]

    second = newscrawl(*command, env=backfill_env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert {name: mongo_db[name].count_documents({}) for name in ("articles", "rejects")} == counts_once
    summary = summary_of(second.stdout)
    assert (summary["stored"], summary["updated"], summary["failed"]) == (0, 0, 0)
    assert summary["skipped as stored"] > 0  # the article pages were not fetched
    again = list(articles.find().sort("_id", 1))
    assert [doc["_id"] for doc in again] == [doc["_id"] for doc in once]
    changed = {before["_id"]: {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                               # each rerun's sighting moves last_seen_at, and the write
                               # counter every write increments (storage's concurrency guard)
                               if k not in ("last_seen_at", "writes") and before.get(k) != after.get(k)}
               for before, after in zip(once, again, strict=True)}
    changed = {aid: diff for aid, diff in changed.items() if diff}
    assert changed == {}
    assert without_last_seen(again) == without_last_seen(once)


@pytest.mark.integration
def test_pages_given_up_are_counted_as_failed(backfill_env: dict[str, str], mirror: Any,
                                              mirror_server: Any, tmp_path: Path) -> None:
    post = next(t for t in mirror.truth("articles") if "emnews" in t["categories"]
                and SINCE <= shanghai_day(t) <= UNTIL)
    mirror_server.add_fault(Fault(path=post["_id"], host="finews.withounder.com", status=503,
                                  times=None))
    proc = newscrawl("backfill", "--since", SINCE, "--until", UNTIL, "--categories", "emnews",
                     "--log-dir", str(tmp_path / "logs"), *FAST, "-s", "RETRY_TIMES=1",
                     env=backfill_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = summary_of(proc.stdout)
    assert summary["failed"] == 1
    assert summary["stored"] > 0


@pytest.mark.integration
def test_sigterm_stops_the_running_crawl_cleanly_and_prints_the_summary(
        backfill_env: dict[str, str], mirror_server: Any, mongo_db: Database[dict[str, Any]],
        tmp_path: Path) -> None:
    mirror_server.add_fault(Fault(path=r"^/$", host="finews.withounder.com", delay=5, times=None))
    served_before = len(mirror_server.requests)
    proc = subprocess.Popen(
        [sys.executable, "-m", "newscrawl.ops.cli", "backfill", "--since", SINCE, "--until", UNTIL,
         "--log-dir", str(tmp_path / "logs"), *FAST], cwd=PROJECT_ROOT, text=True,
        env={**os.environ, **backfill_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def running() -> Any:
        run = mongo_db["crawl_runs"].find_one({"status": "running"})
        assert run or proc.poll() is None, "the backfill ended before its crawl ran"
        return run

    def fetching() -> bool:
        if any(target == "/robots.txt" for _, target, _ in mirror_server.requests[served_before:]):
            return True
        assert proc.poll() is None, "the backfill ended before its crawl fetched anything"
        return False

    wait_until(running, 60, "the crawl recorded as running", interval=0.2)
    # Its engine runs once robots.txt is answered; the home page it asks next is held 5 s,
    # so the SIGTERM reaches a crawl in the middle of a fetch.
    wait_until(fetching, 60, "the crawl's first request (robots.txt)")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted: stopping the crawl" in stdout
    assert "backfill: total (1 crawl" in stdout
    assert "Traceback" not in stderr
    runs = list(mongo_db["crawl_runs"].find())
    assert [(r["spider"], r["outcome"]) for r in runs] == [("finews", "shutdown")]
