"""The article counter as a clock (pipelines/counter.py): proven neighbours prove which reading
of an unproven page is right, never wrongly. Synthetic articles numbered as the site doc says
(Identity, "The 10 digits are a clock"), with the truth known; no server."""

from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipelines.counter as counter_module
from pipelines.counter import (
    ANCHOR_PROOFS,
    LATE,
    MARGIN,
    MAX_ANCHOR_GAP,
    SLACK,
    CounterClock,
    article_counter,
)
from pipelines.dates import (
    JEKYLL_SHIFT,
    PROOF_COUNTER,
    PROOF_ID_DAY,
    PROOF_SHARE,
    PROOF_TWIN,
    PROOF_UNPROVEN,
    PROVEN,
    TimeClaim,
    prove_page_time,
    reconcile_times,
)
from pipelines.identity import article_date

SHANGHAI_TZ = timezone(timedelta(hours=8))
START = datetime(2021, 12, 6, tzinfo=SHANGHAI_TZ)  # a Monday, 00:00 in Shanghai
FIRST_COUNTER = 2_200_000_000
TRADING = ((9 * 60 + 30, 11 * 60 + 30), (13 * 60, 15 * 60))  # minutes of the day, Shanghai


def number(article_id: str) -> int:
    counter = article_counter(article_id)
    assert counter is not None, article_id
    return counter


def article(counter: int, truth: datetime) -> str:
    """The id the site gives: the writer's day in Shanghai, then the counter."""
    return truth.astimezone(SHANGHAI_TZ).strftime("%Y%m%d") + f"{counter:010d}"


@dataclass(frozen=True)
class Article:
    article_id: str
    truth: datetime  # the writer's time, UTC
    offsetless: bool  # its front matter had no offset: the page shows it 8 h late

    @property
    def shown(self) -> datetime:
        return self.truth + JEKYLL_SHIFT if self.offsetless else self.truth

    @property
    def page_claim(self) -> TimeClaim:
        return prove_page_time(self.shown, article_date(self.article_id))

    @property
    def true_claim(self) -> TimeClaim:
        return TimeClaim(self.truth, PROOF_COUNTER, shifted=self.offsetless)


