"""`finews`: the aggregator's listings and posts, with the share text of media news."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Response

from newscrawl.parsers import ListingPage
from newscrawl.parsers.aggregator import category_url, parse_post_url
from newscrawl.spiders.base import AGGREGATOR, NewsSpider, as_text, split_list


class FinewsSpider(NewsSpider):
    """Home (or the given categories) -> category pages and /emnews/ -> posts -> share JSON.

    Arguments: categories=slug,slug  since=YYYY-MM-DD  until=YYYY-MM-DD  limit=N
    """

    name = "finews"
    allowed_domains = ["finews.withounder.com", "finews.zning.xyz"]

    def __init__(self, *args: Any, categories: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.categories = split_list(categories)
        # Listings are refetched every run (dont_filter) but once within a run.
        self.listings_requested: set[str] = set(self.categories)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for request in self.listing_requests():
            yield request

    def listing_requests(self) -> Iterator[scrapy.Request]:
        # Listings are refetched on every run (dont_filter): they are what changes.
        urls = ([category_url(AGGREGATOR, slug) for slug in self.categories]
                if self.categories else [f"{AGGREGATOR}/"])
        for url in urls:
            yield scrapy.Request(url, callback=self.parse_listing, dont_filter=True)

    def parse(self, response: Response, **kwargs: Any) -> Any:
        return self.parse_listing(response)

    def parse_listing(self, response: Response) -> Iterator[scrapy.Request]:
        """Post links of home, a category page or /emnews/.

        @url https://finews.withounder.com/emnews/
        @returns requests 1
        @returns items 0 0
        """
        listing = ListingPage.parse(as_text(response).selector, response.url)
        self.crawler.stats.inc_value("newscrawl/listing_pages")
        for entry in listing.entries:
            where = parse_post_url(entry.url)
            if where is None or (self.categories and where.category not in self.categories):
                continue
            # A post's path names its category: the way from home to every category
            # page, whether or not the post itself is fetched again.
            if where.category not in self.listings_requested:
                self.listings_requested.add(where.category)
                yield scrapy.Request(category_url(AGGREGATOR, where.category),
                                     callback=self.parse_listing, dont_filter=True)
            if self.in_range(where.date) and not self.limit_reached():
                yield self.post_request(entry.url, where, entry.tag)
