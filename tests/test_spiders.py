"""The spiders end to end against the mirror: backfill, the feed, arguments, contracts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pymongo.database import Database

from fixtures.check import CONTRACT_FIELDS, compare
from tests.conftest import CrawlRunner, Mirror
from tests.helpers import PROJECT_ROOT, assert_truth_stored, stored

pytestmark = pytest.mark.integration
SHANGHAI = ZoneInfo("Asia/Shanghai")


def share_payload(mirror: Mirror, info_code: str) -> dict[str, Any]:
    path = mirror.root / "finews.zning.xyz" / "NewsData" / "GetNewsText" / f"{info_code}.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def shanghai_day(record: dict[str, Any]) -> date:
    published = datetime.strptime(record["published_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return published.astimezone(SHANGHAI).date()


def test_share_backfills_unlisted_articles_from_an_ids_file(
        crawl: CrawlRunner, mirror: Mirror, mongo_db: Database[dict[str, Any]],
        tmp_path: Path) -> None:
    codes = mirror.manifest["unlisted_info_codes"]
    # Both spellings of an id, a comment and a blank line: all accepted.
    lines = [code if n % 2 else code[2:] for n, code in enumerate(codes)]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("# unlisted articles\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    crawl("share", args={"ids_file": str(ids_file)})
    truth = {record["_id"]: record for record in mirror.truth("unlisted")}
    assert stored(mongo_db) == truth
    share_rejects = {r["url"] for r in mirror.truth("rejects") if r["scope"] == "share"}
    assert {r["url"] for r in mongo_db["rejects"].find()} == share_rejects


def test_share_from_db_gives_digest_only_articles_their_full_text(
        crawl: CrawlRunner, mirror: Mirror, mongo_db: Database[dict[str, Any]]) -> None:
    crawl("finews")
    backfill = {record["_id"]: record for record in mirror.truth("digest_backfill")}
    assert backfill, "the mirror has digest-only articles with a share text"
    before = stored(mongo_db)
    assert all(before[aid]["body_kind"] == "digest" for aid in backfill)
    result = crawl("share", args={"from_db": "1"})
    after = stored(mongo_db)
    backfilled = compare(backfill.values(), mongo_db["articles"].find({"_id": {"$in": list(backfill)}}))
    assert backfilled.ok, backfilled.mismatched
    # A share answer with its own time proves it: only those without one stay unproven.
    no_time = {aid for aid in backfill
               if "showtime" not in share_payload(mirror, backfill[aid]["info_code"])}
    assert set(backfilled.unproven) <= no_time
    # Everything else is as the first crawl left it.
    assert {aid: doc for aid, doc in after.items() if aid not in backfill} == {
        aid: doc for aid, doc in before.items() if aid not in backfill}
    assert result.stats["newscrawl/articles/updated"] == len(backfill)


def test_since_until_keep_only_those_days(crawl: CrawlRunner, mirror: Mirror,
                                          mongo_db: Database[dict[str, Any]]) -> None:
    day = date(2021, 12, 30)
    crawl("finews", args={"since": day.isoformat(), "until": day.isoformat()})
    expected = {r["_id"] for r in mirror.truth("articles") if shanghai_day(r) == day}
    got = stored(mongo_db)
    assert expected and sorted(got) == sorted(expected)
    assert all(shanghai_day(record) == day for record in got.values())


def test_categories_argument_crawls_only_those(crawl: CrawlRunner, mirror: Mirror,
                                               mongo_db: Database[dict[str, Any]]) -> None:
    wanted = {"jingzhouribao", "emnews"}
    result = crawl("finews", args={"categories": ",".join(sorted(wanted))})
    expected = {r["_id"] for r in mirror.truth("articles") if wanted & set(r["categories"])}
    got = stored(mongo_db)
    assert sorted(got) == sorted(expected)
    assert all(set(record["categories"]) <= wanted for record in got.values())
    assert result.stats["newscrawl/listing_pages"] == len(wanted)


def test_limit_stops_after_n_articles(crawl: CrawlRunner, mongo_db: Database[dict[str, Any]]) -> None:
    result = crawl("finews", args={"limit": "7"})
    assert result.stats["item_scraped_count"] + result.stats.get("item_dropped_count", 0) == 7
    assert mongo_db["articles"].count_documents({}) == result.stats["newscrawl/articles/stored"] <= 7


def test_feed_follows_its_entries(crawl: CrawlRunner, mirror: Mirror,
                                  mongo_db: Database[dict[str, Any]]) -> None:
    feed = (mirror.root / "finews.withounder.com" / "feed.xml").read_text(encoding="utf-8")
    links = set(re.findall(r'<link href="([^"]*?/(?:NW)?\d{18}\.html)"', feed))
    ids = {link[-23:-5].removeprefix("NW")[-18:] for link in links}
    assert len(ids) >= 5
    crawl("feed")
    truth = {r["_id"]: r for r in mirror.truth("articles")}
    got = stored(mongo_db)
    assert set(got) == ids & set(truth)
    # An article also posted elsewhere (a rolling-news twin) is only partly in the feed.
    whole = [aid for aid in got if set(truth[aid]["urls"]) <= links]
    assert len(whole) >= 3
    for aid in whole:
        for name in ("title", "paragraphs", "source", "source_slug", "body_kind", "categories",
                     "tags", "urls"):
            assert got[aid][name] == truth[aid][name], (aid, name)


def test_scrapy_check_contracts_pass_against_the_mirror(crawl: CrawlRunner) -> None:
    proc = subprocess.run([sys.executable, "-m", "scrapy", "check", "-v"], env=crawl.env(),
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert re.search(r"Ran (\d+) contracts", output)
    assert int(re.search(r"Ran (\d+) contracts", output)[1]) >= 8  # type: ignore[index]


def test_bad_arguments_fail_with_one_clear_line(crawl: CrawlRunner) -> None:
    result = crawl("finews", args={"since": "2021-13-01"}, check=False)
    assert result.returncode != 0 or "expected YYYY-MM-DD" in result.log
    assert "expected YYYY-MM-DD" in result.log


def test_corpus_post_becomes_the_documented_record(crawl: CrawlRunner,
                                                   mongo_db: Database[dict[str, Any]]) -> None:
    crawl("finews", args={"categories": "jingzhouribao"})
    doc = mongo_db["articles"].find_one({"_id": "202112312232339262"})
    assert doc is not None
    assert doc["info_code"] == "NW202112312232339262"
    assert doc["published_at"] == datetime(2021, 12, 31, 0, 58, 25, tzinfo=UTC)
    assert (doc["source"], doc["source_slug"]) == ("荆州日报", "jingzhouribao")
    assert doc["categories"] == ["jingzhouribao"]
    assert len(doc["paragraphs"]) == 20
    assert doc["paragraphs"][0].startswith("本报讯(记者李天然夏雨彬特约记者张星星)12月30日上午")
    assert doc["paragraphs"][-1].startswith("大舸中流下，青山两岸移。")
    for banned in ("文章来源", "返回", "NewsShare"):
        assert not any(banned in p for p in doc["paragraphs"])
    assert doc["text"] == "\n".join(doc["paragraphs"])
    assert set(CONTRACT_FIELDS) <= set(doc)


def test_small_batches_store_the_same_records(crawl: CrawlRunner, mirror: Mirror,
                                              mongo_db: Database[dict[str, Any]]) -> None:
    # Batches fill long before the flush timer: full batches are written as the crawl goes
    # (each write takes all that is buffered, so there are fewer writes than batches of 7),
    # not all at the close.
    result = crawl("finews", settings={"MONGO_BATCH_SIZE": "7", "MONGO_FLUSH_INTERVAL": "60"})
    assert_truth_stored(mongo_db, mirror.truth("articles"))
    assert result.stats["newscrawl/storage/batches"] > 2


def test_a_post_item_carries_the_article_id_and_the_share_code() -> None:
    from scrapy.http import HtmlResponse, Request

    from newscrawl.parsers import PostPage
    from newscrawl.spiders.base import post_item

    share = "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202112302000000001"
    html = (f'<section><small>2021-12-31 04:00:00</small><h1>标题</h1><p>正文</p>'
            f'<p><a href="{share}">{share}</a></p><small>tags: <em>Wind新闻</em></small></section>')

    def item_of(url: str, body: str) -> Any:
        response = HtmlResponse(url, body=body.encode(), encoding="utf-8", request=Request(url))
        return post_item(response, PostPage.parse(response.selector, url))

    media = item_of("https://finews.withounder.com/wind/2021/12/31/NW202112302000000001.html", html)
    assert (media.article_id, media.share_code, media.share_url) == (
        "202112302000000001", "NW202112302000000001", share)
    rolling = item_of("https://finews.withounder.com/emnews/2021/12/31/202112302000000002.html",
                      html.replace(f'<p><a href="{share}">{share}</a></p>', ""))
    assert (rolling.article_id, rolling.share_code, rolling.share_url) == (
        "202112302000000002", None, None)
    # A URL without a valid id gives none (IdentityPipeline rejects the item).
    nameless = item_of("https://finews.withounder.com/wind/2021/12/31/NW202113992000000001.html", html)
    assert nameless.article_id is None


@pytest.mark.parametrize("first", ["spider", "filter"])
def test_the_spider_and_the_incremental_filter_share_one_read_whoever_asks_first(
        first: str, mongo_uri: str, mongo_db: Database[dict[str, Any]]) -> None:
    from scrapy.utils.test import get_crawler

    from newscrawl.components.incremental import StoredArticleFilter
    from newscrawl.components.stored import StoredRecords
    from newscrawl.spiders.finews import FinewsSpider
    from pipelines.storage import ArticleStore, ensure_indexes
    from tests.helpers import T0, sighting

    ensure_indexes(mongo_db, "articles", "rejects")
    ArticleStore(mongo_db).write([
        sighting("media", ["甲"], category="Wind"),
        sighting("media", ["乙"], _id="202112312232330002", info_code="NW202112312232330002",
                 category="jingzhouribao",
                 url="https://finews.withounder.com/jingzhouribao/2021/12/31/NW202112312232330002.html"),
        sighting("digest", ["丙"], _id="202112312232330003", info_code="202112312232330003",
                 category="emnews", url="https://finews.withounder.com/emnews/2021/12/31/202112312232330003.html"),
    ], now=T0)
    crawler = get_crawler(FinewsSpider, {"MONGO_URI": mongo_uri, "MONGO_DATABASE": mongo_db.name,
                                         "EXTENSIONS": {StoredRecords: 0}})
    crawler.spider = spider = FinewsSpider.from_crawler(crawler)
    incremental = StoredArticleFilter.from_crawler(crawler)
    asked_first = spider.stored_categories() if first == "spider" else incremental.stored()
    assert asked_first
    # What was read is read once for the crawl: the database is not asked again.
    mongo_db["articles"].drop()
    stored = incremental.stored()
    assert stored is not None and stored is StoredRecords.of(crawler).snapshot()
    assert stored.ids == {"202112312232339262", "202112312232330002", "202112312232330003"}
    assert stored.digest_only == {"202112312232330003"}
    assert spider.stored_categories() == ["Wind", "emnews", "jingzhouribao"]
    assert crawler.stats.get_value("newscrawl/stored_records/read") == 3


def test_without_the_stored_records_extension_the_incremental_filter_says_so() -> None:
    from scrapy.utils.test import get_crawler

    from newscrawl.components.incremental import StoredArticleFilter

    with pytest.raises(RuntimeError, match=r"StoredRecords is not enabled \(EXTENSIONS\)"):
        StoredArticleFilter.from_crawler(get_crawler(settings_dict={"EXTENSIONS": {}}))