@dataclass(frozen=True)
class Site:
    """A counter following the site doc's rates; the articles a crawl sees of it."""

    articles: list[Article]

    @classmethod
    def generate(cls, seed: int, *, days: int = 2, per_day: int = 500, trading_rate: int = 85_000,
                 night_rate: int = 20_000, disorder: timedelta = timedelta(minutes=1),
                 late_share: float = 0.005, latest: timedelta = timedelta(hours=1)) -> Site:
        """`per_day` articles a day, numbered by a counter growing `trading_rate` an hour in
        trading hours, `night_rate` from 22:00 to 07:00 and half the trading rate otherwise
        (about 1.1 million a day at the doc's 85,000). Each one's time is its number's,
        moved by up to `disorder` in all (neighbours a minute out of order); `late_share` of
        them are up to `latest` later than their number says."""
        rng = random.Random(seed)
        cumulative = [FIRST_COUNTER]  # the counter at each minute from START
        for minute in range(days * 24 * 60):
            of_day = minute % (24 * 60)
            if any(start <= of_day < end for start, end in TRADING):
                hourly = trading_rate
            elif of_day < 7 * 60 or of_day >= 22 * 60:
                hourly = night_rate
            else:
                hourly = trading_rate // 2
            cumulative.append(cumulative[-1] + max(1, hourly // 60))
        counters = sorted(rng.sample(range(cumulative[0], cumulative[-1]), per_day * days))
        articles = []
        for counter in counters:
            minute = bisect_right(cumulative, counter) - 1
            fraction = (counter - cumulative[minute]) / (cumulative[minute + 1] - cumulative[minute])
            numbered = START + timedelta(minutes=minute + fraction)
            if rng.random() < late_share:
                noise = rng.uniform(0, latest.total_seconds())
            else:
                noise = rng.uniform(-0.5, 0.5) * disorder.total_seconds()
            truth = (numbered + timedelta(seconds=noise)).astimezone(UTC).replace(microsecond=0)
            articles.append(Article(article(counter, truth), truth, rng.random() < 0.5))
        return cls(articles)

    def split(self, share: float, seed: int = 0) -> tuple[list[tuple[str, datetime]], list[Article]]:
        """Anchors (the times a page's day or, for `share` of the articles, a share answer
        proves) and the articles left unproven."""
        rng = random.Random(seed)
        anchors, unproven = [], []
        for item in self.articles:
            claim = item.page_claim
            if claim.proven:
                assert claim.at == item.truth  # the page's own proofs are sound
                anchors.append((item.article_id, claim.at))
            elif rng.random() < share:
                anchors.append((item.article_id, item.truth))
            else:
                unproven.append(item)
        return anchors, unproven


def clock_of(anchors: list[tuple[str, datetime]], **limits: timedelta) -> CounterClock:
    clock = CounterClock(**limits)
    assert clock.add_many(anchors) == len(anchors)
    return clock


def proofs(clock: CounterClock, unproven: list[Article]) -> tuple[int, list[Article]]:
    """How many of `unproven` the clock proves, and those it proves wrong."""
    proven, wrong = 0, []
    for item in unproven:
        claim = clock.prove(item.article_id, item.shown)
        if claim is not None:
            proven += 1
            if claim != item.true_claim:
                wrong.append(item)
    return proven, wrong


# --- the counter of an id -------------------------------------------------------------

def test_the_counter_is_the_ids_last_ten_digits() -> None:
    assert article_counter("202112082206928461") == 2206928461
    assert article_counter("202112312232339262") == 2232339262
    assert article_counter("202112310000000007") == 7
    for not_an_id in ("", "NW202112312232339262", "20211231223233926", "2021123122323392620",
                      "2021123122323392x2", "２02112312232339262", " 02112312232339262"):
        assert article_counter(not_an_id) is None, not_an_id


def test_the_doc_examples_grow_about_a_million_a_day() -> None:
    early, late = article_counter("202112082206928461"), article_counter("202112312232339262")
    assert early is not None and late is not None
    assert 0.8e6 < (late - early) / 23 < 1.25e6  # what the site doc reads from its posts


# --- (a) dense anchors prove nearly everything, and never wrongly ----------------------

def test_dense_anchors_prove_every_unproven_page_between_them_right() -> None:
    site = Site.generate(seed=1, days=3, per_day=600)
    anchors, unproven = site.split(share=0.3)
    clock = clock_of(anchors)
    proven, wrong = proofs(clock, unproven)
    assert wrong == []
    assert len(unproven) > 500
    # Every one with two proven neighbours on each side is proven.
    counters = sorted(number(a) for a, _ in anchors)
    inner = [item for item in unproven if counters[1] < number(item.article_id) < counters[-2]]
    assert proofs(clock, inner) == (len(inner), [])
    assert proven >= len(unproven) - 6


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), days=st.integers(1, 3), per_day=st.integers(50, 1_000),
       trading_rate=st.integers(67_000, 115_000), night_rate=st.integers(2_000, 40_000),
       disorder_s=st.integers(0, 60), late_share=st.sampled_from([0.0, 0.005, 0.02, 0.1]),
       latest_min=st.sampled_from([46, 60, 120]), share=st.sampled_from([0.0, 0.05, 0.2, 0.5]))
def test_every_counter_proof_is_the_truth(seed: int, days: int, per_day: int, trading_rate: int,
                                          night_rate: int, disorder_s: int, late_share: float,
                                          latest_min: int, share: float) -> None:
    site = Site.generate(seed, days=days, per_day=per_day, trading_rate=trading_rate,
                         night_rate=night_rate, disorder=timedelta(seconds=disorder_s),
                         late_share=late_share, latest=timedelta(minutes=latest_min))
    anchors, unproven = site.split(share, seed)
    proven, wrong = proofs(clock_of(anchors), unproven)
    assert wrong == []
    if share >= 0.2 and per_day >= 300:  # anchors minutes apart all day: nearly all proven
        assert proven >= 0.95 * len(unproven) - 6


