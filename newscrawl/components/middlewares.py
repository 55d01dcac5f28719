"""Downloader middlewares."""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Self

from scrapy import Request, Spider, signals
from scrapy.core.downloader import Slot
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.exceptions import DontCloseSpider, IgnoreRequest
from scrapy.http import Response
from scrapy.settings import BaseSettings
from twisted.internet.base import DelayedCall

logger = logging.getLogger(__name__)
RETRY_AT_META = "newscrawl_retry_at"  # time.monotonic() before which a retry is not sent


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


class HostPace:
    """One host's backoff, as numbers: pure, so tested without Scrapy.

    - `not_before`: nothing goes to the host before this moment (its Retry-After);
    - `failure_ratio`: the share of its recent answers to first asks that failed (an
      exponential moving average over about 1/alpha of them; retries are left out, or one
      answer refused five times would count as five);
    - `delay`: seconds between two requests to it, raised while the host is failing (its
      failure ratio at or above the policy's threshold), halved by each success and
      dropped below the start value. One answer in five failing is that answer's problem
      (its own retries wait); most of them failing is the host's.
    """

    __slots__ = ("delay", "failure_ratio", "not_before")

    def __init__(self) -> None:
        self.delay = 0.0
        self.failure_ratio = 0.0
        self.not_before = 0.0


