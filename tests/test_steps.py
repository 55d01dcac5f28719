"""The Scrapy steps: items through the chain on a real Crawler, what each
step fills, what it rejects and what it counts."""

from __future__ import annotations

import asyncio
import warnings
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem
from scrapy.pipelines import ItemPipelineManager
from scrapy.utils.test import get_crawler

from newscrawl.items import ArticleItem
from pipelines.errors import RejectItem
from pipelines.identity import content_hash
from pipelines.steps import (
    STEP_PIPELINES,
    CleanPipeline,
    DatePipeline,
    IdentityPipeline,
    SourcePipeline,
)

FETCHED = datetime(2021, 12, 31, 6, 0, tzinfo=UTC)
POST_URL = "https://finews.withounder.com/jingzhouribao/2021/12/31/NW202112312232339262.html"
SHARE_URL = "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202112312232339262"
ROLLING_URL = "https://finews.withounder.com/emnews/2021/12/08/202112082206928461.html"
ORIGIN_URL = "http://finance.eastmoney.com/news/1344,202112082206928461.html"

# as the site renders the end of post 2021-12-31-NW202112312232339262
MEDIA_BODY = (
    "<p>本报讯(记者李天然夏雨彬特约记者张星星)12月30日上午，市委经济工作会议举行。</p>\n"
    " <p>会上，市发改委负责人作交流发言。</p>"
    '<p class="em_media">（文章来源：荆州日报）</p>\n'
    f'<p><a href="{SHARE_URL}">{SHARE_URL}</a></p>\n'
    '<p><a href="//finews.withounder.com/category/jingzhouribao.html">返回荆州日报新闻</a>｜'
    '<a href="//finews.withounder.com/">返回首页</a></p>'
)
ROLLING_DIGEST_BODY = (
    "<p>“股王”茅台重回2000元关口！酿酒板块多股大涨</p>\n"
    f'<p><a href="{ORIGIN_URL}">{ORIGIN_URL}</a></p>\n'
    '<p><a href="../emnews/">返回东财滚动新闻</a>\n<a href="../">返回首页</a></p>'
)
ROLLING_FULL_BODY = (
    "<blockquote>\n<p>据霍尼韦尔官网消息，霍尼韦尔宣布为蔚来提供制冷剂。（上海证券报）</p>\n"
    "</blockquote>\n"
    "<p>国内首款使用超低GWP制冷剂的新能源汽车来了！<br /></p><p>据记者了解，产品GWP小于1。</p>"
    '<p class="em_media">（文章来源：上海<span><a href="http://quote">证券</a></span>'
    "<span></span>报）</p>\n<p>&lt;&gt;</p>"
)


def media_item(**changes: Any) -> ArticleItem:
    item = ArticleItem(
        url=POST_URL,
        page_kind="post",
        fetched_at=FETCHED,
        article_id="202112312232339262",
        share_code="NW202112312232339262",
        title="稳中求进增量提质转型升级跨越赶超",
        date_raw=" (GMT+8, Asia/Shanghai, CST) 2021-12-31 08:58:25 ",
        date_published="2021-12-31T08:58:25+08:00",
        body_html=MEDIA_BODY,
        tags=["荆州日报新闻"],
        category="jingzhouribao",
    )
    return replace(item, **changes)


def rolling_item(**changes: Any) -> ArticleItem:
    item = ArticleItem(
        url=ROLLING_URL,
        page_kind="post",
        fetched_at=FETCHED,
        article_id="202112082206928461",
        title="“股王”茅台重回2000元关口！",
        date_raw="(GMT+8, Asia/Shanghai, CST) 2021-12-08 12:41:23",
        body_html=ROLLING_DIGEST_BODY,
        tags=["东财滚动新闻"],
        category="emnews",
    )
    return replace(item, **changes)


def share_item(**changes: Any) -> ArticleItem:
    item = ArticleItem(
        url=SHARE_URL,
        page_kind="share",
        fetched_at=FETCHED,
        article_id="202112312232339262",
        share_code="NW202112312232339262",
        share_html="<p>\u3000\u3000本报讯 市委经济工作会议举行。</p>",
        share_title="稳中求进",
        share_time="2021-12-31 08:58:25",
        share_medium="荆州日报",
    )
    return replace(item, **changes)


@pytest.fixture
def crawler() -> Crawler:
    return get_crawler(settings_dict={"ITEM_PIPELINES": STEP_PIPELINES})


class Chain:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.steps = [
            CleanPipeline.from_crawler(crawler),
            IdentityPipeline.from_crawler(crawler),
            DatePipeline.from_crawler(crawler),
            SourcePipeline.from_crawler(crawler),
        ]

    def __call__(self, item: ArticleItem) -> ArticleItem:
        for step in self.steps:
            returned = step.process_item(item)
            assert returned is item
        return item

    def stat(self, key: str) -> Any:
        return self.crawler.stats.get_value(f"newscrawl/{key}")


@pytest.fixture
def chain(crawler: Crawler) -> Chain:
    return Chain(crawler)


