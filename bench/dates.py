"""pipelines.dates: the fast path against dateparser, in microseconds per call.

    .local/venv/bin/python bench/dates.py [--repeat 5] [--min-time 0.2] [--json PATH]

- known formats (the mirror's three, then the Chinese ones the module documents):
  `parse_fast`, `parse_published` (the public entry, fast path hit) and
  `dateparser.parse` called directly with the product's settings, on the same text;
- formats that miss the fast path: `parse_published`, which hands them to dateparser;
- the cold first call (import + dateparser's language data), in fresh processes.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import contextlib
import subprocess
import timeit
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from bench.common import PYTHON, ROOT, bench_parser, figures, machine, show, show_machine, write_json

FETCHED_AT = datetime(2021, 12, 31, 16, 0, tzinfo=UTC)  # the mirror's `now`
CONTEXT_YEAR = 2021

KNOWN = [
    "(GMT+8, Asia/Shanghai, CST) 2021-12-31 08:58:25",  # post page date_raw
    "2021-12-31T08:58:25+08:00",  # post page JSON-LD datePublished
    "2021-12-31 08:58:25",  # share JSON showtime
    "2021/12/31 08:58",
    "2021年12月31日 08:58",
    "12月30日 10:20",
    "12月30日上午",
    "昨天 10:20",
    "前天下午3点",
    "3小时前",
    "刚刚",
]
OFF_FAST_PATH = [
    "Fri, 31 Dec 2021 08:58:25 +0800",  # RSS pubDate
    "December 31, 2021 8:58 AM",
    "31 Dec 2021 08:58",
    "12/31/2021 08:58",
    "2021年12月31日星期五 08:58",
    "2 days ago",
]
UNREADABLE = ["上周五"]  # dateparser gives up too: DateParseError

_COLD = """
import time
t0 = time.perf_counter()
from datetime import UTC, datetime
from pipelines.dates import parse_published
t1 = time.perf_counter()
parse_published({text!r}, fetched_at=datetime(2021, 12, 31, 16, tzinfo=UTC))
t2 = time.perf_counter()
parse_published({text!r}, fetched_at=datetime(2021, 12, 31, 16, tzinfo=UTC))
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def per_call_us(call: Callable[[], Any], repeat: int, min_time: float) -> dict[str, Any]:
    """Microseconds per call: `repeat` timings of a loop lasting at least `min_time` s."""
    timer = timeit.Timer(call)
    number, elapsed = timer.autorange()  # enough calls for 0.2 s
    number = max(1, round(number * min_time / max(elapsed, 1e-9)))
    return figures(1e6 * t / number for t in timer.repeat(repeat=repeat, number=number))


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=None, repeat=5)
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="seconds each timing loop lasts at least")
    parser.add_argument("--cold", type=int, default=3, help="fresh processes for the first call")
    args = parser.parse_args(argv)

    import dateparser

    from pipelines.dates import (
        _DATEPARSER_LANGUAGES,
        SHANGHAI,
        DateParseError,
        parse_fast,
        parse_published,
    )

    facts = machine()
    print(show_machine(facts) + f"; dateparser {facts['dateparser']}")
    # what pipelines.dates gives dateparser (its RELATIVE_BASE is the fetch time in Shanghai)
    settings: dict[str, Any] = {
        "TIMEZONE": "Asia/Shanghai", "RETURN_AS_TIMEZONE_AWARE": True,
        "RELATIVE_BASE": FETCHED_AT.astimezone(SHANGHAI).replace(tzinfo=None),
        "PREFER_DATES_FROM": "past",
    }

    def published(text: str) -> Callable[[], Any]:
        return lambda: parse_published(text, fetched_at=FETCHED_AT, context_year=CONTEXT_YEAR)

    def failing(text: str) -> Callable[[], Any]:
        def call() -> None:
            with contextlib.suppress(DateParseError):
                parse_published(text, fetched_at=FETCHED_AT, context_year=CONTEXT_YEAR)
        return call

    def fast_path(text: str) -> Callable[[], Any]:
        return lambda: parse_fast(text, FETCHED_AT, CONTEXT_YEAR)

    def direct(text: str) -> Callable[[], Any]:
        return lambda: dateparser.parse(text, languages=_DATEPARSER_LANGUAGES, settings=settings)

    for text in KNOWN:  # warm: every path and dateparser's language data loaded once
        assert parse_fast(text, FETCHED_AT, CONTEXT_YEAR) is not None, text
        dateparser.parse(text, languages=_DATEPARSER_LANGUAGES, settings=settings)
    for text in OFF_FAST_PATH:
        assert parse_fast(text, FETCHED_AT, CONTEXT_YEAR) is None, text
        parse_published(text, fetched_at=FETCHED_AT, context_year=CONTEXT_YEAR)

    rows: list[dict[str, Any]] = []
    print("\n== known formats (fast path), µs per call: median (spread) ==")
    print(f"{'text':48s} {'parse_fast':>18s} {'parse_published':>18s} {'dateparser.parse':>22s}  dp/fast"
          "   (None: dateparser cannot read it)")
    for text in KNOWN:
        fast = per_call_us(fast_path(text), args.repeat, args.min_time)
        full = per_call_us(published(text), args.repeat, args.min_time)
        reads = dateparser.parse(text, languages=_DATEPARSER_LANGUAGES, settings=settings) is not None
        slow = per_call_us(direct(text), args.repeat, args.min_time)
        ratio = slow["median"] / fast["median"]
        rows.append({"set": "known", "text": text, "parse_fast_us": fast, "parse_published_us": full,
                     "dateparser_us": slow, "dateparser_reads_it": reads, "dateparser_over_fast": ratio})
        print(f"{text:48s} {fast['median']:9.2f} ({fast['spread']:4.0%}) {full['median']:9.2f} "
              f"({full['spread']:4.0%}) {slow['median']:11.1f} ({slow['spread']:4.0%})"
              f"{'' if reads else ' None'}  {ratio:6.0f}x")
    print("\n== formats that miss the fast path: parse_published (-> dateparser), µs per call ==")
    for text in OFF_FAST_PATH:
        full = per_call_us(published(text), args.repeat, args.min_time)
        rows.append({"set": "off_fast_path", "text": text, "parse_published_us": full})
        print(f"{text:48s} {show(full, 'µs')}")
    for text in UNREADABLE:
        full = per_call_us(failing(text), args.repeat, args.min_time)
        rows.append({"set": "unreadable", "text": text, "parse_published_us": full})
        print(f"{text:48s} {show(full, 'µs')}  (DateParseError)")

    cold: list[list[float]] = []
    for _ in range(args.cold):
        done = subprocess.run([PYTHON, "-c", _COLD.format(text=OFF_FAST_PATH[0])], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        cold.append([float(x) for x in done.stdout.split()])
    cold_figs = {name: figures(1000 * c[i] for c in cold)
                 for i, name in enumerate(("import_ms", "first_call_ms", "second_call_ms"))}
    print(f"\ncold, fresh process ({OFF_FAST_PATH[0]!r}): import pipelines.dates "
          f"{show(cold_figs['import_ms'], 'ms')}; first parse_published "
          f"{show(cold_figs['first_call_ms'], 'ms')}; second {show(cold_figs['second_call_ms'], 'ms', 2)}")

    known_fast = figures(r["parse_fast_us"]["median"] for r in rows if r["set"] == "known")
    known_dp = figures(r["dateparser_us"]["median"] for r in rows if r["set"] == "known")
    off = figures(r["parse_published_us"]["median"] for r in rows if r["set"] == "off_fast_path")
    print("\n== summary (medians across formats) ==")
    print(f"parse_fast on known formats:        {show(known_fast, 'µs', 2)}")
    print(f"dateparser.parse on known formats:  {show(known_dp, 'µs')}")
    print(f"parse_published off the fast path:  {show(off, 'µs')}")
    print(f"-> the fast path is {known_dp['median'] / known_fast['median']:.0f}x faster than dateparser "
          f"on the same texts")
    write_json(args.json, {
        "bench": "dates", "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": facts,
        "fetched_at": FETCHED_AT.isoformat(), "rows": rows, "cold": cold_figs,
        "summary": {"parse_fast_known_us": known_fast, "dateparser_known_us": known_dp,
                    "parse_published_off_fast_path_us": off},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
