"""The one item newscrawl's spiders yield and its pipelines complete.

Spiders fill the raw fields (what the page said, nothing normalised, and
what they knew of it: the article id and the share code); each pipeline
fills the derived fields it owns, in the order of ITEM_PIPELINES. Nothing
downstream finds the id again in a URL. Code reads items through
itemadapter.ItemAdapter (pipelines never import this module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class ArticleItem:
    # --- raw: set by spiders -------------------------------------------------
    url: str  # the page as the real site names it (never a mirror address)
    page_kind: str  # "post" (aggregator post page) or "share" (share host JSON)
    fetched_at: datetime  # UTC, when the page was downloaded
    # the 18-digit id (pipelines.identity.article_id of the post URL's info code, or the
    # id asked for); None when the URL gives none. IdentityPipeline checks it.
    article_id: str | None = None
    share_code: str | None = None  # the share link's infoCode ("NW2021…"), or the one asked for
    title: str | None = None
    date_raw: str | None = None  # e.g. "(GMT+8, Asia/Shanghai, CST) 2021-12-31 08:58:25"
    date_published: str | None = None  # JSON-LD datePublished, when the page has one
    body_html: str | None = None  # post page body, from after <h1> to before the tags line
    share_html: str | None = None  # share JSON's `text` (or older `content`)
    share_title: str | None = None  # share JSON fields, when present
    share_time: str | None = None
    share_medium: str | None = None
    tags: list[str] = field(default_factory=list)
    category: str | None = None  # as written: the post's back link, else the listing's page
    share_url: str | None = None  # NewsShare.html?infoCode=… link, real host
    origin_url: str | None = None  # rolling news: the original article's link

    # --- derived: set by pipelines ------------------------------------------
    paragraphs: list[str] | None = None
    body_kind: str | None = None  # "media", "share", "rolling" or "digest" (docs/record-contract.md)
    attribution: str | None = None  # medium named by the attribution paragraph
    published_at: datetime | None = None  # UTC
    published_at_raw: str | None = None
    published_at_proof: str | None = None  # what proves published_at (pipelines.dates PROOF_*)
    published_at_shifted: bool | None = None  # moved back 8 h from the page's shown time
    source: str | None = None
    source_slug: str | None = None
    content_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ListingSighting:
    """An article a listing still shows, whose page was not fetched again.

    The incremental filter yields it instead of a request for an article
    already stored with its full text, so the record still learns the
    listing's category, tag and URL and moves `last_seen_at`.
    """

    article_id: str
    url: str  # the post page the listing links (real host)
    category: str | None
    tags: list[str]
    seen_at: datetime
