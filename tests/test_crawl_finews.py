"""End to end: the finews spider crawls the mirror into the real database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from pymongo.database import Database

from fixtures.check import compare
from tests.helpers import crawl_listing_pages

pytestmark = pytest.mark.integration

REAL_HOSTS = {"finews.withounder.com", "finews.zning.xyz"}


def urls_in(value: Any) -> Iterator[str]:
    if isinstance(value, str) and value.startswith(("http://", "https://", "//")):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from urls_in(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from urls_in(inner)


@pytest.fixture
def crawled(crawl: Any, mongo_db: Database[dict[str, Any]]) -> Any:
    return crawl("finews")


def test_one_crawl_stores_exactly_the_ground_truth(crawled: Any, mirror: Any,
                                                   mongo_db: Database[dict[str, Any]]) -> None:
    truth = mirror.truth("articles")
    comparison = compare(truth, mongo_db["articles"].find())
    assert (comparison.missing, comparison.extra, comparison.mismatched) == ([], [], {})
    # Every time the pages prove is the writer's; the rest say they are unproven.
    assert comparison.corrected and comparison.unproven_late
    assert set(comparison.unproven_late) <= set(comparison.unproven)
    assert crawled.stats["newscrawl/articles/stored"] == len(truth)


def test_unreadable_posts_land_in_rejects_with_a_reason(crawled: Any, mirror: Any,
                                                        mongo_db: Database[dict[str, Any]]) -> None:
    expected = [r for r in mirror.truth("rejects") if r["scope"] == "crawl"]
    rejects = list(mongo_db["rejects"].find())
    assert {r["url"] for r in rejects} == {r["url"] for r in expected}
    for reject in rejects:
        assert reject["reason"]
        assert reject["raw"]["url"] == reject["url"]


def test_every_stored_url_names_the_real_host(crawled: Any, mongo_db: Database[dict[str, Any]],
                                              mirror_server: Any) -> None:
    seen_hosts: set[str] = set()
    for collection in ("articles", "rejects"):
        for doc in mongo_db[collection].find():
            for url in urls_in(doc):
                seen_hosts.add(urlsplit(url if "//" in url[:8] else "https:" + url).hostname or "")
    mirror_hosts = {urlsplit(base).netloc for base in mirror_server.host_map.values()}
    assert seen_hosts >= REAL_HOSTS
    assert not any("127.0.0.1" in host or host in mirror_hosts for host in seen_hosts)
    # And the crawl really went through the mirror.
    assert crawled.stats["newscrawl/hostmap/requests"] > 0


def test_a_second_crawl_stores_nothing_new(crawl: Any, mirror: Any,
                                           mongo_db: Database[dict[str, Any]]) -> None:
    crawl("finews")
    before = {doc["_id"]: doc for doc in mongo_db["articles"].find()}
    second = crawl("finews")
    after = {doc["_id"]: doc for doc in mongo_db["articles"].find()}
    assert second.stats.get("newscrawl/articles/stored", 0) == 0
    assert second.stats.get("newscrawl/articles/updated", 0) == 0
    # Decided before sending: not one article page was downloaded, only listings.
    assert second.stats.get("newscrawl/article_pages", 0) == 0
    assert second.stats["newscrawl/articles/skipped_stored"] >= len(after)
    assert second.stats["newscrawl/listing_pages"] == crawl_listing_pages(mirror)
    assert sorted(after) == sorted(before) == sorted(r["_id"] for r in mirror.truth("articles"))
    for aid, doc in after.items():
        assert doc["revision"] == before[aid]["revision"]
        assert doc["content_hash"] == before[aid]["content_hash"]
    # The listings added nothing: no record was written (last_seen_at moves only after an hour);
    # the incremental filter judged them from what it read at the start and yielded no item.
    assert after == before
    assert second.stats["newscrawl/articles/listings_known"] >= len(after)
    assert second.stats.get("newscrawl/articles/unchanged", 0) == 0
    # One read of the stored records at the start, shared by the spider (the categories it
    # starts from), the filter and the storage.
    assert second.stats["newscrawl/stored_records/read"] == len(after)
    assert second.stats["newscrawl/stored_records/handed_to_storage"] == 1


def test_a_database_slower_than_the_crawl_holds_items_back_and_loses_none(
        crawl: Any, mirror: Any, mongo_db: Database[dict[str, Any]]) -> None:
    # Two articles may wait in memory while a write runs: the crawl must wait on the
    # database and still store every article once.
    result = crawl("finews", settings={"MONGO_BATCH_SIZE": "2", "MONGO_MAX_PENDING": "2",
                                       "CONCURRENT_REQUESTS": "32", "CONCURRENT_REQUESTS_PER_DOMAIN": "32"})
    truth = mirror.truth("articles")
    assert compare(truth, mongo_db["articles"].find()).ok
    assert result.stats["newscrawl/articles/stored"] == len(truth)
    assert result.stats["newscrawl/storage/items_waited"] > 0
    assert result.stats["finish_reason"] == "finished"


def test_a_rerun_adds_the_categories_listings_bring_and_skips_the_rest(
        crawl: Any, mirror: Any, mongo_db: Database[dict[str, Any]]) -> None:
    truth = {r["_id"]: r for r in mirror.truth("articles")}
    several = sorted((r for r in truth.values() if len(r["categories"]) > 1), key=lambda r: r["_id"])
    assert several, "the mirror lists some articles in several categories"
    first_category = several[0]["categories"][0]
    crawl("finews", args={"categories": first_category})
    partial = {doc["_id"]: doc for doc in mongo_db["articles"].find()}
    assert partial[several[0]["_id"]]["categories"] == [first_category]
    second = crawl("finews")
    after = {doc["_id"]: doc for doc in mongo_db["articles"].find()}
    # Listings of stored articles in other categories were written; the same listings again
    # (the first category's) yielded nothing.
    for aid in partial:
        assert after[aid]["categories"] == sorted(truth[aid]["categories"])
    assert second.stats["newscrawl/articles/listings_known"] > 0
    assert second.stats["newscrawl/articles/unchanged"] > 0
