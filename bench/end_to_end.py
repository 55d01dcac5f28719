"""End to end: the finews spider crawls a served mirror into the database, against `scrapy bench`.

    .local/venv/bin/python bench/end_to_end.py --articles 10000 [--repeat 3]
        [--concurrency project 32 32/16 ...] [-s NAME=VALUE ...] [--json PATH]

Per repeat: one `scrapy bench` (Scrapy's own local server, Scrapy's defaults),
then one crawl per concurrency setting, each into a fresh database dropped
afterwards. Pages/s and articles/s come from the crawl's final stats
(response_received_count, newscrawl/articles/stored over elapsed_time_seconds);
scrapy bench's rate is its steady LogStats rate. Target: ours / scrapy bench >= 0.5.

`--concurrency` values: `project` (the project's settings: 16 overall, 8 per
domain), `N` (N overall and per domain) or `N/M` (N overall, M per domain).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from collections.abc import Sequence
from typing import Any

from bench.common import bench_parser, figures, machine, show, show_machine, write_json
from bench.crawls import CrawlRun, crawl_mirror, crawl_phases, scrapy_bench
from bench.database import database_name, database_uri, drop_database
from bench.mirror import mirror_counts, mirror_dir, served_mirror

TARGET_RATIO = 0.5


def concurrency_settings(value: str) -> list[str]:
    if value == "project":
        return []
    total, _, per_domain = value.partition("/")
    return [f"CONCURRENT_REQUESTS={int(total)}",
            f"CONCURRENT_REQUESTS_PER_DOMAIN={int(per_domain or total)}"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=10_000, repeat=3)
    parser.add_argument("--concurrency", nargs="+", default=["project"],
                        help="project | N | N/M (overall/per domain); several values compare them")
    parser.add_argument("-s", "--set", dest="extra", action="append", default=[],
                        metavar="NAME=VALUE", help="another Scrapy setting for every crawl")
    args = parser.parse_args(argv)

    uri = database_uri()
    facts = machine(uri)
    print(show_machine(facts))
    out = mirror_dir(args.articles)
    counts = mirror_counts(out)
    print(f"mirror: {out} ({counts['articles']} articles to store, {counts['posts']} posts, "
          f"{counts['share_json']} share answers)")

    configs = {value: concurrency_settings(value) + list(args.extra) for value in args.concurrency}
    runs: dict[str, list[CrawlRun]] = {value: [] for value in configs}
    bench_rates: list[float] = []
    bench_overall: list[float] = []
    problems: list[str] = []
    for repeat in range(1, args.repeat + 1):
        reference = scrapy_bench()
        steady = reference.steady or reference.overall
        bench_rates.append(steady)
        bench_overall.append(reference.overall)
        print(f"[{repeat}/{args.repeat}] scrapy bench: {steady:.1f} pages/s steady "
              f"({reference.overall:.1f} overall, {reference.pages} pages)", flush=True)
        for value, settings in configs.items():
            database = database_name("end_to_end")
            try:
                with served_mirror(out) as host_map:
                    run = crawl_mirror(host_map, uri, database, label=value, settings=settings)
            finally:
                drop_database(uri, database)
            runs[value].append(run)
            phases = crawl_phases(run.logstats)
            print(f"[{repeat}/{args.repeat}] crawl {value}: {run.pages} pages, {run.articles_stored} "
                  f"stored in {run.elapsed:.1f} s (last page at {phases.get('download_seconds', 0):.0f} s)"
                  f" -> {run.pages_per_second:.1f} pages/s, {run.articles_per_second:.1f} articles/s, "
                  f"ratio {run.pages_per_second / steady:.2f}; CPU s: crawl {run.crawl_cpu_seconds:.1f}, "
                  f"mirror {run.mirror_cpu_seconds:.1f}, database {run.database_cpu_seconds or 0:.1f}; "
                  f"peak RSS {run.peak_rss_kb / 1024:.0f} MB", flush=True)
            if run.returncode != 0:
                problems.append(f"{value} repeat {repeat}: exit code {run.returncode} ({run.log_file})")
            if run.articles_stored != counts["articles"]:
                problems.append(f"{value} repeat {repeat}: {run.articles_stored} stored, "
                                f"ground truth {counts['articles']} ({run.log_file})")

    bench_fig = figures(bench_rates)
    reference_rate = bench_fig["median"]
    print("\n== end to end ==")
    print(f"scrapy bench (steady): {show(bench_fig, 'pages/s')}")
    print(f"scrapy bench (overall): {show(figures(bench_overall), 'pages/s')}")
    results: dict[str, Any] = {}
    for value, settings in configs.items():
        done = runs[value]
        run_phases = [crawl_phases(r.logstats) for r in done]
        fig = {
            "pages_per_second": figures(r.pages_per_second for r in done),
            "articles_per_second": figures(r.articles_per_second for r in done),
            # each crawl against the scrapy bench run just before it
            "ratio_to_scrapy_bench": figures(r.pages_per_second / b for r, b in zip(done, bench_rates,
                                                                                    strict=True)),
            "elapsed_seconds": figures(r.elapsed for r in done),
            "last_page_at_seconds": figures(p["download_seconds"] for p in run_phases if p),
            "steady_pages_per_second_while_downloading": figures(
                p["steady_pages_per_second"] for p in run_phases if p and p["steady_pages_per_second"]),
            "crawl_cpu_ms_per_page": figures(1000 * r.crawl_cpu_seconds / max(r.pages, 1) for r in done),
            "crawl_cpu_seconds": figures(r.crawl_cpu_seconds for r in done),
            "mirror_cpu_seconds": figures(r.mirror_cpu_seconds for r in done),
            "database_cpu_seconds": figures(r.database_cpu_seconds for r in done
                                            if r.database_cpu_seconds is not None),
            "peak_rss_mb": figures(r.peak_rss_kb / 1024 for r in done),
        }
        ratio = fig["ratio_to_scrapy_bench"]["median"]
        met = ratio is not None and ratio >= TARGET_RATIO
        steady_ratio = (fig["steady_pages_per_second_while_downloading"]["median"] or 0) / reference_rate
        print(f"crawl {value}{' (' + ' '.join(settings) + ')' if settings else ''}:")
        print(f"  pages/s (stats)      {show(fig['pages_per_second'])}")
        print(f"  articles/s (stats)   {show(fig['articles_per_second'])}")
        print(f"  ratio to scrapy bench {show(fig['ratio_to_scrapy_bench'], digits=2)}"
              f" -> target >= {TARGET_RATIO}: {'MET' if met else 'MISSED'}")
        print(f"  elapsed s            {show(fig['elapsed_seconds'])}; last page received at "
              f"{show(fig['last_page_at_seconds'], 's', 0)}")
        print(f"  while downloading    {show(fig['steady_pages_per_second_while_downloading'], 'pages/s')}"
              f" = {steady_ratio:.2f} x scrapy bench")
        print(f"  CPU s: crawl {show(fig['crawl_cpu_seconds'])}, mirror {show(fig['mirror_cpu_seconds'])},"
              f" database {show(fig['database_cpu_seconds'])}")
        print(f"  crawl CPU ms/page    {show(fig['crawl_cpu_ms_per_page'], digits=2)}")
        print(f"  peak RSS MB          {show(fig['peak_rss_mb'], digits=0)}")
        results[value] = {"settings": settings, **fig, "target": TARGET_RATIO, "target_met": met,
                          "steady_ratio_while_downloading": steady_ratio,
                          "runs": [{**r.summary(), "phases": p, "samples": r.samples}
                                   for r, p in zip(done, run_phases, strict=True)]}
    for problem in problems:
        print(f"PROBLEM: {problem}")
    write_json(args.json, {
        "bench": "end_to_end", "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": facts, "articles": args.articles, "mirror_counts": counts,
        "scrapy_bench": {"steady_pages_per_second": bench_fig,
                         "overall_pages_per_second": figures(bench_overall)},
        "results": results, "problems": problems,
    })
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
