"""`newscrawl health` (Nagios exit codes) and `newscrawl metrics` (a real Prometheus scrapes it)
against runs recorded in the real database."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from newscrawl.components.run_recorder import end_document, ensure_run_indexes, save_run, start_document
from newscrawl.monitoring.monitors import DEFAULT_THRESHOLDS, evaluate
from newscrawl.ops.health import exit_code
from tests.helpers import PROJECT_ROOT, newscrawl, wait_until

NOW = datetime.now(UTC).replace(microsecond=0)
STATS = {"response_received_count": 589, "newscrawl/article_pages": 528, "item_scraped_count": 328,
         "newscrawl/articles/stored": 303, "newscrawl/articles/unchanged": 13,
         "downloader/request_count": 589, "newscrawl/clean/items": 328, "newscrawl/share/answered": 200,
         "newscrawl/share/not_found": 20}


def record(db: Database[dict[str, Any]], job: str, started: datetime, stats: dict[str, Any], *,
           judge: bool = True, pid: int = 1, end: bool = True) -> dict[str, Any]:
    runs = db["crawl_runs"]
    ensure_run_indexes(runs)
    start = start_document(f"{job}-{started:%Y%m%dT%H%M%S}-{pid}", "finews", {}, started,
                           host=socket.gethostname(), pid=pid, job=job)
    document = end_document(start, "finished", stats, started + timedelta(minutes=1)) if end else start
    if judge and end:
        document["health"] = evaluate(document, [], DEFAULT_THRESHOLDS, started + timedelta(minutes=1))
    save_run(runs, document)
    return document


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def health(db: Database[dict[str, Any]], mongo_uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    return newscrawl("health", *args, env={"MONGO_URI": mongo_uri, "MONGO_DATABASE": db.name})


def test_the_exit_code_is_the_worst_verdict() -> None:
    assert exit_code(["ok", "ok"]) == 0
    assert exit_code(["ok", "warn", None]) == 1
    assert exit_code(["fail", "warn"]) == 2
    assert exit_code(["ok", None]) == 3
    assert exit_code([]) == 3


@pytest.mark.integration
def test_health_exits_ok_warn_fail_and_unknown_for_no_runs(mongo_uri: str,
                                                           mongo_db: Database[dict[str, Any]]) -> None:
    empty = health(mongo_db, mongo_uri)
    assert (empty.returncode, empty.stdout) == (3, f"newscrawl UNKNOWN: no runs recorded in "
                                                   f"{mongo_db.name}.crawl_runs\n")

    record(mongo_db, "media", NOW - timedelta(hours=2), {**STATS, "log_count/ERROR": 99})  # an older run
    record(mongo_db, "media", NOW - timedelta(hours=1), STATS)
    ok = health(mongo_db, mongo_uri)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("media OK: run media-") and "all monitors passed" in ok.stdout

    record(mongo_db, "feed", NOW - timedelta(minutes=30), {**STATS, "log_count/ERROR": 2})
    warn = health(mongo_db, mongo_uri)
    assert warn.returncode == 1, warn.stdout
    assert warn.stdout.splitlines()[0].startswith("feed WARNING: run feed-")
    assert "errors logged: 2 (warn: at least 1)" in warn.stdout

    record(mongo_db, "full", NOW - timedelta(minutes=20), {"response_received_count": 2})
    fail = health(mongo_db, mongo_uri)
    assert fail.returncode == 2, fail.stdout
    assert [line.split()[:2] for line in fail.stdout.splitlines()] == [
        ["feed", "WARNING:"], ["full", "CRITICAL:"], ["media", "OK:"]]

    one = health(mongo_db, mongo_uri, "--job", "media")
    assert one.returncode == 0 and len(one.stdout.splitlines()) == 1
    none = health(mongo_db, mongo_uri, "--job", "nope")
    assert (none.returncode, none.stdout) == (3, "nope UNKNOWN: no runs recorded\n")


@pytest.mark.integration
def test_health_judges_runs_without_a_verdict_and_lost_runs(mongo_uri: str,
                                                            mongo_db: Database[dict[str, Any]]) -> None:
    record(mongo_db, "media", NOW - timedelta(hours=1), {"response_received_count": 2}, judge=False)
    unjudged = health(mongo_db, mongo_uri)
    assert unjudged.returncode == 2 and "articles seen: 0 (fail: below 1)" in unjudged.stdout

    record(mongo_db, "media", NOW - timedelta(minutes=5), {}, end=False, pid=dead_pid())
    lost = health(mongo_db, mongo_uri)
    assert lost.returncode == 2, lost.stdout
    assert "did not end: its process" in lost.stdout


@pytest.mark.integration
def test_health_is_unknown_when_the_database_cannot_be_reached() -> None:
    down = newscrawl("health", env={"MONGO_URI": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300"})
    assert down.returncode == 3 and down.stdout.startswith("newscrawl UNKNOWN:")


# --- metrics, scraped by a real Prometheus -------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def query(api: str, expression: str) -> list[dict[str, Any]]:
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


@pytest.mark.integration
def test_prometheus_scrapes_the_metrics(crawl: Any, mongo_uri: str, mongo_db: Database[dict[str, Any]],
                                        tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is missing: scripts/bootstrap installs it (apt-get install prometheus)")
    crawl("finews")  # records its run and counts the articles summary
    env = {"MONGO_URI": mongo_uri, "MONGO_DATABASE": mongo_db.name}
    once = newscrawl("metrics", "--once", env=env)
    assert once.returncode == 0, once.stderr
    assert 'newscrawl_last_run_health{crawl_job="finews"} 0.0' in once.stdout
    assert ('newscrawl_last_run_outcome{crawl_job="finews",outcome="finished",status="finished"} 1.0'
            in once.stdout)

    port, prom_port = free_port(), free_port()
    command = [sys.executable, "-m", "newscrawl.ops.cli", "metrics", "--port", str(port)]
    server = subprocess.Popen(command, cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                      f"  - job_name: newscrawl\n    static_configs:\n"
                      f"      - targets: ['127.0.0.1:{port}']\n",
                      encoding="utf-8")
    prom = subprocess.Popen([prometheus, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{prom_port}"
    try:
        assert server.stdout is not None and "serving Prometheus metrics" in server.stdout.readline()
        stored = mongo_db["articles"].count_documents({})
        found = wait_until(lambda: query(api, "newscrawl_articles"), 60, "Prometheus' first scrape")
        assert float(found[0]["value"][1]) == stored > 0
        health_series = query(api, 'newscrawl_last_run_health{crawl_job="finews"}')
        assert [float(s["value"][1]) for s in health_series] == [0.0]
        counts = {s["metric"]["count"]: float(s["value"][1])
                  for s in query(api, 'newscrawl_last_run_count{crawl_job="finews"}')}
        assert counts["stored"] == stored
        by_source = query(api, "sum(newscrawl_articles_by_source)")
        assert float(by_source[0]["value"][1]) == stored
        assert query(api, "newscrawl_articles_by_category")
        assert query(api, "newscrawl_articles_unproven_times")
        assert query(api, 'up{job="newscrawl"}')[0]["value"][1] == "1"
    finally:
        for process in (prom, server):
            process.terminate()
            process.wait(10)
