"""Distributed crawls: several processes, one Redis frontier, one database, the mirror."""

from __future__ import annotations

import re
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from pymongo.database import Database

from fixtures.server import AGGREGATOR_HOST, SHARE_HOST, Fault
from tests.conftest import CrawlResult, CrawlRunner, Mirror
from tests.helpers import assert_stored_once, crawl_listing_pages, stored, wait_until

pytestmark = pytest.mark.integration

POST_PATH = r"/\d{4}/\d{2}/\d{2}/[^/]+\.html$"
SHARE_JSON = re.compile(r"^/NewsData/GetNewsText\.do\?")
# Slow post pages, so that the crawl lasts long enough for every process to take part.
SLOW_POSTS = Fault(path=POST_PATH, delay=0.1, times=None)
SLOWER_POSTS = Fault(path=POST_PATH, delay=0.15, times=None)


@dataclass
class RedisRun:
    """A test's corner of Redis: its own key prefix, removed afterwards."""

    url: str
    prefix: str
    client: redis.Redis

    def env(self, run_id: str) -> dict[str, str]:
        return {"NEWSCRAWL_REDIS_URL": self.url, "NEWSCRAWL_RUN_ID": run_id}

    def settings(self, **extra: str) -> dict[str, str]:
        return {"NEWSCRAWL_REDIS_PREFIX": self.prefix, **extra}

    def matching(self, pattern: str = "*") -> list[str]:
        return sorted(key.decode() for key in self.client.scan_iter(f"{self.prefix}:{pattern}"))


@pytest.fixture
def frontier(redis_url: str) -> Iterator[RedisRun]:
    client = redis.Redis.from_url(redis_url)
    run = RedisRun(redis_url, f"test-{uuid.uuid4().hex[:10]}", client)
    yield run
    for key in run.matching():
        client.delete(key)
    client.close()


def finish(started: tuple[subprocess.Popen[bytes], Path, Path]) -> CrawlResult:
    """Wait for a crawl started with CrawlRunner.start; it must end well, with no error logged."""
    return CrawlRunner.finish(started)


def crawl_together(crawl: CrawlRunner, frontier: RedisRun, run_id: str, processes: int = 2,
                   **settings: str) -> list[CrawlResult]:
    """`processes` finews crawls of one run; the Redis URL and run id of every other one
    are given as `-s` settings rather than in the environment."""
    started = []
    for n in range(processes):
        if n % 2:
            started.append(crawl.start(
                "finews", env={"NEWSCRAWL_REDIS_URL": "", "NEWSCRAWL_RUN_ID": ""},
                settings=frontier.settings(**settings, NEWSCRAWL_REDIS_URL=frontier.url,
                                           NEWSCRAWL_RUN_ID=run_id)))
        else:
            started.append(crawl.start("finews", settings=frontier.settings(**settings),
                                       env=frontier.env(run_id)))
    return [finish(one) for one in started]


def fetched(mirror_server: Any) -> Counter[tuple[str, str]]:
    """(host, path+query) of every request the mirror answered, robots.txt aside."""
    return Counter((host, target) for host, target, _ in mirror_server.requests
                   if not target.startswith("/robots.txt"))


def article_fetches(counts: Counter[tuple[str, str]]) -> tuple[Counter[str], Counter[str]]:
    posts = Counter({target: n for (host, target), n in counts.items()
                     if host == AGGREGATOR_HOST and re.search(POST_PATH, target)})
    shares = Counter({target: n for (host, target), n in counts.items()
                      if host == SHARE_HOST and SHARE_JSON.match(target)})
    return posts, shares


def listed_post_paths(mirror: Mirror) -> set[str]:
    """The path of every dated post page a full crawl reaches: the articles' and the rejects'."""
    urls = [url for record in mirror.truth("articles") for url in record["urls"]]
    urls += [record["url"] for record in mirror.truth("rejects") if record["scope"] == "crawl"]
    return {urlsplit(url).path for url in urls if re.search(POST_PATH, urlsplit(url).path)}


def check_duplicate_links(db: Database[dict[str, Any]], truth: dict[str, dict[str, Any]]) -> None:
    """`duplicate_of` as the ground truth has it, with two processes writing.

    Each writer links again from what is stored after writing, so the last
    of two concurrent writers sees both copies of a text.
    """
    got = {aid: doc["duplicate_of"] for aid, doc in stored(db).items()}
    expected = {aid: record["duplicate_of"] for aid, record in truth.items()}
    assert got == expected


def stat_sum(results: list[CrawlResult], name: str) -> int:
    return sum(int(result.stats.get(name, 0)) for result in results)


