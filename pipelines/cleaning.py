"""Paragraph cleaning of article bodies (record contract, "Paragraph cleaning").

Pure functions over strings, no Scrapy. A body is either an aggregator post
page's body (the site's rendered Markdown around the portal's article HTML) or
the share JSON's `text`; both go through `clean_body`.

One lxml parse per body and one pass over its events: regexes over the whole
document would be slower and would not survive broken HTML.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from pipelines.identity import article_text

# Elements that start and end a paragraph; any other element is inline and
# only contributes its text.
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "center", "dd",
        "details", "dialog", "div", "dl", "dt", "fieldset", "figcaption",
        "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
        "header", "hr", "html", "li", "main", "nav", "ol", "p", "pre",
        "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead",
        "tr", "ul",
    }
)  # fmt: skip
# Elements whose text is never article text.
_SKIPPED_TAGS = frozenset(
    {"head", "iframe", "noscript", "object", "script", "style", "svg", "template", "title"}
)

# Han ideographs (with extensions and compatibility forms), kana, CJK
# punctuation and full-width forms: a space next to any of them is dropped.
_CJK_CHARS = (
    "\u2e80-\u2fdf"  # radicals
    "\u3000-\u303f"  # CJK symbols and punctuation
    "\u3040-\u30ff"  # kana
    "\u3100-\u312f\u31a0-\u31ff"  # bopomofo, strokes
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han
    "\ufe30-\ufe4f"  # CJK compatibility forms (vertical punctuation)
    "\uff00-\uffef"  # half-width and full-width forms
    "\U00020000-\U0003134f"  # Han extensions B-G
)
# \s already covers U+3000, NBSP, \r, \t and \n; zero-width characters are not
# whitespace to Python, so they are named.
_WHITESPACE_RUN = re.compile(r"[\s\u200b\u200c\u200d\u2060\ufeff]+")
_SPACE_NEXT_TO_CJK = re.compile(f"(?<=[{_CJK_CHARS}]) | (?=[{_CJK_CHARS}])")

# `（文章来源：荆州日报）`, recognised even when the em_media class is lost
_ATTRIBUTION = re.compile(r"[（(]\s*文章来源\s*[：:]\s*(?P<medium>.*?)\s*[）)]")
_LOOSE_ATTRIBUTION_PREFIX = re.compile(r"^[（(]?\s*(?:文章)?来源\s*[：:]\s*")
_TAGS_LINE = re.compile(r"^tags\s*[:：]", re.IGNORECASE)
# Markup kramdown printed as text (`&lt;p style="…"&gt;` after an HTML comment that opens
# an indented line): a paragraph of nothing but tags is no content.
_LEAKED_TAGS_ONLY = re.compile(r"(?:\s*</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>)+\s*")
# What may stand between back links: `返回荆州日报新闻｜返回首页`.
_LINK_SEPARATORS_ONLY = re.compile(r"[\s｜|/／、,，·•\-–—>»]*")
_ABSOLUTE_URL = re.compile(r"^(?:[a-z][a-z0-9+.\-]*:)?//", re.IGNORECASE)
_SHARE_HOST_URL = re.compile(
    r"^(?:https?:)?//finews\.zning\.xyz(?:[:/?#]|$)|/html_News/NewsShare\.html", re.IGNORECASE
)
# A digest ends with its medium in brackets: `…汽车企业。（上海证券报）`.
_DIGEST_SOURCE = re.compile(r"[（(](?P<medium>[^（）()]{2,30})[）)]\s*$")
# numbers, stock codes (`03301.HK`) and sign-offs are no medium
_NOT_A_MEDIUM = re.compile(
    r"^[\d\s.,:：%+\-]*$|^\d+\.[A-Za-z]+$|^(?:完|全文完|记者.*|编辑.*|责任编辑.*)$"
)

_EMPTY_AUTOLINK = "<>"
_BACK_LINK_PREFIX = "返回"


@dataclass(frozen=True)
class CleanedBody:
    """A body's clean paragraphs and what the removed parts told about it."""

    paragraphs: list[str] = field(default_factory=list)
    attribution: str | None = None  # medium named by the `em_media` paragraph
    share_url: str | None = None  # link to the share host found in the body
    origin_url: str | None = None  # rolling news: autolink to the original article
    quoted: bool = False  # a blockquote digest was present

    @property
    def text(self) -> str:
        """The record's `text` (pipelines.identity.article_text)."""
        return article_text(self.paragraphs)


