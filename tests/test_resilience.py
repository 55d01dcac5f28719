"""A crawl that is killed, interrupted, or loses its database loses nothing."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from fixtures.server import Fault
from newscrawl.local import ferretdb
from pipelines.config import mongo_client as open_client
from tests.conftest import CrawlRunner, Mirror
from tests.helpers import assert_truth_stored, newscrawl, wait_until

pytestmark = pytest.mark.integration

# Slow post pages so that a crawl is still running when the test strikes.
SLOW_POSTS = Fault(path=r"/\d{4}/\d{2}/\d{2}/[^/]+\.html$", delay=0.15, times=None)
SLOW_CRAWL = {"CONCURRENT_REQUESTS": "2", "CONCURRENT_REQUESTS_PER_DOMAIN": "2"}


def wait_for_documents(db: Database[dict[str, Any]], count: int, proc: subprocess.Popen[bytes],
                       timeout: float = 120) -> None:
    def enough() -> bool:
        if db["articles"].count_documents({}) >= count:
            return True
        assert proc.poll() is None, "the crawl ended before the test could strike"
        return False

    wait_until(enough, timeout, f"the crawl to store {count} articles", interval=0.2)


@pytest.fixture
def slow_mirror(mirror_server: Any) -> Any:
    mirror_server.add_fault(SLOW_POSTS)
    yield mirror_server
    mirror_server.clear_faults()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_a_stopped_crawl_resumes_with_its_jobdir(how: signal.Signals, crawl: CrawlRunner,
                                                 slow_mirror: Any, mirror: Mirror,
                                                 mongo_db: Database[dict[str, Any]],
                                                 tmp_path: Path) -> None:
    jobdir = {"JOBDIR": str(tmp_path / "job")}
    proc, _, _ = crawl.start("finews", settings={**SLOW_CRAWL, **jobdir})
    wait_for_documents(mongo_db, 10, proc)
    proc.send_signal(how)
    proc.communicate(timeout=120)
    partial = mongo_db["articles"].count_documents({})
    truth = {record["_id"]: record for record in mirror.truth("articles")}
    assert 10 <= partial < len(truth)
    assert (tmp_path / "job").is_dir()

    slow_mirror.clear_faults()
    crawl("finews", settings=jobdir)
    assert_truth_stored(mongo_db, truth)


def test_a_database_outage_is_spooled_and_replayed(crawl: CrawlRunner, slow_mirror: Any,
                                                   mirror: Mirror, tmp_path: Path) -> None:
    # A server of this test's own, so it can be stopped and brought back at the same address.
    port = ferretdb.free_port()
    data_dir, log_file = tmp_path / "db", tmp_path / "ferretdb.log"
    server, uri = ferretdb.launch(port, data_dir, log_file)
    client = open_client(uri, appname="newscrawl-test")
    db = client["outage"]
    try:
        settings = {**SLOW_CRAWL, "MONGO_RETRY_TIMES": "1", "MONGO_RETRY_BACKOFF": "0.1"}
        env = {"MONGO_URI": uri, "MONGO_DATABASE": "outage"}
        proc, _, log = crawl.start("finews", settings=settings, env=env)
        wait_for_documents(db, 10, proc)
        server.kill()
        server.wait()
        proc.communicate(timeout=600)
        assert proc.returncode == 0
        assert "spooled to" in log.read_text(encoding="utf-8")
        spool = tmp_path / "spool"
        assert list(spool.glob("*.jsonl"))

        server, _ = ferretdb.launch(port, data_dir, log_file)
        replay = newscrawl("replay", env={**env, "NEWSCRAWL_SPOOL_DIR": str(spool)}, timeout=300)
        assert replay.returncode == 0, replay.stderr
        assert not list(spool.glob("*.jsonl"))
        assert_truth_stored(db, mirror.truth("articles"))
    finally:
        client.close()
        server.kill()
        server.wait()
