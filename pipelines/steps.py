"""Scrapy item pipelines: thin adapters from ArticleItem to the pure core.

Each step fills the derived fields it owns, counts to `crawler.stats` under
`newscrawl/<step>/…`, and raises RejectItem (reason attached) for an item
that cannot become a record. The order matters: Clean first (the content hash
needs the paragraphs), Identity next (the id's year dates `12月30日`), then
Date and Source; `STEP_PIPELINES` is that order for ITEM_PIPELINES.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, NoReturn, Self

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.statscollectors import StatsCollector

from pipelines.cleaning import CleanedBody, clean_body, digest_source, without_lone_surrogates
from pipelines.dates import (
    PROOF_SHARE,
    DateParseError,
    TimeClaim,
    check_not_future,
    parse_published,
    prove_page_time,
)
from pipelines.errors import RejectItem
from pipelines.identity import (
    InvalidArticleId,
    article_date,
    article_text,
    better_body,
    body_kind,
    check_article_id,
    content_hash,
)
from pipelines.records import is_listing_sighting, sighting_title
from pipelines.sources import SourceRegistry, resolve_source

STEP_PIPELINES: dict[str, int] = {
    "pipelines.steps.CleanPipeline": 100,
    "pipelines.steps.IdentityPipeline": 200,
    "pipelines.steps.DatePipeline": 300,
    "pipelines.steps.SourcePipeline": 400,
}
SOURCES_FILE_SETTING = "NEWSCRAWL_SOURCES_FILE"
# Where a post page shows its date, most trusted first (both as Jekyll prints it).
_PAGE_DATE_FIELDS = ("date_raw", "date_published")


class _Step:
    step: ClassVar[str]  # stats namespace: newscrawl/<step>/…

    def __init__(self, stats: StatsCollector) -> None:
        self.stats = stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler.stats)

    def process_item(self, item: Any) -> Any:
        # A listing sighting has no page to clean: it only tells storage "seen here".
        if is_listing_sighting(ItemAdapter(item)):
            return item
        return self.process_article(item)

    def process_article(self, item: Any) -> Any:
        raise NotImplementedError

    def count(self, what: str) -> None:
        self.stats.inc_value(f"newscrawl/{self.step}/{what}")

    def reject(self, code: str, reason: str) -> NoReturn:
        """Count under `rejected/<code>` and drop the item with `reason`."""
        self.count("rejected")
        self.count(f"rejected/{code}")
        raise RejectItem(reason)


class CleanPipeline(_Step):
    """paragraphs, attribution, body_kind, share_url/origin_url from the
    post body and the share JSON text, keeping the better of the two."""

    step = "clean"

    def process_article(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        # one pass over the fields (list(adapter.items()) would make ItemAdapter walk them
        # twice, for its length first); None is never changed
        changed = [(name, cleaned) for name in adapter
                   if (value := adapter[name]) is not None
                   and (cleaned := without_lone_surrogates(value)) is not value]
        for name, cleaned in changed:
            adapter[name] = cleaned
            self.count("lone_surrogates")
        page_kind = adapter.get("page_kind") or "post"
        post_body = clean_body(adapter.get("body_html"))
        share_body = clean_body(adapter.get("share_html"))

        kept: CleanedBody | None = None
        kept_kind: str | None = None
        if post_body.paragraphs:
            kept = post_body
            kept_kind = body_kind(
                page_kind, adapter.get("category"), post_body.quoted, post_body.paragraphs
            )
        if share_body.paragraphs:
            # the post body is the one "already there": a tie keeps it
            share_kind = body_kind("share", adapter.get("category"), share_body.quoted, [])
            if better_body(share_kind, share_body.text, kept_kind, kept.text if kept else None):
                kept, kept_kind = share_body, share_kind
                if post_body.paragraphs:
                    self.count("share_body_kept")
        if kept is None or kept_kind is None:
            self.reject("empty_body", "empty body")

        adapter["paragraphs"] = list(kept.paragraphs)
        adapter["body_kind"] = kept_kind
        adapter["attribution"] = kept.attribution
        # links the spider found win; the bodies' own autolinks fill the gaps
        if not adapter.get("share_url"):
            adapter["share_url"] = post_body.share_url or share_body.share_url
        if not adapter.get("origin_url"):
            adapter["origin_url"] = post_body.origin_url or share_body.origin_url
        if kept_kind in ("digest", "rolling"):
            # the contract does not trust it for `source`; kept for inspection
            named = digest_source(kept.paragraphs[0])
            if named:
                adapter.setdefault("extra", {})["digest_source"] = named
        self.count("items")
        self.count(f"body_kind/{kept_kind}")
        return item


class IdentityPipeline(_Step):
    """Checks the article_id the spider gave; content_hash; a title, from the share JSON if need be."""

    step = "identity"

    def process_article(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        given = adapter.get("article_id")
        if not given:
            self.reject("no_article_id", "no article id")
        try:
            check_article_id(given)
        except InvalidArticleId:
            self.reject("invalid_article_id", f"invalid article id: {given!r}")

        title = sighting_title(adapter.get("title"), adapter.get("share_title"))
        if title is None:
            self.reject("empty_title", "empty title")
        if not (adapter.get("title") or "").strip():
            self.count("title_from_share")
        adapter["title"] = title

        paragraphs = adapter.get("paragraphs")
        if paragraphs is not None:
            adapter["content_hash"] = content_hash(article_text(paragraphs))
        self.count("items")
        return item


class DatePipeline(_Step):
    """published_at (UTC), what proves it, and published_at_raw.

    The share answer's own time wins; else the page's time (date_raw, else
    the JSON-LD's), checked against the article id's day
    (pipelines.dates.prove_page_time). published_at_raw is the page's text,
    or the share time for a share-only item.
    """

    step = "date"

    def process_article(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        fetched_at: datetime | None = adapter.get("fetched_at")
        if fetched_at is None:  # relative dates would have nothing to count from
            self.reject("no_fetch_time", "no fetched_at")
        known_id: str | None = adapter.get("article_id")  # checked by IdentityPipeline
        known_day = article_date(known_id) if known_id else None
        context_year = known_day.year if known_day else None
        errors: list[str] = []

        def read(field_name: str) -> datetime | None:
            raw = adapter.get(field_name)
            if not raw or not raw.strip():
                return None
            try:
                return parse_published(raw, fetched_at=fetched_at, context_year=context_year)
            except DateParseError as error:
                errors.append(f"unreadable date: {error}")
                return None

        page_field: str | None = None
        page_time: datetime | None = None
        for name in _PAGE_DATE_FIELDS:
            page_time = read(name)
            if page_time is not None:
                page_field = name
                break
        share_time = read("share_time")
        claim: TimeClaim
        if share_time is not None:
            claim = TimeClaim(share_time, PROOF_SHARE)
        elif page_time is not None:
            claim = prove_page_time(page_time, known_day)
        elif errors:
            self.reject("unreadable_date", errors[0])
        else:
            self.reject("no_date", "no date")
        try:
            check_not_future(claim.at, fetched_at)
        except DateParseError as error:
            self.reject("future_date", f"future date: {error}")
        adapter["published_at"] = claim.at
        adapter["published_at_proof"] = claim.proof
        adapter["published_at_shifted"] = claim.shifted
        # the share JSON's time is kept verbatim, page texts stripped (contract)
        adapter["published_at_raw"] = (
            adapter[page_field].strip() if page_field else adapter.get("share_time"))
        if page_field != _PAGE_DATE_FIELDS[0]:
            self.count(f"from/{page_field or 'share_time'}")
        self.count(f"proof/{claim.proof}")
        if claim.shifted:
            self.count("shifted")
        self.count("items")
        return item


class SourcePipeline(_Step):
    """source and source_slug by the contract's order of trust."""

    step = "source"

    def __init__(self, stats: StatsCollector, registry: SourceRegistry) -> None:
        super().__init__(stats)
        self.registry = registry

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        # NEWSCRAWL_SOURCES_FILE: one path, or a list of them, merged over the bundled registry
        configured = crawler.settings.get(SOURCES_FILE_SETTING)
        if not configured:
            extra_files: list[str | Path] = []
        elif isinstance(configured, str | Path):
            extra_files = [configured]  # not getlist(): it would split a path on commas
        else:
            extra_files = list(configured)
        return cls(crawler.stats, SourceRegistry.load(*extra_files))

    def process_article(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        tags = adapter.get("tags") or []
        # the share JSON's medium only counts for share-only sightings
        share_medium = adapter.get("share_medium") if adapter.get("page_kind") == "share" else None
        resolved = resolve_source(
            self.registry,
            attribution=adapter.get("attribution"),
            share_medium=share_medium,
            tag=tags[0] if tags else None,
            category=adapter.get("category"),
        )
        if resolved is None:
            self.reject("no_source", "no source")
        adapter["source"], adapter["source_slug"] = resolved
        # Storage lets a share answer's source replace a post's only when it is attributed.
        adapter.setdefault("extra", {})["source_from"] = (
            "attribution" if adapter.get("attribution") else "other")
        if self.registry.lookup(resolved[0]) is None:
            self.count("unregistered")  # candidates for pipelines/data/sources.toml
        self.count("items")
        return item