def rejection(chain: Chain, item: ArticleItem) -> str:
    with pytest.raises(RejectItem) as caught:
        chain(item)
    assert isinstance(caught.value, DropItem)
    return caught.value.reason


def test_media_news_post(chain: Chain) -> None:
    item = chain(media_item())
    assert item.paragraphs == [
        "本报讯(记者李天然夏雨彬特约记者张星星)12月30日上午，市委经济工作会议举行。",
        "会上，市发改委负责人作交流发言。",
    ]
    assert item.body_kind == "media"
    assert item.attribution == "荆州日报"
    assert item.share_url == SHARE_URL
    assert item.origin_url is None
    assert item.article_id == "202112312232339262"
    assert item.content_hash == content_hash("\n".join(item.paragraphs))
    assert item.published_at == datetime(2021, 12, 31, 0, 58, 25, tzinfo=UTC)
    assert item.published_at_raw == "(GMT+8, Asia/Shanghai, CST) 2021-12-31 08:58:25"
    assert (item.source, item.source_slug) == ("荆州日报", "jingzhouribao")
    for step in ("clean", "identity", "date", "source"):
        assert chain.stat(f"{step}/items") == 1
    assert chain.stat("clean/body_kind/media") == 1


def test_rolling_news_digest(chain: Chain) -> None:
    item = chain(rolling_item())
    assert item.paragraphs == ["“股王”茅台重回2000元关口！酿酒板块多股大涨"]
    assert item.body_kind == "digest"
    assert item.origin_url == ORIGIN_URL
    assert item.attribution is None
    assert (item.source, item.source_slug) == ("东方财富", "emnews")
    assert item.published_at == datetime(2021, 12, 8, 4, 41, 23, tzinfo=UTC)


def test_rolling_news_with_quoted_digest_and_full_text(chain: Chain) -> None:
    item = chain(rolling_item(body_html=ROLLING_FULL_BODY))
    assert item.body_kind == "rolling"
    assert item.paragraphs is not None and len(item.paragraphs) == 3
    assert (item.source, item.source_slug) == ("上海证券报", "shanghaizhengquanbao")
    assert item.extra["digest_source"] == "上海证券报"


def test_spider_links_are_not_overwritten(chain: Chain) -> None:
    item = chain(media_item(share_url="http://finews.zning.xyz/other", origin_url="http://o"))
    assert (item.share_url, item.origin_url) == ("http://finews.zning.xyz/other", "http://o")


def test_share_only_article(chain: Chain) -> None:
    item = chain(share_item())
    assert item.paragraphs == ["本报讯市委经济工作会议举行。"]
    assert item.body_kind == "share"
    assert item.title == "稳中求进"
    assert item.published_at == datetime(2021, 12, 31, 0, 58, 25, tzinfo=UTC)
    assert item.published_at_raw == "2021-12-31 08:58:25"
    assert (item.source, item.source_slug) == ("荆州日报", "jingzhouribao")
    assert chain.stat("identity/title_from_share") == 1


def test_share_medium_does_not_override_a_post_pages_tag(chain: Chain) -> None:
    item = chain(media_item(body_html="<p>正文</p>", share_medium="证券时报"))
    assert item.source == "荆州日报"


def test_share_attribution_names_the_source_of_a_share_body(chain: Chain) -> None:
    html = "<p>正文</p><p class='em_media'>（文章来源：证券时报）</p>"
    item = chain(share_item(share_html=html, share_medium=None))
    assert (item.source, item.source_slug) == ("证券时报", "zhengquanshibao")


def test_longer_share_body_replaces_the_post_body(chain: Chain) -> None:
    longer = "<p>本报讯(记者李天然夏雨彬特约记者张星星)12月30日上午，市委经济工作会议举行。</p>" * 3
    item = chain(media_item(share_html=longer))
    assert item.body_kind == "share"
    assert item.paragraphs is not None and len(item.paragraphs) == 3
    assert item.attribution is None  # the share body named no medium: the tag does
    assert item.source == "荆州日报"
    assert item.share_url == SHARE_URL  # the post body still supplied the link
    assert chain.stat("clean/share_body_kept") == 1


def test_equal_share_body_keeps_the_post_body(chain: Chain) -> None:
    same = (
        "<p>\u3000\u3000本报讯(记者李天然夏雨彬特约记者张星星)12月30日上午，市委经济工作会议举行。</p>"
        "<p>会上，市发改委负责人作交流发言。</p>"
    )
    item = chain(media_item(share_html=same))
    assert item.body_kind == "media"
    assert item.attribution == "荆州日报"


def test_share_body_beats_a_digest(chain: Chain) -> None:
    item = chain(rolling_item(share_html="<p>短</p>"))
    assert (item.body_kind, item.paragraphs) == ("share", ["短"])


def test_empty_body_is_rejected(chain: Chain) -> None:
    assert rejection(chain, media_item(body_html="<p>\u3000</p><p>&lt;&gt;</p>")) == "empty body"
    assert rejection(chain, media_item(body_html=None)) == "empty body"
    assert chain.stat("clean/rejected/empty_body") == 2