def test_two_processes_share_one_run_and_fetch_every_page_once(
        crawl: CrawlRunner, frontier: RedisRun, mirror_server: Any, mirror: Mirror,
        mongo_db: Database[dict[str, Any]]) -> None:
    mirror_server.add_fault(SLOW_POSTS)
    mirror_server.clear_requests()
    try:
        results = crawl_together(crawl, frontier, "together", CONCURRENT_REQUESTS="4",
                                 CONCURRENT_REQUESTS_PER_DOMAIN="4")
    finally:
        mirror_server.clear_faults()

    # Every article stored once, field by field as the ground truth has it.
    truth = {record["_id"]: record for record in mirror.truth("articles")}
    assert_stored_once(mongo_db, truth)
    assert stat_sum(results, "newscrawl/articles/stored") == len(truth)

    # Not one page fetched twice, across the two processes.
    counts = fetched(mirror_server)
    assert {page: n for page, n in counts.items() if n > 1} == {}
    posts, shares = article_fetches(counts)
    assert set(posts) == listed_post_paths(mirror)
    assert len(shares) >= sum(1 for record in truth.values() if record["share_url"]) > 0
    # Listings too: one process seeded the run, the run's processes share who asked for what.
    assert stat_sum(results, "newscrawl/frontier/seeded") == 1
    assert stat_sum(results, "newscrawl/listing_pages") == crawl_listing_pages(mirror)

    # Both did part of the work.
    for result in results:
        assert result.stats["newscrawl/article_pages"] > 0, result.stats
        assert result.stats["newscrawl/frontier/run_id"] == "together"
        assert result.stats["finish_reason"] == "finished"
    assert stat_sum(results, "newscrawl/article_pages") >= len(posts)
    # The monitors judged the run once, as one: the process that ended last judged both documents.
    runs = list(mongo_db["crawl_runs"].find({"distributed_run": "together"}))
    assert len(runs) == 2
    assert runs[0]["health"]["status"] == "ok" and runs[0]["health"] == runs[1]["health"]

    # What is left of the run in Redis expires within a day.
    left = frontier.matching()
    assert left and not [key for key in left if re.search(r":(processing|settling|alive|workers)", key)]
    assert all(0 < frontier.client.ttl(key) <= 24 * 3600 for key in left)
    assert frontier.client.scard(f"{frontier.prefix}:{{finews:together}}:dupefilter") >= len(posts)
    check_duplicate_links(mongo_db, truth)


def test_a_new_run_refetches_the_listings_and_stores_nothing_new(
        crawl: CrawlRunner, frontier: RedisRun, mirror_server: Any, mirror: Mirror,
        mongo_db: Database[dict[str, Any]]) -> None:
    # A process given no run id is a run of its own, with a fresh id.
    (first,) = crawl_together(crawl, frontier, "", processes=1)
    assert "NEWSCRAWL_RUN_ID is not set" in first.log
    first_id = first.stats["newscrawl/frontier/run_id"]
    assert first_id and first.stats["newscrawl/frontier/seeded"] == 1
    before = {doc["_id"]: doc for doc in mongo_db["articles"].find()}
    assert sorted(before) == sorted(r["_id"] for r in mirror.truth("articles"))

    # The next scheduled run, with its own run id: the first run's fingerprints do not
    # block its listings (the trap of a persistent dupefilter); stored articles are skipped.
    mirror_server.clear_requests()
    results = crawl_together(crawl, frontier, "second")
    assert [result.stats["newscrawl/frontier/run_id"] for result in results] == ["second"] * 2
    counts = fetched(mirror_server)
    listings = {target for (host, target) in counts if host == AGGREGATOR_HOST}
    assert "/" in listings and "/emnews/" in listings
    assert len(listings) == crawl_listing_pages(mirror)
    assert article_fetches(counts) == (Counter(), Counter())
    assert {page: n for page, n in counts.items() if n > 1} == {}
    assert stat_sum(results, "newscrawl/listing_pages") == crawl_listing_pages(mirror)
    assert stat_sum(results, "newscrawl/article_pages") == 0
    assert stat_sum(results, "newscrawl/articles/stored") == 0
    assert stat_sum(results, "newscrawl/articles/updated") == 0
    assert stat_sum(results, "newscrawl/articles/skipped_stored") >= len(before)
    after = {doc["_id"]: doc for doc in mongo_db["articles"].find()}
    assert sorted(after) == sorted(before)
    for aid, doc in after.items():
        assert doc["revision"] == before[aid]["revision"]
        assert doc["content_hash"] == before[aid]["content_hash"]

    # A run id names one crawl: a process given a finished run's id has nothing to do.
    mirror_server.clear_requests()
    (again,) = crawl_together(crawl, frontier, first_id, processes=1)
    assert fetched(mirror_server) == Counter()
    assert again.stats.get("newscrawl/frontier/seeded", 0) == 0


