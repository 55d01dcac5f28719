"""Downloader middlewares."""

from __future__ import annotations

from typing import Any

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response

from newscrawl.hostmap import parse_host_map, to_mirror, to_real

REAL_URL_META = "newscrawl_real_url"


class HostMapMiddleware:
    """Sends requests for mapped hosts to their mirror; everything else sees the real URL.

    Runs last on the way out and first on the way back (priority 950), so the
    request's URL is swapped only while it is on the wire: robots.txt, retries,
    redirects, the dupefilter, JOBDIR queues, response.url and every stored URL
    keep the real host. The Host header names the real host, as on the live site.
    """

    def __init__(self, host_map: dict[str, str], crawler: Crawler) -> None:
        self.host_map = host_map
        self.stats = crawler.stats

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> HostMapMiddleware:
        host_map = parse_host_map(crawler.settings.get("NEWSCRAWL_HOST_MAP"))
        if not host_map:
            raise NotConfigured("NEWSCRAWL_HOST_MAP is empty: requests go to the live sites")
        return cls(host_map, crawler)

    def process_request(self, request: Request, spider: Spider | None = None) -> None:
        if REAL_URL_META in request.meta:
            return
        mirror_url = to_mirror(request.url, self.host_map)
        if mirror_url is None:
            return
        request.meta[REAL_URL_META] = request.url
        if b"Host" not in request.headers:
            request.headers[b"Host"] = request.url.split("/")[2]
            request.meta["newscrawl_host_header"] = True
        # In place, not request.replace(): a new request would go back through
        # the scheduler (and into JOBDIR) with the mirror's address.
        request._set_url(mirror_url)
        if self.stats is not None:
            self.stats.inc_value("newscrawl/hostmap/requests")

    def _restore(self, request: Request) -> str | None:
        real_url = request.meta.pop(REAL_URL_META, None)
        if real_url is not None:
            request._set_url(real_url)
            if request.meta.pop("newscrawl_host_header", False):
                del request.headers[b"Host"]
        return real_url

    def process_response(
        self, request: Request, response: Response, spider: Spider | None = None
    ) -> Response:
        real_url = self._restore(request)
        if real_url is None:
            return response
        location = response.headers.get(b"Location")
        if location is not None:
            mapped = to_real(response.urljoin(location.decode("latin-1")), real_url, self.host_map)
            response.headers[b"Location"] = mapped.encode("latin-1")
        return response.replace(url=real_url)

    def process_exception(
        self, request: Request, exception: Exception, spider: Spider | None = None
    ) -> Any:
        self._restore(request)
        return None
