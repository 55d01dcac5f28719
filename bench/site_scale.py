"""The whole site on a schedule: a first crawl of a mirror of the real site's size, then
the reruns a 15-minute schedule makes, with 1, 2 and 4 processes on one frontier (issue 19).

    .local/venv/bin/python bench/site_scale.py [--articles 15800] [--categories 2000]
        [--processes 1 2 4] [--small-articles 2250] [--faults] [--quick] [--json PATH]

The mirror (fixtures/generate.py, rendered by Debian's Jekyll, cached) has the real site's
shape: SITE_SCALE_ARTICLES generated articles, about 17,000 posts live at once, in
SITE_SCALE_CATEGORIES category pages (site doc, Site A). For each process count, into a
fresh database and a fresh run of the Redis frontier each time (NEWSCRAWL_REDIS_URL, or a
local redis-server started for the bench), four runs of `scrapy crawl finews`:

- first: the mirror, nothing stored yet;
- nothing new: the same mirror again;
- 1 % new: the mirror with 1 % more posts, all of the last hour (`new_posts`);
- category gone: that mirror without its largest category (`drop_category`), whose page
  and posts are gone from the site (its articles stay stored).

Each run records wall seconds (first process started to last one ended), responses,
pages/s, peak RSS (each process's VmHWM, sampled every 0.5 s: the largest and their sum;
not ru_maxrss, which a child started by vfork inherits from this process, mirror server
and truth included, and Scrapy's `memusage/max` with it), CPU, and stored / updated /
unchanged counts from the crawls' stats. After each run the collection is
checked against the mirror's ground truth (fixtures.check.compare: the generator's
records, never the crawler's): every article stored once, none lost, none extra, every
field as the truth says. After `category gone` the truth is the 1 %-new mirror's: the
articles of the gone category stay stored.

The 2,250-article mirror (the demo's shape, `--small-articles`) is crawled first and
rerun with one process on the frontier: the per-page cost (wall seconds per response) of
the whole site's nothing-new rerun is compared with its. Targets (issue 19): the whole
site's nothing-new rerun at most 60 s, its per-page cost within 1.5x of the small
mirror's, the first crawl's peak memory under 1 GB.

`--faults` installs the share host's faults of issue 19 before every run
(`bench.crawls.add_share_host_faults`: its refused answers in the first crawl only, the
503-once and GBK answers in every run). `--quick`: a scaled-down site (1,600
articles in 200 categories, the same proportions) with 1 and 2 processes, in a few
minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.common import WORK_DIR, bench_parser, machine, show_machine, write_json
from bench.crawls import _proc_status_kb, add_share_host_faults
from bench.database import cpu_seconds, database_name, database_pid, database_uri, drop_database
from bench.mirror import mirror_dir

QUICK_ARTICLES, QUICK_CATEGORIES = 1_580, 200  # a tenth of the site, in its proportions
NEW_FRACTION = 0.01
SAMPLE_INTERVAL = 0.5
# Targets of issue 19
RERUN_SECONDS_TARGET = 60.0
PER_PAGE_RATIO_TARGET = 1.5
FIRST_CRAWL_RSS_MB_TARGET = 1024.0

STAT_KEYS = {
    "responses": "response_received_count",
    "stored": "newscrawl/articles/stored",
    "updated": "newscrawl/articles/updated",
    "unchanged": "newscrawl/articles/unchanged",
    "skipped_stored": "newscrawl/articles/skipped_stored",
    "rejected": "newscrawl/articles/rejected",
    "errors": "log_count/ERROR",
    "retries": "retry/count",
}


# --- Redis: the frontier -------------------------------------------------------------
@contextmanager
def redis_url() -> Iterator[str]:
    """NEWSCRAWL_REDIS_URL when set, else a redis-server of this bench on a free port."""
    configured = os.environ.get("NEWSCRAWL_REDIS_URL")
    if configured:
        yield configured
        return
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


def drop_run_keys(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


# --- one run: N processes on one frontier ----------------------------------------------
@dataclass
class Run:
    label: str
    processes: int
    wall_seconds: float
    returncodes: list[int]
    stats: list[dict[str, Any]]
    peak_rss_kb: list[int]  # VmHWM, sampled
    ru_maxrss_kb: list[int]  # wait4's: at least this process's RSS when it started the crawl
    cpu_seconds: list[float]
    database_cpu_seconds: float | None
    logs: list[str]
    truth: dict[str, Any] = field(default_factory=dict)

    def total(self, key: str) -> int:
        return sum(int(stats.get(STAT_KEYS[key], 0) or 0) for stats in self.stats)

    def summary(self) -> dict[str, Any]:
        responses = self.total("responses")
        return {
            "label": self.label, "processes": self.processes,
            "wall_seconds": round(self.wall_seconds, 2),
            "pages_per_second": round(responses / self.wall_seconds, 1),
            "ms_per_page": round(1000 * self.wall_seconds / max(responses, 1), 2),
            **{key: self.total(key) for key in STAT_KEYS},
            "peak_rss_mb": round(max(self.peak_rss_kb) / 1024, 1),
            "peak_rss_mb_sum": round(sum(self.peak_rss_kb) / 1024, 1),
            "ru_maxrss_mb": round(max(self.ru_maxrss_kb) / 1024, 1),
            "crawl_cpu_seconds": round(sum(self.cpu_seconds), 1),
            "cpu_ms_per_page": round(1000 * sum(self.cpu_seconds) / max(responses, 1), 2),
            "database_cpu_seconds": (None if self.database_cpu_seconds is None
                                     else round(self.database_cpu_seconds, 1)),
            "returncodes": self.returncodes, "truth": self.truth, "logs": self.logs,
        }


def crawl_together(host_map: dict[str, str], uri: str, database: str, redis: str, *,
                   processes: int, label: str) -> Run:
    """`processes` finews crawls of one frontier run into `database`, measured together."""
    from newscrawl.ops.crawl import crawl_env, read_stats, start_crawl

    run_id = f"{label}-{uuid.uuid4().hex[:8]}"
    prefix = f"bench-site-{run_id}"
    settings = {"LOG_LEVEL": "INFO", "AUTOTHROTTLE_ENABLED": "False",
                "NEWSCRAWL_REDIS_PREFIX": prefix}
    env = crawl_env({"NEWSCRAWL_HOST_MAP": json.dumps(host_map), "MONGO_URI": uri,
                     "MONGO_DATABASE": database, "NEWSCRAWL_REDIS_URL": redis,
                     "NEWSCRAWL_RUN_ID": run_id})
    db_pid = database_pid(uri)
    db_before = cpu_seconds(db_pid) if db_pid else None
    logs, stats_files, procs = [], [], []
    started = time.monotonic()
    for n in range(processes):
        log = WORK_DIR / "logs" / f"{database}-{label}-{n}.log"
        stats = WORK_DIR / "stats" / f"{database}-{label}-{n}.json"
        log.unlink(missing_ok=True)
        env_n = {**env, "NEWSCRAWL_SPOOL_DIR": str(WORK_DIR / "spool" / f"{database}-{n}")}
        procs.append(start_crawl("finews", None, settings, log_file=log, stats_file=stats,
                                 env=env_n))
        logs.append(str(log))
        stats_files.append(stats)
    codes: dict[int, int] = {}
    peak: dict[int, int] = {}
    cpu: dict[int, float] = {}
    hwm: dict[int, int] = {}
    while len(codes) < processes:
        for n, proc in enumerate(procs):
            if n in codes:
                continue
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                codes[n] = os.waitstatus_to_exitcode(status)
                proc.returncode = codes[n]
                peak[n] = usage.ru_maxrss
                cpu[n] = usage.ru_utime + usage.ru_stime
            else:
                hwm[n] = _proc_status_kb(proc.pid, ("VmHWM",)).get("VmHWM", hwm.get(n, 0))
        time.sleep(SAMPLE_INTERVAL)
    wall = time.monotonic() - started
    db_after = cpu_seconds(db_pid) if db_pid else None
    drop_run_keys(redis, prefix)
    return Run(label=label, processes=processes, wall_seconds=wall,
               returncodes=[codes[n] for n in range(processes)],
               stats=[read_stats(path) for path in stats_files],
               peak_rss_kb=[hwm.get(n) or peak[n] for n in range(processes)],
               ru_maxrss_kb=[peak[n] for n in range(processes)],
               cpu_seconds=[cpu[n] for n in range(processes)],
               database_cpu_seconds=(None if db_before is None or db_after is None
                                     else db_after - db_before),
               logs=logs)


# --- the truth ---------------------------------------------------------------------------
def truth_records(out: Path) -> list[dict[str, Any]]:
    lines = (out / "truth" / "articles.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


def check_truth(uri: str, database: str, truth: list[dict[str, Any]]) -> dict[str, Any]:
    """The collection against the generator's truth (fixtures.check.compare): stored once
    each (the _id is the article id; `extra` is an article under another id), none lost."""
    from fixtures.check import compare
    from pipelines.storage import mongo_client

    client = mongo_client(uri, appname="newscrawl-bench")
    try:
        comparison = compare(truth, client[database]["articles"].find())
    finally:
        client.close()
    return {"ok": comparison.ok, "truth": comparison.truth, "stored": comparison.stored,
            "missing": len(comparison.missing), "extra": len(comparison.extra),
            "mismatched": len(comparison.mismatched),
            "mismatched_ids": sorted(comparison.mismatched)[:10],
            "missing_ids": comparison.missing[:10], "extra_ids": comparison.extra[:10]}


# --- the schedule --------------------------------------------------------------------------
@dataclass(frozen=True)
class Mirrors:
    first: Path  # the site
    grown: Path  # 1 % new posts
    gone: Path  # and a category gone
    new_posts: int
    gone_category: dict[str, Any]


def manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "truth" / "manifest.json").read_text(encoding="utf-8"))
    return data


def build_mirrors(articles: int, categories: int | None) -> Mirrors:
    from fixtures import media

    first = mirror_dir(articles, categories=categories)
    shown = manifest(first)
    new_posts = max(1, round(NEW_FRACTION * shown["counts"]["posts"]))
    grown = mirror_dir(articles, categories=categories, new_posts=new_posts)
    pinned = {media.slugify(name) for name in media.ALWAYS_CARRIED}
    droppable = [c for c in manifest(grown)["categories"] if c["slug"] not in pinned]
    largest = max(droppable, key=lambda c: (c["posts"], c["slug"]))
    gone = mirror_dir(articles, categories=categories, new_posts=new_posts,
                      drop_category=largest["slug"])
    return Mirrors(first, grown, gone, new_posts,
                   {"slug": largest["slug"], "posts": largest["posts"]})


STEPS = ("first", "nothing_new", "new_1pct", "category_gone")


def schedule(uri: str, redis: str, mirrors: Mirrors, processes: int,
             faults: bool, *, steps: Sequence[str] = STEPS) -> list[dict[str, Any]]:
    """First crawl, then the reruns, into one fresh database; the truth checked after each.
    `faults`: the share host fails as `bench.crawls.share_host_faults` says, its refused
    answers refused in the first crawl only ("until the next run")."""
    from fixtures.server import MirrorServer

    database = database_name(f"site_{processes}p")
    truth_first, truth_grown = truth_records(mirrors.first), truth_records(mirrors.grown)
    plan = [("first", mirrors.first, truth_first), ("nothing_new", mirrors.first, truth_first),
            ("new_1pct", mirrors.grown, truth_grown), ("category_gone", mirrors.gone, truth_grown)]
    results = []
    try:
        for label, out, truth in [step for step in plan if step[0] in steps]:
            with MirrorServer(out) as server:
                if faults:
                    add_share_host_faults(server, out, first_run=label == "first")
                run = crawl_together(server.host_map, uri, database, redis,
                                     processes=processes, label=label)
            run.truth = check_truth(uri, database, truth)
            summary = run.summary()
            results.append(summary)
            print(f"  {processes} process(es), {label}: {summary['wall_seconds']:.1f} s, "
                  f"{summary['responses']} responses ({summary['pages_per_second']:.1f}/s, "
                  f"{summary['ms_per_page']:.1f} ms/page), stored {summary['stored']}, "
                  f"updated {summary['updated']}, peak RSS {summary['peak_rss_mb']:.0f} MB "
                  f"(sum {summary['peak_rss_mb_sum']:.0f}); truth: "
                  f"{'OK' if run.truth['ok'] else 'MISMATCH'} ({run.truth['stored']} stored of "
                  f"{run.truth['truth']}, {run.truth['missing']} missing, {run.truth['extra']} "
                  f"extra, {run.truth['mismatched']} mismatched)", flush=True)
    finally:
        drop_database(uri, database)
        shutil.rmtree(WORK_DIR / "spool", ignore_errors=True)
    return results


def verdict(payload: dict[str, Any]) -> list[str]:
    lines = []
    small = {r["label"]: r for r in payload["small"]}
    for processes, runs in payload["site"].items():
        by_label = {r["label"]: r for r in runs}
        if not {"first", "nothing_new"} <= set(by_label) or "nothing_new" not in small:
            lines.append(f"{processes} process(es): " + "; ".join(
                f"{r['label']} peak RSS {r['peak_rss_mb']:.0f} MB" for r in runs))
            continue
        rerun, first = by_label["nothing_new"], by_label["first"]
        ratio = rerun["ms_per_page"] / small["nothing_new"]["ms_per_page"]
        cpu_ratio = rerun["cpu_ms_per_page"] / small["nothing_new"]["cpu_ms_per_page"]
        all_ok = all(r["truth"]["ok"] for r in runs)
        lines.append(
            f"{processes} process(es): nothing-new rerun {rerun['wall_seconds']:.1f} s "
            f"(target <= {RERUN_SECONDS_TARGET:.0f}: "
            f"{'met' if rerun['wall_seconds'] <= RERUN_SECONDS_TARGET else 'MISSED'}); "
            f"per page {rerun['ms_per_page']:.1f} ms against the small mirror's "
            f"{small['nothing_new']['ms_per_page']:.1f}: x{ratio:.2f} (target <= "
            f"{PER_PAGE_RATIO_TARGET}: {'met' if ratio <= PER_PAGE_RATIO_TARGET else 'MISSED'}; "
            f"crawl CPU per page x{cpu_ratio:.2f}); "
            f"first crawl peak RSS {first['peak_rss_mb']:.0f} MB (target < 1 GB: "
            f"{'met' if first['peak_rss_mb'] < FIRST_CRAWL_RSS_MB_TARGET else 'MISSED'}); "
            f"truth after every run: {'OK' if all_ok else 'MISMATCH'}")
    return lines


def table(payload: dict[str, Any]) -> str:
    rows = ["| processes | run | wall s | responses | pages/s | ms/page (wall / crawl CPU) "
            "| stored | updated | peak RSS MB (max / sum) | truth |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for processes, runs in [("1 (small)", payload["small"]), *payload["site"].items()]:
        for r in runs:
            truth = r["truth"]
            rows.append(f"| {processes} | {r['label']} | {r['wall_seconds']:.1f} | "
                        f"{r['responses']} | {r['pages_per_second']:.1f} | {r['ms_per_page']:.1f} / "
                        f"{r['cpu_ms_per_page']:.1f} "
                        f"| {r['stored']} | {r['updated']} | {r['peak_rss_mb']:.0f} / "
                        f"{r['peak_rss_mb_sum']:.0f} | "
                        f"{'OK' if truth['ok'] else 'MISMATCH'} {truth['stored']}/{truth['truth']} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    from fixtures.generate import SITE_SCALE_ARTICLES, SITE_SCALE_CATEGORIES

    parser = bench_parser(__doc__, articles=SITE_SCALE_ARTICLES, repeat=None)
    parser.add_argument("--categories", type=int, default=SITE_SCALE_CATEGORIES)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--small-articles", type=int, default=2_250,
                        help="the mirror whose per-page rerun cost is the yardstick")
    parser.add_argument("--faults", action="store_true",
                        help="the share host fails as in issue 19 during every run")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="which runs of the schedule (each needs the ones before it)")
    parser.add_argument("--no-small", action="store_true",
                        help="skip the small mirror's yardstick runs")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ARTICLES} articles in {QUICK_CATEGORIES} categories, "
                             "1 and 2 processes")
    args = parser.parse_args(argv)
    if args.quick:
        args.articles, args.categories = QUICK_ARTICLES, QUICK_CATEGORIES
        if args.processes == [1, 2, 4]:
            args.processes = [1, 2]
    uri = database_uri()
    facts = machine(uri)
    print(show_machine(facts), flush=True)
    started = time.monotonic()
    faults = bool(args.faults)
    payload: dict[str, Any] = {"machine": facts, "argv": sys.argv, "faults": args.faults}
    with redis_url() as redis:
        built = time.monotonic()
        small = mirror_dir(args.small_articles)
        mirrors = build_mirrors(args.articles, args.categories)
        payload["mirror"] = {"articles": args.articles, "counts": manifest(mirrors.first)["counts"],
                             "new_posts": mirrors.new_posts, "gone": mirrors.gone_category,
                             "small_counts": manifest(small)["counts"],
                             "mirrors_ready_seconds": round(time.monotonic() - built, 1)}
        counts = payload["mirror"]["counts"]
        print(f"site: {counts['posts']} posts of {counts['articles']} articles in "
              f"{counts['categories']} categories; {mirrors.new_posts} new posts; gone: "
              f"{mirrors.gone_category['slug']} ({mirrors.gone_category['posts']} posts)", flush=True)
        if not args.no_small:
            print(f"small mirror ({args.small_articles} articles), 1 process:", flush=True)
        payload["small"] = [] if args.no_small else schedule(
            uri, redis, Mirrors(small, small, small, 0, {}), 1, faults,
            steps=("first", "nothing_new"))
        payload["site"] = {}
        for processes in args.processes:
            print(f"site, {processes} process(es):", flush=True)
            payload["site"][str(processes)] = schedule(uri, redis, mirrors, processes, faults,
                                                       steps=args.steps)
            write_json(args.json, payload)
    payload["total_seconds"] = round(time.monotonic() - started, 1)
    payload["verdict"] = verdict(payload)
    print("\n== the whole site on a schedule ==")
    print(table(payload))
    print("\n".join(payload["verdict"]))
    print(f"total {payload['total_seconds']:.0f} s")
    write_json(args.json, payload)
    ok = all(r["truth"]["ok"] for runs in [payload["small"], *payload["site"].values()]
             for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
