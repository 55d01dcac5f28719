"""What a crawl, a rerun and a query cost per article as the collection grows.

    .local/venv/bin/python bench/scaling.py [--sizes 1000 10000 100000] [--queries 40]
        [--crawl-articles 2250] [--crawl-faults] [--ferretdb PATH] [--json PATH]

At each size N, into a fresh database with the pipeline's indexes, through the
project's own storage (`ArticleStore.write`, batches of MONGO_BATCH_SIZE = 200):

- first crawl: N articles, new, as the post pages' sightings (`sighting_from_item`);
- rerun, nothing new: what a rerun does with N stored articles all listed again: the
  start read (`StoredSnapshot.read`, the StoredRecords extension's: what the incremental
  filter, the spider and the store need of every stored article, and the rejects' URLs),
  handed to the store as in a crawl, then one listing sighting per article
  (`sighting_from_listing`: its own category, tag and URL), which the filter drops when
  it adds nothing (as `StoredArticleFilter` does) and the store writes otherwise;
- rerun, 10% new: the same, with every tenth listing in a category the article lacks;
- queries: each `newscrawl query` filter with `--limit 20` (`newscrawl.ops.query.find_articles`,
  as the CLI calls it), `--queries` times each with varied values: median and 95th percentile.

The articles are synthetic records of the mirror's shape: every field of the
mirror generator's ground truth, cloned from a 2,250-article mirror with fresh ids
(random digits, so ids spread over the table), dates over 60 days, categories and
sources in the mirror's proportions, and a text of their own: the k-th clone of a
template has every CJK character of its title and text moved k places along the CJK
block, so no two share the template's words (as clones they were each other's
near-duplicates: every article a reprint of size/2,250 others, which no collection
has and which made pipelines.neardup compare each with all of them). Costs are wall
seconds (the machine is shared: CPU seconds of this process and of the local
FerretDB are printed too).

`--crawl-articles N` also crawls an N-article mirror with the real spider twice
(first crawl, then the same crawl again with nothing new), `--crawl-repeat` times
(3), each pair into a fresh database, and prints both times and their ratio.
`--crawl-faults` instead crawls that mirror (2,250 articles when N is 0) healthy, then
with its share host failing as real ones do (`bench.crawls.share_host_faults`: one
answer in 13 refused until the next run, one in 6 of the others a 503 once, a third in
GBK): a first crawl and a rerun each, and prints each faulted time over its healthy one
(issue 19); and a faulted first crawl with a healthy rerun, to tell the faulted rerun's
waits from its extra work (the refused answers it completes). `--sizes` with no value
skips the synthetic sizes.
`--ferretdb PATH` measures another FerretDB binary (e.g. an unpatched build),
started on a free port with its own data directory, instead of MONGO_URI / the
project's local server.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import functools
import json
import random
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import WORK_DIR, bench_parser, figures, machine, show, show_machine, write_json
from bench.crawls import add_share_host_faults, crawl_mirror, crawl_phases
from bench.database import (
    cpu_seconds,
    database_name,
    database_pid,
    database_uri,
    drop_database,
    own_cpu_seconds,
)
from bench.mirror import mirror_dir, mirror_server, served_mirror

BATCH = 200  # MONGO_BATCH_SIZE's default
TEMPLATE_ARTICLES = 2250
START = datetime(2021, 11, 1, tzinfo=UTC)
CJK_FIRST, CJK_SIZE = 0x4E00, 0x9FA6 - 0x4E00  # the basic CJK block
DAYS = 60
NEW_CATEGORY = "bench-new-category"


# --- synthetic articles of the mirror's shape ------------------------------------------------

def templates() -> list[dict[str, Any]]:
    out = mirror_dir(TEMPLATE_ARTICLES)
    lines = (out / "truth" / "articles.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


@functools.cache
def shifted_cjk(k: int) -> dict[int, int]:
    """A str.translate table moving every CJK character k places along the block."""
    return {c: CJK_FIRST + (c - CJK_FIRST + k) % CJK_SIZE for c in range(CJK_FIRST, CJK_FIRST + CJK_SIZE)} \
        if k else {}


class Articles:
    """N articles cloned from the mirror's records: deterministic, made batch by batch."""

    def __init__(self, size: int, seed: int = 12) -> None:
        rng = random.Random(seed)
        self.templates = templates()
        self.size = size
        self.ids: list[str] = []
        self.published: list[datetime] = []
        self.template_of: list[int] = []
        self.clone_of: list[int] = []  # the k-th clone of its template
        clones: dict[int, int] = {}
        seen: set[str] = set()
        while len(self.ids) < size:
            published = START + timedelta(seconds=rng.randrange(DAYS * 86400))
            # the site's ids: YYYYMMDD of publication + 10 digits; random, so spread over the table
            article_id = f"{published:%Y%m%d}{rng.randrange(10**10):010d}"
            if article_id in seen:
                continue
            seen.add(article_id)
            self.ids.append(article_id)
            self.published.append(published)
            template = rng.randrange(len(self.templates))
            self.template_of.append(template)
            self.clone_of.append(clones.get(template, 0))
            clones[template] = self.clone_of[-1] + 1

    def item(self, n: int) -> dict[str, Any]:
        """The normalised item a post page of article n gives the storage pipeline."""
        record = self.templates[self.template_of[n]]
        article_id, published = self.ids[n], self.published[n]
        table = shifted_cjk(self.clone_of[n])
        paragraphs = [*(p.translate(table) for p in record["paragraphs"]), f"（编号 {article_id}）"]
        category = record["categories"][0]
        url = f"https://finews.withounder.com/{category}/{published:%Y/%m/%d}/NW{article_id}.html"
        from pipelines.identity import content_hash

        return {
            "article_id": article_id, "page_kind": "post", "url": url,
            "title": record["title"].translate(table), "paragraphs": paragraphs,
            "body_kind": record["body_kind"],
            "share_url": f"http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW{article_id}",
            "published_at": published,
            "published_at_raw": (published + timedelta(hours=8)).strftime(
                "(GMT+8, Asia/Shanghai, CST) %Y-%m-%d %H:%M:%S"),
            "source": record["source"], "source_slug": record["source_slug"],
            "category": category, "tags": record["tags"][:1], "origin_url": record.get("origin_url"),
            "content_hash": content_hash("\n".join(paragraphs)),
            "fetched_at": datetime.now(UTC), "extra": {},
        }

    def post_sightings(self) -> Iterator[list[dict[str, Any]]]:
        from pipelines.records import sighting_from_item

        for start in range(0, self.size, BATCH):
            yield [sighting_from_item(self.item(n)) for n in range(start, min(start + BATCH, self.size))]

    def listing_sightings(self, new_every: int = 0) -> Iterator[list[dict[str, Any]]]:
        """One listing sighting per article; every `new_every`-th in a category it lacks."""
        from pipelines.records import sighting_from_listing

        seen_at = datetime.now(UTC)
        for start in range(0, self.size, BATCH):
            batch = []
            for n in range(start, min(start + BATCH, self.size)):
                item = self.item(n)
                new = new_every and n % new_every == 0
                batch.append(sighting_from_listing({
                    "article_id": item["article_id"], "url": item["url"], "tags": item["tags"],
                    "category": NEW_CATEGORY if new else item["category"], "seen_at": seen_at}))
            yield batch


