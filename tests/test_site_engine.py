"""What Jekyll does to the pages, crawled: shifted times, categories as written, old records.

The mirror is rendered by Debian's jekyll (fixtures/jekyll.py); the ground truth
says what the posts mean (the writer's time, the category as written).
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest
from pymongo.database import Database

from fixtures.check import compare
from tests.conftest import CrawlRunner, Mirror
from tests.helpers import assert_truth_stored

pytestmark = pytest.mark.integration

SPACED = "21shijijingjibaodao 21caijingAPP"

# Writer's time (2021-12-30, Shanghai) -> case -> the proof the crawl must find, or None
# where nothing of the article itself tells: then the article counter may prove it (from
# its neighbours), else the page's 8-hour-late time is kept and said unproven.
EXPECTED_PROOF: dict[str, dict[str, str | None]] = {
    "00:00": {"rolling_alone": None, "media_alone": None, "media_with_share_time": "share",
              "media_and_rolling_twin": "id_day"},
    "15:59": {"rolling_alone": None, "media_alone": None, "media_with_share_time": "share",
              "media_and_rolling_twin": "twin"},
    "16:00": {"rolling_alone": "id_day", "media_alone": "id_day",
              "media_with_share_time": "share", "media_and_rolling_twin": "id_day"},
    "23:59": {"rolling_alone": "id_day", "media_alone": "id_day",
              "media_with_share_time": "share", "media_and_rolling_twin": "id_day"},
}


@pytest.fixture
def crawled(crawl: CrawlRunner) -> Any:
    return crawl("finews")


def by_id(db: Database[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["_id"]: doc for doc in db["articles"].find()}


def test_offset_less_times_are_proven_where_the_pages_tell(
        crawled: Any, mirror: Mirror, mongo_db: Database[dict[str, Any]]) -> None:
    truth = {r["_id"]: r for r in mirror.truth("articles")}
    docs = by_id(mongo_db)
    shifted = mirror.manifest["cases"]["shifted_times"]
    assert set(shifted) == set(EXPECTED_PROOF)
    for label, cases in shifted.items():
        for case, article_id in cases.items():
            doc, expected = docs[article_id], truth[article_id]
            proof = EXPECTED_PROOF[label][case]
            written = f"{doc['published_at'].astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
            if proof is None and doc["published_at_proof"] == "counter":
                assert written == expected["published_at"], (label, case)
            elif proof is None:
                assert doc["published_at_proof"] == "unproven", (label, case)
                late = doc["published_at"] - timedelta(hours=8)
                assert f"{late:%Y-%m-%dT%H:%M:%SZ}" == expected["published_at"], (label, case)
            else:
                assert (doc["published_at_proof"], written) == (
                    proof, expected["published_at"]), (label, case)
    # Shown on the next day: moved back, and said so.
    for label in ("16:00", "23:59"):
        assert docs[shifted[label]["rolling_alone"]]["published_at_shifted"] is True
    assert docs[shifted["00:00"]["media_and_rolling_twin"]]["published_at_shifted"] is False
    assert crawled.stats["newscrawl/date/shifted"] > 0


def test_since_and_until_use_the_writers_day(crawl: CrawlRunner, mirror: Mirror,
                                            mongo_db: Database[dict[str, Any]]) -> None:
    # Posts written on 2021-12-30 at 16:00 and 23:59 without an offset are shown (and their
    # URLs dated) on the 31st: they are still of the 30th.
    crawl("finews", args={"since": "2021-12-30", "until": "2021-12-30"})
    shifted = mirror.manifest["cases"]["shifted_times"]
    docs = by_id(mongo_db)
    for label in ("16:00", "23:59"):
        article_id = shifted[label]["rolling_alone"]
        assert article_id in docs and "/2021/12/31/" in docs[article_id]["urls"][0]
    assert all(article_id.startswith("20211230") for article_id in docs)


def test_categories_are_the_names_as_written(crawled: Any, mirror: Mirror,
                                            mongo_db: Database[dict[str, Any]]) -> None:
    truth = {r["_id"]: r for r in mirror.truth("articles")}
    docs = by_id(mongo_db)
    for name in ("Wind", SPACED):
        expected = {aid for aid, r in truth.items() if name in r["categories"]}
        got = {aid for aid, doc in docs.items() if name in doc["categories"]}
        assert got == expected and len(expected) > 5  # more than home lists
    wind = next(d for d in docs.values() if d["categories"] == ["Wind"])
    assert wind["tags"] == ["Wind新闻"] and "/wind/" in wind["urls"][0]
    spaced = next(d for d in docs.values() if d["categories"] == [SPACED])
    assert spaced["tags"] == ["21世纪经济报道 21财经APP新闻"]
    assert "/21shijijingjibaodao/21caijingapp/" in spaced["urls"][0]
    assert not any("wind" in doc["categories"] for doc in docs.values())


def test_category_pages_are_reached_through_the_sites_own_links(
        crawl: CrawlRunner, mirror: Mirror, mirror_server: Any,
        mongo_db: Database[dict[str, Any]]) -> None:
    mirror_server.clear_requests()
    crawl("finews")
    asked = [(host, path, status) for host, path, status in mirror_server.requests
             if host == "finews.withounder.com"]
    # Never a category page made up from a post's path (/category/wind.html): no 404 at all.
    assert [entry for entry in asked if entry[2] != 200] == []
    pages = {path for _, path, _ in asked if path.startswith("/category/")}
    assert "/category/Wind.html" in pages
    assert "/category/21shijijingjibaodao%2021caijingAPP.html" in pages
    assert len(pages) == len(mirror.manifest["categories"])
    # Wind's oldest posts are listed by its category page alone (home shows 5 per tag).
    home = (mirror.root / "finews.withounder.com" / "index.html").read_text(encoding="utf-8")
    wind_docs = [d for d in by_id(mongo_db).values() if "Wind" in d["categories"]]
    only_on_its_page = [d for d in wind_docs
                        if d["urls"][0].removeprefix("https://finews.withounder.com") not in home]
    assert only_on_its_page


@pytest.mark.parametrize("given", ["Wind", "wind", "WIND"])
def test_categories_argument_in_any_case(given: str, crawl: CrawlRunner, mirror: Mirror,
                                         mongo_db: Database[dict[str, Any]]) -> None:
    crawl("finews", args={"categories": given})
    expected = {r["_id"] for r in mirror.truth("articles") if "Wind" in r["categories"]}
    got = by_id(mongo_db)
    assert set(got) == expected
    assert all("Wind" in doc["categories"] for doc in got.values())


@pytest.mark.parametrize("given", [SPACED, "21shijijingjibaodao/21caijingapp",
                                   "21SHIJIJINGJIBAODAO 21caijingapp"])
def test_categories_argument_with_a_space_or_its_path_form(
        given: str, crawl: CrawlRunner, mirror: Mirror,
        mongo_db: Database[dict[str, Any]]) -> None:
    crawl("finews", args={"categories": given})
    expected = {r["_id"] for r in mirror.truth("articles") if SPACED in r["categories"]}
    assert set(by_id(mongo_db)) == expected


def test_a_refresh_rerun_corrects_records_stored_before(
        crawl: CrawlRunner, mirror: Mirror, mongo_db: Database[dict[str, Any]]) -> None:
    crawl("finews")
    articles = mongo_db["articles"]
    shifted = articles.find({"published_at_shifted": True})
    old_style = [doc["_id"] for doc in shifted]
    assert old_style
    # What the crawler stored before this change: the page's time, no proof, `wind`.
    for article_id in old_style:
        doc = articles.find_one({"_id": article_id})
        assert doc is not None
        articles.update_one({"_id": article_id}, {
            "$set": {"published_at": doc["published_at"] + timedelta(hours=8)},
            "$unset": {"published_at_proof": "", "published_at_shifted": ""}})
    articles.update_many({"categories": "Wind"}, {"$set": {"categories": ["wind"]}})
    assert not compare(mirror.truth("articles"), articles.find()).ok

    plain = crawl("finews")  # incremental: stored articles are not fetched again
    assert plain.stats.get("newscrawl/article_pages", 0) == 0
    result = crawl("finews", args={"refresh": "1"})
    assert result.stats["newscrawl/article_pages"] > 0
    comparison = assert_truth_stored(mongo_db, mirror.truth("articles"))
    assert set(old_style) <= set(comparison.corrected)