def normalize_whitespace(text: str) -> str:
    """Collapse every kind of whitespace to one space, strip, and drop the
    spaces that touch CJK characters or CJK/full-width punctuation."""
    text = _WHITESPACE_RUN.sub(" ", text).strip()
    if " " in text:
        text = _SPACE_NEXT_TO_CJK.sub("", text)
    return text


def digest_source(paragraph: str) -> str | None:
    """The medium a rolling-news digest names at its end (`…（上海证券报）`)."""
    match = _DIGEST_SOURCE.search(paragraph)
    if match is None:
        return None
    medium = _LOOSE_ATTRIBUTION_PREFIX.sub("", normalize_whitespace(match["medium"]))
    if not medium or _NOT_A_MEDIUM.match(medium):
        return None
    return medium


@dataclass(slots=True)
class _RawParagraph:
    """One paragraph as the walk found it, before the removal rules."""

    text: str
    links: list[tuple[str, str]]  # (href, link text) of the <a> inside it
    in_attribution: bool  # inside an element of class em_media
    in_quote: bool  # inside a <blockquote>


class _ParagraphCollector:
    """Turns the parse events of a body into `_RawParagraph`s: block elements
    and <br> end a paragraph, the text of everything else is concatenated."""

    __slots__ = ("_contexts", "_generation", "_links", "_open_links", "_parts", "paragraphs")

    def __init__(self) -> None:
        self.paragraphs: list[_RawParagraph] = []
        self._parts: list[str] = []
        self._links: list[tuple[str, str]] = []
        # (href, paragraph generation, index of the link's first text part)
        self._open_links: list[tuple[str, int, int]] = []
        # bumped on every flush so a link cut by a paragraph break is ignored
        self._generation = 0
        self._contexts: list[tuple[bool, bool]] = [(False, False)]

    def flush(self) -> None:
        if self._parts:
            in_attribution, in_quote = self._contexts[-1]
            self.paragraphs.append(
                _RawParagraph("".join(self._parts), self._links, in_attribution, in_quote)
            )
            self._parts = []
            self._links = []
        self._generation += 1

    def add_text(self, text: str) -> None:
        self._parts.append(text)

    def open_block(self, tag: str, css_class: str | None) -> None:
        self.flush()
        in_attribution, in_quote = self._contexts[-1]
        self._contexts.append(
            (
                in_attribution or (css_class is not None and "em_media" in css_class),
                in_quote or tag == "blockquote",
            )
        )

    def close_block(self) -> None:
        self.flush()
        if len(self._contexts) > 1:
            self._contexts.pop()

    def open_link(self, href: str) -> None:
        self._open_links.append((href, self._generation, len(self._parts)))

    def close_link(self) -> None:
        if not self._open_links:
            return
        href, generation, first_part = self._open_links.pop()
        if generation == self._generation:
            self._links.append((href, "".join(self._parts[first_part:])))


_parsers = threading.local()  # an lxml parser must not be shared between threads


def _html_parser() -> Any:
    parser = getattr(_parsers, "html", None)
    if parser is None:
        # huge_tree: a 5 MB body must not be cut at libxml2's default limits
        parser = etree.HTMLParser(
            encoding="utf-8", remove_comments=True, remove_pis=True, huge_tree=True
        )
        _parsers.html = parser
    return parser


