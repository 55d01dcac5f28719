"""`share`: articles by id from the share host alone, for backfill.

The share host answers for old articles too, so this is the way to store
what the aggregator no longer lists, and to give a full text to articles
stored with a rolling-news digest only.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import scrapy
from scrapy.http import Response
from twisted.python.failure import Failure

from newscrawl.components.incremental import truthy
from newscrawl.items import ArticleItem
from newscrawl.spiders.base import NewsSpider, share_page_url, split_list
from pipelines.identity import InvalidArticleId, check_article_id, info_code
from pipelines.mongo import store_from_settings
from pipelines.storage import ArticleStore

SHANGHAI = ZoneInfo("Asia/Shanghai")
ID_PATTERN = re.compile(r"^(?:NW)?(\d{18})$", re.IGNORECASE)


def normalise_ids(values: list[str]) -> list[str]:
    """18-digit ids starting with a date, with or without their `NW` prefix, in order, each once."""
    ids: dict[str, None] = {}
    for value in values:
        match = ID_PATTERN.match(value.strip())
        try:
            ids.setdefault(check_article_id(match[1] if match else None), None)
        except InvalidArticleId:
            raise ValueError(f"{value!r} is not an article id (18 digits starting with a date, "
                             "optionally NW-prefixed)") from None
    return list(ids)


def read_ids_file(path: str) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class ShareSpider(NewsSpider):
    """Share JSON by id.

    Arguments: ids=NW…,…  ids_file=PATH (one id a line)
               from_db=1 with since/until: stored articles whose body is a digest only
    """

    name = "share"
    allowed_domains = ["finews.zning.xyz"]

    def __init__(self, *args: Any, ids: str | None = None, ids_file: str | None = None,
                 from_db: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        wanted = split_list(ids)
        if ids_file:
            wanted += read_ids_file(ids_file)
        self.ids = normalise_ids(wanted)
        self.from_db = truthy(from_db or "")
        # Headlines of the stored articles asked for, by id: a share answer
        # often lacks title and time, which a stored article already has.
        self.stored_headlines: dict[str, dict[str, Any]] = {}

    async def start(self) -> AsyncIterator[scrapy.Request]:
        if not self.ids and not self.from_db:
            self.logger.error("share: give ids=NW…,…, ids_file=PATH or from_db=1")
            return
        store = self.open_store()
        try:
            ids = list(self.ids)
            if self.from_db:
                known = set(ids)
                ids += [aid for aid in self.digest_only_ids(store) if aid not in known]
            for doc in store.articles.find({"_id": {"$in": ids}},
                                           {"title": 1, "published_at_raw": 1}):
                self.stored_headlines[doc["_id"]] = doc
        finally:
            store.close()
        self.crawler.stats.set_value("newscrawl/share/ids", len(ids))
        for article_id in ids:
            if self.limit_reached():
                return
            code = info_code(article_id)
            stored = self.stored_headlines.get(article_id, {})
            item = ArticleItem(url=share_page_url(code), page_kind="share",
                               fetched_at=datetime.now(UTC), article_id=article_id,
                               share_code=code, share_url=share_page_url(code),
                               title=stored.get("title"),
                               date_raw=stored.get("published_at_raw"))
            yield self.share_request(code, item, article=article_id)

    def open_store(self) -> ArticleStore:
        return store_from_settings(self.crawler.settings)

    def share_failed(self, failure: Failure) -> Iterator[ArticleItem]:
        item: ArticleItem = failure.request.cb_kwargs["item"]  # type: ignore[attr-defined]
        if item.article_id in self.stored_headlines:
            # A stored article the share host cannot give: nothing is lost, nothing to reject.
            self.crawler.stats.inc_value("newscrawl/share/missing")
            return
        yield from super().share_failed(failure)

    def digest_only_ids(self, store: ArticleStore) -> list[str]:
        """Stored articles in since/until (Shanghai days) whose body is a digest only."""
        query: dict[str, Any] = {"body_kind": "digest"}
        bounds: dict[str, datetime] = {}
        if self.since:
            bounds["$gte"] = datetime.combine(self.since, time(), SHANGHAI).astimezone(UTC)
        if self.until:
            end = datetime.combine(self.until + timedelta(days=1), time(), SHANGHAI)
            bounds["$lt"] = end.astimezone(UTC)
        if bounds:
            query["published_at"] = bounds
        return [doc["_id"] for doc in store.articles.find(query, {"_id": 1}).sort("_id", 1)]

    def parse(self, response: Response, **kwargs: Any) -> Any:
        return self.parse_share(response, kwargs["item"])

    def parse_share(self, response: Response, item: ArticleItem) -> Iterator[ArticleItem]:
        """One share answer as an article.

        @url http://finews.zning.xyz/NewsData/GetNewsText.do?id=NW202112312232339262
        @cb_kwargs {"item": {"url": "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202112312232339262", "page_kind": "share", "fetched_at": "2021-12-31T01:00:00+00:00", "article_id": "202112312232339262", "share_code": "NW202112312232339262"}}
        @returns items 1 1
        """
        if isinstance(item, dict):  # from a contract's @cb_kwargs
            item = ArticleItem(**{**item, "fetched_at": datetime.fromisoformat(item["fetched_at"])})
        yield from super().parse_share(response, item)
