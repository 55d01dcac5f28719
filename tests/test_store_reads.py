"""ArticleStore's read methods, the ones the spiders and the incremental filter ask, against the
real server: what they return, and that the spiders' point reads are answered from an index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.database import Database

from newscrawl.components.stored import read_store
from newscrawl.ops.query import plan_uses_index
from pipelines.storage import ArticleStore, ensure_indexes
from tests.helpers import T0, other_article, sighting

DAY = datetime(2021, 12, 30, 16, tzinfo=UTC)  # 2021-12-31 00:00 in Shanghai


@pytest.fixture
def store(mongo_db: Database[dict[str, Any]]) -> ArticleStore:
    ensure_indexes(mongo_db, "articles", "rejects")
    return ArticleStore(mongo_db)


def digest(aid: str, published: datetime, **extra: Any) -> dict[str, Any]:
    return sighting("digest", [f"快讯 {aid}"], _id=aid, info_code=aid, published_at=published,
                    url=f"https://finews.withounder.com/emnews/2021/12/31/{aid}.html",
                    category="emnews", tag="滚动新闻", **extra)


def plan_of(store: ArticleStore, query: dict[str, Any]) -> bool | None:
    explain = store.db.command("explain", {"find": store.articles.name, "filter": query,
                                           "projection": {"_id": 1}})
    return plan_uses_index(explain)


def test_headlines_of_the_stored_ids_among_those_asked(store: ArticleStore) -> None:
    store.write([other_article("202112312232330001", ["甲"], DAY),
                 other_article("202112312232330002", ["乙"], DAY)], now=T0)
    asked = ["202112312232330002", "202112312232339999", "202112312232330001"]
    raw = "(GMT+8, Asia/Shanghai, CST) 2021-12-31 08:58:25"
    assert store.headlines(asked) == {aid: {"_id": aid, "title": "标题", "published_at_raw": raw}
                                      for aid in ("202112312232330001", "202112312232330002")}
    assert store.headlines([]) == {}
    assert plan_of(store, {"_id": {"$in": asked}}) in (True, None)  # None: a server whose plan we cannot read


def test_digest_only_ids_within_the_bounds_in_id_order(store: ArticleStore) -> None:
    store.write([digest("202112312232330003", DAY + timedelta(hours=1)),
                 digest("202112312232330001", DAY + timedelta(hours=23)),
                 digest("202112302232330002", DAY - timedelta(minutes=1)),  # the day before
                 digest("202201012232330004", DAY + timedelta(days=1)),  # the next day: excluded
                 other_article("202112312232330005", ["全文"], DAY + timedelta(hours=2))], now=T0)
    day = {"since": DAY, "until": DAY + timedelta(days=1)}
    assert store.digest_only_ids(**day) == ["202112312232330001", "202112312232330003"]
    assert store.digest_only_ids(since=DAY) == [
        "202112312232330001", "202112312232330003", "202201012232330004"]
    assert store.digest_only_ids() == [
        "202112302232330002", "202112312232330001", "202112312232330003", "202201012232330004"]
    query = {"body_kind": "digest", "published_at": {"$gte": DAY, "$lt": DAY + timedelta(days=1)}}
    assert plan_of(store, query) in (True, None)


def test_what_a_rerun_decides_from(store: ArticleStore) -> None:
    store.write([digest("202112312232330001", DAY),
                 other_article("202112312232330002", ["全文"], DAY),
                 other_article("202112312232330003", ["待补"], DAY) | {"share_pending": True}], now=T0)
    store.write_rejects([
        {"url": "https://finews.withounder.com/x/a.html", "reason": "missing title",
         "retryable": False, "rejected_at": T0},
        {"url": "https://finews.withounder.com/x/b.html", "reason": "share 503",
         "retryable": True, "rejected_at": T0},
        {"url": None, "reason": "no url", "rejected_at": T0}])
    summaries = {doc["_id"]: doc for doc in store.record_summaries()}
    assert set(summaries) == {"202112312232330001", "202112312232330002", "202112312232330003"}
    assert summaries["202112312232330001"]["body_kind"] == "digest"
    assert summaries["202112312232330001"]["categories"] == ["emnews"]
    assert summaries["202112312232330003"]["share_pending"] is True
    assert not summaries["202112312232330002"].get("share_pending")
    assert set(summaries["202112312232330002"]) == {
        "_id", "categories", "tags", "urls", "last_seen_at", "body_kind", "share_pending"}
    assert store.final_reject_urls() == {"https://finews.withounder.com/x/a.html"}


def test_read_store_answers_none_when_the_database_cannot(
        mongo_uri: str, store: ArticleStore, caplog: pytest.LogCaptureFixture) -> None:
    from pymongo.errors import OperationFailure
    from scrapy.settings import Settings

    settings = Settings({"MONGO_URI": mongo_uri, "MONGO_DATABASE": store.db.name})
    assert read_store(settings, ArticleStore.stored_categories, "stored categories", "-") == []

    def refused(reader: ArticleStore) -> Any:  # a command the server refuses
        return reader.db.command("noSuchCommand")

    with pytest.raises(OperationFailure):
        refused(store)
    assert read_store(settings, refused, "stored categories", "starting from home alone") is None
    assert read_store(Settings({"MONGO_URI": ""}), ArticleStore.stored_categories,
                      "stored categories", "starting from home alone") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert all(w.startswith("stored categories unknown (") and w.endswith("starting from home alone")
               for w in warnings)
