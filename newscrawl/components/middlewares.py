"""Downloader middlewares."""

from __future__ import annotations

import time
from datetime import UTC
from email.utils import parsedate_to_datetime

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.misc import load_object
from twisted.internet.task import deferLater


def retry_after_seconds(value: bytes | str | None, now: float | None = None) -> float | None:
    """A Retry-After header's wait: delta-seconds or an HTTP date; None when unreadable."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


class BackoffMiddleware:
    """Waits before Scrapy's RetryMiddleware retries: Retry-After when the server
    names a time (429, 503), else exponential backoff by the retry count.

    Priority 560: its process_response/process_exception run just before
    RetryMiddleware's (550). Only this request waits; the crawl goes on.
    """

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.stats = crawler.stats
        self.retry_codes = {int(code) for code in settings.getlist("RETRY_HTTP_CODES")}
        self.max_retries = settings.getint("RETRY_TIMES")
        self.base = settings.getfloat("NEWSCRAWL_RETRY_BACKOFF_BASE", 1.0)
        self.cap = settings.getfloat("NEWSCRAWL_RETRY_BACKOFF_MAX", 60.0)
        self.retry_after_cap = settings.getfloat("NEWSCRAWL_RETRY_AFTER_MAX", 120.0)
        # The failures RetryMiddleware retries (RETRY_EXCEPTIONS), so we wait for those only.
        self.retry_exceptions = tuple(
            load_object(name) if isinstance(name, str) else name
            for name in settings.getlist("RETRY_EXCEPTIONS")
        )

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> BackoffMiddleware:
        if not crawler.settings.getbool("RETRY_ENABLED"):
            raise NotConfigured
        return cls(crawler)

    def _will_retry(self, request: Request) -> bool:
        if request.meta.get("dont_retry"):
            return False
        limit = request.meta.get("max_retry_times", self.max_retries)
        return int(request.meta.get("retry_times", 0)) < int(limit)

    def backoff(self, request: Request) -> float:
        return min(self.cap, self.base * 2 ** int(request.meta.get("retry_times", 0)))

    async def _wait(self, seconds: float, reason: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(f"newscrawl/backoff/{reason}")
            self.stats.inc_value("newscrawl/backoff/milliseconds", round(seconds * 1000))
        if seconds > 0:
            from twisted.internet import reactor

            await maybe_deferred_to_future(deferLater(reactor, seconds, lambda: None))

    async def process_response(self, request: Request, response: Response) -> Response:
        if response.status in self.retry_codes and self._will_retry(request):
            named = retry_after_seconds(response.headers.get(b"Retry-After"))
            if named is not None:
                await self._wait(min(named, self.retry_after_cap), "retry_after")
            else:
                await self._wait(self.backoff(request), "status")
        return response

    async def process_exception(self, request: Request, exception: Exception) -> None:
        if isinstance(exception, self.retry_exceptions) and self._will_retry(request):
            await self._wait(self.backoff(request), "exception")
