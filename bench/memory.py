"""Peak RSS of the crawl process against the number of articles crawled.

    .local/venv/bin/python bench/memory.py --articles 10000 50000 [--repeat 1] [-s NAME=VALUE] [--json PATH]

For each size: build (or reuse) the mirror, serve it, run the same crawl as
bench/end_to_end.py into a fresh database, and take the crawl process's peak
RSS from wait4's ru_maxrss (exact, all of its life); VmRSS is also sampled
every 0.5 s, and the stored documents every 5 s, to show when memory grows.
Growth: the ratio of peak RSS between sizes against the ratio of articles,
and the marginal memory per article. Target: less than linear.

`--without-storage` runs the same crawls with ITEM_PIPELINES set to the four
step pipelines only (no MongoPipeline, nothing stored; a `-s` override, the
project is unchanged), to tell the crawl's own memory from the write backlog.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import itertools
import json
from collections.abc import Sequence
from typing import Any

from bench.common import bench_parser, figures, machine, show, show_machine, write_json
from bench.crawls import CrawlRun, crawl_mirror, crawl_phases
from bench.database import database_name, database_uri, drop_database
from bench.mirror import mirror_counts, mirror_dir, served_mirror


def timeline(run: CrawlRun, every: float = 30.0) -> list[dict[str, Any]]:
    """Samples thinned to one per `every` seconds (with the stored count carried forward)."""
    kept: list[dict[str, Any]] = []
    stored = None
    for sample in run.samples:
        stored = sample.get("stored", stored) if sample.get("stored") is not None else stored
        if not kept or sample["t"] - kept[-1]["t"] >= every:
            kept.append({"t": sample["t"], "rss_mb": round((sample.get("rss_kb") or 0) / 1024, 1),
                         "stored": stored})
    return kept


def rss_at(run: CrawlRun, seconds: float) -> float | None:
    """VmRSS (MB) of the sample nearest to `seconds` into the crawl."""
    samples = [s for s in run.samples if s.get("rss_kb")]
    if not samples:
        return None
    nearest = min(samples, key=lambda s: abs(s["t"] - seconds))
    return float(nearest["rss_kb"]) / 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=[10_000, 50_000], repeat=1)
    parser.add_argument("-s", "--set", dest="extra", action="append", default=[],
                        metavar="NAME=VALUE", help="a Scrapy setting for every crawl")
    parser.add_argument("--without-storage", action="store_true",
                        help="ITEM_PIPELINES = the step pipelines only (no MongoPipeline)")
    args = parser.parse_args(argv)
    if args.without_storage:
        from pipelines.steps import STEP_PIPELINES

        args.extra.append(f"ITEM_PIPELINES={json.dumps(STEP_PIPELINES)}")

    uri = database_uri()
    facts = machine(uri)
    print(show_machine(facts))
    sizes = sorted(set(args.articles))
    mirrors = {n: mirror_dir(n) for n in sizes}
    runs: dict[int, list[CrawlRun]] = {n: [] for n in sizes}
    problems: list[str] = []
    for repeat in range(1, args.repeat + 1):
        for n in sizes:
            counts = mirror_counts(mirrors[n])
            database = database_name("memory")
            try:
                with served_mirror(mirrors[n]) as host_map:
                    run = crawl_mirror(host_map, uri, database, label=str(n), settings=args.extra)
            finally:
                drop_database(uri, database)
            runs[n].append(run)
            phases = crawl_phases(run.logstats)
            last_page = phases.get("download_seconds", run.elapsed)
            peak_at = max(run.samples, key=lambda s: s.get("rss_kb") or 0)["t"] if run.samples else 0
            print(f"[{repeat}/{args.repeat}] {n} articles: {run.pages} pages, {run.articles_stored} stored "
                  f"in {run.elapsed:.0f} s (last page at {last_page:.0f} s); peak RSS "
                  f"{run.peak_rss_kb / 1024:.0f} MB (sampled peak at {peak_at:.0f} s; RSS when the last "
                  f"page came {rss_at(run, last_page) or 0:.0f} MB)", flush=True)
            expected = 0 if args.without_storage else counts["articles"]
            if run.returncode != 0 or run.articles_stored != expected:
                problems.append(f"{n} articles, repeat {repeat}: exit {run.returncode}, "
                                f"{run.articles_stored} stored of {expected} ({run.log_file})")

    print("\n== memory ==")
    peaks = {n: figures(r.peak_rss_kb / 1024 for r in runs[n]) for n in sizes}
    for n in sizes:
        print(f"{n:7d} articles: peak RSS {show(peaks[n], 'MB', 0)}; elapsed "
              f"{show(figures(r.elapsed for r in runs[n]), 's', 0)}")
    growth: list[dict[str, Any]] = []
    for small, large in itertools.pairwise(sizes):
        rss_ratio = peaks[large]["median"] / peaks[small]["median"]
        article_ratio = large / small
        per_article_kb = 1024 * (peaks[large]["median"] - peaks[small]["median"]) / (large - small)
        intercept = peaks[small]["median"] - per_article_kb * small / 1024
        met = rss_ratio < article_ratio
        growth.append({"from": small, "to": large, "rss_ratio": rss_ratio, "article_ratio": article_ratio,
                       "marginal_kb_per_article": per_article_kb, "intercept_mb": intercept,
                       "less_than_linear": met})
        print(f"{small} -> {large}: peak RSS x{rss_ratio:.2f} for x{article_ratio:.1f} articles -> "
              f"less than linear: {'MET' if met else 'MISSED'}; marginal {per_article_kb:.1f} kB per "
              f"article above a {intercept:.0f} MB base (linear fit through the two points)")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    write_json(args.json, {
        "bench": "memory", "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": facts,
        "settings": args.extra,
        "peak_rss_mb": {str(n): peaks[n] for n in sizes}, "growth": growth, "problems": problems,
        "runs": {str(n): [{**r.summary(), "phases": crawl_phases(r.logstats), "timeline": timeline(r)}
                          for r in runs[n]] for n in sizes},
    })
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
