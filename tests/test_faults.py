"""Fault injection: the mirror misbehaves, the crawl still stores every article once."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.database import Database

from fixtures.server import Fault
from newscrawl.components.middlewares import retry_after_seconds
from tests.conftest import CrawlRunner, Mirror
from tests.helpers import assert_truth_stored, stored

pytestmark = pytest.mark.integration
FAST_BACKOFF = {"NEWSCRAWL_RETRY_BACKOFF_BASE": "0.05"}


@pytest.fixture
def faulty(mirror_server: Any) -> Any:
    yield mirror_server
    mirror_server.clear_faults()


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_seconds(b"3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_5xx_bursts_and_429_are_retried_with_their_waits(
        crawl: CrawlRunner, faulty: Any, mirror: Mirror,
        mongo_db: Database[dict[str, Any]]) -> None:
    faulty.add_fault(Fault(path=r"^/category/", status=503, times=3))
    faulty.add_fault(Fault(path=r"^/emnews/$", status=500, times=2))
    faulty.add_fault(Fault(path=r"GetNewsText", status=429, retry_after=1, times=2))
    result = crawl("finews", settings=FAST_BACKOFF)
    assert_truth_stored(mongo_db, mirror.truth("articles"))
    stats = result.stats
    assert stats["downloader/response_status_count/503"] == 3
    assert stats["downloader/response_status_count/429"] == 2
    assert stats["newscrawl/backoff/retry_after"] == 2
    assert stats["newscrawl/backoff/status"] == 5
    # Two Retry-After waits of 1 s, plus the exponential ones of 0.05 s and up.
    assert stats["newscrawl/backoff/milliseconds"] >= 2000


def test_timeouts_and_truncated_bodies_are_retried(
        crawl: CrawlRunner, faulty: Any, mirror: Mirror,
        mongo_db: Database[dict[str, Any]]) -> None:
    faulty.add_fault(Fault(path=r"jingzhouribao/2021/12/31/", delay=3, times=1))
    faulty.add_fault(Fault(path=r"^/emnews/$", truncate=200, times=1))
    result = crawl("finews", settings={**FAST_BACKOFF, "DOWNLOAD_TIMEOUT": "1"})
    assert_truth_stored(mongo_db, mirror.truth("articles"))
    stats = result.stats
    assert stats["newscrawl/backoff/exception"] >= 2
    assert stats.get("retry/count", 0) >= 2


def test_a_gbk_share_answer_is_decoded(crawl: CrawlRunner, faulty: Any, mirror: Mirror,
                                       mongo_db: Database[dict[str, Any]]) -> None:
    faulty.add_fault(Fault(path=r"GetNewsText", charset="gbk", times=None))
    crawl("finews", args={"categories": "jingzhouribao"})
    truth = {r["_id"]: r for r in mirror.truth("articles") if "jingzhouribao" in r["categories"]}
    got = stored(mongo_db)
    assert sorted(got) == sorted(truth)
    # (An article also posted as rolling news has only its jingzhouribao page here.)
    for aid, record in truth.items():
        for name in ("title", "paragraphs", "body_kind", "source", "share_url"):
            assert got[aid][name] == record[name], (aid, name)


def test_404_share_links_keep_the_post_and_are_not_asked_again(
        crawl: CrawlRunner, faulty: Any, mirror: Mirror,
        mongo_db: Database[dict[str, Any]]) -> None:
    first = crawl("finews")
    missing = first.stats["newscrawl/share/not_found"]
    assert missing == len(mirror.manifest["cases"]["share_missing"]) > 0
    assert_truth_stored(mongo_db, mirror.truth("articles"))
    second = crawl("finews")
    assert second.stats.get("newscrawl/article_pages", 0) == 0


def test_a_redirect_loop_is_cut_and_the_rest_stored(
        crawl: CrawlRunner, faulty: Any, mongo_db: Database[dict[str, Any]]) -> None:
    faulty.add_fault(Fault(path=r"^/category/36ke\.html$", redirect_loop=True, times=None))
    result = crawl("finews", check=False)
    assert result.returncode == 0
    assert result.stats.get("redirect/max_reached", 0) + result.stats.get(
        "downloader/response_status_count/302", 0) > 0
    assert mongo_db["articles"].count_documents({}) > 0