# --- measuring -----------------------------------------------------------------------------

class Meter:
    """Wall and CPU seconds of this process inside `segment`s (the storage's work, not the
    making of sightings), and CPU seconds of the database server over the whole phase."""

    def __init__(self, db_pid: int | None) -> None:
        self.db_pid = db_pid
        self.phase: dict[str, Any] = {}

    @contextmanager
    def __call__(self, into: dict[str, Any]) -> Iterator[None]:
        self.phase = into
        into.update(seconds=0.0, bench_cpu_seconds=0.0)
        db_before = cpu_seconds(self.db_pid) if self.db_pid else None
        yield
        db_after = cpu_seconds(self.db_pid) if self.db_pid else None
        into["database_cpu_seconds"] = (db_after - db_before if db_after is not None
                                        and db_before is not None else None)

    @contextmanager
    def segment(self) -> Iterator[None]:
        own_before = own_cpu_seconds()
        started = time.perf_counter()
        yield
        self.phase["seconds"] += time.perf_counter() - started
        self.phase["bench_cpu_seconds"] += own_cpu_seconds() - own_before


def per_article(phase: dict[str, Any], articles: int) -> dict[str, Any]:
    phase["ms_per_article"] = 1000 * phase["seconds"] / articles
    if phase.get("database_cpu_seconds") is not None:
        phase["database_cpu_ms_per_article"] = 1000 * phase["database_cpu_seconds"] / articles
    return phase


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def query_cases(articles: Articles, rng: random.Random) -> dict[str, list[Any]]:
    """`newscrawl query` filters, each with varied values drawn from the stored articles."""
    from newscrawl.ops.query import Filters, TimeBound

    def record(n: int) -> dict[str, Any]:
        return articles.templates[articles.template_of[n]]

    picks = [rng.randrange(articles.size) for _ in range(200)]

    def day(n: int) -> datetime:
        return articles.published[n].replace(hour=0, minute=0, second=0)

    return {
        "--limit 20 (newest)": [Filters() for _ in picks],
        "--source": [Filters(source_slug=record(n)["source_slug"]) for n in picks],
        "--source --since": [Filters(source_slug=record(n)["source_slug"],
                                     since=TimeBound(day(n))) for n in picks],
        "--category": [Filters(category=record(n)["categories"][0]) for n in picks],
        "--since": [Filters(since=TimeBound(day(n))) for n in picks],
        "--until": [Filters(until=TimeBound(day(n), inclusive=False)) for n in picks],
        "--since --until (one day)": [Filters(since=TimeBound(day(n)),
                                              until=TimeBound(day(n) + timedelta(days=1), False))
                                      for n in picks],
    }


