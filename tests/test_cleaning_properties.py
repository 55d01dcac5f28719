"""Properties of the paragraph cleaner's public functions (pipelines/cleaning.py), checked by
hypothesis on generated HTML and text: what holds of every output whatever the input. Which
paragraph a rule removes is held by the examples of tests/test_cleaning.py and by the golden
outputs (tests/golden/cleaning/, tests/test_cleaning_golden.py)."""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parsel import Selector

from newscrawl.parsers import PostPage, parse_share_json
from pipelines.cleaning import (
    CleanedBody,
    clean_body,
    digest_source,
    normalize_whitespace,
    without_lone_surrogates,
)
from tests.conftest import Mirror

# Few examples a run (the unit tests stay fast, README: under 10 s); every run draws new ones,
# and hypothesis replays a failure it found (.hypothesis/, left out of git) until it passes.
EXAMPLES = 150
HTML_EXAMPLES = 60  # generated HTML takes a few ms an example
SHARE_URL = "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202112312232339262"
ORIGIN_URL = "http://finance.eastmoney.com/news/1344,202112082206928461.html"

# The contract's whitespace (docs/record-contract.md): what str.split() splits at, and the
# zero-width characters it names.
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
WHITESPACE = " \u3000\u00a0\t\n\r\x0b\x0c\u2003" + ZERO_WIDTH


def is_cjk(char: str) -> bool:
    """Characters the contract certainly calls CJK (a space next to one is dropped): Han
    ideographs, kana, the CJK symbols and punctuation block and the full-width forms. The
    cleaner's own list is wider (radicals, bopomofo, vertical forms); this is enough to test."""
    code = ord(char)
    name = unicodedata.name(char, "")
    return (name.startswith(("CJK UNIFIED IDEOGRAPH-", "CJK COMPATIBILITY IDEOGRAPH-", "FULLWIDTH "))
            or 0x3000 <= code <= 0x30FF) and not char.isspace()


def whitespace_removed(text: str) -> str:
    return "".join(re.sub(f"[{ZERO_WIDTH}]", " ", text).split())


# --- normalize_whitespace -------------------------------------------------------------------

# Text where whitespace, CJK and Latin meet often: arbitrary text rarely puts them side by side.
MIXED_TEXT = st.text(
    alphabet=st.sampled_from([*WHITESPACE, *"据悉蔚来ET7新能源汽车ab12，。（）()-.《》、ー"]), max_size=40)


def assert_normalized(out: str) -> None:
    assert out == out.strip() and "  " not in out
    assert all(char == " " for char in out if char.isspace() or char in ZERO_WIDTH), out
    for index, char in enumerate(out):
        if char == " ":
            assert not is_cjk(out[index - 1]) and not is_cjk(out[index + 1]), out


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.one_of(st.text(), MIXED_TEXT))
def test_normalize_whitespace_changes_only_whitespace_and_is_idempotent(text: str) -> None:
    out = normalize_whitespace(text)
    assert_normalized(out)
    assert out.replace(" ", "") == whitespace_removed(text)  # nothing but whitespace touched
    assert normalize_whitespace(out) == out


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.text(alphabet="abcXYZ0123-.%", min_size=1, max_size=6), min_size=1, max_size=6),
       st.lists(st.text(alphabet=WHITESPACE, min_size=1, max_size=4), min_size=7, max_size=7))
def test_normalize_whitespace_keeps_one_space_between_latin_words(
        words: list[str], gaps: list[str]) -> None:
    text = gaps[0] + "".join(word + gap for word, gap in zip(words, gaps[1:], strict=False))
    assert normalize_whitespace(text) == " ".join(words)


def test_normalize_whitespace_next_to_every_code_point() -> None:
    """`a X b` for every code point X up to the Han extensions: the spaces go when X is CJK,
    stay when it is a letter or digit below U+3000 (Latin, Greek, Cyrillic, ...), and nothing
    but whitespace ever changes."""
    wrong: list[str] = []
    for code in range(0x20, 0x32000):
        char = chr(code)
        if 0xD800 <= code < 0xE000 or char.isspace() or char in ZERO_WIDTH:
            continue
        out = normalize_whitespace(f"a {char}\u200b\u3000b")
        if out.replace(" ", "") != f"a{char}b":
            wrong.append(f"{code:04X} changed: {out!r}")
        elif is_cjk(char) and out != f"a{char}b":
            wrong.append(f"{code:04X} is CJK, spaces kept: {out!r}")
        elif code < 0x3000 and unicodedata.category(char) in ("Lu", "Ll", "Nd") and out != f"a {char} b":
            wrong.append(f"{code:04X} is a letter or digit, spaces dropped: {out!r}")
    assert wrong == []


