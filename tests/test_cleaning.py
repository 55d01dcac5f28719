"""Paragraph cleaning: every rule of the contract's "Paragraph cleaning", and
real corpus posts rendered the way the aggregator renders them."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from parsel import Selector

from newscrawl.parsers import PostPage, parse_share_json
from pipelines import cleaning
from pipelines.cleaning import CleanedBody, clean_body, digest_source, normalize_whitespace
from tests.helpers import render_corpus_bodies

SHARE_URL = "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202112312232339262"


@pytest.fixture(scope="module")
def corpus_bodies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return render_corpus_bodies(tmp_path_factory.mktemp("corpus-site"))


@pytest.fixture
def corpus_body(corpus_bodies: dict[str, str]) -> Callable[[str], CleanedBody]:
    return lambda name: clean_body(corpus_bodies[name])


# --- whitespace -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\u3000\u3000本报讯", "本报讯"),  # full-width indentation
        ("a\u00a0b", "a b"),  # NBSP
        ("a\u200bb\u200cc\u200dd\u2060e\ufefff", "a b c d e f"),  # zero-width characters
        ("a\r\n\tb", "a b"),
        ("a    b", "a b"),
        ("  a b  ", "a b"),
        ("12月30日 上午", "12月30日上午"),
        ("会议 ，", "会议，"),
        ("（ 文章 ）", "（文章）"),  # full-width punctuation untouched, spaces by it dropped
        ("HFO-1234yf 制冷剂", "HFO-1234yf制冷剂"),
        ("ET7 new energy", "ET7 new energy"),
        ("HFC 134a", "HFC 134a"),
        ("\u3000", ""),
        ("", ""),
    ],
)
def test_normalize_whitespace(raw: str, expected: str) -> None:
    assert normalize_whitespace(raw) == expected


# --- paragraphs -------------------------------------------------------------


def test_one_paragraph_per_block_in_document_order() -> None:
    body = clean_body(
        "<h2>标题</h2><p>一</p><div>二</div><blockquote><p>三</p><p>四</p></blockquote>"
        "<ul><li>五</li></ul><p>六</p>"
    )
    assert body.paragraphs == ["标题", "一", "二", "三", "四", "五", "六"]


def test_inline_text_is_kept_without_stray_spaces() -> None:
    body = clean_body(
        "<p>据悉，<strong>霍尼韦尔</strong>为<span id='stock_106.NIO'>"
        "<a href='http://quote.eastmoney.com/unify/r/106.NIO' class='keytip'>蔚来</a></span>"
        "<span id='quote_106.NIO'></span>旗下<em>ET7</em></p>"
    )
    assert body.paragraphs == ["据悉，霍尼韦尔为蔚来旗下ET7"]


def test_br_splits_a_paragraph() -> None:
    assert clean_body("<p>上半<br/>下半<br /></p>").paragraphs == ["上半", "下半"]


def test_entities_are_decoded_and_nbsp_normalised() -> None:
    body = clean_body("<p>《&lt;蒙特利尔议定书&gt;基加利修正案》&amp;&nbsp;&nbsp;x</p>")
    assert body.paragraphs == ["《<蒙特利尔议定书>基加利修正案》& x"]


def test_full_width_indentation_is_removed() -> None:
    assert clean_body("<p>\u3000\u3000本报讯 记者</p>").paragraphs == ["本报讯记者"]


def test_script_style_comments_images_and_empty_paragraphs_are_dropped() -> None:
    body = clean_body(
        "<p>前</p><script>var x = '正文';</script><style>p{}</style>"
        "<!-- EM_StockImg_Start --><p><a href='http://quote'><img src='k.png'/></a></p>"
        "<!-- EM_StockImg_End --><center><img src='a.jpg' alt='Image'/></center>"
        "<p>  \u3000 </p><p></p><p style='display:none;height:1px;'><br /></p><p>后</p>"
    )
    assert body.paragraphs == ["前", "后"]


def test_a_comment_inside_text_leaves_the_text_around_it() -> None:
    assert clean_body("<p>前<!-- x -->后</p>").paragraphs == ["前后"]


def test_hidden_paragraph_with_text_is_kept() -> None:
    assert clean_body("<p style='display:none'>可见文字</p>").paragraphs == ["可见文字"]


def test_attribution_is_removed_and_its_medium_kept_without_markup() -> None:
    body = clean_body(
        "<p>正文</p><p class='em_media'>（文章来源：上海<span id='bk_90.BK0473'>"
        "<a href='http://quote.eastmoney.com/unify/r/90.BK0473'>证券</a></span>"
        "<span id='bkquote_90.BK0473'></span>报）</p>"
    )
    assert body.paragraphs == ["正文"]
    assert body.attribution == "上海证券报"


def test_attribution_without_its_class_is_still_recognised() -> None:
    body = clean_body("<p>正文</p><p>（文章来源：荆州日报）</p>")
    assert (body.paragraphs, body.attribution) == (["正文"], "荆州日报")


@pytest.mark.parametrize(
    ("attribution", "medium"),
    [
        ("<p class='em_media'>来源：新华社</p>", "新华社"),
        ("<p class='em_media'>（证券时报）</p>", "证券时报"),
        ("<div class='em_media'><span>(文章来源: 财联社)</span></div>", "财联社"),
    ],
)
def test_em_media_paragraph_worded_otherwise(attribution: str, medium: str) -> None:
    body = clean_body(f"<p>正文</p>{attribution}")
    assert (body.paragraphs, body.attribution) == (["正文"], medium)


def test_first_attribution_wins_and_a_plain_source_line_is_content() -> None:
    body = clean_body(
        "<p>（来源：新华社）</p><p class='em_media'>（文章来源：荆州日报）</p>"
        "<p class='em_media'>（文章来源：湖南日报）</p>"
    )
    assert (body.paragraphs, body.attribution) == (["（来源：新华社）"], "荆州日报")


def test_share_autolink_is_removed_and_kept_as_share_url() -> None:
    body = clean_body(f"<p>正文</p><p><a href='{SHARE_URL}'>{SHARE_URL}</a></p>")
    assert body.paragraphs == ["正文"]
    assert body.share_url == SHARE_URL


def test_protocol_relative_share_link_gets_the_share_hosts_scheme() -> None:
    relative = SHARE_URL.removeprefix("http:")
    body = clean_body(f"<p>正文</p><p><a href='{relative}'>分享</a></p>")
    assert (body.paragraphs, body.share_url) == (["正文"], SHARE_URL)


def test_origin_autolink_is_removed_and_kept_as_origin_url() -> None:
    origin = "http://finance.eastmoney.com/news/1344,202112082206928461.html"
    body = clean_body(f"<p>摘要</p><p><a href='{origin}'>{origin}</a></p>")
    assert body.paragraphs == ["摘要"]
    assert body.origin_url == origin


def test_a_link_with_its_own_text_is_content() -> None:
    body = clean_body("<p><a href='http://data.eastmoney.com/bbsj/'>业绩</a></p>")
    assert body.paragraphs == ["业绩"]
    assert body.origin_url is None


def test_empty_autolink_is_removed() -> None:
    assert clean_body("<p>正文</p><p>&lt;&gt;</p>").paragraphs == ["正文"]


@pytest.mark.parametrize(
    "back_links",
    [
        '<p><a href="//finews.withounder.com/category/jingzhouribao.html">返回荆州日报新闻</a>｜'
        '<a href="//finews.withounder.com/">返回首页</a></p>',
        '<p><a href="../emnews/">返回东财滚动新闻</a>\n<a href="../">返回首页</a></p>',
        '<p><a href="../emnews/">返回东财滚动新闻</a><br/><a href="../">返回首页</a></p>',
    ],
)
def test_back_links_are_removed(back_links: str) -> None:
    assert clean_body(f"<p>正文</p>{back_links}").paragraphs == ["正文"]


def test_text_starting_with_fanhui_but_not_a_link_is_content() -> None:
    assert clean_body("<p>返回市场的资金</p>").paragraphs == ["返回市场的资金"]


def test_tags_line_is_removed() -> None:
    body = clean_body("<p>正文</p><small>tags: <em>荆州日报新闻</em></small>")
    assert body.paragraphs == ["正文"]


def test_quoted_digest_is_a_paragraph_and_marks_the_body_quoted() -> None:
    body = clean_body("<blockquote><p>摘要。（上海证券报）</p></blockquote><p>全文</p>")
    assert body.paragraphs == ["摘要。（上海证券报）", "全文"]
    assert body.quoted is True
    assert clean_body("<p>全文</p>").quoted is False


def test_photo_caption_stays() -> None:
    body = clean_body(
        "<center><img src='x.jpg'/></center>"
        "<p style='text-align:center;'>图片来源：霍尼韦尔官网</p>"
    )
    assert body.paragraphs == ["图片来源：霍尼韦尔官网"]


def test_text_outside_any_block_is_a_paragraph() -> None:
    assert clean_body("开头<p>中间</p>结尾").paragraphs == ["开头", "中间", "结尾"]
    assert clean_body("只有文字").paragraphs == ["只有文字"]


@pytest.mark.parametrize("empty", ["", "   ", "\u3000", None, "<p></p>", "<!-- x -->", "\x00"])
def test_empty_input_gives_an_empty_body(empty: str | None) -> None:
    assert clean_body(empty) == CleanedBody()


def test_broken_html_does_not_crash() -> None:
    body = clean_body("<p>一<b>二<p>三</div></span><p>四<a href='x'>五")
    assert body.paragraphs == ["一二", "三", "四五"]
    assert clean_body("<<<>>>&&&;<p").paragraphs  # something, and no exception


def test_five_megabyte_body() -> None:
    paragraph = "<p>\u3000\u3000" + "据霍尼韦尔官网消息，霍尼韦尔宣布。" * 20 + "</p>\n"
    html_text = paragraph * (5_000_000 // len(paragraph.encode("utf-8")) + 1)
    started = time.perf_counter()
    body = clean_body(html_text + "<p class='em_media'>（文章来源：上海证券报）</p>")
    assert time.perf_counter() - started < 10
    assert len(body.paragraphs) == html_text.count("<p>")
    assert body.attribution == "上海证券报"


def test_deeply_nested_html_does_not_recurse() -> None:
    assert clean_body("<span>" * 1000 + "深" + "</span>" * 1000).paragraphs == ["深"]
    # past ~2,000 levels libxml2 gives up on the text; it must not take us down
    clean_body("<div><span>" * 5000 + "深" + "</span></div>" * 5000)


@pytest.mark.parametrize(
    ("paragraph", "medium"),
    [
        ("…首家使用HFO-1234yf制冷剂的汽车企业。（上海证券报）", "上海证券报"),
        ("摘要(证券时报) ", "证券时报"),
        ("摘要（文章来源：中国证券报）", "中国证券报"),
        ("融信中国(03301.HK)：本公司已回购票据。", None),
        ("摘要（03301.HK）", None),
        ("摘要（完）", None),
        ("没有来源", None),
    ],
)
def test_digest_source(paragraph: str, medium: str | None) -> None:
    assert digest_source(paragraph) == medium


# --- real corpus posts (rendered by Jekyll: integration) ----------------------


@pytest.mark.integration
def test_media_news_post_with_two_pieces(corpus_body: Callable[[str], CleanedBody]) -> None:
    body = corpus_body("2021-12-31-NW202112312232339262.md")
    assert len(body.paragraphs) == 20
    assert body.paragraphs[0].startswith("本报讯(记者李天然夏雨彬特约记者张星星)12月30日上午")
    assert body.paragraphs[-1].startswith("大舸中流下，青山两岸移。")
    assert "用奋进开创新局以拼搏赢得“荆彩”" in body.paragraphs  # the commentary stays
    for banned in ("文章来源", "返回", "NewsShare"):
        assert not any(banned in paragraph for paragraph in body.paragraphs)
    assert body.attribution == "荆州日报"
    assert body.share_url == SHARE_URL
    assert body.origin_url is None
    assert body.quoted is False


@pytest.mark.integration
def test_richest_post_quoted_digest_and_portal_html(
        corpus_body: Callable[[str], CleanedBody]) -> None:
    body = corpus_body("-202205262391921712.md")
    assert body.quoted is True
    assert body.attribution == "上海证券报"
    assert body.paragraphs[0].startswith("据霍尼韦尔官网消息，5月24日")
    assert body.paragraphs[0].endswith("汽车企业。（上海证券报）")
    assert digest_source(body.paragraphs[0]) == "上海证券报"
    assert body.paragraphs[1] == "国内首款使用超低GWP(全球变暖潜值)制冷剂的新能源汽车来了！"
    assert "图片来源：霍尼韦尔官网" in body.paragraphs
    assert "什么是HFO-1234yf" in body.paragraphs
    assert any("《<蒙特利尔议定书>基加利修正案》" in p for p in body.paragraphs)
    assert any("为蔚来旗下ET7新能源汽车提供HFO-1234yf(四氟丙烯)" in p for p in body.paragraphs[1:])
    assert any("具体来看，巨化股份、联创股份已有HFO-1234yf产品" in p for p in body.paragraphs)
    assert body.paragraphs[-1].startswith("公司曾公开表示，有HFO-1234yf设计产能")
    assert len(body.paragraphs) == 18
    for paragraph in body.paragraphs:
        assert paragraph == paragraph.strip() and "  " not in paragraph
        assert paragraph not in ("<>", "")
        assert "文章来源" not in paragraph and "返回" not in paragraph
    assert body.origin_url is None  # its origin link is the empty `<>`


@pytest.mark.integration
@pytest.mark.parametrize(
    ("name", "origin"),
    [
        (
            "2021-12-08-202112082206885265.md",
            "http://hk.eastmoney.com/news/11362,202112082206885265.html",
        ),
        (
            "2021-12-08-202112082206928461.md",
            "http://finance.eastmoney.com/news/1344,202112082206928461.html",
        ),
    ],
)
def test_rolling_news_digest_posts(name: str, origin: str,
                                   corpus_body: Callable[[str], CleanedBody]) -> None:
    body = corpus_body(name)
    assert len(body.paragraphs) == 1
    assert body.origin_url == origin
    assert body.attribution is None and body.share_url is None


def test_markup_kramdown_printed_as_text_is_no_paragraph() -> None:
    # Jekyll's kramdown, given an indented line that opens with an HTML comment, prints
    # the portal's `<p style=…>` as text around the quote chart: tags only, no content.
    body = (
        '<p><!-- EM_StockImg_Start -->&lt;p style="text-align:center;"&gt;<a href="http://q">'
        '<img src="http://k.png"></a>&lt;/p&gt;<!-- EM_StockImg_End --></p>\n'
        "<p>正文第一段。</p>\n<p>《&lt;证券法&gt;实施细则》生效。</p>"
    )
    assert clean_body(body).paragraphs == ["正文第一段。", "《<证券法>实施细则》生效。"]


# --- the cleaner against its straightforward model ----------------------------
# clean_body keeps the walk's state in locals, leaves whitespace-only paragraphs out
# early and normalises whitespace with str.split, for speed (bench/RESULTS.md, 2). The
# model below is the cleaner as first written (a collector object fed by the walk,
# regexes over every paragraph): both must give the same CleanedBody for any body.

_MODEL_WHITESPACE_RUN = re.compile(r"[\s\u200b\u200c\u200d\u2060\ufeff]+")
_MODEL_SPACE_NEXT_TO_CJK = re.compile(f"(?<=[{cleaning._CJK_CHARS}]) | (?=[{cleaning._CJK_CHARS}])")


def _model_normalize_whitespace(text: str) -> str:
    text = _MODEL_WHITESPACE_RUN.sub(" ", text).strip()
    if " " in text:
        text = _MODEL_SPACE_NEXT_TO_CJK.sub("", text)
    return text


class _ModelCollector:
    def __init__(self) -> None:
        self.paragraphs: list[tuple[str, list[tuple[str, str]], bool, bool]] = []
        self.parts: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.open_links: list[tuple[str, int, int]] = []
        self.generation = 0
        self.contexts: list[tuple[bool, bool]] = [(False, False)]

    def flush(self) -> None:
        if self.parts:
            self.paragraphs.append(("".join(self.parts), self.links, *self.contexts[-1]))
            self.parts, self.links = [], []
        self.generation += 1

    def open_block(self, tag: str, css_class: str | None) -> None:
        self.flush()
        in_attribution, in_quote = self.contexts[-1]
        self.contexts.append((in_attribution or (css_class is not None and "em_media" in css_class),
                              in_quote or tag == "blockquote"))

    def close_block(self) -> None:
        self.flush()
        if len(self.contexts) > 1:
            self.contexts.pop()

    def close_link(self) -> None:
        if self.open_links:
            href, generation, first_part = self.open_links.pop()
            if generation == self.generation:
                self.links.append((href, "".join(self.parts[first_part:])))


_MODEL_PARSER = etree.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True,
                                 huge_tree=True)


def _model_raw_paragraphs(html: str) -> list[tuple[str, list[tuple[str, str]], bool, bool]]:
    html = html.replace("\x00", "")
    collector = _ModelCollector()
    try:
        root = etree.HTML(html.encode("utf-8", "replace"), _MODEL_PARSER)
    except etree.LxmlError:
        return []
    if root is None:
        return []
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, element in walker:
        tag = element.tag
        if not isinstance(tag, str) or tag in cleaning._SKIPPED_TAGS:
            if event == "start":
                walker.skip_subtree()
            elif element.tail:
                collector.parts.append(element.tail)
            continue
        if event == "start":
            if tag in cleaning._BLOCK_TAGS:
                collector.open_block(tag, element.get("class"))
            elif tag == "br":
                collector.flush()
            elif tag == "a":
                collector.open_links.append(((element.get("href") or "").strip(),
                                             collector.generation, len(collector.parts)))
            if element.text:
                collector.parts.append(element.text)
        else:
            if tag in cleaning._BLOCK_TAGS:
                collector.close_block()
            elif tag == "a":
                collector.close_link()
            if element.tail:
                collector.parts.append(element.tail)
    collector.flush()
    return collector.paragraphs


def _model_clean_body(html: str | None) -> CleanedBody:
    if not html or html.isspace():
        return CleanedBody()
    paragraphs: list[str] = []
    attribution = share_url = origin_url = None
    quoted = False
    for raw_text, raw_links, in_attribution, in_quote in _model_raw_paragraphs(html):
        text = _model_normalize_whitespace(raw_text)
        if (not text or text == "<>" or cleaning._TAGS_LINE.match(text)
                or cleaning._LEAKED_TAGS_ONLY.fullmatch(text)):
            continue
        if in_attribution or cleaning._ATTRIBUTION.fullmatch(text):
            attribution = attribution or cleaning._attribution_medium(text)
            continue
        links = [(href, _model_normalize_whitespace(link_text)) for href, link_text in raw_links]
        if links and cleaning._only_links(text, links):
            hrefs = [href for href, _ in links]
            if all(link_text.startswith("返回") for _, link_text in links):
                continue
            if all(cleaning._SHARE_HOST_URL.search(href) for href in hrefs):
                share_url = share_url or cleaning._as_linked(hrefs[0])
                continue
            if len(links) == 1 and cleaning._ABSOLUTE_URL.match(hrefs[0]):
                href, link_text = links[0]
                if link_text == href or link_text.rstrip("/") == href.rstrip("/"):
                    origin_url = origin_url or cleaning._as_linked(href)
                    continue
        paragraphs.append(text)
        quoted = quoted or in_quote
    return CleanedBody(paragraphs, attribution, share_url, origin_url, quoted)


def _mirror_bodies(root: Path) -> list[str]:
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


def _fragments(count: int, seed: int) -> list[str]:
    """Random HTML made of the pieces the rules look at, broken on purpose."""
    pieces = [
        "<p>", "</p>", "<br>", "<br/>", "<div class='em_media'>", "<p class='x em_media'>", "</div>",
        "<blockquote>", "</blockquote>", "<span>", "</span>", "<b>", "</b>", "<li>", "</ul>",
        "<table><tr><td>", "</td></tr></table>", "<script>正文</script>", "<style>p{}</style>",
        "<title>t</title>", "<a href='http://x.cn/a'>", "<a href=' //finews.zning.xyz/s '>", "<a>",
        "</a>", "http://x.cn/a", "http://x.cn/a/", "返回首页", "｜", " / ", "（文章来源：报）",
        "来源：某报", "tags: x", "TAGS：y", "&lt;p&gt;", "<>", "&lt;&gt;", "&amp;", "&nbsp;",
        "<!-- c -->", "<?pi x?>", "文字", "中 文", "ab cd", "\u3000", "\u200b", "\ufeff", " ", "\n",
        "\t", "\x00", "\ud800", "&#x1F600;", "（", "）", "<img src='k.png'>", "<", ">", "&",
    ]
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 40))) for _ in range(count)]


@pytest.fixture(scope="module")
def hostile_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fixtures.generate import build_mirror

    root = tmp_path_factory.mktemp("hostile")
    build_mirror(root, articles=60, seed=20211231, hostile=True)  # test_mirror's: cached
    return root


def test_clean_body_equals_its_model_on_every_body(
        corpus_bodies: dict[str, str], mirror: Any, hostile_mirror: Path) -> None:
    plain, hostile = _mirror_bodies(mirror.root), _mirror_bodies(hostile_mirror)
    assert len(plain) > 200 and len(hostile) > 100
    bodies = [*corpus_bodies.values(), *plain, *hostile, *_fragments(3_000, seed=14),
              "<span>" * 1000 + "深" + "</span>" * 1000, "开头<p>中间</p>结尾", "", "   ", "\x00"]
    different = [body for body in bodies if clean_body(body) != _model_clean_body(body)]
    assert different == []


def test_normalize_whitespace_equals_its_model_next_to_every_code_point() -> None:
    texts = [f"a {chr(code)} b\u200b{chr(code)}\u3000c" for code in range(0x20, 0x32000)
             if not 0xD800 <= code < 0xE000]
    texts += _fragments(3_000, seed=15)
    different = [text for text in texts
                 if normalize_whitespace(text) != _model_normalize_whitespace(text)]
    assert different == []