def text_cases(articles: Articles, rng: random.Random) -> dict[str, list[Any]]:
    """`--text` and `--phrase` filters (issue 22), with words drawn from a sample of the
    records' own words: one word (held by 0.5-5 % of records), two words of one record, a
    rare word (in one sampled record), a word held by about half the records, and a phrase
    of two to four words of a template's text."""
    from newscrawl.ops.query import Filters
    from pipelines.search import query_terms, search_words

    sample = rng.sample(range(articles.size), min(articles.size, 1000))
    words = {}
    holders: dict[str, int] = {}
    for n in sample:
        item = articles.item(n)
        words[n] = search_words(item["title"], "\n".join(item["paragraphs"])).split()
        for word in set(words[n]):
            holders[word] = holders.get(word, 0) + 1
    share = {word: count / len(sample) for word, count in holders.items()}
    some = sorted(w for w, f in share.items() if 0.005 <= f <= 0.05 and len(w) >= 2)
    half = sorted(share, key=lambda w: (abs(share[w] - 0.5), w))[:5]
    rare = sorted(w for w, c in holders.items() if c == 1 and len(w) >= 2)

    def two_words(n: int) -> str:
        held = sorted({w for w in words[n] if w in some} or {w for w in words[n] if len(w) >= 2})
        return " ".join(rng.sample(held, 2)) if len(held) >= 2 else held[0]

    def phrase(n: int) -> str:
        """Two to four words of a template's own text (a clone's text is shifted characters:
        no phrase anyone would type), as jieba cuts it: four characters or more, letters and
        digits only (what one searches; bench/phrase_words.py measures spans of any kind)."""
        import re

        import rjieba

        text = articles.templates[articles.template_of[n]]["text"]
        cut = list(rjieba.cut(text))
        for _ in range(50):
            k = rng.randint(2, 4)
            start = rng.randrange(max(len(cut) - k, 1))
            span = "".join(cut[start:start + k])
            if len(span) >= 4 and re.fullmatch(r"[^\W_]+", span) and len(query_terms(span)) >= 2:
                return span
        return text[:8]

    picks = [sample[rng.randrange(len(sample))] for _ in range(200)]
    return {
        "--text one word": [Filters(text=rng.choice(some)) for _ in picks],
        "--text two words": [Filters(text=two_words(n)) for n in picks],
        "--text rare word": [Filters(text=rng.choice(rare)) for _ in picks],
        "--text word in half": [Filters(text=rng.choice(half)) for _ in picks],
        "--phrase": [Filters(phrases=(phrase(n),)) for n in picks],
    }


def adds_nothing(known: Any, sighting: dict[str, Any]) -> bool:
    """The incremental filter's test of a listing (StoredArticleFilter._skip)."""
    from pipelines.records import last_seen_is_due, sighting_adds_nothing

    record = known.get(sighting["_id"])
    return (record is not None and not last_seen_is_due(record, sighting["seen_at"])
            and sighting_adds_nothing(record, sighting))


def start_read(uri: str, database: str, store: Any) -> Any:
    """What a rerun reads at its first request: every stored article, once (StoredRecords in
    newscrawl/components/stored.py: what the incremental filter, the spider and the store
    need of it, and the rejects' URLs, on a connection of its own), the known records
    handed to the storage's store."""
    from newscrawl.components.stored import StoredSnapshot
    from pipelines.storage import ArticleStore

    reader = ArticleStore.connect(uri, database)
    try:
        snapshot = StoredSnapshot.read(reader)
    finally:
        reader.close()
    store.use_known(snapshot.known)
    return snapshot


