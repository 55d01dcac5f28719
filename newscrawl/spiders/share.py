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
from newscrawl.components.stored import read_store
from newscrawl.items import ArticleItem
from newscrawl.spiders.base import NewsSpider, share_page_url, split_list
from pipelines.identity import InvalidArticleId, check_article_id, info_code

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
        ids = list(self.ids)
        if self.from_db:
            digest_only = self.digest_only_ids()
            if digest_only is None:
                self.logger.error("share: from_db=1, and the digest-only articles could not be read")
            known = set(ids)
            ids += [aid for aid in digest_only or () if aid not in known]
        self.stored_headlines = read_store(
            self.crawler.settings, lambda store: store.headlines(ids), "stored headlines",
            "the share answers' own titles and times are taken") or {}
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

    def share_failed(self, failure: Failure) -> Iterator[ArticleItem]:
        item: ArticleItem = failure.request.cb_kwargs["item"]  # type: ignore[attr-defined]
        if item.article_id in self.stored_headlines:
            # A stored article the share host cannot give: nothing is lost, nothing to reject.
            self.crawler.stats.inc_value("newscrawl/share/missing")
            return
        yield from super().share_failed(failure)

    def digest_only_ids(self) -> list[str] | None:
        """Stored articles in since/until (Shanghai days) whose body is a digest only; None
        when the database cannot say."""
        since = datetime.combine(self.since, time(), SHANGHAI) if self.since else None
        until = datetime.combine(self.until + timedelta(days=1), time(), SHANGHAI) if self.until else None
        return read_store(self.crawler.settings, lambda store: store.digest_only_ids(since, until),
                          "digest-only articles", "from_db=1 finds none")

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
