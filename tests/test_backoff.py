"""Retries that wait holding nothing, and hosts that slow down alone (issue 19, point 1)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from pymongo.database import Database

from fixtures.server import AGGREGATOR_HOST, SHARE_HOST, Fault
from newscrawl.components.middlewares import BackoffPolicy, HostPace
from tests.conftest import CrawlRunner, Mirror
from tests.helpers import assert_truth_stored

POST_PATH = r"/\d{4}/\d{2}/\d{2}/[^/]+\.html$"
POLICY = BackoffPolicy(base=0.25, cap=60.0, retry_after_cap=120.0, host_delay_start=0.5,
                       host_delay_max=30.0, failing_ratio=0.5, alpha=0.05)


# --- the policy, pure ------------------------------------------------------------------------

def test_a_retry_waits_its_retry_after_capped_else_exponentially() -> None:
    assert [POLICY.own_wait(retries, None) for retries in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert POLICY.own_wait(20, None) == 60.0
    assert POLICY.own_wait(0, 7.0) == 7.0
    assert POLICY.own_wait(3, 600.0) == 120.0


def test_a_retry_never_goes_before_its_host_takes_requests_again() -> None:
    pace = HostPace()
    POLICY.failed(pace, now=100.0, retry_after=30.0)
    assert pace.not_before == 130.0
    # Another answer of that host, failing without a Retry-After, waits for the host.
    assert POLICY.retry_wait(pace, 0, None, now=101.0) == 29.0
    assert POLICY.retry_wait(pace, 0, None, now=131.0) == 0.25
    # A shorter Retry-After later does not shorten the host's.
    POLICY.failed(pace, now=102.0, retry_after=1.0)
    assert pace.not_before == 130.0


def test_a_few_failing_answers_leave_the_host_at_its_pace() -> None:
    pace = HostPace()
    for answer in range(400):  # one answer in 4 failing: that answer's problem, not the host's
        if answer % 4 == 0:
            POLICY.failed(pace, now=float(answer))
            for _ in range(4):  # and its four retries, refused too: not counted
                POLICY.failed(pace, now=float(answer), first_ask=False)
        else:
            POLICY.succeeded(pace)
        assert pace.delay == 0.0
    assert 0.15 < pace.failure_ratio < 0.35


def test_a_failing_host_slows_down_then_recovers() -> None:
    pace = HostPace()
    delays = []
    for _ in range(21):
        POLICY.failed(pace, now=0.0)
        delays.append(pace.delay)
    # The ratio reaches one half at the 14th failure in a row; then the delay doubles, capped.
    assert delays[:13] == [0.0] * 13
    assert delays[13:] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    successes = 0
    while pace.delay:
        POLICY.succeeded(pace)
        successes += 1
    assert successes == 6  # 30, 15, 7.5, 3.75, 1.875, 0.9375, then below 0.5: none
    assert pace.failure_ratio < 0.5


def test_a_retry_after_slows_the_host_even_when_its_other_answers_are_fine() -> None:
    pace = HostPace()
    for _ in range(10):  # ten answers saying so: the host named its time, once
        POLICY.failed(pace, now=0.0, retry_after=2.0)
    assert pace.delay == 0.5  # a delay, so the download slot holds its queue until not_before
    assert pace.not_before == 2.0
    POLICY.succeeded(pace)
    assert pace.delay == 0.0


# --- a real crawl --------------------------------------------------------------------------------

def test_aggregator_pages_are_fetched_while_the_share_hosts_retries_wait(
        crawl: CrawlRunner, mirror_server: Any, mirror: Mirror,
        mongo_db: Database[dict[str, Any]]) -> None:
    """Sixteen share answers refused with Retry-After: 4 (as many as CONCURRENT_REQUESTS).
    In the second half of the first refusal's Retry-After the aggregator's pages still come
    (when the waits held download slots, the sixteen filled the downloader and nothing came
    until the first wait was over), and the share host gets nothing before it is over."""
    retry_after = 4.0
    mirror_server.clear_requests()
    mirror_server.add_fault(Fault(host=SHARE_HOST, path=r"GetNewsText", status=503,
                                  retry_after=retry_after, times=16))
    # Post pages answered in 0.3 s: the aggregator has pages left to give for the whole
    # window however fast or loaded the machine (120 pages, 8 at a time: 4.5 s and more).
    mirror_server.add_fault(Fault(host=AGGREGATOR_HOST, path=POST_PATH, delay=0.3, times=None))
    try:
        result = crawl("finews")
    finally:
        mirror_server.clear_faults()
    assert_truth_stored(mongo_db, mirror.truth("articles"))
    log = mirror_server.timed_requests
    refused = [when for when, host, _, status in log if host == SHARE_HOST and status == 503]
    assert len(refused) == 16
    first = refused[0]
    window = (first + retry_after / 2, first + retry_after - 0.05)
    during = [(host, target) for when, host, target, _ in log if window[0] < when < window[1]]
    aggregator = [target for host, target in during if host == AGGREGATOR_HOST]
    share = [target for host, target in during if host == SHARE_HOST]
    assert share == []
    assert len(aggregator) >= 10, (len(aggregator), len(log))
    # The share host's refusals came in waves, one a Retry-After: never sooner.
    waves = [later - earlier for earlier, later in pairwise(refused)
             if later - earlier > 1.0]
    assert waves and min(waves) >= retry_after - 0.1, waves
    stats = result.stats
    assert stats["newscrawl/backoff/retry_after"] == 16
    assert stats["retry/count"] == 16
    assert stats["newscrawl/backoff/host/finews.zning.xyz/milliseconds"] >= 16 * 1000
    assert stats["newscrawl/backoff/milliseconds"] == sum(
        value for key, value in stats.items()
        if key.startswith("newscrawl/backoff/host/") and key.endswith("/milliseconds"))
    assert stats["newscrawl/backoff/held_max"] >= 1


def test_a_retry_held_past_the_last_page_keeps_the_spider_open(
        crawl: CrawlRunner, mirror_server: Any, mirror: Mirror,
        mongo_db: Database[dict[str, Any]]) -> None:
    """The last thing left is a retry waiting 3 s: the crawl waits for it, then stores it."""
    answers = mirror.root / SHARE_HOST / "NewsData" / "GetNewsText"
    code = next(r["info_code"] for r in mirror.truth("articles")
                if (answers / f"{r['info_code']}.json").is_file())
    mirror_server.add_fault(Fault(host=SHARE_HOST, path=rf"id={code}$", status=503, retry_after=3,
                                  times=1))
    try:
        result = crawl("finews")
    finally:
        mirror_server.clear_faults()
    assert_truth_stored(mongo_db, mirror.truth("articles"))
    assert result.stats["retry/count"] == 1
    assert result.stats["finish_reason"] == "finished"
    assert result.stats.get("newscrawl/share/failed", 0) == 0


def test_policy_settings_are_read() -> None:
    from scrapy.settings import Settings

    settings = Settings({"NEWSCRAWL_RETRY_BACKOFF_BASE": "1.5", "NEWSCRAWL_HOST_DELAY_START": "2",
                         "NEWSCRAWL_HOST_FAILING_RATIO": "0.3"})
    policy = BackoffPolicy.from_settings(settings)
    assert (policy.base, policy.host_delay_start, policy.failing_ratio) == (1.5, 2.0, 0.3)
