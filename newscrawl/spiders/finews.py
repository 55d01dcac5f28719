"""`finews`: the aggregator's listings and posts, with the share text of media news."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Response
from twisted.python.failure import Failure

from newscrawl.components.stored import StoredRecords
from newscrawl.parsers import ListingPage, PostPage
from newscrawl.parsers.aggregator import (
    ROLLING_CATEGORY,
    category_key,
    category_of_url,
    category_url,
    parse_post_url,
)
from newscrawl.spiders.base import AGGREGATOR, NewsSpider, as_text, split_list

logger = logging.getLogger(__name__)
# Posts read for their back link, at most, per category not found otherwise (a
# relative back link such as `../emnews/` names no page).
MAX_LOOKUPS = 3


class FinewsSpider(NewsSpider):
    """Home (or the given categories) -> category pages and /emnews/ -> posts -> share JSON.

    Category pages are found by the site's own links: each post's back link
    names its category as written (`/category/Wind.html`), which its URL
    path does not (`/wind/…`). A rerun also starts from the categories of the
    stored articles, whose posts it does not fetch again.

    Arguments: categories=name,name (as written, any case, or a path form
    such as `21shijijingjibaodao/21caijingapp`)  since=YYYY-MM-DD  until=YYYY-MM-DD  limit=N
    """

    name = "finews"
    allowed_domains = ["finews.withounder.com", "finews.zning.xyz"]

    def __init__(self, *args: Any, categories: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.categories = split_list(categories)
        self.wanted_keys = {category_key(name) for name in self.categories}
        # Listings are refetched every run (dont_filter) but once within a run.
        self.listings_requested: set[str] = set()
        # Path forms (category_key) of the category pages fetched, and how many posts
        # were fetched only to read the category their back link names.
        self.keys_found: set[str] = set()
        self.lookups: dict[str, int] = {}
        self.home_requested = False

    def wanted(self, key: str) -> bool:
        return not self.wanted_keys or key in self.wanted_keys

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for request in self.listing_requests():
            yield request

    def listing_requests(self) -> Iterator[scrapy.Request]:
        known = [name for name in self.stored_categories() if self.wanted(category_key(name))]
        if not self.categories:
            yield self.home_request()
        # The start listings are asked for whatever the run's shared set says: in a
        # distributed run every process runs start(), and only the seeding one yields.
        # /emnews/, the rolling-news index, is a fixed page of the site.
        rolling = [ROLLING_CATEGORY] if self.wanted(ROLLING_CATEGORY) else []
        names = dict.fromkeys(rolling + known)
        for name in names:
            yield from self.category_request(name, start=True)
        # A name no stored article has is asked for as given; if that page is missing
        # (another case, the path's form), home's posts lead to it.
        resolved = {category_key(name) for name in names}
        for name in self.categories:
            if category_key(name) not in resolved:
                resolved.add(category_key(name))
                yield from self.category_request(name, errback=self.category_missing, start=True)

    def home_request(self) -> scrapy.Request:
        self.home_requested = True
        return scrapy.Request(f"{AGGREGATOR}/", callback=self.parse_listing, dont_filter=True)

    def category_missing(self, failure: Failure) -> Iterator[scrapy.Request]:
        name = category_of_url(failure.request.url)  # type: ignore[attr-defined]
        logger.info("no category page %r as given: looking for it from home", name)
        if not self.home_requested:
            yield self.home_request()

    def stored_categories(self) -> list[str]:
        """The categories of the stored articles: the pages a rerun starts from (none when the
        database cannot say: home alone). From the crawl's StoredRecords, which the
        incremental filter and the storage read too."""
        stored = StoredRecords.of(self.crawler).snapshot()
        return stored.known.categories() if stored is not None else []

    def category_request(self, name: str, *, errback: Any = None,
                         start: bool = False) -> Iterator[scrapy.Request]:
        """A category page, once a run (`start`: asked for even if the run has it already)."""
        if start or name not in self.listings_requested:
            self.listings_requested.add(name)
            yield scrapy.Request(category_url(AGGREGATOR, name), callback=self.parse_listing,
                                 errback=errback, dont_filter=True)

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
        if listing.bad_links:
            self.crawler.stats.inc_value("newscrawl/listing/bad_links", listing.bad_links)
        category = category_of_url(response.url)  # None on home
        if category:
            self.keys_found.add(category_key(category))
        for entry in listing.entries:
            where = parse_post_url(entry.url)
            if where is None or not self.wanted(where.path_key):
                continue
            if self.in_range(where.day) and not self.limit_reached():
                # Home's headings are tags Jekyll split at spaces: only a category page's counts.
                yield self.post_request(entry.url, where, category=category,
                                        tag=entry.tag if category else None)
            elif (category is None and where.path_key not in self.keys_found
                  and self.lookups.get(where.path_key, 0) < MAX_LOOKUPS):
                # Not fetched as an article (since/until, limit): a post of a category not
                # found yet is still read for its back link, or the category's posts that
                # only its page lists would stay out of reach.
                self.lookups[where.path_key] = self.lookups.get(where.path_key, 0) + 1
                yield scrapy.Request(entry.url, callback=self.parse_back_links)

    def parse_back_links(self, response: Response) -> Iterator[scrapy.Request]:
        """A post read only for the category page its back link names."""
        self.crawler.stats.inc_value("newscrawl/category_lookups")
        yield from self.follow_back_links(PostPage.parse(as_text(response).selector, response.url))

    def follow_back_links(self, page: PostPage) -> Iterator[scrapy.Request]:
        for link in page.back_links:
            if self.wanted(category_key(link.category)):
                yield from self.category_request(link.category)