def held_requests(frontier: RedisRun, run_id: str, pid: int) -> int:
    keys = frontier.matching(f"{{finews:{run_id}}}:processing:*:{pid}:*")
    return sum(int(frontier.client.hlen(key)) for key in keys)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_a_stopped_process_loses_nothing(how: signal.Signals, crawl: CrawlRunner, frontier: RedisRun,
                                         mirror_server: Any, mirror: Mirror,
                                         mongo_db: Database[dict[str, Any]]) -> None:
    settings = frontier.settings(NEWSCRAWL_REDIS_WORKER_TIMEOUT="3", CONCURRENT_REQUESTS="2",
                                 CONCURRENT_REQUESTS_PER_DOMAIN="2")
    mirror_server.add_fault(SLOWER_POSTS)
    try:
        victim, survivor = (crawl.start("finews", settings=settings, env=frontier.env("crash"))
                            for _ in range(2))

        def going() -> bool:
            if (mongo_db["articles"].count_documents({}) >= 10
                    and held_requests(frontier, "crash", victim[0].pid) > 0):
                return True
            assert victim[0].poll() is None and survivor[0].poll() is None, "a crawl ended too soon"
            return False

        # Strike once both work and the victim holds requests taken from the queue.
        wait_until(going, 120, "the crawl to get going")
        victim[0].send_signal(how)
        if how == signal.SIGKILL:
            victim[0].communicate(timeout=60)
        else:
            stopped = finish(victim)
            assert stopped.stats["finish_reason"] == "shutdown"
        partial = mongo_db["articles"].count_documents({})
        result = finish(survivor)
    finally:
        mirror_server.clear_faults()

    truth = {record["_id"]: record for record in mirror.truth("articles")}
    assert partial < len(truth)
    if how == signal.SIGKILL:
        # The survivor waited for the victim's heartbeat to lapse and took back what it held.
        assert result.stats["newscrawl/frontier/requeued"] > 0
        assert "is gone: its" in result.log
        # Idle by then, it took them up at its frontier's next tick (engine.crawl), not at
        # its engine's 5 s heartbeat.
        assert result.stats["newscrawl/frontier/kicks"] >= 1
    else:
        # Ctrl-C: the victim finished what it held and left; nothing to take back.
        assert result.stats.get("newscrawl/frontier/requeued", 0) == 0
    # The survivor finished the run: every article is stored, once, as the ground truth has it.
    assert result.stats["finish_reason"] == "finished"
    assert_stored_once(mongo_db, truth)
    assert not frontier.matching("*:processing:*") and not frontier.matching("*:settling:*")
    check_duplicate_links(mongo_db, truth)


def test_the_share_backfill_runs_distributed_as_it_runs_alone(
        crawl: CrawlRunner, frontier: RedisRun, mirror_server: Any, mirror: Mirror,
        mongo_db: Database[dict[str, Any]]) -> None:
    crawl("finews")
    before = stored(mongo_db)
    rejects_before = mongo_db["rejects"].count_documents({})
    backfill = {record["_id"]: record for record in mirror.truth("digest_backfill")}
    mirror_server.add_fault(Fault(path=r"^/NewsData/", delay=0.2, times=None))
    mirror_server.clear_requests()
    settings = frontier.settings(CONCURRENT_REQUESTS="2")
    try:
        started = [crawl.start("share", args={"from_db": "1"}, settings=settings,
                               env=frontier.env("backfill")) for _ in range(2)]
        results = [finish(one) for one in started]
    finally:
        mirror_server.clear_faults()
    # Each share answer asked once; the process that did not seed still knew the stored
    # headlines start() read, so a stored article the share host lacks is not a reject.
    counts = fetched(mirror_server)
    assert {page: n for page, n in counts.items() if n > 1} == {}
    assert stat_sum(results, "newscrawl/frontier/seeded") == 1
    for result in results:
        assert result.stats.get("newscrawl/article_pages", 0) > 0, result.stats
    # The digest-only articles have their full text; nothing else changed.
    expected = {**before, **backfill}
    assert_stored_once(mongo_db, expected)
    assert stat_sum(results, "newscrawl/articles/updated") == len(backfill)
    assert mongo_db["rejects"].count_documents({}) == rejects_before
    check_duplicate_links(mongo_db, expected)