# --- generated HTML -------------------------------------------------------------------------

SCRIPT_MARK, STYLE_MARK, COMMENT_MARK, HIDDEN_MARK = "SCRIPTMARK", "STYLEMARK", "COMMENTMARK", "HIDDENMARK"
MARKS = (SCRIPT_MARK, STYLE_MARK, COMMENT_MARK, HIDDEN_MARK)


@dataclass(frozen=True)
class Fragment:
    """Generated HTML and its text as a reader sees it (entities decoded, no script, style
    or comment), in document order."""

    html: str
    text: str

    def __add__(self, other: Fragment) -> Fragment:
        return Fragment(self.html + other.html, self.text + other.text)


# No `<` in generated text: a `<` in a paragraph then can only be markup kept as text.
TEXT_CHARS = [*WHITESPACE, *"据悉公司产品市场霍尼韦尔制冷剂蔚来汽车", *"ABCxyz0129",
              *"，。、“”：；（）()%.-/|｜>&\"'"]
TEXTS = st.text(alphabet=st.sampled_from(TEXT_CHARS), max_size=12).map(
    lambda text: Fragment(html.escape(text, quote=False), text))
MEDIA = st.text(alphabet=st.sampled_from("上海证券报荆州日财联社新华中国电子"), min_size=2, max_size=8)

BLOCK_TAGS = ("p", "div", "blockquote", "li", "ul", "h2", "center", "section", "td", "tr", "table")
INLINE_TAGS = ("span", "b", "strong", "em", "small", "font", "a")
CLASSES = ("", " class='em_media'", " class='x em_media'", " class='keytip'", " style='display:none'")
HREFS = ("http://quote.eastmoney.com/unify/r/106.NIO", "../emnews/", "//finews.withounder.com/",
         SHARE_URL, ORIGIN_URL, "", " http://x.cn/a ")

LEAVES = st.one_of(
    TEXTS,
    st.sampled_from([
        Fragment("<br>", ""), Fragment("<br />", ""), Fragment("<img src='k.png' alt='Image'>", ""),
        Fragment(f"<script>var x = '{SCRIPT_MARK}';</script>", ""),
        Fragment(f"<style>p::after{{content:'{STYLE_MARK}'}}</style>", ""),
        Fragment(f"<!-- {COMMENT_MARK} -->", ""),
        Fragment(f"<noscript>{HIDDEN_MARK}</noscript>", ""),
        Fragment(f"<iframe>{HIDDEN_MARK}</iframe>", ""),
        Fragment("<p>&lt;&gt;</p>", "<>"),
        Fragment('<p>&lt;p style="text-align:center;"&gt;&lt;/p&gt;</p>',
                 '<p style="text-align:center;"></p>'),
        Fragment("<small>tags: <em>荆州日报新闻</em></small>", "tags: 荆州日报新闻"),
        Fragment(f"<p><a href='{SHARE_URL}'>{SHARE_URL}</a></p>", SHARE_URL),
        Fragment(f"<p><a href='{ORIGIN_URL}'>{ORIGIN_URL}</a></p>", ORIGIN_URL),
        Fragment("<p><a href='../emnews/'>返回东财滚动新闻</a>｜<a href='../'>返回首页</a></p>",
                 "返回东财滚动新闻｜返回首页"),
    ]),
    MEDIA.map(lambda medium: Fragment(f"<p class='em_media'>（文章来源：{medium}）</p>",
                                      f"（文章来源：{medium}）")),
)


def element(tag: str, attributes: str, children: list[Fragment]) -> Fragment:
    inner = Fragment("", "")
    for child in children:
        inner += child
    return Fragment(f"<{tag}{attributes}>{inner.html}</{tag}>", inner.text)


