"""`feed`: the aggregator's Atom feed, the cheap way to poll for new posts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Response

from newscrawl.parsers.aggregator import parse_post_url
from newscrawl.spiders.base import AGGREGATOR, NewsSpider, as_text

ATOM = {"atom": "http://www.w3.org/2005/Atom"}


class FeedSpider(NewsSpider):
    """/feed.xml -> its entries' post pages -> share JSON of media news.

    Arguments: since=YYYY-MM-DD  until=YYYY-MM-DD  limit=N
    """

    name = "feed"
    allowed_domains = ["finews.withounder.com", "finews.zning.xyz"]

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield scrapy.Request(f"{AGGREGATOR}/feed.xml", callback=self.parse_feed, dont_filter=True)

    def parse(self, response: Response, **kwargs: Any) -> Any:
        return self.parse_feed(response)

    def parse_feed(self, response: Response) -> Iterator[scrapy.Request]:
        """The feed's entries, newest first.

        @url https://finews.withounder.com/feed.xml
        @returns requests 1
        @returns items 0 0
        """
        self.crawler.stats.inc_value("newscrawl/listing_pages")
        selector = scrapy.Selector(as_text(response), type="xml")
        selector.register_namespace("atom", ATOM["atom"])
        for entry in selector.xpath("//atom:entry"):
            href = entry.xpath("atom:link[@rel='alternate']/@href | atom:link[not(@rel)]/@href").get()
            if not href:
                continue
            try:
                url = response.urljoin(href)
                where = parse_post_url(url)
            except ValueError:  # `http://[x`: that entry is skipped, not the feed
                self.crawler.stats.inc_value("newscrawl/listing/bad_links")
                continue
            if where is None or not self.in_range(where.day) or self.limit_reached():
                continue
            # The entry's <category> terms are Jekyll's split words: the post's back link
            # names its category and tag as written.
            yield self.post_request(url, where)
