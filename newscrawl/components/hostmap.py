"""The host map: real host names to the base URLs that serve them here.

The mapping is pure functions (tested without Scrapy); `HostMapDownloadHandler`,
Scrapy's download handler for http and https (settings' DOWNLOAD_HANDLERS),
applies them to the download alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from scrapy import Request
from scrapy.core.downloader.handlers.base import BaseDownloadHandler
from scrapy.crawler import Crawler
from scrapy.http import Response
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler, load_object


class HostMapError(ValueError):
    """NEWSCRAWL_HOST_MAP is not a JSON object of host name to base URL."""


def parse_host_map(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """Read the setting: a JSON object (or a dict) from host name to base URL."""
    if not value:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise HostMapError(f"NEWSCRAWL_HOST_MAP is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise HostMapError("NEWSCRAWL_HOST_MAP must be a JSON object {host: base_url}")
    host_map: dict[str, str] = {}
    for host, base in value.items():
        parts = urlsplit(str(base))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise HostMapError(f"NEWSCRAWL_HOST_MAP[{host!r}]: {base!r} is not an http(s) URL")
        host_map[str(host).lower()] = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return host_map


def to_mirror(url: str, host_map: Mapping[str, str]) -> str | None:
    """The URL that serves `url` here, or None when its host is not mapped."""
    parts = urlsplit(url)
    base = host_map.get((parts.hostname or "").lower())
    if base is None:
        return None
    b = urlsplit(base)
    return urlunsplit((b.scheme, b.netloc, b.path + (parts.path or "/"), parts.query, ""))


def to_real(url: str, real_url: str, host_map: Mapping[str, str]) -> str:
    """Map a mirror URL (e.g. a redirect target) back to the real host of `real_url`'s map.

    Any mirror base in the map is recognised; other URLs are returned as they are.
    The map does not say a host's real scheme: `real_url`'s for its own host,
    https for another (a cross-host redirect on these sites has not been seen).
    """
    parts = urlsplit(url)
    for host, base in host_map.items():
        b = urlsplit(base)
        if parts.netloc == b.netloc and parts.path.startswith(b.path):
            scheme = urlsplit(real_url).scheme if urlsplit(real_url).hostname == host else "https"
            path = parts.path[len(b.path):] or "/"
            return urlunsplit((scheme, host, path, parts.query, parts.fragment))
    return url


class HostMapDownloadHandler(BaseDownloadHandler):
    """Downloads a request for a mapped host from its mirror; the request keeps its real URL.

    Only the download sees the mirror: what goes on the wire is a copy of the request
    with the mirror's URL and a Host header naming the real host (as on the live site),
    and the response comes back with the real URL, the original request, and a
    redirect's Location mapped back to the real host. So the scheduler, the dupefilter,
    JOBDIR, robots.txt, retries, redirects, download slots, stats and every stored URL
    see the real host. What the download notes in the copy's meta (download_latency,
    which AutoThrottle reads) is noted in the request's too.

    Requests for hosts the map does not name, and every request when NEWSCRAWL_HOST_MAP
    is empty (the live sites), go untouched to Scrapy's own handler of their scheme
    (DOWNLOAD_HANDLERS_BASE), which also fetches the mirror URLs.
    """

    lazy = False

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        self.host_map = parse_host_map(crawler.settings.get("NEWSCRAWL_HOST_MAP"))
        self.handlers: dict[str, Any] = {}  # scheme -> Scrapy's handler, built when first used

    def handler(self, scheme: str) -> Any:
        if scheme not in self.handlers:
            path = self.crawler.settings.getdict("DOWNLOAD_HANDLERS_BASE")[scheme]
            self.handlers[scheme] = build_from_crawler(load_object(path), self.crawler)
        return self.handlers[scheme]

    async def download_request(self, request: Request) -> Response:
        mirror_url = to_mirror(request.url, self.host_map)
        if mirror_url is None:
            return await self.handler(urlparse_cached(request).scheme).download_request(request)
        wire = request.replace(url=mirror_url)
        if b"Host" not in wire.headers:
            wire.headers[b"Host"] = urlsplit(request.url).netloc
        self.crawler.stats.inc_value("newscrawl/hostmap/requests")
        try:
            response: Response = await self.handler(urlparse_cached(wire).scheme).download_request(wire)
        finally:
            request.meta.update(wire.meta)
        real = response.replace(url=request.url, request=request)
        location = response.headers.get(b"Location")
        if location is not None:
            mapped = to_real(response.urljoin(location.decode("latin-1")), request.url, self.host_map)
            real.headers[b"Location"] = mapped.encode("latin-1")
        return real

    async def close(self) -> None:
        for handler in self.handlers.values():
            await handler.close()
