"""The attribution paragraph that Jekyll's kramdown prints as text (issue 18, point 4).

The real posts lay the portal's blocks out one per line, each line indented by one space
(` <p>…</p>`, post 2021-12-31-NW202112312232339262), and glue the attribution to the last
block (both real media posts). A block may open with an HTML comment
(`<!-- EM_StockImg_Start -->`, the quote chart). kramdown takes an HTML block only where
the line starts with its tag or with a comment at the first column: a line ` <!-- …`
becomes a Markdown paragraph, in which the block tags (`<p …>`) are printed as text and
the span tags stay markup. The page then shows `<p class="em_media">（文章来源：…）</p>`
as words, inside a `<p>` of its own. The real engine does this with a plausible post, so
the cleaner must read such a paragraph as the attribution it is.

The bodies below are rendered by Jekyll itself (fixtures/jekyll.py), not by our idea of it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from parsel import Selector

from fixtures import jekyll
from newscrawl.parsers import PostPage
from pipelines.cleaning import clean_body

# Integration: Jekyll renders the posts.
pytestmark = pytest.mark.integration

SHARE_LINK = "<http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202112302200000001>"
BACK_LINKS = ("[返回荆州日报新闻](//finews.withounder.com/category/jingzhouribao.html)｜"
              "[返回首页](//finews.withounder.com/)")
SECURITIES = ('<span id="bk_90.BK0473"><a href="http://quote.eastmoney.com/unify/r/90.BK0473" '
              'class="keytip" data-code="90,BK0473">证券</a></span>'
              '<span id="bkquote_90.BK0473"></span>')
QUOTE_CHART = (
    '<!-- EM_StockImg_Start --><p style="text-align:center;"><a href="http://quote.eastmoney.com/'
    'unify/r/106.NIO" data-code="NIO|106|7" class="EmImageRemark" target="_blank"><img '
    'src="https://webquoteklinepic.eastmoney.com/GetPic.aspx?nid=106.NIO&amp;imageType=k" '
    'border="0" alt="K图 NIO_0" width="578" height="276" /></a></p><!-- EM_StockImg_End -->'
)
TEXT = ["本报讯12月30日上午，市委经济工作会议举行。", "会议指出，今年是极不平凡的一年。"]

# name -> (the body's lines after the text paragraphs, the medium the attribution names)
CASES: dict[str, tuple[str, str]] = {
    # The quote chart last, the attribution (with a sector link inside) glued to it.
    "quote_chart": (f' {QUOTE_CHART}<p class="em_media">（文章来源：上海{SECURITIES}报）</p>',
                    "上海证券报"),
    # Any comment that opens the line does it: the mirror's ad slot, a span in the name.
    "comment": (' <!-- 广告位：资讯正文中部 --><p class="em_media">（文章来源：中<span>国电</span>子报）</p>',
                "中国电子报"),
    # An entity before the name.
    "nbsp": (' <!-- 广告位：资讯正文中部 --><p class="em_media">（文章来源：&nbsp;第一财经）</p>',
             "第一财经"),
}


def post(tail: str) -> str:
    lines = [f"<p>{TEXT[0]}</p>", f" <p>{TEXT[1]}</p>", tail]
    return (
        '---\nlayout: post\ntitle: "市委经济工作会议举行"\ndate: 2021-12-30 10:00:00 +0800\n'
        "categories: jingzhouribao\ntags: 荆州日报新闻\n---\n"
        + "\n".join(lines) + f"\n\n{SHARE_LINK}\n\n{BACK_LINKS}"
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each case's post body as Jekyll renders it, read from its page as the spider reads it."""
    root = tmp_path_factory.mktemp("markup-site")
    source = root / "site"
    jekyll.write_scaffold(source, home_per_tag=5, now=datetime(2022, 1, 1, tzinfo=UTC))
    (source / "_posts").mkdir(parents=True)
    for name, (tail, _) in CASES.items():
        (source / "_posts" / f"2021-12-30-{name}.md").write_text(post(tail), encoding="utf-8")
    jekyll.build(source, root / "out")
    bodies: dict[str, str] = {}
    for name in CASES:
        page = root / "out" / "jingzhouribao" / "2021" / "12" / "30" / f"{name}.html"
        bodies[name] = PostPage.parse(Selector(text=Path(page).read_text(encoding="utf-8"))).body_html
    return bodies


@pytest.mark.parametrize("name", sorted(CASES))
def test_jekyll_prints_the_attribution_paragraph_as_text(name: str, rendered: dict[str, str]) -> None:
    # What makes the case: the page's body holds the em_media paragraph as words.
    assert '&lt;p class="em_media"&gt;（文章来源：' in rendered[name]
    assert '<p class="em_media">' not in rendered[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_attribution_printed_as_text_names_the_source_and_is_no_paragraph(
        name: str, rendered: dict[str, str]) -> None:
    body = clean_body(rendered[name])
    assert body.paragraphs == TEXT
    assert body.attribution == CASES[name][1]
    assert body.share_url == SHARE_LINK.strip("<>")
