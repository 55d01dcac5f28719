"""The host map: requests go to the mirror, every URL the spiders see stays real."""

from __future__ import annotations

import pytest
from scrapy import Request
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler

from newscrawl.components.hostmap import HostMapError, parse_host_map, to_mirror, to_real
from newscrawl.components.middlewares import HostMapMiddleware

HOST_MAP = {"finews.withounder.com": "http://127.0.0.1:8801",
            "finews.zning.xyz": "http://127.0.0.1:8802"}


def test_parse_host_map_reads_json_and_rejects_garbage() -> None:
    assert parse_host_map('{"Finews.Withounder.com": "http://127.0.0.1:8801/"}') == {
        "finews.withounder.com": "http://127.0.0.1:8801"}
    assert parse_host_map("") == {}
    with pytest.raises(HostMapError, match="not valid JSON"):
        parse_host_map("{nope")
    with pytest.raises(HostMapError, match="JSON object"):
        parse_host_map('["a"]')
    with pytest.raises(HostMapError, match="not an http"):
        parse_host_map('{"a": "ftp://x"}')


def test_to_mirror_keeps_path_and_query() -> None:
    assert to_mirror("https://finews.withounder.com/category/21shijijingjibaodao%2021caijingAPP.html",
                     HOST_MAP) == "http://127.0.0.1:8801/category/21shijijingjibaodao%2021caijingAPP.html"
    assert to_mirror("http://finews.zning.xyz/NewsData/GetNewsText.do?id=NW1", HOST_MAP) == (
        "http://127.0.0.1:8802/NewsData/GetNewsText.do?id=NW1")
    assert to_mirror("https://example.com/", HOST_MAP) is None


def test_to_real_maps_mirror_redirects_back() -> None:
    real = "https://finews.withounder.com/emnews/"
    assert to_real("http://127.0.0.1:8801/emnews/x.html", real, HOST_MAP) == (
        "https://finews.withounder.com/emnews/x.html")
    assert to_real("https://elsewhere.org/a", real, HOST_MAP) == "https://elsewhere.org/a"


def test_middleware_swaps_the_url_only_on_the_wire() -> None:
    crawler = get_crawler(settings_dict={"NEWSCRAWL_HOST_MAP": HOST_MAP})
    middleware = HostMapMiddleware.from_crawler(crawler)
    request = Request("https://finews.withounder.com/emnews/")
    assert middleware.process_request(request) is None
    assert request.url == "http://127.0.0.1:8801/emnews/"
    assert request.headers[b"Host"] == b"finews.withounder.com"
    response = HtmlResponse(request.url, body=b"<html></html>", request=request,
                            headers={"Location": "/emnews/a.html"})
    seen = middleware.process_response(request, response)
    assert seen.url == "https://finews.withounder.com/emnews/"
    assert request.url == "https://finews.withounder.com/emnews/"
    assert b"Host" not in request.headers
    assert seen.headers[b"Location"] == b"https://finews.withounder.com/emnews/a.html"


def test_middleware_restores_the_url_before_a_retry() -> None:
    crawler = get_crawler(settings_dict={"NEWSCRAWL_HOST_MAP": HOST_MAP})
    middleware = HostMapMiddleware.from_crawler(crawler)
    request = Request("http://finews.zning.xyz/NewsData/GetNewsText.do?id=NW1")
    middleware.process_request(request)
    middleware.process_exception(request, TimeoutError())
    assert request.url == "http://finews.zning.xyz/NewsData/GetNewsText.do?id=NW1"


def test_unset_host_map_disables_the_middleware() -> None:
    from scrapy.exceptions import NotConfigured

    with pytest.raises(NotConfigured):
        HostMapMiddleware.from_crawler(get_crawler(settings_dict={"NEWSCRAWL_HOST_MAP": ""}))