def extend(children: st.SearchStrategy[Fragment]) -> st.SearchStrategy[Fragment]:
    attributes = st.one_of(st.sampled_from(CLASSES),
                           st.sampled_from(HREFS).map(lambda href: f" href='{href}'"))
    return st.builds(element, st.sampled_from(BLOCK_TAGS + INLINE_TAGS), attributes,
                     st.lists(children, max_size=5))


FRAGMENTS = st.lists(st.recursive(LEAVES, extend, max_leaves=25), max_size=6).map(
    lambda parts: sum(parts, Fragment("", "")))

# Broken on purpose: tags cut, unclosed, misnested; NUL, a lone surrogate, stray `<`, `&`.
PIECES = [
    "<p>", "</p>", "<br>", "<br/>", "<div class='em_media'>", "<p class='x em_media'>", "</div>",
    "<blockquote>", "</blockquote>", "<span>", "</span>", "<b>", "</b>", "<li>", "</ul>",
    "<table><tr><td>", "</td></tr></table>", "<script>", "</script>", "<style>", "<title>",
    "<a href='http://x.cn/a'>", f"<a href=' {SHARE_URL} '>", "<a>", "</a>", "http://x.cn/a",
    "返回首页", "｜", " / ", "（文章来源：报）", "来源：某报", "tags: x", "TAGS：y", "&lt;p&gt;", "<>",
    "&lt;&gt;", "&amp;", "&nbsp;", "<!-- c -->", "<!--", "-->", "<?pi x?>", "<![CDATA[x]]>",
    "文字", "中 文", "ab cd", "\u3000", "\u200b", "\ufeff", " ", "\n", "\t", "\x00", "\ud800",
    "&#x1F600;", "&#0;", "&#xD800;", "（", "）", "<img src='k.png'>", "<", ">", "&", "<p", "='",
]
TAG_SOUP = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
ANY_BODY = st.one_of(st.text(), TAG_SOUP, FRAGMENTS.map(lambda fragment: fragment.html))


def assert_well_formed(body: CleanedBody) -> None:
    """What every CleanedBody must be: normalised non-empty paragraphs of one line each, so
    that the record's text splits back into them, and fields that are None or text."""
    for paragraph in body.paragraphs:
        assert paragraph, body
        assert normalize_whitespace(paragraph) == paragraph, paragraph
    if body.paragraphs:
        assert body.text.split("\n") == body.paragraphs
    else:
        assert body.text == ""
    for value in (body.attribution, body.share_url, body.origin_url):
        assert value is None or (value and value == value.strip()), body
    assert isinstance(body.quoted, bool)


@settings(max_examples=HTML_EXAMPLES, deadline=None)
@given(st.one_of(ANY_BODY, st.none()))
def test_clean_body_never_raises_and_its_paragraphs_are_clean(html_text: str | None) -> None:
    assert_well_formed(clean_body(html_text))


@settings(max_examples=HTML_EXAMPLES, deadline=None)
@given(FRAGMENTS)
def test_paragraphs_hold_no_markup_no_hidden_text_and_only_the_inputs_text(fragment: Fragment) -> None:
    body = clean_body(fragment.html)
    assert_well_formed(body)
    text = whitespace_removed(fragment.text)
    for paragraph in body.paragraphs:
        assert "<" not in paragraph, paragraph  # a tag, or the `<>` and tags-only paragraphs
        assert not any(mark in paragraph for mark in MARKS), paragraph
        assert paragraph.replace(" ", "") in text, (paragraph, fragment.text)


@settings(max_examples=HTML_EXAMPLES, deadline=None)
@given(ANY_BODY, ANY_BODY)
def test_cleaning_is_deterministic_and_forgets_the_body_before(first: str, second: str) -> None:
    alone = clean_body(first)
    clean_body(second)  # the thread's parser is reused: nothing of this body may stay
    assert clean_body(first) == alone


@settings(max_examples=HTML_EXAMPLES, deadline=None)
@given(ANY_BODY)
def test_cleaning_its_own_paragraphs_again_gives_them_back(html_text: str) -> None:
    paragraphs = clean_body(html_text).paragraphs
    rewrapped = "".join(f"<p>{html.escape(paragraph, quote=False)}</p>" for paragraph in paragraphs)
    assert clean_body(rewrapped) == CleanedBody(paragraphs)


