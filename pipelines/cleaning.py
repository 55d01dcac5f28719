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
from itertools import pairwise
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
# str.split() already splits at U+3000, NBSP, \r, \t and \n (what `\s` matches);
# zero-width characters are not whitespace to Python, so they are named.
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_CJK_CHAR = re.compile(f"[{_CJK_CHARS}]")

# `（文章来源：荆州日报）`, recognised even when the em_media class is lost
_ATTRIBUTION = re.compile(r"[（(]\s*文章来源\s*[：:]\s*(?P<medium>.*?)\s*[）)]")
_LOOSE_ATTRIBUTION_PREFIX = re.compile(r"^[（(]?\s*(?:文章)?来源\s*[：:]\s*")
_TAGS_LINE = re.compile(r"^tags\s*[:：]", re.IGNORECASE)
# Markup kramdown printed as text (`&lt;p style="…"&gt;` after an HTML comment that opens
# an indented line): a paragraph of nothing but tags is no content.
_LEAKED_TAG = r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>"
_LEAKED_TAGS_ONLY = re.compile(rf"(?:\s*{_LEAKED_TAG})+\s*")
# The attribution printed so, when it is glued to such a line (` <!-- EM_StockImg_Start -->…
# <p class="em_media">（文章来源：…）</p>`): kramdown prints the block tags, keeps the span
# tags as markup, so the text is the tags around the attribution's words. Its medium is the
# source, as in an em_media element (tests/test_markup_as_text.py renders it with Jekyll).
_LEAKED_ATTRIBUTION = re.compile(
    rf"(?:\s*{_LEAKED_TAG})*\s*<p\s[^<>]*\bem_media\b[^<>]*>(?P<inner>[^<>]*)</p>"
    rf"(?:\s*{_LEAKED_TAG})*\s*"
)
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
    if _ZERO_WIDTH.search(text):
        text = _ZERO_WIDTH.sub(" ", text)
    words = text.split()  # the runs between whitespace, none at either end
    if len(words) < 2:
        return words[0] if words else ""
    # one space between two runs, none where either side is CJK
    is_cjk = _CJK_CHAR.match
    out = [words[0]]
    for before, word in pairwise(words):
        if not (is_cjk(before[-1]) or is_cjk(word[0])):
            out.append(" ")
        out.append(word)
    return "".join(out)


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


_parsers = threading.local()  # an lxml parser must not be shared between threads


def _html_parser() -> Any:
    parser = getattr(_parsers, "html", None)
    if parser is None:
        # huge_tree: a 5 MB body must not be cut at libxml2's default limits
        # collect_ids=False: no table of id attributes (nothing looks elements up by id)
        parser = etree.HTMLParser(
            encoding="utf-8", remove_comments=True, remove_pis=True, huge_tree=True,
            collect_ids=False,
        )
        _parsers.html = parser
    return parser


def _raw_paragraphs(html: str) -> list[_RawParagraph]:
    """The body's paragraphs as the walk finds them: block elements and <br>
    end a paragraph, the text of everything else is concatenated. A paragraph
    of nothing but whitespace is left out (cleaning would drop it).

    One loop over the parse events with the state in locals (the walk is most
    of a body's cleaning time, so no method call per event)."""
    if "\x00" in html:  # libxml2 stops reading at a NUL
        html = html.replace("\x00", "")
    paragraphs: list[_RawParagraph] = []
    try:
        root = etree.HTML(html.encode("utf-8", "replace"), _html_parser())
    except etree.LxmlError:  # libxml2 gave up even in recovery mode: no text to be had
        return paragraphs
    if root is None:  # nothing but whitespace
        return paragraphs
    parts: list[str] = []  # text of the paragraph being collected
    links: list[tuple[str, str]] = []  # (href, link text) of its <a>
    # (href, paragraph generation, index of the link's first text part)
    open_links: list[tuple[str, int, int]] = []
    # bumped on every paragraph break so a link cut by one is ignored
    generation = 0
    # (in_attribution, in_quote) of the open blocks; the innermost's in the two locals
    contexts: list[tuple[bool, bool]] = [(False, False)]
    in_attribution = in_quote = False
    block_tags, skipped_tags = _BLOCK_TAGS, _SKIPPED_TAGS
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, element in walker:
        tag = element.tag
        if event == "start":
            if tag in block_tags or tag == "br":
                if parts:  # paragraph break
                    text = "".join(parts)
                    if not text.isspace():
                        paragraphs.append(_RawParagraph(text, links, in_attribution, in_quote))
                    parts = []
                    links = []
                generation += 1
                if tag != "br":
                    css_class = element.get("class")
                    in_attribution = in_attribution or (
                        css_class is not None and "em_media" in css_class)
                    in_quote = in_quote or tag == "blockquote"
                    contexts.append((in_attribution, in_quote))
            elif tag == "a":
                open_links.append(((element.get("href") or "").strip(), generation, len(parts)))
            elif not isinstance(tag, str) or tag in skipped_tags:
                walker.skip_subtree()  # its end event still comes, for the tail
                continue
            text = element.text
            if text:
                parts.append(text)
        else:
            if tag in block_tags:
                if parts:  # paragraph break
                    text = "".join(parts)
                    if not text.isspace():
                        paragraphs.append(_RawParagraph(text, links, in_attribution, in_quote))
                    parts = []
                    links = []
                generation += 1
                if len(contexts) > 1:
                    contexts.pop()
                    in_attribution, in_quote = contexts[-1]
            elif tag == "a" and open_links:
                href, link_generation, first_part = open_links.pop()
                if link_generation == generation:
                    links.append((href, "".join(parts[first_part:])))
            text = element.tail
            if text:
                parts.append(text)
    if parts:
        text = "".join(parts)
        if not text.isspace():
            paragraphs.append(_RawParagraph(text, links, in_attribution, in_quote))
    return paragraphs


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
        if not text:
            continue
        # The regexes below are tried only where their first character could
        # match (`text` is stripped, so it starts with no whitespace).
        first = text[0]
        if first == "<":
            if text == _EMPTY_AUTOLINK or _LEAKED_TAGS_ONLY.fullmatch(text):
                continue
            leaked = _LEAKED_ATTRIBUTION.fullmatch(text)
            if leaked is not None:
                attribution = attribution or _attribution_medium(leaked["inner"].strip())
                continue
        if first in "tT" and _TAGS_LINE.match(text):
            continue
        if raw.in_attribution or (first in "（(" and _ATTRIBUTION.fullmatch(text)):
            attribution = attribution or _attribution_medium(text)
            continue
        if raw.links:
            links = [(href, normalize_whitespace(link_text)) for href, link_text in raw.links]
            if _only_links(text, links):
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
        try:  # UTF-8 encodes every code point but the surrogates; faster than a search
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _LONE_SURROGATE.sub("\ufffd", value)
        return value
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