@dataclass(frozen=True)
class BackoffPolicy:
    """How long a retry waits, and how a host's pace follows its answers (times in seconds)."""

    base: float = 0.25  # a retry's own wait: base * 2**(retries so far), capped
    cap: float = 60.0
    retry_after_cap: float = 120.0  # a server's Retry-After is obeyed up to this
    host_delay_start: float = 0.5  # a failing host's first delay, doubled per failure
    host_delay_max: float = 30.0
    failing_ratio: float = 0.5  # a host is failing when this share of its answers fail
    alpha: float = 0.05  # weight of one answer in the failure ratio (about the last 20)

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> BackoffPolicy:
        return cls(
            base=settings.getfloat("NEWSCRAWL_RETRY_BACKOFF_BASE", cls.base),
            cap=settings.getfloat("NEWSCRAWL_RETRY_BACKOFF_MAX", cls.cap),
            retry_after_cap=settings.getfloat("NEWSCRAWL_RETRY_AFTER_MAX", cls.retry_after_cap),
            host_delay_start=settings.getfloat("NEWSCRAWL_HOST_DELAY_START", cls.host_delay_start),
            host_delay_max=settings.getfloat("NEWSCRAWL_HOST_DELAY_MAX", cls.host_delay_max),
            failing_ratio=settings.getfloat("NEWSCRAWL_HOST_FAILING_RATIO", cls.failing_ratio),
        )

    def own_wait(self, retries: int, retry_after: float | None) -> float:
        """A retry's own wait: the server's Retry-After (capped), else exponential."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return min(self.cap, self.base * 2 ** retries)

    def retry_wait(self, pace: HostPace, retries: int, retry_after: float | None, now: float) -> float:
        """Seconds a retry is held: its own wait, and at least until its host takes requests."""
        return max(self.own_wait(retries, retry_after), pace.not_before - now, 0.0)

    def failed(self, pace: HostPace, now: float, retry_after: float | None = None, *,
               first_ask: bool = True) -> None:
        """A retryable failure (status or exception); `first_ask`: not itself a retry."""
        if first_ask:
            pace.failure_ratio += self.alpha * (1.0 - pace.failure_ratio)
        if retry_after is not None:
            pace.not_before = max(pace.not_before, now + min(retry_after, self.retry_after_cap))
        if first_ask and pace.failure_ratio >= self.failing_ratio:
            pace.delay = min(self.host_delay_max, max(self.host_delay_start, 2 * pace.delay))
        elif retry_after is not None:
            # A delay, so the download slot holds its queue until not_before; the host named
            # its time, doubling per answer that says so would outlast it.
            pace.delay = max(pace.delay, self.host_delay_start)

    def succeeded(self, pace: HostPace, *, first_ask: bool = True) -> None:
        """Any other answer: the host answered."""
        if first_ask:
            pace.failure_ratio -= self.alpha * pace.failure_ratio
        pace.delay = pace.delay / 2 if pace.delay / 2 >= self.host_delay_start else 0.0


class BackoffRetryMiddleware(RetryMiddleware):
    """Scrapy's RetryMiddleware (same settings, meta keys, stats and give-up log), whose
    retries wait outside the downloader, and whose failing hosts slow down alone.

    - A retry is held on a timer, then handed to the engine (`engine.crawl`): while it
      waits it takes no downloader or engine slot, so the other hosts' pages go on at
      their pace. The wait: the answer's Retry-After (capped at NEWSCRAWL_RETRY_AFTER_MAX),
      else NEWSCRAWL_RETRY_BACKOFF_BASE * 2**retries (capped at NEWSCRAWL_RETRY_BACKOFF_MAX),
      and never before its host takes requests again. The spider is kept open
      (`spider_idle`) while retries are held. (A retry of a request the engine downloads
      directly, robots.txt's, bypasses the scheduler and is not held; its host's
      Retry-After still holds it in the download slot.)
    - Per host (its download slot): a Retry-After means nothing goes to that host
      before then; a host whose answers to first asks mostly fail
      (NEWSCRAWL_HOST_FAILING_RATIO, retries left out) gets
      a download delay from NEWSCRAWL_HOST_DELAY_START, doubled per failure up to
      NEWSCRAWL_HOST_DELAY_MAX, halved by each success, back to the slot's own delay.
    - Stats: `newscrawl/backoff/{status,retry_after,exception}` retries held by cause,
      `newscrawl/backoff/milliseconds` their waits in all, and
      `newscrawl/backoff/host/<host>/milliseconds` per host (crawl_runs' safe_key turns
      the host's dots into `_` should a document carry it).

    Replaces Scrapy's at 550 (DOWNLOADER_MIDDLEWARES). Held retries live in this
    process: the distributed frontier counts them as held claims, so a process that
    stops hands their requests back to the run's queue.
    """

    _of: weakref.WeakKeyDictionary[Crawler, BackoffRetryMiddleware] = weakref.WeakKeyDictionary()

    def __init__(self, settings: BaseSettings) -> None:
        super().__init__(settings)
        self.policy = BackoffPolicy.from_settings(settings)
        self.paces: dict[str, HostPace] = {}
        self.own_delays: dict[str, float] = {}  # slot -> the delay this set on it last
        self.base_delays: dict[str, float] = {}  # slot -> its delay before this raised it
        self.held: dict[Request, DelayedCall] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        middleware = super().from_crawler(crawler)
        crawler.signals.connect(middleware.request_scheduled, signal=signals.request_scheduled)
        crawler.signals.connect(middleware.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(middleware.spider_closed, signal=signals.spider_closed)
        cls._of[crawler] = middleware
        return middleware

    @classmethod
    def held_requests(cls, crawler: Crawler) -> list[Request]:
        """The retries the crawler's middleware holds now (none without one)."""
        middleware = cls._of.get(crawler)
        return list(middleware.held) if middleware is not None else []

    # --- answers -------------------------------------------------------------------
    def process_response(  # type: ignore[override]
        self, request: Request, response: Response
    ) -> Request | Response:
        retryable = response.status in self.retry_http_codes
        retry_after = retry_after_seconds(response.headers.get(b"Retry-After")) if retryable else None
        result = super().process_response(request, response)
        if isinstance(result, Request):
            self._failed(request, retry_after)
            self._hold(result, request, retry_after, "retry_after" if retry_after is not None else "status")
        elif retryable:
            self._failed(request, retry_after)  # given up or dont_retry: still its host's failure
        else:
            self._succeeded(request)
        return result

    def process_exception(  # type: ignore[override]
        self, request: Request, exception: Exception
    ) -> Request | Response | None:
        result = super().process_exception(request, exception)
        if isinstance(exception, self.exceptions_to_retry) and not request.meta.get("dont_retry", False):
            self._failed(request, None)
        if isinstance(result, Request):
            self._hold(result, request, None, "exception")
        return result

    # --- hosts ---------------------------------------------------------------------
    def _slot(self, request: Request) -> tuple[str, Slot | None]:
        downloader = self.crawler.engine.downloader
        key = downloader.get_slot_key(request)
        return key, downloader.slots.get(key)

    def _failed(self, request: Request, retry_after: float | None) -> None:
        key, slot = self._slot(request)
        pace = self.paces.setdefault(key, HostPace())
        now = time.monotonic()
        self.policy.failed(pace, now, retry_after, first_ask=not request.meta.get("retry_times"))
        if slot is not None:
            self._set_delay(key, slot, pace)
            # The slot sends nothing before lastseen + delay (Scrapy's _process_queue).
            slot.lastseen = max(slot.lastseen, pace.not_before)

    def _succeeded(self, request: Request) -> None:
        key, slot = self._slot(request)
        pace = self.paces.get(key)
        if pace is None:
            return
        self.policy.succeeded(pace, first_ask=not request.meta.get("retry_times"))
        if slot is not None:
            self._set_delay(key, slot, pace)
        if not pace.delay and pace.failure_ratio < 0.01 and pace.not_before <= time.monotonic():
            del self.paces[key]

    def _set_delay(self, key: str, slot: Slot, pace: HostPace) -> None:
        """The slot's delay: at least the host's pace while it has one; once the pace is
        back to 0, the slot's own delay again, unless AutoThrottle has changed it since."""
        if pace.delay:
            if key not in self.base_delays:
                self.base_delays[key] = slot.delay
            if slot.delay < pace.delay:
                slot.delay = pace.delay
                self.own_delays[key] = pace.delay
        elif key in self.base_delays:
            base = self.base_delays.pop(key)
            if self.own_delays.pop(key, None) == slot.delay:
                slot.delay = base

    # --- held retries --------------------------------------------------------------
    def _hold(self, retry: Request, failed: Request, retry_after: float | None, cause: str) -> None:
        key, _ = self._slot(failed)
        pace = self.paces.setdefault(key, HostPace())
        now = time.monotonic()
        wait = self.policy.retry_wait(pace, int(failed.meta.get("retry_times", 0)), retry_after, now)
        retry.meta[RETRY_AT_META] = now + wait
        stats = self.crawler.stats
        if stats is not None:
            milliseconds = round(wait * 1000)
            stats.inc_value(f"newscrawl/backoff/{cause}")
            stats.inc_value("newscrawl/backoff/milliseconds", milliseconds)
            stats.inc_value(f"newscrawl/backoff/host/{key}/milliseconds", milliseconds)

    def request_scheduled(self, request: Request, spider: Spider) -> None:
        """A retry on its way to the scheduler waits here instead, on a timer."""
        retry_at = request.meta.pop(RETRY_AT_META, None)
        if retry_at is None:
            return
        wait = retry_at - time.monotonic()
        if wait <= 0:
            return
        from twisted.internet import reactor

        self.held[request] = reactor.callLater(wait, self._release, request)
        stats = self.crawler.stats
        if stats is not None:
            stats.max_value("newscrawl/backoff/held_max", len(self.held))
        raise IgnoreRequest("held for its retry wait")  # the engine schedules nothing now

    def _release(self, request: Request) -> None:
        if self.held.pop(request, None) is not None and self.crawler.engine.spider is not None:
            self.crawler.engine.crawl(request)

    def spider_idle(self, spider: Spider) -> None:
        if self.held:
            raise DontCloseSpider  # a held retry is work still to do

    def spider_closed(self, spider: Spider) -> None:
        for call in self.held.values():
            if call.active():
                call.cancel()
        if self.held:
            logger.info("%d retries still waiting were dropped with the spider", len(self.held))
        self.held.clear()
