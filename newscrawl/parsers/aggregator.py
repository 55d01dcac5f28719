"""The aggregator (finews.withounder.com): a Jekyll site, minimal theme."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urljoin, urlsplit

from parsel import Selector

# /<category>/<yyyy>/<mm>/<dd>/<slug>.html, the date in Asia/Shanghai.
POST_PATH = re.compile(
    r"^/(?P<category>[^/]+)/(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/(?P<slug>[^/]+)\.html$"
)
# A post published without a date in its file name (Jekyll never dates it).
UNDATED_POST_PATH = re.compile(r"^/(?P<category>[^/]+)/(?P<slug>[^/]*\d{18})\.html$")
SHARE_LINK = re.compile(r"NewsShare\.html\?infoCode=(?P<code>[A-Za-z]*\d{18})")


@dataclass(frozen=True)
class PostURL:
    category: str
    slug: str
    date: str | None  # YYYY-MM-DD from the path, Shanghai time


def parse_post_url(url: str) -> PostURL | None:
    path = urlsplit(url).path
    match = POST_PATH.match(path)
    if match:
        date = f"{match['year']}-{match['month']}-{match['day']}"
        return PostURL(unquote(match["category"]), unquote(match["slug"]), date)
    match = UNDATED_POST_PATH.match(path)
    if match and match["category"] != "category":
        return PostURL(unquote(match["category"]), unquote(match["slug"]), None)
    return None


def category_url(base: str, slug: str) -> str:
    """The listing page of a category slug: /category/<slug>.html, or /emnews/ for rolling news."""
    if slug == "emnews":
        return f"{base}/emnews/"
    return f"{base}/category/{quote(slug)}.html"


@dataclass(frozen=True)
class ListingEntry:
    url: str  # absolute, real host
    tag: str | None  # the `<h2 id=TAG>` the link is listed under


@dataclass
class ListingPage:
    """Home, a category page or /emnews/: `<h2 id=TAG>` headings, each over a `<ul>` of posts."""

    _headings = "//h2[@id]"
    _heading_links = "following-sibling::ul[1]/li/a/@href"
    _all_links = "//ul/li/a/@href"

    entries: list[ListingEntry] = field(default_factory=list)

    @property
    def post_urls(self) -> list[str]:
        return [entry.url for entry in self.entries]

    @classmethod
    def parse(cls, selector: Selector, base_url: str) -> ListingPage:
        entries: dict[str, ListingEntry] = {}

        def add(href: str, tag: str | None) -> None:
            url = urljoin(base_url, href.strip())
            if parse_post_url(url) is not None and url not in entries:
                entries[url] = ListingEntry(url, tag)

        for heading in selector.xpath(cls._headings):
            tag = (heading.attrib.get("id") or "").strip() or None
            for href in heading.xpath(cls._heading_links).getall():
                add(href, tag)
        # Links outside any heading's list still count (a layout change must not hide posts).
        for href in selector.xpath(cls._all_links).getall():
            add(href, None)
        return cls(list(entries.values()))


@dataclass
class PostPage:
    """A post page: `<small>` date, `<h1>` title, body, `<small>tags: <em>…</em></small>`."""

    _section = "section"
    _date = "section > small:first-of-type::text"
    _title = "section > h1"
    _tags = "section > small em::text"
    _json_ld = 'script[type="application/ld+json"]::text'
    # Everything between the title and the tags line is the body.
    _body_xpath = (
        "//section/h1[1]/following-sibling::node()"
        "[following-sibling::small[starts-with(normalize-space(.), 'tags:')]]"
    )
    _body_fallback_xpath = "//section/h1[1]/following-sibling::node()"

    title: str | None
    date_raw: str | None
    date_published: str | None
    body_html: str
    tags: list[str]
    share_code: str | None  # the info code the body's share link names

    @classmethod
    def parse(cls, selector: Selector) -> PostPage:
        title_node = selector.css(cls._title)
        title = "".join(title_node[0].css("::text").getall()).strip() if title_node else None
        date_raw = selector.css(cls._date).get()
        body_nodes = selector.xpath(cls._body_xpath)
        if not body_nodes:
            body_nodes = selector.xpath(cls._body_fallback_xpath)
        body_html = "".join(node.get() for node in body_nodes)
        share = SHARE_LINK.search(body_html)
        return cls(
            title=title or None,
            date_raw=date_raw.strip() if date_raw and date_raw.strip() else None,
            date_published=cls._date_published(selector),
            body_html=body_html,
            tags=[t.strip() for t in selector.css(cls._tags).getall() if t.strip()],
            share_code=share["code"] if share else None,
        )

    @classmethod
    def _date_published(cls, selector: Selector) -> str | None:
        for raw in selector.css(cls._json_ld).getall():
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("datePublished"), str):
                return str(data["datePublished"])
        return None