# --- (b) a night with few anchors -------------------------------------------------------

def utc_at(text: str) -> datetime:
    """A Shanghai wall time `YYYY-MM-DD HH:MM` as UTC."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI_TZ).astimezone(UTC)


def anchors_at(*stamps: tuple[int, str]) -> list[tuple[str, datetime]]:
    return [(article(counter, utc_at(text)), utc_at(text)) for counter, text in stamps]


# An evening, a quiet night and a busy morning: 20,000 an hour at night, 85,000 from 07:00.
NIGHT = anchors_at((2_300_000_000, "2021-12-07 21:50"), (2_300_010_000, "2021-12-07 22:00"),
                   (2_300_160_000, "2021-12-08 06:30"), (2_300_170_000, "2021-12-08 07:00"),
                   (2_300_180_000, "2021-12-08 07:07"))


def test_a_night_with_few_anchors_proves_nothing_inside_it() -> None:
    clock = clock_of(NIGHT)
    # Numbered between 22:00 and 06:30: the proven neighbours are 8.5 hours apart or more.
    for counter in range(2_300_010_001, 2_300_160_000, 7_000):
        assert clock.window(counter) is None
        for shown in ("2021-12-08 09:00", "2021-12-08 14:00", "2021-12-08 23:00"):
            assert clock.prove(f"20211208{counter:010d}", utc_at(shown)) is None
    # The morning: once two proven neighbours lie close on each side, it is proven again.
    truth = utc_at("2021-12-08 06:45")
    assert clock.prove(article(2_300_165_000, truth), truth + JEKYLL_SHIFT) is None
    clock.add(*anchors_at((2_300_163_000, "2021-12-08 06:40"))[0])
    claim = clock.prove(article(2_300_165_000, truth), truth + JEKYLL_SHIFT)
    assert claim == TimeClaim(truth, PROOF_COUNTER, shifted=True)


def test_the_gap_limit_is_what_keeps_a_long_night_unproven() -> None:
    # Without the limit the window spans the night, 13 hours: sound still (the truth is
    # inside), it proves what lies near its edges.
    wide = clock_of(NIGHT, max_gap=timedelta(hours=12))
    assert timedelta(hours=9) > MAX_ANCHOR_GAP  # the anchors below are 9 h 10 apart
    window = wide.window(2_300_100_000)
    assert window == (utc_at("2021-12-07 21:50") - SLACK, utc_at("2021-12-08 07:00") + SLACK)
    truth = utc_at("2021-12-07 23:00")  # +0800: shown 23:00 on the id's day, unproven
    item = Article(article(2_300_030_000, truth), truth, offsetless=False)
    assert item.page_claim.proof == PROOF_UNPROVEN
    assert wide.prove(item.article_id, item.shown) == item.true_claim
    assert clock_of(NIGHT).prove(item.article_id, item.shown) is None


def test_naive_interpolation_between_far_anchors_is_wrong_where_the_clock_says_nothing() -> None:
    # A quiet night (2,000 an hour from 22:00 to 07:00), then 42,500 an hour, 85,000 in
    # trading hours from 09:30: a straight line between the anchors of 22:00 and 12:00 puts
    # the article of 09:30 at 03:31, nearer to the wrong reading (01:30) than the right one.
    at_22, at_12 = 2_300_010_000, 2_300_010_000 + 18_000 + 106_250 + 170_000 + 21_250
    night = anchors_at((2_300_000_000, "2021-12-07 21:50"), (at_22, "2021-12-07 22:00"),
                       (at_12, "2021-12-08 12:00"), (at_12 + 5_000, "2021-12-08 12:05"))
    truth = utc_at("2021-12-08 09:30")
    counter = at_22 + 18_000 + 106_250
    item = Article(article(counter, truth), truth, offsetless=False)  # +0800: shown 09:30
    assert item.page_claim.proof == PROOF_UNPROVEN
    lo_at, hi_at = night[1][1], night[2][1]
    guess = lo_at + (hi_at - lo_at) * ((counter - at_22) / (at_12 - at_22))
    assert abs(item.shown - JEKYLL_SHIFT - guess) < abs(item.shown - guess)  # naive: wrong
    assert clock_of(night).prove(item.article_id, item.shown) is None
    # Even with the gap limit lifted, both readings fit the bracket: no proof.
    assert clock_of(night, max_gap=timedelta(hours=24)).prove(item.article_id, item.shown) is None


# --- (c) the first article of a day, before any anchor ------------------------------------

def test_before_the_first_anchor_or_after_the_last_nothing_is_proven() -> None:
    site = Site.generate(seed=3, days=1, per_day=800)
    anchors, _ = site.split(share=0.3)
    # What a crawl proved from 10:00 to 20:00: the articles before and after have proven
    # neighbours on one side only.
    proven = [(a, at) for a, at in anchors if utc_at("2021-12-06 10:00") <= at < utc_at("2021-12-06 20:00")]
    clock = clock_of(proven)
    ordered = sorted(number(a) for a, _ in proven)
    first = [item for item in site.articles if number(item.article_id) < ordered[0]]
    newest = [item for item in site.articles if number(item.article_id) > ordered[-1]]
    assert len(first) > 100 and len(newest) > 50
    assert all(clock.prove(item.article_id, item.shown) is None for item in first + newest)
    # One anchor below is not enough: two must bound each side.
    between = [item for item in site.articles if ordered[0] < number(item.article_id) < ordered[1]]
    assert all(clock.prove(item.article_id, item.shown) is None for item in between)
    assert all(clock.window(counter) is None for counter in range(ordered[0] + 1, ordered[1]))
    assert clock.window(ordered[1] + 1) is not None


def test_the_first_article_of_a_day_after_a_quiet_night_is_left_unproven() -> None:
    # Yesterday's last anchors at 23:00, today's first at 07:10: the 06:58 article has no
    # proven neighbour within hours below it.
    clock = clock_of(anchors_at((2_300_000_000, "2021-12-07 22:50"), (2_300_003_000, "2021-12-07 23:00"),
                                (2_300_170_000, "2021-12-08 07:10"), (2_300_175_000, "2021-12-08 07:14")))
    truth = utc_at("2021-12-08 06:58")
    for offsetless in (False, True):
        item = Article(article(2_300_160_000, truth), truth, offsetless)
        assert clock.prove(item.article_id, item.shown) is None


# --- (d) an article later than its number --------------------------------------------------

DAY_ANCHORS = anchors_at(*[(2_300_000_000 + 12_000 * i, f"2021-12-08 {8 + i // 6:02d}:{i % 6 * 10:02d}")
                           for i in range(84)])  # one every 10 minutes, 08:00 to 21:50


@pytest.mark.parametrize("late_minutes", [0, 30, 46, 60, 90, 120, 180, 240, 300, 330])
@pytest.mark.parametrize("offsetless", [False, True])
def test_an_article_later_than_its_number_is_never_proven_wrong(late_minutes: int,
                                                                 offsetless: bool) -> None:
    clock = clock_of(DAY_ANCHORS)
    # Numbered at 09:05 (between the anchors of 09:00 and 09:10), published later.
    truth = utc_at("2021-12-08 09:05") + timedelta(minutes=late_minutes)
    item = Article(article(2_300_000_000 + 12_000 * 6 + 6_000, truth), truth, offsetless)
    claim = clock.prove(item.article_id, item.shown)
    assert claim is None or claim == item.true_claim
    if timedelta(minutes=late_minutes) <= LATE:  # within what the bracket allows: proven
        assert claim == item.true_claim


def test_the_margin_is_what_keeps_an_article_later_than_the_doc_says_from_a_wrong_proof() -> None:
    # Anchors 6 hours apart (a wide window, just allowed), an article numbered at 14:25 and
    # published 2 h 30 later: more than LATE, which the doc's "about an hour" does not
    # reach. Its +0800 page shows 16:55, 23 minutes past the window; 8 h earlier, 08:55,
    # lies inside it.
    anchors = anchors_at((2_300_000_000, "2021-12-08 08:30"), (2_300_010_000, "2021-12-08 08:35"),
                         (2_300_500_000, "2021-12-08 14:25"), (2_300_510_000, "2021-12-08 14:30"))
    truth = utc_at("2021-12-08 16:55")
    item = Article(article(2_300_499_000, truth), truth, offsetless=False)
    window = clock_of(anchors).window(item.article_id)
    assert window is not None and window[0] < truth - JEKYLL_SHIFT < window[1]
    assert timedelta(0) < truth - window[1] < MARGIN
    assert clock_of(anchors).prove(item.article_id, item.shown) is None
    # Dropping the margin proves the wrong reading.
    unguarded = clock_of(anchors, margin=timedelta(0))
    assert unguarded.prove(item.article_id, item.shown) == TimeClaim(
        truth - JEKYLL_SHIFT, PROOF_COUNTER, shifted=True)


# --- (e) an anchor that is itself late, or wrong ------------------------------------------

@pytest.mark.parametrize("late_minutes", [46, 60, 119])
def test_a_late_anchor_proves_nothing_wrong(late_minutes: int) -> None:
    anchors = list(DAY_ANCHORS)
    # The 12:00 anchor was published late: its time is later than its number says.
    anchor_id, at = anchors[24]
    anchors[24] = (anchor_id, at + timedelta(minutes=late_minutes))
    clock = clock_of(anchors)
    for i in range(18, 30):  # articles numbered around it, both kinds of page
        counter = 2_300_000_000 + 12_000 * i + 6_000
        truth = DAY_ANCHORS[i][1] + timedelta(minutes=5)
        for offsetless in (False, True):
            item = Article(article(counter, truth), truth, offsetless)
            assert clock.prove(item.article_id, item.shown) == item.true_claim


def test_without_the_late_allowance_an_article_an_hour_late_is_proven_wrong() -> None:
    # What LATE is for, once the other guards are lifted (no margin, no gap limit): an
    # article numbered at 14:25 and published at 15:20, as the doc says happens. Its +0800
    # page shows 15:20; the anchors of 06:00 and 14:35 without the allowance rule it out.
    anchors = anchors_at((2_300_000_000, "2021-12-08 06:00"), (2_300_010_000, "2021-12-08 06:05"),
                         (2_300_500_000, "2021-12-08 14:25"), (2_300_510_000, "2021-12-08 14:30"),
                         (2_300_520_000, "2021-12-08 14:35"))
    truth = utc_at("2021-12-08 15:20")
    item = Article(article(2_300_505_000, truth), truth, offsetless=False)
    lifted = {"margin": timedelta(0), "max_gap": timedelta(hours=12)}
    assert clock_of(anchors, late=timedelta(0), **lifted).prove(item.article_id, item.shown) == TimeClaim(
        truth - JEKYLL_SHIFT, PROOF_COUNTER, shifted=True)
    assert clock_of(anchors, **lifted).prove(item.article_id, item.shown) is None  # both fit
    assert clock_of(anchors).prove(item.article_id, item.shown) is None  # 8 h 35 apart


def test_one_anchor_8_hours_wrong_proves_nothing_wrong() -> None:
    site = Site.generate(seed=5, days=2, per_day=600)
    anchors, unproven = site.split(share=0.3)
    ordered = sorted(anchors, key=lambda anchor: article_counter(anchor[0]) or 0)
    for index in range(10, len(ordered) - 10, 37):
        for error in (JEKYLL_SHIFT, -JEKYLL_SHIFT):
            wrong = list(ordered)
            wrong[index] = (wrong[index][0], wrong[index][1] + error)
            assert proofs(clock_of(wrong), unproven)[1] == []


def test_one_wrong_anchor_beside_a_quiet_stretch_proves_nothing() -> None:
    # The anchor numbered at 08:05:30 holds 16:05:30, 8 hours wrong, and nothing is proven
    # from 08:06 to 14:04. Bounded by the nearest anchor on each side, the window would be
    # [14:03:30, 16:06] (the wrong anchor, 2 hours before the next one, contradicts no
    # neighbour by more than SLACK) and would prove the late reading of the next article.
    seconds = [(2_300_000_000, "2021-12-08 08:04:00"), (2_300_001_000, "2021-12-08 08:05:00"),
               (2_300_002_000, "2021-12-08 16:05:30"),  # wrong: truly 08:05:30
               (2_300_300_000, "2021-12-08 14:04:00"), (2_300_301_000, "2021-12-08 14:04:30"),
               (2_300_302_000, "2021-12-08 14:05:00")]
    anchors = [(f"20211208{c:010d}", datetime.strptime(t, "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=SHANGHAI_TZ).astimezone(UTC)) for c, t in seconds]
    truth = anchors[1][1] + timedelta(seconds=30)  # 08:05:30, page without an offset
    item = Article(article(2_300_003_000, truth), truth, offsetless=True)
    assert item.page_claim.proof == PROOF_UNPROVEN
    nearest_lo, nearest_hi = anchors[2][1] - SLACK, anchors[3][1] + SLACK
    assert nearest_lo <= item.shown <= nearest_hi and truth < nearest_lo - MARGIN
    assert clock_of(anchors).prove(item.article_id, item.shown) is None


# --- anchors come and go ---------------------------------------------------------------------

def test_only_independent_proofs_make_anchors() -> None:
    assert PROVEN - {PROOF_COUNTER} == ANCHOR_PROOFS  # a new proof must choose
    clock = CounterClock()
    at = utc_at("2021-12-08 10:00")
    assert clock.track("202112082300000000", TimeClaim(at, PROOF_SHARE))
    assert clock.time_of("202112082300000000") == at
    # Proven by the counter, or unproven again: no longer an anchor.
    assert not clock.track("202112082300000000", TimeClaim(at, PROOF_COUNTER))
    assert "202112082300000000" not in clock and len(clock) == 0
    assert not clock.track("202112082300000001", TimeClaim(at, PROOF_UNPROVEN))
    assert clock.track("202112082300000002", TimeClaim(at, PROOF_TWIN))
    assert clock.track("202112082300000003", TimeClaim(at, PROOF_ID_DAY))
    assert len(clock) == 2
    assert not clock.add("NW202112082300000004", at) and not clock.remove("202112082300000009")


def test_a_replaced_anchor_time_is_the_one_used() -> None:
    clock = clock_of(DAY_ANCHORS)
    counter = 2_300_000_000 + 12_000 * 30 + 6_000  # numbered at 13:05
    before = clock.window(counter)
    anchor_id, at = DAY_ANCHORS[30]
    clock.add(anchor_id, at + JEKYLL_SHIFT)  # its record now says 8 h later: contradicts
    assert clock.window(counter) is None
    clock.add(anchor_id, at)
    assert clock.window(counter) == before and len(clock) == len(DAY_ANCHORS)
    clock.remove(anchor_id)
    assert clock.window(counter) != before and clock.time_of(anchor_id) is None


def brute_window(anchors: dict[str, datetime], counter: int) -> tuple[datetime, datetime] | None:
    """The same rules over a plain sorted list: what the clock's runs must agree with."""
    ordered = sorted((article_counter(a) or 0, at) for a, at in anchors.items())
    below = [at for c, at in ordered if c < counter][-3:]
    above = [at for c, at in ordered if c > counter][:3]
    if len(below) < 2 or len(above) < 2:
        return None
    chain = below + above
    if any(max(chain[:i]) - chain[i] > SLACK for i in range(1, len(chain))):
        return None
    lo, hi = sorted(below)[-2], sorted(above)[1]
    if hi - lo > MAX_ANCHOR_GAP:
        return None
    return lo - SLACK, hi + SLACK


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_interleaved_adds_removes_and_queries_agree_with_a_plain_list(seed: int) -> None:
    rng = random.Random(seed)
    clock, truth = CounterClock(), {}
    base = utc_at("2021-12-08 08:00")

    def some_id() -> str:
        return f"20211208{rng.randrange(2_300_000_000, 2_300_003_000):010d}"

    def some_time(anchor_id: str) -> datetime:  # 10 numbers a minute; some late, some wrong
        minutes = (number(anchor_id) - 2_300_000_000) // 10 + rng.choice([0, 0, 0, 60, 480])
        return base + timedelta(minutes=minutes)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(counter_module, "_MERGE_MIN", 8)  # merges and purges happen often
        patch.setattr(counter_module, "_MERGE_FACTOR", 1)
        for _ in range(400):
            anchor_id, action = some_id(), rng.random()
            if action < 0.5:
                at = some_time(anchor_id)
                assert clock.add(anchor_id, at)
                truth[anchor_id] = at
            elif action < 0.6:
                batch = [(some_id(), base) for _ in range(rng.randrange(1, 40))]
                batch = [(a, some_time(a)) for a, _ in batch]
                assert clock.add_many(batch) == len(batch)
                truth.update(batch)
            elif action < 0.75:
                assert clock.remove(anchor_id) == (truth.pop(anchor_id, None) is not None)
            else:
                assert clock.window(number(anchor_id)) == brute_window(truth, number(anchor_id))
            assert len(clock) == len(truth)
        assert all(clock.time_of(a) == at for a, at in truth.items())