def test_no_article_id_is_rejected(chain: Chain) -> None:
    # the spider found none: the pipelines do not look for one in the URL
    item = media_item(article_id=None)
    assert rejection(chain, item) == "no article id"
    assert chain.stat("identity/rejected/no_article_id") == 1


@pytest.mark.parametrize("given", ["NW202112312232339262", "202113312232339262", "2021123122323392"])
def test_an_invalid_article_id_is_rejected(chain: Chain, given: str) -> None:
    assert rejection(chain, media_item(article_id=given)) == f"invalid article id: {given!r}"
    assert chain.stat("identity/rejected/invalid_article_id") == 1


def test_empty_title_takes_the_share_title_or_is_rejected(chain: Chain) -> None:
    assert chain(media_item(title=" ", share_title="分享标题")).title == "分享标题"
    assert rejection(chain, media_item(title="")) == "empty title"
    assert rejection(chain, media_item(title=None)) == "empty title"


def test_broken_offset_only_date_falls_back_to_json_ld(chain: Chain) -> None:
    item = chain(media_item(date_raw=" +0800"))
    assert item.published_at == datetime(2021, 12, 31, 0, 58, 25, tzinfo=UTC)
    assert item.published_at_raw == "2021-12-31T08:58:25+08:00"
    assert chain.stat("date/from/date_published") == 1


def test_unreadable_date_is_rejected_with_the_reason(chain: Chain) -> None:
    reason = rejection(chain, media_item(date_raw=" +0800", date_published=None))
    assert reason.startswith("unreadable date:") and "+0800" in reason
    assert rejection(chain, media_item(date_raw=None, date_published="")) == "no date"


def test_missing_fetch_time_is_rejected(chain: Chain) -> None:
    item = {"url": POST_URL, "page_kind": "post", "article_id": "202112312232339262",
            "title": "标题", "body_html": "<p>正文</p>"}
    with pytest.raises(RejectItem, match="no fetched_at"):
        for step in chain.steps:
            item = step.process_item(item)


def test_future_date_is_rejected(chain: Chain) -> None:
    reason = rejection(chain, media_item(date_raw="2022-03-01 08:00:00 +0800"))
    assert reason.startswith("future date:")
    assert chain.stat("date/rejected/future_date") == 1


def test_relative_date_counts_from_fetched_at(chain: Chain) -> None:
    item = chain(media_item(date_raw="昨天 10:20", fetched_at=datetime(2021, 6, 1, tzinfo=UTC)))
    assert item.published_at == datetime(2021, 5, 31, 2, 20, tzinfo=UTC)


def test_month_day_date_takes_the_year_of_the_article_id(chain: Chain) -> None:
    item = media_item(
        date_raw="12月30日上午",
        url="https://finews.withounder.com/jingzhouribao/2020/12/30/NW202012302232339262.html",
        article_id="202012302232339262",
        fetched_at=datetime(2022, 1, 2, tzinfo=UTC),
    )
    assert chain(item).published_at == datetime(2020, 12, 30, 1, 0, tzinfo=UTC)


def test_unknown_medium_is_kept_with_its_pinyin_and_counted(chain: Chain) -> None:
    html = "<p>正文</p><p class='em_media'>（文章来源：野马财经）</p>"
    item = chain(media_item(body_html=html))
    assert (item.source, item.source_slug) == ("野马财经", "yemacaijing")
    assert chain.stat("source/unregistered") == 1


def test_no_source_at_all_is_rejected(chain: Chain) -> None:
    item = share_item(share_medium=None, category=None, tags=[])
    assert rejection(chain, item) == "no source"


def test_sources_file_setting_is_merged(tmp_path: Path) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text('[[medium]]\nname = "界面新闻"\nslug = "jiemian"\n', encoding="utf-8")
    chain = Chain(get_crawler(settings_dict={"NEWSCRAWL_SOURCES_FILE": str(extra)}))
    html = "<p>正文</p><p class='em_media'>（文章来源：界面新闻）</p>"
    item = chain(media_item(body_html=html))
    assert (item.source, item.source_slug) == ("界面新闻", "jiemian")
    assert chain(media_item()).source == "荆州日报"  # the bundled registry still applies


def test_dict_items_work_too(chain: Chain) -> None:
    item: dict[str, Any] = {
        "url": POST_URL,
        "page_kind": "post",
        "fetched_at": FETCHED,
        "article_id": "202112312232339262",
        "title": "标题",
        "date_raw": "2021-12-31 08:58:25 +0800",
        "body_html": MEDIA_BODY,
        "tags": ["荆州日报新闻"],
        "category": "jingzhouribao",
    }
    for step in chain.steps:
        item = step.process_item(item)
    assert item["article_id"] == "202112312232339262"
    assert item["source"] == "荆州日报"


def test_scrapy_runs_the_chain_from_item_pipelines(crawler: Crawler) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated pipeline signatures
        manager = ItemPipelineManager.from_crawler(crawler)
    item = asyncio.run(manager.process_item_async(media_item()))
    assert item.source == "荆州日报"
    assert item.published_at == datetime(2021, 12, 31, 0, 58, 25, tzinfo=UTC)
