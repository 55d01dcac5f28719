"""A dupefilter that remembers one run only, even with JOBDIR."""

from __future__ import annotations

from typing import Self

from scrapy.crawler import Crawler
from scrapy.dupefilters import RFPDupeFilter


class RunDupeFilter(RFPDupeFilter):
    """Scrapy's fingerprint filter, without persisting `requests.seen` to JOBDIR.

    A crawl killed mid-run has requests in flight whose fingerprints are
    already seen: a persisted filter would block them forever on resume. What
    is done across runs is what the database holds (newscrawl.components.incremental), so
    a resumed or repeated run rediscovers every listing and skips only
    articles that were really stored.
    """

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(None, crawler.settings.getbool("DUPEFILTER_DEBUG"),
                   fingerprinter=crawler.request_fingerprinter)
