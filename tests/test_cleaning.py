"""Paragraph cleaning: every rule of the contract's "Paragraph cleaning" by example, and
real corpus posts rendered the way the aggregator renders them. What holds of every output
is in tests/test_cleaning_properties.py (hypothesis); the outputs of the corpus posts and of
hostile fragments are kept as files in tests/golden/cleaning/ (tests/test_cleaning_golden.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

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
