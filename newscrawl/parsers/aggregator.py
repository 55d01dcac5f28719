"""The aggregator (finews.withounder.com): a Jekyll site, minimal theme."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urljoin, urlsplit

from parsel import Selector

from pipelines.identity import InvalidArticleId, article_date, article_id

# /<categories>/<yyyy>/<mm>/<dd>/<slug>.html: Jekyll's permalink. The categories
# are the front matter's words lower-cased (`Wind` -> `wind`, a name with a space
# -> two segments), and the date is the page's shown one: neither names a
# category page nor is the writer's day (the article id is).
POST_PATH = re.compile(
    r"^/(?P<categories>(?:[^/]+/)*?[^/]+)/(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})"
    r"/(?P<slug>[^/]+)\.html$"
)
# A post published without a date in its file name (Jekyll never dates it).
UNDATED_POST_PATH = re.compile(r"^/(?P<categories>[^/]+)/(?P<slug>[^/]*\d{18})\.html$")
CATEGORY_PATH = re.compile(r"^/category/(?P<name>[^/]+)\.html$")
ROLLING_CATEGORY = "emnews"
ROLLING_PATH = re.compile(r"^/emnews/?(?:index\.html)?$")
# Older posts link back to `//finews.withounder.com/<name>/`: the name as written, no page.
CATEGORY_DIR_PATH = re.compile(r"^/(?P<name>[^/]+)/$")
AGGREGATOR_HOST = "finews.withounder.com"
SHARE_LINK = re.compile(r"NewsShare\.html\?infoCode=(?P<code>[A-Za-z]*\d{18})")
BACK_LINK_PREFIX = "返回"


def category_key(name: str) -> str:
    """What a category name and its URL path form share: `Wind`/`wind`,
    `21shijijingjibaodao 21caijingAPP`/`21shijijingjibaodao/21caijingapp`."""
    return " ".join(name.replace("/", " ").lower().split())


@dataclass(frozen=True)
class PostURL:
    path_key: str  # the categories of the path, as category_key() writes them
    slug: str  # the file name: the info code, `NW2021…` (media news) or `2021…` (rolling news)
    shown_day: str | None  # YYYY-MM-DD of the path: the page's shown day
    article_id: str | None  # the 18-digit id the slug holds (None: no valid one)

    @property
    def day(self) -> str | None:
        """YYYY-MM-DD the article id starts with: the day its writer meant, in Shanghai."""
        day = article_date(self.article_id) if self.article_id else None
        return day.isoformat() if day else None


def _post_url(categories: str, slug: str, shown_day: str | None) -> PostURL:
    slug = unquote(slug)
    try:
        found: str | None = article_id(slug)
    except InvalidArticleId:
        found = None
    return PostURL(category_key(unquote(categories)), slug, shown_day, found)


def parse_post_url(url: str) -> PostURL | None:
    """What a post URL says: its categories' key, its info code and the article id in it."""
    path = urlsplit(url).path
    match = POST_PATH.match(path)
    if match:
        return _post_url(match["categories"], match["slug"],
                         f"{match['year']}-{match['month']}-{match['day']}")
    match = UNDATED_POST_PATH.match(path)
    if match and match["categories"] != "category":
        return _post_url(match["categories"], match["slug"], None)
    return None


def category_of_url(url: str) -> str | None:
    """The category a listing URL names, as written (`/category/Wind.html` -> `Wind`)."""
    path = urlsplit(url).path
    if ROLLING_PATH.match(path):
        return ROLLING_CATEGORY
    match = CATEGORY_PATH.match(path)
    return unquote(match["name"]) if match else None


def _category_dir(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.netloc not in ("", AGGREGATOR_HOST):
        return None
    match = CATEGORY_DIR_PATH.match(parts.path)
    return unquote(match["name"]) if match and match["name"] != "category" else None


def category_url(base: str, name: str) -> str:
    """The listing page of a category: /category/<name>.html, or /emnews/ for rolling news."""
    if name == ROLLING_CATEGORY:
        return f"{base}/emnews/"
    return f"{base}/category/{quote(name, safe='()')}.html"


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
    bad_links: int = 0  # hrefs that are no URL (`http://[x`): skipped, the rest goes on

    @property
    def post_urls(self) -> list[str]:
        return [entry.url for entry in self.entries]

    @classmethod
    def parse(cls, selector: Selector, base_url: str) -> ListingPage:
        entries: dict[str, ListingEntry] = {}
        bad: set[str] = set()

        def add(href: str, tag: str | None) -> None:
            try:
                url = urljoin(base_url, href.strip())
                post = parse_post_url(url)
            except ValueError:
                bad.add(href)
                return
            if post is not None and url not in entries:
                entries[url] = ListingEntry(url, tag)

        for heading in selector.xpath(cls._headings):
            tag = (heading.attrib.get("id") or "").strip() or None
            for href in heading.xpath(cls._heading_links).getall():
                add(href, tag)
        # Links outside any heading's list still count (a layout change must not hide posts).
        for href in selector.xpath(cls._all_links).getall():
            add(href, None)
        return cls(list(entries.values()), len(bad))


@dataclass(frozen=True)
class BackLink:
    """A post's link back to its category page: the category and the tag as written."""

    category: str
    tag: str


@dataclass
class PostPage:
    """A post page: `<small>` date, `<h1>` title, body, `<small>tags: <em>…</em></small>`."""

    _section = "section"
    _date = "section > small:first-of-type::text"
    _title = "section > h1"
    _tags = "section > small em::text"
    _json_ld = 'script[type="application/ld+json"]::text'
    # `[返回Wind新闻](//finews.withounder.com/category/Wind.html)`: the category and tag as written.
    _back_links = "//section//a[starts-with(normalize-space(.), '返回')]"
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
    back_links: list[BackLink] = field(default_factory=list)

    @classmethod
    def parse(cls, selector: Selector, url: str = "") -> PostPage:
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
            back_links=cls._parse_back_links(selector, url),
        )

    @classmethod
    def _parse_back_links(cls, selector: Selector, url: str) -> list[BackLink]:
        links: list[BackLink] = []
        for anchor in selector.xpath(cls._back_links):
            try:
                target = urljoin(url, (anchor.attrib.get("href") or "").strip())
            except ValueError:
                continue
            name = category_of_url(target) or _category_dir(target)
            text = " ".join("".join(anchor.xpath(".//text()").getall()).split())
            tag = text.removeprefix(BACK_LINK_PREFIX).strip()
            if name and tag and BackLink(name, tag) not in links:
                links.append(BackLink(name, tag))
        return links

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
