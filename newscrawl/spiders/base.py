"""What the spiders share: the two hosts, arguments, and turning pages into items."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any, Self

import scrapy
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider
from scrapy.http import Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from newscrawl.components.incremental import ARTICLE_META, FULL_TEXT_META, FULL_TEXT_PAGE_META, LISTING_META
from newscrawl.items import ArticleItem
from newscrawl.parsers import PostPage, parse_share_json
from newscrawl.parsers.aggregator import PostURL, parse_post_url
from newscrawl.parsers.share import ShareJSONError

AGGREGATOR = "https://finews.withounder.com"
SHARE_HOST = "http://finews.zning.xyz"


def share_page_url(info_code: str) -> str:
    return f"{SHARE_HOST}/html_News/NewsShare.html?infoCode={info_code}"


def share_json_url(info_code: str) -> str:
    return f"{SHARE_HOST}/NewsData/GetNewsText.do?id={info_code}"


def parse_day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"-a {name}={value!r}: expected YYYY-MM-DD") from None


def split_list(value: str | Iterable[str] | None) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [part.strip() for part in value if part.strip()]


def as_text(response: Response) -> TextResponse:
    """Pages we parse are HTML or XML; anything else is the site misbehaving."""
    if not isinstance(response, TextResponse):
        raise ValueError(f"{response.url}: expected a text page, got {type(response).__name__}")
    return response


def post_item(response: Response, page: PostPage) -> ArticleItem:
    """The raw item of an aggregator post page, with the article id its URL
    holds and the share code its body links.

    Its category and tag are the names as written: the post's own back link,
    else the category page that listed it. The URL's path only lower-cases
    them, so it names a category only when nothing else does.
    """
    where = parse_post_url(response.url)
    listing = response.meta.get(LISTING_META) or {}
    back = page.back_links[0] if page.back_links else None
    category = back.category if back else listing.get("category") or (
        where.path_key if where else None)
    return ArticleItem(
        url=response.url,
        page_kind="post",
        fetched_at=datetime.now(UTC),
        article_id=where.article_id if where else None,
        share_code=page.share_code,
        title=page.title,
        date_raw=page.date_raw,
        date_published=page.date_published,
        body_html=page.body_html,
        tags=[back.tag] if back else page.tags,
        category=category,
        share_url=share_page_url(page.share_code) if page.share_code else None,
    )


def merge_share(item: ArticleItem, response: Response) -> ArticleItem:
    """Add the share JSON's text and fields to an item (of either page kind)."""
    try:
        share = parse_share_json(response.body, response.headers.get("Content-Type"))
    except ShareJSONError as exc:
        item.extra["share_error"] = str(exc)
        return item
    item.share_html = share.html
    item.share_title = share.title
    item.share_time = share.time
    item.share_medium = share.medium
    return item