# Text no removal rule looks at (no `<`, no `tags:`, no 文章来源, no link): every paragraph is
# content.
PLAIN_TEXTS = st.text(alphabet=st.sampled_from([c for c in TEXT_CHARS if c not in "<tT"]), max_size=20)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(PLAIN_TEXTS, max_size=8), st.sampled_from(["p", "div", "li", "h2", "blockquote"]))
def test_one_paragraph_per_block_with_its_whitespace_normalised(texts: list[str], tag: str) -> None:
    blocks = "\n".join(f"<{tag}>{html.escape(text, quote=False)}</{tag}>" for text in texts)
    body = clean_body(blocks)
    assert body.paragraphs == [normalize_whitespace(text) for text in texts if normalize_whitespace(text)]
    assert body.quoted is (tag == "blockquote" and bool(body.paragraphs))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(PLAIN_TEXTS, st.sampled_from(INLINE_TAGS)), max_size=6), PLAIN_TEXTS)
def test_inline_tags_leave_the_paragraph_whole_and_br_splits_it(
        runs: list[tuple[str, str]], last: str) -> None:
    def inline(text: str, tag: str) -> str:
        href = " href='http://quote.eastmoney.com/unify/r/1.600160'" if tag == "a" else ""
        return f"<{tag}{href}>{html.escape(text, quote=False)}</{tag}>"

    texts = [text for text, _ in runs] + [last]
    whole = "".join(texts)
    inlined = "".join(inline(text, tag) for text, tag in runs) + html.escape(last, quote=False)
    assert clean_body(f"<p>{inlined}</p>").paragraphs == ([normalize_whitespace(whole)]
                                                           if normalize_whitespace(whole) else [])
    split = "<br>".join(inline(text, tag) for text, tag in runs) + "<br/>" + html.escape(last, quote=False)
    assert clean_body(f"<p>{split}</p>").paragraphs == [
        normalize_whitespace(text) for text in texts if normalize_whitespace(text)]


@settings(max_examples=EXAMPLES, deadline=None)
@given(PLAIN_TEXTS, PLAIN_TEXTS, st.sampled_from(["<br>", "<p>", "<div>"]),  # inside the <a>
       st.sampled_from([SHARE_URL, ORIGIN_URL, "../emnews/"]))
def test_a_link_cut_by_a_paragraph_break_is_text(head: str, tail: str, cut: str, href: str) -> None:
    body = clean_body(f"<p><a href='{href}'>{html.escape(head, quote=False)}{cut}"
                      f"{html.escape(tail, quote=False)}</a></p>")
    assert body.paragraphs == [normalize_whitespace(text) for text in (head, tail)
                               if normalize_whitespace(text)]
    assert body.share_url is None and body.origin_url is None


# Links the generated bodies never hold, so that the first one found can be told from these.
LAST_SHARE_URL = SHARE_URL.replace("NW2021", "NW2022")
LAST_ORIGIN_URL = "http://hk.eastmoney.com/news/11362,202112082206885265.html"


@settings(max_examples=HTML_EXAMPLES, deadline=None)
@given(FRAGMENTS, MEDIA)
def test_the_parts_a_media_post_ends_with_are_taken_out_and_reported(
        fragment: Fragment, medium: str) -> None:
    """A body followed by the attribution, the share autolink and the back links: the same
    paragraphs, and the first attribution and share link the whole body names."""
    before = clean_body(fragment.html)
    after = clean_body(
        f"{fragment.html}<p class='em_media'>（文章来源：{medium}）</p>\n"
        f"<p><a href='{LAST_SHARE_URL}'>{LAST_SHARE_URL}</a></p>\n"
        "<p><a href='//finews.withounder.com/category/x.html'>返回荆州日报新闻</a>｜"
        "<a href='//finews.withounder.com/'>返回首页</a></p>")
    assert after.paragraphs == before.paragraphs
    assert after.attribution == (before.attribution or medium)
    assert after.share_url == (before.share_url or LAST_SHARE_URL)
    assert (after.origin_url, after.quoted) == (before.origin_url, before.quoted)


@settings(max_examples=HTML_EXAMPLES, deadline=None)
@given(FRAGMENTS)
def test_the_origin_autolink_of_rolling_news_is_taken_out_and_reported(fragment: Fragment) -> None:
    before = clean_body(fragment.html)
    after = clean_body(f"{fragment.html}\n\n<p><a href='{LAST_ORIGIN_URL}'>{LAST_ORIGIN_URL}</a></p>\n")
    assert after.paragraphs == before.paragraphs
    assert after.origin_url == (before.origin_url or LAST_ORIGIN_URL)


