"""Incremental recrawls: never refetch an article already stored with its full text.

The article id is in every article URL, so the decision is made before the
request exists: a spider middleware drops requests for stored articles and
yields a ListingSighting instead, so the record still learns where it was
listed. Listing pages are always refetched. `-a refresh=1` turns it off.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response

from newscrawl.items import ListingSighting

logger = logging.getLogger(__name__)

# Request meta naming the article a request fetches (set by the spiders).
ARTICLE_META = "newscrawl_article_id"
LISTING_META = "newscrawl_listing"  # {"category": …, "tag": …} of the listing that linked it
FULL_TEXT_QUERY = {"body_kind": {"$ne": "digest"}}


def truthy(value: Any) -> bool:
    return str(value).strip().lower() not in ("", "0", "false", "no", "none")


class StoredArticleFilter:
    """Spider middleware: drops article requests whose article is stored with its full text."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.stored: set[str] = set()
        self.enabled = True

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StoredArticleFilter:
        if not crawler.settings.getbool("NEWSCRAWL_INCREMENTAL", True):
            raise NotConfigured
        middleware = cls(crawler)
        crawler.signals.connect(middleware.spider_opened, signal=signals.spider_opened)
        return middleware

    def spider_opened(self, spider: Spider) -> None:
        if truthy(getattr(spider, "refresh", "")):
            self.enabled = False
            logger.info("refresh=1: stored articles are fetched again")
            return
        from pipelines.mongo import database_uri
        from pipelines.storage import ArticleStore

        settings = self.crawler.settings
        store = ArticleStore.connect(database_uri(settings.get("MONGO_URI")),
                                     settings.get("MONGO_DATABASE"), settings.get("MONGO_COLLECTION"))
        try:
            self.stored = {doc["_id"] for doc in store.articles.find(FULL_TEXT_QUERY, {"_id": 1})}
        finally:
            store.close()
        logger.info("%d articles stored with their full text will not be fetched again",
                    len(self.stored))

    def _filter(self, results: Iterable[Any]) -> Iterator[Any]:
        for result in results:
            skipped = self._skip(result)
            yield skipped if skipped is not None else result

    def _skip(self, result: Any) -> Any:
        """The ListingSighting standing for a dropped request, or None to keep the result."""
        if not (self.enabled and isinstance(result, Request)):
            return None
        article_id = result.meta.get(ARTICLE_META)
        if article_id not in self.stored:
            return None
        if self.stats is not None:
            self.stats.inc_value("newscrawl/articles/skipped_stored")
        listing = result.meta.get(LISTING_META) or {}
        return ListingSighting(article_id=article_id, url=result.url,
                               category=listing.get("category"),
                               tags=[listing["tag"]] if listing.get("tag") else [],
                               seen_at=datetime.now(UTC))

    def process_spider_output(self, response: Response, result: Iterable[Any],
                              spider: Spider | None = None) -> Iterator[Any]:
        return self._filter(result)

    async def process_spider_output_async(self, response: Response, result: AsyncIterator[Any],
                                          spider: Spider | None = None) -> AsyncIterator[Any]:
        async for item in result:
            skipped = self._skip(item)
            yield skipped if skipped is not None else item

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in start:
            skipped = self._skip(item)
            yield skipped if skipped is not None else item