def _raw_paragraphs(html: str) -> list[_RawParagraph]:
    if "\x00" in html:  # libxml2 stops reading at a NUL
        html = html.replace("\x00", "")
    collector = _ParagraphCollector()
    try:
        root = etree.HTML(html.encode("utf-8", "replace"), _html_parser())
    except etree.LxmlError:  # libxml2 gave up even in recovery mode: no text to be had
        return collector.paragraphs
    if root is None:  # nothing but whitespace
        return collector.paragraphs
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, element in walker:
        tag = element.tag
        if not isinstance(tag, str) or tag in _SKIPPED_TAGS:
            if event == "start":
                walker.skip_subtree()
            elif element.tail:
                collector.add_text(element.tail)
            continue
        if event == "start":
            if tag in _BLOCK_TAGS:
                collector.open_block(tag, element.get("class"))
            elif tag == "br":
                collector.flush()
            elif tag == "a":
                collector.open_link((element.get("href") or "").strip())
            if element.text:
                collector.add_text(element.text)
        else:
            if tag in _BLOCK_TAGS:
                collector.close_block()
            elif tag == "a":
                collector.close_link()
            if element.tail:
                collector.add_text(element.tail)
    collector.flush()
    return collector.paragraphs


def _as_linked(href: str) -> str:
    # Protocol-relative links would not be usable URLs; both hosts involved
    # (share host, eastmoney) are plain http.
    return "http:" + href if href.startswith("//") else href


def _attribution_medium(text: str) -> str | None:
    match = _ATTRIBUTION.fullmatch(text)
    if match is not None:
        return match["medium"] or None
    # an em_media paragraph worded otherwise: `来源：X`, `（X）`
    medium = _LOOSE_ATTRIBUTION_PREFIX.sub("", text).strip("（()） ")
    return medium or None


def _only_links(text: str, links: list[tuple[str, str]]) -> bool:
    """True when the paragraph's text is its links' texts and separators."""
    residue = text
    for _, link_text in links:
        residue = residue.replace(link_text, "", 1)
    return _LINK_SEPARATORS_ONLY.fullmatch(residue) is not None


def clean_body(html: str | None) -> CleanedBody:
    """Clean paragraphs of a post body or share JSON text. The attribution,
    share link, origin link, back links, `<>` and tags line are taken out; the
    first three are returned beside the paragraphs."""
    if not html or html.isspace():
        return CleanedBody()
    paragraphs: list[str] = []
    attribution: str | None = None
    share_url: str | None = None
    origin_url: str | None = None
    quoted = False
    for raw in _raw_paragraphs(html):
        text = normalize_whitespace(raw.text)
        if (not text or text == _EMPTY_AUTOLINK or _TAGS_LINE.match(text)
                or _LEAKED_TAGS_ONLY.fullmatch(text)):
            continue
        if raw.in_attribution or _ATTRIBUTION.fullmatch(text):
            attribution = attribution or _attribution_medium(text)
            continue
        links = [(href, normalize_whitespace(link_text)) for href, link_text in raw.links]
        if links and _only_links(text, links):
            hrefs = [href for href, _ in links]
            if all(link_text.startswith(_BACK_LINK_PREFIX) for _, link_text in links):
                continue  # back links to the category and the home page
            if all(_SHARE_HOST_URL.search(href) for href in hrefs):
                share_url = share_url or _as_linked(hrefs[0])
                continue
            if len(links) == 1 and _ABSOLUTE_URL.match(hrefs[0]):
                href, link_text = links[0]
                if link_text == href or link_text.rstrip("/") == href.rstrip("/"):
                    origin_url = origin_url or _as_linked(href)
                    continue
        paragraphs.append(text)
        quoted = quoted or raw.in_quote
    return CleanedBody(paragraphs, attribution, share_url, origin_url, quoted)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(value: Any) -> Any:
    """`value` with every lone UTF-16 surrogate replaced by U+FFFD, through lists and dicts.

    JSON may escape half a pair (`"\\ud800"`) and Python decodes it as is, but
    UTF-8, hence BSON, cannot hold one: a single such title made a whole batch fail.
    """
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value) if _LONE_SURROGATE.search(value) else value
    if isinstance(value, list | tuple):
        items = [without_lone_surrogates(v) for v in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return type(value)(items) if changed else value
    if isinstance(value, dict):
        pairs = [(without_lone_surrogates(k), without_lone_surrogates(v)) for k, v in value.items()]
        changed = any(k is not k0 or v is not v0
                      for (k, v), (k0, v0) in zip(pairs, value.items(), strict=True))
        return dict(pairs) if changed else value
    return value
