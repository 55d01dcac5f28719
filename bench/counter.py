"""pipelines.counter: what a counter proof costs per article, and what it proves.

    .local/venv/bin/python bench/counter.py [--anchors 1000 10000 100000] [--repeat 5]
        [--min-time 0.5] [--json PATH]

A synthetic site numbered as the site doc says (Identity, "The 10 digits are a clock"):
85,000 numbers an hour in trading hours, half that by day, 20,000 at night; each
article's time its number's within half a minute either way, one in 200 up to an hour
later; half the pages without an offset (shown 8 h late). Anchors are the pages the id's
day proves plus the articles whose share answer gives the time (30 %). For each size:

- `add_many`: all anchors into an empty clock at once, µs per anchor;
- `add`: one at a time into an empty clock (its merges included), µs per anchor;
- `prove`: every unproven page of the site against a clock of that many anchors, µs per
  article;
- `add + prove`: from 90 % of the anchors, the last 10 % added one at a time, each
  followed by one proof (adds and queries interleaved), µs per round;
- `replace`: `add` of an anchor with another time and back, µs per call.

Then, at the largest size, what the counter proves of the unproven pages: proven, left
unproven, proven wrong (0 or the module is wrong), for 0 %, 5 % and 30 % of articles with
a share time and two gap limits (MAX_ANCHOR_GAP and 9 h).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import random
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bench.common import bench_parser, figures, machine, show, show_machine, write_json
from pipelines.counter import MAX_ANCHOR_GAP, CounterClock
from pipelines.dates import JEKYLL_SHIFT, PROOF_COUNTER, TimeClaim, prove_page_time
from pipelines.identity import article_date

SEED = 20211231
SHANGHAI_TZ = timezone(timedelta(hours=8))
START = datetime(2021, 12, 6, tzinfo=SHANGHAI_TZ)  # a Monday
TRADING = ((9 * 60 + 30, 11 * 60 + 30), (13 * 60, 15 * 60))
RATES = {"trading": 85_000, "day": 42_500, "night": 20_000}  # numbers an hour
LATE_SHARE, LATEST = 0.005, timedelta(hours=1)
SHARE = 0.3  # articles whose share answer gives the time: anchors wherever they are
ARTICLES_PER_ANCHOR = 2.2  # the id's day proves about half the pages; SHARE adds more


@dataclass(frozen=True)
class Page:
    article_id: str
    truth: datetime
    shown: datetime

    @property
    def true_claim(self) -> TimeClaim:
        return TimeClaim(self.truth, PROOF_COUNTER, shifted=self.shown != self.truth)


def site(articles: int, seed: int) -> list[Page]:
    """`articles` pages over as many days as keep them at most 20,000 a day."""
    rng = random.Random(seed)
    days = max(1, -(-articles // 20_000))
    cumulative = [2_200_000_000]
    for minute in range(days * 24 * 60):
        of_day = minute % (24 * 60)
        if any(start <= of_day < end for start, end in TRADING):
            hourly = RATES["trading"]
        elif of_day < 7 * 60 or of_day >= 22 * 60:
            hourly = RATES["night"]
        else:
            hourly = RATES["day"]
        cumulative.append(cumulative[-1] + hourly // 60)
    pages = []
    for counter in sorted(rng.sample(range(cumulative[0], cumulative[-1]), articles)):
        minute = bisect_right(cumulative, counter) - 1
        fraction = (counter - cumulative[minute]) / (cumulative[minute + 1] - cumulative[minute])
        noise = (rng.uniform(0, LATEST.total_seconds()) if rng.random() < LATE_SHARE
                 else rng.uniform(-30, 30))
        truth = (START + timedelta(minutes=minute + fraction, seconds=noise)).astimezone(UTC)
        truth = truth.replace(microsecond=0)
        article_id = truth.astimezone(SHANGHAI_TZ).strftime("%Y%m%d") + f"{counter:010d}"
        pages.append(Page(article_id, truth, truth + JEKYLL_SHIFT if rng.random() < 0.5 else truth))
    return pages


def split(pages: list[Page], share: float, seed: int) -> tuple[list[tuple[str, datetime]], list[Page]]:
    """The anchors (proven by the id's day, or by a share answer) and the unproven pages."""
    rng = random.Random(seed)
    anchors, unproven = [], []
    for page in pages:
        claim = prove_page_time(page.shown, article_date(page.article_id))
        if claim.proven:
            anchors.append((page.article_id, claim.at))
        elif rng.random() < share:
            anchors.append((page.article_id, page.truth))
        else:
            unproven.append(page)
    return anchors, unproven


def timed(call: Callable[[Any], Any], count: int, repeat: int, min_time: float,
          setup: Callable[[], Any] = lambda: None) -> dict[str, Any]:
    """µs per item of `call(setup())`, which handles `count` items: `repeat` measures, each
    of as many calls as last `min_time` seconds (`setup` untimed)."""
    runs = []
    for _ in range(repeat):
        elapsed, calls = 0.0, 0
        while elapsed < min_time:
            prepared = setup()
            started = time.perf_counter()
            call(prepared)
            elapsed += time.perf_counter() - started
            calls += 1
        runs.append(1e6 * elapsed / (calls * count))
    return figures(runs)


def costs(size: int, repeat: int, min_time: float) -> dict[str, Any]:
    pages = site(int(size * ARTICLES_PER_ANCHOR), SEED + size)
    anchors, unproven = split(pages, SHARE, SEED)
    random.Random(SEED).shuffle(anchors)
    anchors = anchors[:size]
    rounds = max(100, size // 10)
    queries = [(page.article_id, page.shown) for page in unproven]

    def bulk(_: None) -> None:
        CounterClock().add_many(anchors)

    def one_by_one(_: None) -> None:
        clock = CounterClock()
        for article_id, at in anchors:
            clock.add(article_id, at)

    full = CounterClock()
    full.add_many(anchors)

    def prove_all(_: None) -> None:
        for article_id, shown in queries:
            full.prove(article_id, shown)

    def most() -> CounterClock:
        clock = CounterClock()
        clock.add_many(anchors[:-rounds])
        return clock

    def interleaved(clock: CounterClock) -> None:
        for (article_id, at), (query_id, shown) in zip(anchors[-rounds:], queries, strict=False):
            clock.add(article_id, at)
            clock.prove(query_id, shown)

    moved = [(article_id, at + timedelta(minutes=1), at) for article_id, at in anchors[:rounds]]

    def replace(_: None) -> None:
        for article_id, later, at in moved:
            full.add(article_id, later)
            full.add(article_id, at)

    proven = sum(full.prove(article_id, shown) is not None for article_id, shown in queries)
    return {
        "anchors": len(anchors), "articles": len(pages), "unproven": len(queries),
        "proven_by_counter": proven, "rounds": min(rounds, len(queries)),
        "add_many_us": timed(bulk, len(anchors), repeat, min_time),
        "add_us": timed(one_by_one, len(anchors), repeat, min_time),
        "prove_us": timed(prove_all, len(queries), repeat, min_time),
        "add_and_prove_us": timed(interleaved, min(rounds, len(queries)), repeat, min_time, most),
        "replace_us": timed(replace, 2 * len(moved), repeat, min_time),
    }


def coverage(size: int) -> list[dict[str, Any]]:
    pages = site(int(size * ARTICLES_PER_ANCHOR), SEED + size)
    rows = []
    for share in (0.0, 0.05, SHARE):
        anchors, unproven = split(pages, share, SEED)
        for gap in (MAX_ANCHOR_GAP, timedelta(hours=9)):
            clock = CounterClock(max_gap=gap)
            clock.add_many(anchors)
            proven = wrong = 0
            for page in unproven:
                claim = clock.prove(page.article_id, page.shown)
                if claim is not None:
                    proven += 1
                    wrong += claim != page.true_claim
            rows.append({"share": share, "max_gap_h": gap / timedelta(hours=1), "anchors": len(anchors),
                         "unproven": len(unproven), "proven": proven, "wrong": wrong})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=None, repeat=5)
    parser.add_argument("--anchors", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                        help="clock sizes (anchors)")
    parser.add_argument("--min-time", type=float, default=0.5,
                        help="seconds each measure lasts at least")
    args = parser.parse_args(argv)
    facts = machine()
    print(show_machine(facts))

    rows = []
    print("\n== cost, µs per anchor / article / round: median (min .. max, spread, n) ==")
    for size in args.anchors:
        row = costs(size, args.repeat, args.min_time)
        rows.append(row)
        print(f"\n{row['anchors']:,} anchors ({row['articles']:,} articles, {row['unproven']:,} "
              f"unproven pages, {row['proven_by_counter']:,} proven by the counter)")
        for key, label in (("add_many_us", "add_many, all at once"), ("add_us", "add, one at a time"),
                           ("prove_us", "prove, per article"),
                           ("add_and_prove_us", f"add + prove interleaved ({row['rounds']:,} rounds)"),
                           ("replace_us", "replace an anchor's time")):
            print(f"  {label:42s} {show(row[key], 'µs', 2)}")

    largest = max(args.anchors)
    print(f"\n== what the counter proves of the unproven pages ({int(largest * ARTICLES_PER_ANCHOR):,} "
          "articles) ==")
    print(f"{'share times':>12s} {'gap limit':>10s} {'anchors':>9s} {'unproven':>9s} {'proven':>9s} "
          f"{'share':>7s} {'wrong':>6s}")
    proved = coverage(largest)
    for r in proved:
        print(f"{r['share']:12.0%} {r['max_gap_h']:9.0f}h {r['anchors']:9,d} {r['unproven']:9,d} "
              f"{r['proven']:9,d} {r['proven'] / r['unproven']:7.1%} {r['wrong']:6d}")
    write_json(args.json, {"bench": "counter", "command": " ".join([Path(sys.executable).name, *sys.argv]),
                           "machine": facts, "seed": SEED, "sizes": rows, "coverage": proved})
    return 0 if all(r["wrong"] == 0 for r in proved) else 1


if __name__ == "__main__":
    sys.exit(main())