# --- (f) reconciling a counter proof with other sightings ------------------------------------

def test_reconcile_times_with_a_counter_proof() -> None:
    page = TimeClaim(utc_at("2021-12-08 20:00"), PROOF_UNPROVEN)
    counter = TimeClaim(utc_at("2021-12-08 12:00"), PROOF_COUNTER, shifted=True)
    assert counter.proven
    # A share time still wins, whichever is kept.
    share = TimeClaim(utc_at("2021-12-08 12:00"), PROOF_SHARE)
    assert reconcile_times(counter, share) == share
    assert reconcile_times(share, counter) == share
    # A counter proof corrects the unproven page that shows it 8 h late, or proves it.
    assert reconcile_times(page, counter) == TimeClaim(utc_at("2021-12-08 12:00"), PROOF_COUNTER,
                                                       shifted=True)
    right = TimeClaim(utc_at("2021-12-08 12:00"), PROOF_COUNTER)  # its page showed 12:00
    assert reconcile_times(TimeClaim(utc_at("2021-12-08 12:00"), PROOF_UNPROVEN), right) == right
    # A counter-proven page that showed 20:00 and another page showing 12:00 are twins: the
    # article's own pages prove it, as they would have had the counter not come first.
    assert reconcile_times(TimeClaim(utc_at("2021-12-08 12:00"), PROOF_UNPROVEN), counter) == TimeClaim(
        utc_at("2021-12-08 12:00"), PROOF_TWIN)
    assert reconcile_times(counter, TimeClaim(utc_at("2021-12-08 12:00"), PROOF_UNPROVEN)) == TimeClaim(
        utc_at("2021-12-08 12:00"), PROOF_TWIN, shifted=True)
    # A kept counter proof stays against an unproven page; the article's own page proof
    # replaces it (the same whichever sighting came first).
    assert reconcile_times(counter, page) == counter
    own_page = TimeClaim(counter.at, PROOF_ID_DAY, shifted=True)
    assert reconcile_times(counter, own_page) == own_page
    assert reconcile_times(own_page, counter) == own_page
    # Another page's proof says which reading of the headline page is right, never gives its
    # own time: one that fits neither reading leaves the counter's.
    far = TimeClaim(utc_at("2021-12-08 15:00"), PROOF_ID_DAY)
    assert reconcile_times(counter, far) == counter


def test_a_proof_is_a_reading_on_the_ids_day() -> None:
    # Numbered between anchors of 00:20 and 00:40 on the 8th but given the 7th as its day
    # (an id no page can have): the reading the anchors pick is not on the id's day.
    clock = clock_of(anchors_at((2_300_000_000, "2021-12-08 00:20"), (2_300_001_000, "2021-12-08 00:25"),
                                (2_300_004_000, "2021-12-08 00:35"), (2_300_005_000, "2021-12-08 00:40")))
    shown = utc_at("2021-12-08 00:30")
    assert clock.prove(2_300_002_000, shown) == TimeClaim(shown, PROOF_COUNTER)
    assert clock.prove("202112082300002000", shown) == TimeClaim(shown, PROOF_COUNTER)
    assert clock.prove("202112072300002000", shown) is None