def measure_size(uri: str, size: int, repeats: int, db_pid: int | None) -> dict[str, Any]:
    from newscrawl.ops.query import explain_query, find_articles, plan_uses_index, with_search_indexes
    from pipelines.config import mongo_client
    from pipelines.storage import ArticleStore, ensure_indexes

    articles = Articles(size)
    meter = Meter(db_pid)
    database = database_name("scaling")
    result: dict[str, Any] = {"articles": size, "database": database}
    try:
        store = ArticleStore.connect(uri, database)
        ensure_indexes(store.db, "articles", "rejects")
        first: dict[str, Any] = {}
        batch_seconds: list[float] = []
        with meter(first):
            for batch in articles.post_sightings():
                before = first["seconds"]
                with meter.segment():
                    written = store.write(batch)
                batch_seconds.append(first["seconds"] - before)
                assert written.outcomes["stored"] == len(batch), written
            before = first["seconds"]
            with meter.segment():
                store.close()  # checks near-duplicates again (candidates in memory: FerretDB)
            first["close_seconds"] = first["seconds"] - before
        # Does a write cost more as the collection grows? The first and the last tenth of batches.
        tenth = max(len(batch_seconds) // 10, 1)
        first["first_tenth_ms_per_article"] = 1000 * sum(batch_seconds[:tenth]) / (tenth * BATCH)
        first["last_tenth_ms_per_article"] = 1000 * sum(batch_seconds[-tenth:]) / (tenth * BATCH)
        result["first_crawl"] = per_article(first, size)

        print(f"  {size}: first crawl {first['seconds']:.1f} s, "
              f"{first['ms_per_article']:.2f} ms/article (first tenth of batches "
              f"{first['first_tenth_ms_per_article']:.2f}, last tenth "
              f"{first['last_tenth_ms_per_article']:.2f}, close {first['close_seconds']:.1f} s)",
              flush=True)

        for label, new_every in (("rerun_nothing_new", 0), ("rerun_10pct_new_category", 10)):
            phase: dict[str, Any] = {}
            outcomes: dict[str, int] = {}
            with meter(phase):
                with meter.segment():
                    store = ArticleStore.connect(uri, database)
                    snapshot = start_read(uri, database, store)
                assert len(snapshot.ids) == size, len(snapshot.ids)
                for batch in articles.listing_sightings(new_every):
                    with meter.segment():
                        # the incremental filter yields only the listings that add something
                        kept = [s for s in batch if not adds_nothing(snapshot.known, s)]
                        report = store.write(kept) if kept else None
                    outcomes["dropped_by_filter"] = (outcomes.get("dropped_by_filter", 0)
                                                     + len(batch) - len(kept))
                    for outcome, count in (report.outcomes.items() if report else ()):
                        outcomes[outcome] = outcomes.get(outcome, 0) + count
                with meter.segment():
                    store.close()
            phase["outcomes"] = outcomes
            result[label] = per_article(phase, size)
            print(f"  {size}: {label} {phase['seconds']:.1f} s, {phase['ms_per_article']:.2f} "
                  f"ms/listed article ({outcomes})", flush=True)
        client = mongo_client(uri, appname="newscrawl-bench")
        try:
            collection = client[database]["articles"]
            expected_new = len(range(0, size, 10))
            got_new = collection.count_documents({"categories": NEW_CATEGORY})
            assert got_new == expected_new, (got_new, expected_new)
            rng = random.Random(7)
            queries: dict[str, Any] = {}
            cases_by_name = {**query_cases(articles, rng), **text_cases(articles, rng)}
            for name, cases in cases_by_name.items():
                cases = [with_search_indexes(collection, f) for f in cases]
                timings = []
                for filters in cases[:repeats]:
                    started = time.perf_counter()
                    docs = list(find_articles(collection, filters, limit=20))
                    timings.append(1000 * (time.perf_counter() - started))
                    assert len(docs) <= 20
                uses_index = plan_uses_index(explain_query(collection, cases[0]))
                queries[name] = {"median_ms": statistics.median(timings),
                                 "p95_ms": percentile(timings, 0.95), "n": len(timings),
                                 "uses_index": uses_index}
                print(f"  {size}: query {name}: median {queries[name]['median_ms']:.1f} ms, "
                      f"p95 {queries[name]['p95_ms']:.1f} ms (index: {uses_index})", flush=True)
            result["queries"] = queries
            from pipelines.word_index import WordIndex

            if WordIndex(collection).complete():
                sizes = WordIndex(collection).size()
                for name in ("articles", "articles_words"):
                    sizes[f"{name}_storage_bytes"] = int(client[database].command("collStats", name)
                                                         .get("storageSize", 0))
                result["word_index"] = sizes
                print(f"  {size}: word index {sizes}", flush=True)
        finally:
            client.close()
    finally:
        drop_database(uri, database)
    return result


# --- the real crawl ------------------------------------------------------------------------

def real_crawls(uri: str, articles: int) -> dict[str, Any]:
    out = mirror_dir(articles)
    database = database_name("scaling_crawl")
    runs: dict[str, Any] = {}
    try:
        with served_mirror(out) as host_map:
            for label in ("first_crawl", "rerun_nothing_new"):
                run = crawl_mirror(host_map, uri, database, label=label)
                runs[label] = run.summary()
                runs[label]["known_unchanged"] = run.stats.get("newscrawl/storage/known_unchanged")
                print(f"  crawl of {articles}: {label}: {run.pages} pages in {run.elapsed:.1f} s "
                      f"(stored {run.articles_stored}, database CPU "
                      f"{run.database_cpu_seconds or 0:.1f} s)", flush=True)
    finally:
        drop_database(uri, database)
    runs["rerun_over_first"] = (runs["rerun_nothing_new"]["elapsed_seconds"]
                                / runs["first_crawl"]["elapsed_seconds"])
    return runs


def fault_crawls(uri: str, articles: int) -> dict[str, Any]:
    """A first crawl and a rerun of an N-article mirror with the share host healthy, then the
    same into a fresh database with the share host failing (`share_host_faults`: its refused
    answers only in the first crawl); each faulted time over its healthy one. Then, to tell
    the rerun's waits from its extra work, a faulted first crawl again and a rerun with the
    share host healthy (`rerun_after_faults`): what completing the refused answers costs."""
    out = mirror_dir(articles)
    runs: dict[str, Any] = {}
    series = {"healthy": (False, False), "faults": (True, True), "faults_then_healthy": (True, False)}
    with mirror_server(out) as server:
        for suffix, faulted_runs in series.items():
            database = database_name("scaling_faults")
            try:
                for (label, first_run), faulted in zip((("first_crawl", True), ("rerun", False)),
                                                       faulted_runs, strict=True):
                    server.clear_faults()
                    if faulted:
                        add_share_host_faults(server, out, first_run=first_run)
                    name = f"{label}_{suffix}"
                    run = crawl_mirror(server.host_map, uri, database, label=name)
                    runs[name] = run.summary()
                    runs[name]["backoff"] = {k: v for k, v in run.stats.items()
                                             if k.startswith(("newscrawl/backoff/", "retry/"))}
                    runs[name]["share"] = {k: v for k, v in run.stats.items()
                                           if k.startswith("newscrawl/share/")}
                    # The last page's time (LogStats, 1 s resolution): the rest is the close.
                    phases = crawl_phases(run.logstats)
                    runs[name]["download_seconds"] = phases.get("download_seconds")
                    runs[name]["items_scraped"] = run.stats.get("item_scraped_count", 0)
                    print(f"  crawl of {articles}: {name}: {run.pages} pages in {run.elapsed:.1f} s, "
                          f"the last at {phases.get('download_seconds', 0):.0f} s "
                          f"(items {runs[name]['items_scraped']}, stored {run.articles_stored}, "
                          f"retries {run.stats.get('retry/count', 0)}, waits "
                          f"{run.stats.get('newscrawl/backoff/milliseconds', 0) / 1000:.1f} s)",
                          flush=True)
            finally:
                server.clear_faults()
                drop_database(uri, database)
    for label in ("first_crawl", "rerun"):
        runs[f"{label}_faults_over_healthy"] = (runs[f"{label}_faults"]["elapsed_seconds"]
                                                / runs[f"{label}_healthy"]["elapsed_seconds"])
    runs["rerun_faults_over_faults_then_healthy"] = (
        runs["rerun_faults"]["elapsed_seconds"] / runs["rerun_faults_then_healthy"]["elapsed_seconds"])
    return runs


@contextmanager
def ferretdb_server(binary: Path) -> Iterator[tuple[str, int]]:
    """Another FerretDB binary on a free port, with a data directory of its own."""
    from newscrawl.local.ferretdb import ping
    from newscrawl.local.server import free_port

    data = WORK_DIR / "scaling-ferretdb" / binary.name
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}/"
    with (data.parent / f"{binary.name}.log").open("wb") as log:
        proc = subprocess.Popen([str(binary), "-listen", f"127.0.0.1:{port}", "-data", str(data)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ping(uri, timeout=1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{binary} did not start (log in {data.parent})")
            time.sleep(0.2)
        yield uri, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=None, repeat=None)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=40, help="runs of each query filter")
    parser.add_argument("--crawl-articles", type=int, default=0,
                        help="also crawl a mirror of this many articles twice (0: no)")
    parser.add_argument("--crawl-repeat", type=int, default=3, help="first crawl + rerun pairs")
    parser.add_argument("--ferretdb", type=Path, help="a FerretDB binary to measure instead")
    parser.add_argument("--crawl-faults", action="store_true",
                        help="crawl the --crawl-articles mirror (2250 when 0) healthy, then with the "
                             "share host failing (bench.crawls.share_host_faults): first crawl and "
                             "rerun each, --crawl-repeat times, and the faulted over healthy ratios")
    args = parser.parse_args(argv)

    with (ferretdb_server(args.ferretdb) if args.ferretdb else _local()) as (uri, db_pid):
        facts = machine(uri)
        if args.ferretdb:
            facts["database"] += f" ({args.ferretdb})"
        print(show_machine(facts))
        payload: dict[str, Any] = {"machine": facts, "argv": sys.argv, "sizes": {}}
        if args.crawl_faults:
            faulted = [fault_crawls(uri, args.crawl_articles or TEMPLATE_ARTICLES)
                       for _ in range(args.crawl_repeat)]
            payload["fault_crawls"] = {"runs": faulted}
            for ratio in ("first_crawl_faults_over_healthy", "rerun_faults_over_healthy",
                          "rerun_faults_over_faults_then_healthy"):
                ratios = [r[ratio] for r in faulted]
                payload["fault_crawls"][ratio] = figures(ratios)
                print(f"  {ratio}: {show(figures(ratios), digits=3)}", flush=True)
            write_json(args.json, payload)
        elif args.crawl_articles:
            crawls = [real_crawls(uri, args.crawl_articles) for _ in range(args.crawl_repeat)]
            ratios = [c["rerun_over_first"] for c in crawls]
            payload["crawls"] = {"runs": crawls, "rerun_over_first": figures(ratios)}
            print(f"  rerun / first crawl: {show(figures(ratios), digits=3)}", flush=True)
        for size in args.sizes:
            payload["sizes"][str(size)] = measure_size(uri, size, args.queries, db_pid)
            write_json(args.json, payload)
    print("\n== scaling ==")
    print(report(payload))
    write_json(args.json, payload)
    return 0


@contextmanager
def _local() -> Iterator[tuple[str, int | None]]:
    uri = database_uri()
    yield uri, database_pid(uri)


def report(payload: dict[str, Any]) -> str:
    """The figures as a markdown table, and each size's cost against the smallest."""
    sizes = payload["sizes"]
    if not sizes:
        return ""
    smallest = sizes[min(sizes, key=int)]
    lines = ["| stored articles | first crawl ms/article | rerun (nothing new) ms/listed article "
             "| rerun (10% new category) ms/listed article |", "|---|---|---|---|"]
    for size, result in sizes.items():
        cells = []
        for phase in ("first_crawl", "rerun_nothing_new", "rerun_10pct_new_category"):
            ms = result[phase]["ms_per_article"]
            cells.append(f"{ms:.2f} (x{ms / smallest[phase]['ms_per_article']:.2f})")
        lines.append(f"| {int(size):,} | " + " | ".join(cells) + " |")
    names = list(smallest["queries"])
    lines += ["", "| query --limit 20 | " + " | ".join(f"{int(s):,}: median / p95 ms" for s in sizes)
              + " |", "|---|" + "---|" * len(sizes)]
    for name in names:
        lines.append(f"| `{name}` | " + " | ".join(
            f"{r['queries'][name]['median_ms']:.1f} / {r['queries'][name]['p95_ms']:.1f}"
            + ("" if r["queries"][name]["uses_index"] else " (scan)") for r in sizes.values()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
