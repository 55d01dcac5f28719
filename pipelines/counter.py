"""The article number as a clock: proven neighbours tell which reading of a page is right.

An article id's last 10 digits are one counter of the news source, given in
publication order across days, categories and both kinds of news (site doc,
Identity, "The 10 digits are a clock"). A page whose time no page proves shows
either the writer's time `T` (front matter with `+0800`) or `T + 8 h` (no
offset: Jekyll's shift, `pipelines.dates.JEKYLL_SHIFT`). Records whose times
are proven independently (`ANCHOR_PROOFS`) are anchors: their counters and
times bracket the time of every article numbered between them.

The bracket. The site doc states the counter's noise, nothing about its rate
that a proof could rely on: neighbours are out of order by up to a minute, and
now and then an article carries a time up to about an hour later than its
number says. So for counters a < b, time(a) <= time(b) + LATE + 2 * OUT_OF_ORDER
(the late one may be `a`, and each of the two may be a minute off), which is
`SLACK`. An article numbered between anchors (c_lo, t_lo) and (c_hi, t_hi) was
published within [t_lo - SLACK, t_hi + SLACK], whatever the rate did in
between; a reading outside that window is wrong. A reading is proven only when
it lies inside and the other lies outside by at least `MARGIN`; the two are
8 hours apart and dense anchors make a window of about 4 hours, so nearly
every such page is decided.

Nothing here fits or assumes a rate: a quiet night, a holiday or a gap in the
crawl only widens the window, and a window whose anchors lie more than
`MAX_ANCHOR_GAP` apart proves nothing. A counter-proven record is never an
anchor: its proof is not independent, and chaining would let one error spread.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from math import isqrt

from pipelines.dates import (
    JEKYLL_SHIFT,
    PROOF_COUNTER,
    PROOF_ID_DAY,
    PROOF_SHARE,
    PROOF_TWIN,
    SHANGHAI,
    TimeClaim,
)
from pipelines.identity import article_date

COUNTER_DIGITS = 10
_ID_LENGTH = 8 + COUNTER_DIGITS

# Proofs that never look at the counter: only these make anchors (`counter` never does).
ANCHOR_PROOFS = frozenset({PROOF_SHARE, PROOF_ID_DAY, PROOF_TWIN})

# The site doc's noise, read from the real posts: neighbours out of order by up to a minute.
OUT_OF_ORDER = timedelta(minutes=1)
# "Now and then one article carries a time up to about an hour later than its number says
# (one in the sample: 46 minutes)": 57 posts are a small sample, so twice the doc's hour.
LATE = timedelta(hours=2)
# How far an article's time can lie after that of any article numbered above it.
SLACK = LATE + 2 * OUT_OF_ORDER
# The losing reading must lie this far outside the window. Under the doc's noise the true
# reading is always inside, so the margin only matters when the doc is wrong: a wrong proof
# then needs an article later than its number by LATE + MARGIN, three times the doc's hour.
MARGIN = timedelta(hours=1)
# Proven neighbours further apart in time than this prove nothing. The bracket is sound at
# any width, but the doc's noise was read in ordinary traffic, and it says "far from any
# proven neighbour (a quiet night, the first article of a day) ... nothing is proven".
# The cost: the id's day proves no page written 08:00-16:00 in Shanghai (pipelines.dates),
# so there the anchors are share answers and twins; with none of them, that 8-hour stretch
# stays unproven (bench/RESULTS.md, section 12, measures the trade-off).
MAX_ANCHOR_GAP = timedelta(hours=6)
# The k nearest anchors on each side: the window is bounded by the second nearest in time
# (below: the second latest; above: the second earliest). Each anchor alone bounds the
# window soundly, so any of them would do; the second one keeps it sound when one anchor's
# proven time is itself wrong (8 hours off), at the cost of a few minutes of width. All 2k
# must also agree with each other (no pair inverted by more than SLACK): anchors that
# contradict the doc's noise prove nothing.
NEIGHBOURS = 3
MIN_NEIGHBOURS = 2

# The recent anchors wait in a small sorted run, merged into the big one once it holds
# about sqrt(n) * this: an add costs O(sqrt n) on average (its insertion in the small run,
# its share of the merges), never O(n).
_MERGE_FACTOR = 16
_MERGE_MIN = 512

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# (counter, time in µs since the epoch, article id): the entries of the sorted runs.
_Entry = tuple[int, int, str]


def article_counter(article_id: str) -> int | None:
    """The 10-digit counter of an 18-digit article id; None for anything else."""
    if len(article_id) != _ID_LENGTH or not (article_id.isascii() and article_id.isdigit()):
        return None
    return int(article_id[-COUNTER_DIGITS:])


def _micros(delta: timedelta) -> int:
    return delta // _MICROSECOND


def _stamp(at: datetime) -> int:
    # BSON dates come back naive in UTC (pymongo's default); `pipelines.dates` reads them so too
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // _MICROSECOND


class CounterClock:
    """Anchors (an article's counter and its independently proven time) and what they prove.

    Add anchors as their records are proven (`add`, `add_many`, or `track` with each
    record's current claim), remove them when a record's proof changes, and ask `prove`
    for an unproven page. Adds and queries can interleave at any rate: recent anchors wait
    in a small sorted run beside the big one, removed ones are skipped until the next merge.
    `late`, `margin` and `max_gap` are there for tests and benches to vary; the defaults
    are the ones argued above.
    """

    def __init__(self, *, late: timedelta = LATE, margin: timedelta = MARGIN,
                 max_gap: timedelta = MAX_ANCHOR_GAP) -> None:
        self._slack = _micros(late + 2 * OUT_OF_ORDER)
        self._margin = _micros(margin)
        self._max_gap = _micros(max_gap)
        self._shift = _micros(JEKYLL_SHIFT)
        # The live anchors. An entry in a run is live when it is the very object here.
        self._anchors: dict[str, _Entry] = {}
        self._merged: list[_Entry] = []  # sorted
        self._recent: list[_Entry] = []  # sorted, small
        self._stale = 0  # dead entries left in the runs

    # --- anchors ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._anchors)

    def __contains__(self, article_id: object) -> bool:
        return article_id in self._anchors

    def time_of(self, article_id: str) -> datetime | None:
        """The proven time an anchor holds (UTC), None when the article is no anchor."""
        entry = self._anchors.get(article_id)
        return None if entry is None else _EPOCH + entry[1] * _MICROSECOND

    def add(self, article_id: str, at: datetime) -> bool:
        """Make `article_id` an anchor at its proven time `at` (replacing the time it had).

        False when the id has no counter (not 18 digits).
        """
        return self.add_many([(article_id, at)]) == 1

    def add_many(self, anchors: Iterable[tuple[str, datetime]]) -> int:
        """`add` for many (a later one of the same id wins); how many were taken."""
        fresh: list[_Entry] = []
        taken = 0
        for article_id, at in anchors:
            counter = article_counter(article_id)
            if counter is None:
                continue
            taken += 1
            entry = (counter, _stamp(at), article_id)
            old = self._anchors.get(article_id)
            if old is not None:
                if old[:2] == entry[:2]:
                    continue  # unchanged: its entry stays
                self._stale += 1
            self._anchors[article_id] = entry
            fresh.append(entry)
        if len(self._recent) + len(fresh) > self._merge_at():
            self._merge(fresh)
        else:
            for entry in fresh:
                insort(self._recent, entry)
        return taken

    def remove(self, article_id: str) -> bool:
        """Stop using `article_id` as an anchor (its time is no longer proven independently).

        False when it was none.
        """
        if self._anchors.pop(article_id, None) is None:
            return False
        self._stale += 1
        if self._stale > _MERGE_MIN and self._stale * 4 > len(self._merged) + len(self._recent):
            self._merge([])
        return True

    def track(self, article_id: str, claim: TimeClaim) -> bool:
        """Follow a record's current time: an anchor while an independent proof holds it,
        none otherwise (unproven, or proven by the counter). True when it is an anchor."""
        if claim.proof in ANCHOR_PROOFS:
            return self.add(article_id, claim.at)
        self.remove(article_id)
        return False

    def _merge_at(self) -> int:
        return max(_MERGE_MIN, isqrt(len(self._merged)) * _MERGE_FACTOR)

    def _merge(self, fresh: list[_Entry]) -> None:
        runs = self._merged + self._recent + fresh
        if self._stale:
            anchors = self._anchors
            runs = [entry for entry in runs if anchors.get(entry[2]) is entry]
            self._stale = 0
        runs.sort()  # two or three sorted runs: Timsort merges them in linear time
        self._merged, self._recent = runs, []

    # --- proofs ----------------------------------------------------------------------

    def _nearest(self, counter: int, below: bool) -> list[_Entry]:
        """The NEIGHBOURS live anchors numbered nearest below (or above) `counter`, nearest
        first; never one numbered `counter` itself (the article's own entry)."""
        found = self._walk(self._merged, counter, below)
        if self._recent:
            found += self._walk(self._recent, counter, below)
            found.sort(reverse=below)
            del found[NEIGHBOURS:]
        return found

    def _walk(self, run: list[_Entry], counter: int, below: bool) -> list[_Entry]:
        anchors = self._anchors
        found: list[_Entry] = []
        if below:
            i = bisect_left(run, (counter,))
            while i > 0 and len(found) < NEIGHBOURS:
                i -= 1
                entry = run[i]
                if anchors.get(entry[2]) is entry:
                    found.append(entry)
        else:
            i, end = bisect_left(run, (counter + 1,)), len(run)
            while i < end and len(found) < NEIGHBOURS:
                entry = run[i]
                if anchors.get(entry[2]) is entry:
                    found.append(entry)
                i += 1
        return found

    def window(self, article: str | int) -> tuple[datetime, datetime] | None:
        """The times the anchors allow for the article numbered `article` (an id or a
        counter), earliest and latest in UTC; None when they bound nothing."""
        bounds = self._window(article)
        if bounds is None:
            return None
        return _EPOCH + bounds[0] * _MICROSECOND, _EPOCH + bounds[1] * _MICROSECOND

    def _window(self, article: str | int) -> tuple[int, int] | None:
        counter = article if isinstance(article, int) else article_counter(article)
        if counter is None:
            return None
        below = self._nearest(counter, below=True)
        above = self._nearest(counter, below=False)
        if len(below) < MIN_NEIGHBOURS or len(above) < MIN_NEIGHBOURS:
            return None  # the first or newest articles, or too few proven neighbours
        slack = self._slack
        latest = None
        for _, stamp, _ in [*reversed(below), *above]:  # in counter order
            if latest is not None and latest - stamp > slack:
                return None  # the anchors contradict the doc's noise: something is wrong
            latest = stamp if latest is None else max(latest, stamp)
        earliest_after = sorted(stamp for _, stamp, _ in above)[1]
        latest_before = sorted((stamp for _, stamp, _ in below), reverse=True)[1]
        if earliest_after - latest_before > self._max_gap:
            return None  # a quiet night, a holiday, a gap in the crawl
        return latest_before - slack, earliest_after + slack

    def prove(self, article: str | int, shown: datetime) -> TimeClaim | None:
        """Which reading of an unproven page time the anchors prove, or None.

        `article` is the article id (or its counter alone); `shown` the page's time. The
        claim is `shown` itself, or `shown - JEKYLL_SHIFT` (shifted), with proof `counter`;
        None unless exactly one reading lies in the anchors' window and the other at least
        MARGIN outside it, and (given an id) on the id's day.
        """
        bounds = self._window(article)
        if bounds is None:
            return None
        lo, hi = bounds
        as_shown = _stamp(shown)
        moved_back = as_shown - self._shift

        def outside(stamp: int) -> int:  # how far outside the window; <= 0 inside
            return max(lo - stamp, stamp - hi)

        if outside(as_shown) <= 0 and outside(moved_back) >= self._margin:
            claim = TimeClaim(shown, PROOF_COUNTER)
        elif outside(moved_back) <= 0 and outside(as_shown) >= self._margin:
            claim = TimeClaim(shown - JEKYLL_SHIFT, PROOF_COUNTER, shifted=True)
        else:
            return None
        # The id's day is the writer's (Shanghai): a reading on another day is no answer.
        if isinstance(article, str):
            day = article_date(article)
            at = claim.at if claim.at.tzinfo is not None else claim.at.replace(tzinfo=UTC)
            if day is not None and at.astimezone(SHANGHAI).date() != day:
                return None
        return claim
