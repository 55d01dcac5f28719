"""The aggregator's page parsers on pages as Jekyll writes them (no Scrapy, no network)."""

from __future__ import annotations

from parsel import Selector

from newscrawl.parsers import BackLink, ListingPage, PostPage
from newscrawl.parsers.aggregator import (
    category_key,
    category_of_url,
    category_url,
    parse_post_url,
)

SITE = "https://finews.withounder.com"


def test_a_post_url_names_the_articles_day_not_its_category() -> None:
    # Jekyll: categories lower-cased and split at spaces; the path's day is the shown one.
    where = parse_post_url(f"{SITE}/21shijijingjibaodao/21caijingapp/2021/12/31/NW202112302000000001.html")
    assert where is not None
    assert where.path_key == category_key("21shijijingjibaodao 21caijingAPP")
    assert (where.shown_day, where.day, where.slug) == ("2021-12-31", "2021-12-30",
                                                         "NW202112302000000001")
    assert where.article_id == "202112302000000001"
    rolling = parse_post_url(f"{SITE}/emnews/2021/12/08/202112082206885265.html")
    assert rolling is not None and (rolling.path_key, rolling.day) == ("emnews", "2021-12-08")
    assert parse_post_url(f"{SITE}/category/Wind.html") is None
    invalid = parse_post_url(f"{SITE}/wind/2021/12/31/NW202113992000000001.html")
    assert invalid is not None and (invalid.article_id, invalid.day) == (None, None)


def test_category_names_and_their_pages() -> None:
    assert category_key("Wind") == category_key("wind") == "wind"
    assert category_key("21shijijingjibaodao/21caijingapp") == "21shijijingjibaodao 21caijingapp"
    assert category_of_url(f"{SITE}/category/21shijijingjibaodao%2021caijingAPP.html") == (
        "21shijijingjibaodao 21caijingAPP")
    assert category_of_url(f"{SITE}/category/Wind.html") == "Wind"
    assert category_of_url(f"{SITE}/emnews/") == category_of_url(f"{SITE}/emnews") == "emnews"
    assert category_of_url(f"{SITE}/emnews/2021/12/emnews/") is None  # `../emnews/` from a post
    assert category_of_url(f"{SITE}/") is None
    assert category_url(SITE, "21shijijingjibaodao 21caijingAPP") == (
        f"{SITE}/category/21shijijingjibaodao%2021caijingAPP.html")
    assert category_url(SITE, "emnews") == f"{SITE}/emnews/"


BACK_LINK = ('<a href="//finews.withounder.com/category/21shijijingjibaodao 21caijingAPP.html">'
             "返回21世纪经济报道 21财经APP新闻</a>")
POST = """<html><head><script type="application/ld+json">
{"datePublished":"2021-12-31T04:00:00+08:00","@type":"BlogPosting"}</script></head><body>
<section>
<small>(GMT+8, Asia/Shanghai, CST) 2021-12-31 04:00:00</small>
<h1>《<证券法>实施细则》正式生效</h1>
<p>正文</p>
<p><a href="http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202112302000000001">http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202112302000000001</a></p>
<p>@BACK@｜<a href="//finews.withounder.com/">返回首页</a></p>
<small>tags: <em>21世纪经济报道</em> - <em>21财经APP新闻</em></small>
</section></body></html>""".replace("@BACK@", BACK_LINK)


def test_a_post_page_gives_its_category_and_tag_as_its_back_link_writes_them() -> None:
    url = f"{SITE}/21shijijingjibaodao/21caijingapp/2021/12/31/NW202112302000000001.html"
    page = PostPage.parse(Selector(text=POST), url)
    assert page.back_links == [BackLink("21shijijingjibaodao 21caijingAPP", "21世纪经济报道 21财经APP新闻")]
    assert page.tags == ["21世纪经济报道", "21财经APP新闻"]  # Jekyll's split tags
    assert page.title == "《<证券法>实施细则》正式生效"  # Jekyll prints titles unescaped
    assert page.date_raw == "(GMT+8, Asia/Shanghai, CST) 2021-12-31 04:00:00"
    assert page.date_published == "2021-12-31T04:00:00+08:00"
    assert page.share_code == "NW202112302000000001"
    relative = POST.replace(BACK_LINK, '<a href="../emnews/">返回东财滚动新闻</a>')
    assert PostPage.parse(Selector(text=relative), url).back_links == []  # names no page
    # Older posts link back to the category's folder: the name as written all the same.
    older = POST.replace(BACK_LINK, '<a href="//finews.withounder.com/Wind/">返回Wind新闻</a>')
    assert PostPage.parse(Selector(text=older), url).back_links == [BackLink("Wind", "Wind新闻")]


def test_a_broken_href_costs_its_entry_not_the_listing() -> None:
    html = ('<h2 id="Wind新闻">Wind新闻</h2><ul><li><a href="http://[x">坏</a></li>'
            '<li><a href="/wind/2021/12/30/NW202112302000000002.html">好</a></li></ul>')
    listing = ListingPage.parse(Selector(text=html), f"{SITE}/category/Wind.html")
    assert listing.post_urls == [f"{SITE}/wind/2021/12/30/NW202112302000000002.html"]
    assert listing.entries[0].tag == "Wind新闻"