# --- digest_source --------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.one_of(st.text(), MIXED_TEXT))
def test_digest_source_is_none_or_a_medium_the_paragraph_ends_with(paragraph: str) -> None:
    medium = digest_source(paragraph)
    if medium is not None:
        assert medium and normalize_whitespace(medium) == medium
        assert medium in normalize_whitespace(paragraph)
        assert re.search(r"[）)]\s*$", paragraph)


@settings(max_examples=EXAMPLES, deadline=None)
@given(PLAIN_TEXTS, MEDIA, st.sampled_from(["（{}）", "({})", "（文章来源：{}）", "(来源: {}) "]))
def test_digest_source_names_the_medium_in_the_closing_brackets(
        digest: str, medium: str, brackets: str) -> None:
    assert digest_source(digest + brackets.format(medium)) == medium


# --- without_lone_surrogates ----------------------------------------------------------------

# lone surrogates (rare among all code points, so drawn on their own too), and everything else
ANY_CHARS = st.text(st.one_of(st.sampled_from("\ud800\udbff\udc00\udfff"),
                              st.characters(exclude_categories=())), max_size=20)
VALUES = st.recursive(
    st.one_of(ANY_CHARS, st.integers(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(ANY_CHARS, inner, max_size=4)),
    max_leaves=12)


def surrogates_replaced(value: object) -> object:
    if isinstance(value, str):
        return "".join("\ufffd" if 0xD800 <= ord(char) < 0xE000 else char for char in value)
    if isinstance(value, list | tuple):
        return type(value)(surrogates_replaced(item) for item in value)
    if isinstance(value, dict):
        return {surrogates_replaced(k): surrogates_replaced(v) for k, v in value.items()}
    return value


@settings(max_examples=EXAMPLES, deadline=None)
@given(VALUES)
def test_without_lone_surrogates_replaces_them_and_nothing_else(value: object) -> None:
    cleaned = without_lone_surrogates(value)
    assert cleaned == surrogates_replaced(value)
    assert without_lone_surrogates(cleaned) is cleaned  # nothing left: the same object back
    if cleaned == value:
        assert cleaned is value  # nothing to replace: no copy


# --- every body of the mirrors (rendered by Jekyll: integration) ----------------------------

TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")


def mirror_bodies(root: Path) -> list[str]:
    """Every post body and share text of a built mirror."""
    bodies: list[str] = []
    for page in sorted((root / "finews.withounder.com").rglob("*.html")):
        # not the hostile mirror's 6.8 MB page (PostPage.parse takes half a minute on it)
        if re.search(r"\d{18}\.html$", page.name) and page.stat().st_size < 1_000_000:
            selector = Selector(text=page.read_text(encoding="utf-8", errors="replace"))
            bodies.append(PostPage.parse(selector).body_html or "")
    for answer in sorted((root / "finews.zning.xyz").rglob("*.json")):
        try:
            bodies.append(parse_share_json(answer.read_bytes()).html or "")
        except ValueError:  # a hostile answer that is no share JSON
            continue
    return bodies


@pytest.fixture(scope="module")
def hostile_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fixtures.generate import build_mirror

    root = tmp_path_factory.mktemp("hostile")
    build_mirror(root, articles=60, seed=20211231, hostile=True)  # test_mirror's: cached
    return root


def test_every_body_of_the_mirrors_cleans_to_clean_paragraphs(mirror: Mirror, hostile_mirror: Path) -> None:
    plain, hostile = mirror_bodies(mirror.root), mirror_bodies(hostile_mirror)
    assert len(plain) > 200 and len(hostile) > 100
    for body_html in [*plain, *hostile]:
        body = clean_body(body_html)
        assert_well_formed(body)
        markup = [paragraph for paragraph in body.paragraphs if TAG.search(paragraph)]
        assert markup == []
        assert not any(paragraph.startswith(("（文章来源", "返回")) for paragraph in body.paragraphs)
        assert not any(mark in paragraph for paragraph in body.paragraphs
                       for mark in ("NewsShare", "广告位招租", "em_ad"))