class NewsSpider(scrapy.Spider):
    """Base of the spiders: `since`, `until` (Shanghai dates) and `limit` arguments."""

    def __init__(self, *args: Any, since: str | None = None, until: str | None = None,
                 limit: str | int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.since = parse_day(since, "since")
        self.until = parse_day(until, "until")
        if self.since and self.until and self.since > self.until:
            raise ValueError(f"-a since={self.since} is after -a until={self.until}")
        self.limit = int(limit) if limit else None
        self.articles_yielded = 0
        self.arguments: dict[str, str] = {}
        # Share answers asked for in this run: an article listed twice (two
        # categories, rolling and media news) has its share JSON fetched once.
        self.share_codes_requested: set[str] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        # The `-a` arguments as given, for the run record (Scrapy keeps no copy).
        spider.arguments = {str(k): str(v) for k, v in kwargs.items()}
        return spider

    def in_range(self, day: str | None) -> bool:
        """An article's day (YYYY-MM-DD, Shanghai: its id's) against since/until; unknown days pass.

        Never the day of a post's path: Jekyll shows offset-less times 8 hours
        late, so the path can name the next day.
        """
        if day is None or (self.since is None and self.until is None):
            return True
        try:
            d = date.fromisoformat(day)
        except ValueError:  # 2021-02-30 in a path: fetched, the page's own date decides
            self.crawler.stats.inc_value("newscrawl/listing/impossible_path_dates")
            return True
        return (self.since is None or d >= self.since) and (self.until is None or d <= self.until)

    def limit_reached(self) -> bool:
        return self.limit is not None and self.articles_yielded >= self.limit

    def take_article(self) -> bool:
        """Count one article towards `limit`; False once the limit is reached."""
        if self.limit_reached():
            return False
        self.articles_yielded += 1
        return True

    # --- post pages and their share text, for every spider that reaches them --
    def post_request(self, url: str, where: PostURL, *, category: str | None = None,
                     tag: str | None = None) -> scrapy.Request:
        """A post page request, named by its article id for the incremental filter.

        `category` and `tag`: the category page that listed it (None from home or the feed).
        """
        meta: dict[str, Any] = {LISTING_META: {"category": category, "tag": tag},
                                FULL_TEXT_PAGE_META: where.slug.startswith("NW")}
        if where.article_id:
            meta[ARTICLE_META] = where.article_id
        return scrapy.Request(url, callback=self.parse_post, meta=meta)

    def parse_post(self, response: Response) -> Iterator[ArticleItem | scrapy.Request]:
        """A post page: its article, after its share text when the page links one
        (and, for finews, the category page its back link names).

        @url https://finews.withounder.com/jingzhouribao/2021/12/31/NW202112312232339262.html
        @returns requests 1 2
        @returns items 0 0
        """
        self.crawler.stats.inc_value("newscrawl/article_pages")
        page = PostPage.parse(as_text(response).selector, response.url)
        yield from self.follow_back_links(page)
        item = post_item(response, page)
        code = item.share_code
        if code and code not in self.share_codes_requested:
            self.share_codes_requested.add(code)
            yield self.share_request(code, item)
            return
        if code:
            # The other sighting carries the share text; this one adds its page.
            self.crawler.stats.inc_value("newscrawl/share/already_requested")
        yield from self.emit(item)

    def follow_back_links(self, page: PostPage) -> Iterator[scrapy.Request]:
        """Category pages a post links back to (the finews spider follows them)."""
        return iter(())

    def share_request(self, share_code: str, item: ArticleItem, *,
                      article: str | None = None) -> scrapy.Request:
        """The share JSON of `share_code`; `article` names it for the incremental filter."""
        meta = {ARTICLE_META: article, FULL_TEXT_META: True} if article else {}
        return scrapy.Request(
            share_json_url(share_code), callback=self.parse_share, errback=self.share_failed,
            cb_kwargs={"item": item}, meta=meta,
        )

    def parse_share(self, response: Response, item: ArticleItem) -> Iterator[ArticleItem]:
        self.crawler.stats.inc_value("newscrawl/article_pages")
        self.crawler.stats.inc_value("newscrawl/share/answered")  # the monitors' share ratios
        yield from self.emit(merge_share(item, response))

    def share_failed(self, failure: Failure) -> Iterator[ArticleItem]:
        # The page already fetched is still an article: keep it, count the miss.
        item: ArticleItem = failure.request.cb_kwargs["item"]  # type: ignore[attr-defined]
        item.extra["share_error"] = repr(failure.value)
        response = getattr(failure.value, "response", None)
        if failure.check(HttpError) and response is not None and response.status in (404, 410):
            self.crawler.stats.inc_value("newscrawl/share/not_found")
        else:
            # Timeouts, 5xx after retries, a crawl stopped mid-request: the share text
            # may yet come, so the stored record says so and the next run asks again.
            item.extra["share_pending"] = True
            self.crawler.stats.inc_value("newscrawl/share/failed")
        yield from self.emit(item)

    def emit(self, item: ArticleItem) -> Iterator[ArticleItem]:
        if not self.take_article():
            raise CloseSpider("limit")
        yield item
