"""Incremental recrawls: never refetch the page of an article already stored.

The article id is in every article URL, so the decision is made before the
request is sent: a spider middleware drops requests for stored articles and
yields a ListingSighting instead, so the record still learns where it was
listed. Listing pages are always refetched. `-a refresh=1` turns it off.

A post page holds nothing the stored record lacks, so a stored article's
post page is skipped, unless the record has a rolling-news digest alone and
the page is a media-news post (its full text); a share-host request (the full
text) is skipped only when the record already has a full text.
A page already in `rejects` is skipped too: the same page fails the same
way (refresh=1 retries it, e.g. after a parser fix).

A listing that adds nothing to its record (the record has its category, tag
and URL, and its `last_seen_at` is not due to move) yields nothing at all.
What every stored record holds comes from the `StoredRecords` extension
(newscrawl.components.stored), asked at the first request the filter sees: it is
read once for the crawl, whoever asks first.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from itemadapter import ItemAdapter
from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response

from newscrawl.components.stored import StoredRecords, StoredSnapshot
from newscrawl.items import ListingSighting
from pipelines.records import last_seen_is_due, sighting_adds_nothing, sighting_from_listing

logger = logging.getLogger(__name__)

# Request meta naming the article a request fetches (set by the spiders).
ARTICLE_META = "newscrawl_article_id"
# Set on requests whose point is the full text (the share host's JSON).
FULL_TEXT_META = "newscrawl_wants_full_text"
# Set on post pages that carry a full text (media news): fetched for a digest-only article.
FULL_TEXT_PAGE_META = "newscrawl_page_has_full_text"
LISTING_META = "newscrawl_listing"  # {"category": …, "tag": …} of the listing that linked it
_DROPPED = object()  # _skip's answer for a request dropped with nothing in its place


def truthy(value: Any) -> bool:
    return str(value).strip().lower() not in ("", "0", "false", "no", "none")


class StoredArticleFilter:
    """Spider middleware: drops article requests whose article is stored with its full text."""

    def __init__(self, crawler: Crawler, stored_records: StoredRecords) -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.stored_records = stored_records
        self._stored: StoredSnapshot | None = None
        self._asked = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StoredArticleFilter:
        if not crawler.settings.getbool("NEWSCRAWL_INCREMENTAL", True):
            raise NotConfigured
        return cls(crawler, StoredRecords.of(crawler))

    def stored(self) -> StoredSnapshot | None:
        """What is stored, asked of StoredRecords at the first request; None (every article
        page is fetched) with refresh=1 or when the database cannot say."""
        if not self._asked:
            self._asked = True
            if truthy(getattr(self.crawler.spider, "refresh", "")):
                logger.info("refresh=1: stored articles are fetched again")
                return None
            self._stored = stored = self.stored_records.snapshot()
            if stored is not None:
                logger.info("%d stored articles will not be fetched again (%d of them digest-only, "
                            "whose share text still is)", len(stored.ids - stored.share_pending),
                            len(stored.digest_only - stored.share_pending))
        return self._stored

    def _filter(self, results: Iterable[Any]) -> Iterator[Any]:
        for result in results:
            yield from self._replace(result)

    def _replace(self, result: Any) -> Iterator[Any]:
        skipped = self._skip(result)
        if skipped is None:
            yield result
        elif skipped is not _DROPPED:
            yield skipped

    def _skip(self, result: Any) -> Any:
        """The ListingSighting standing for a dropped request, or None to keep the result."""
        if not isinstance(result, Request):
            return None
        stored = self.stored()
        if stored is None:
            return None
        # A share request is known by its page's URL (the item's), the one rejects record.
        page_url = getattr(result.cb_kwargs.get("item"), "url", None)
        if result.url in stored.final_reject_urls or page_url in stored.final_reject_urls:
            self.stats.inc_value("newscrawl/articles/skipped_rejected")
            return _DROPPED
        article_id = result.meta.get(ARTICLE_META)
        # A record whose share text failed to come has its page fetched again.
        if article_id not in stored.ids or article_id in stored.share_pending:
            return None
        wants_text = result.meta.get(FULL_TEXT_META) or result.meta.get(FULL_TEXT_PAGE_META)
        if wants_text and article_id in stored.digest_only:
            return None  # its rolling-news digest is all it has: this page has more
        self.stats.inc_value("newscrawl/articles/skipped_stored")
        if result.meta.get(FULL_TEXT_META):
            return _DROPPED  # a share answer is no listing: nothing to record but the skip
        listing = result.meta.get(LISTING_META) or {}
        sighting = ListingSighting(article_id=article_id, url=result.url,
                                   category=listing.get("category"),
                                   tags=[listing["tag"]] if listing.get("tag") else [],
                                   seen_at=datetime.now(UTC))
        known = stored.known.get(article_id)
        if (known is not None and not last_seen_is_due(known, sighting.seen_at)
                and sighting_adds_nothing(known, sighting_from_listing(ItemAdapter(sighting)))):
            self.stats.inc_value("newscrawl/articles/listings_known")
            return _DROPPED  # nothing for the record: no item, no read, no write
        return sighting

    def process_spider_output(self, response: Response, result: Iterable[Any],
                              spider: Spider | None = None) -> Iterator[Any]:
        return self._filter(result)

    async def process_spider_output_async(self, response: Response, result: AsyncIterator[Any],
                                          spider: Spider | None = None) -> AsyncIterator[Any]:
        async for item in result:
            for kept in self._replace(item):
                yield kept

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in start:
            for kept in self._replace(item):
                yield kept
