"""The web console's article list at 100,000 stored articles: the first and the fiftieth page.

    .local/venv/bin/python bench/web.py [--articles 100000] [--repeat 15] [--json PATH] [--keep]

Stores `--articles` generated records (the fields the list reads, 40 sources, 8 categories,
one every 2 minutes) with the pipeline's indexes in a database of its own (kept with
`--keep` and reused when it already holds them), starts a real `newscrawl web` on it and
asks it over HTTP for filtered lists: one source, one category, a date range. For each, the
50th page is reached by following the console's own `next page` cursors; the first and the
50th pages are then timed `--repeat` times each (whole HTTP answers, rendered HTML). It also
asks the server's explain whether the 50th page's reads use an index.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from bench.common import ROOT, bench_parser, figures, machine, show, show_machine, write_json

SOURCES = 40
CATEGORIES = ("emnews", "Wind", "jingzhouribao", "21shijijingjibaodao 21caijingAPP", "yicai",
              "cls", "stcn", "cnstock")
START = datetime(2021, 1, 1, tzinfo=UTC)
CASES = {
    "source": {"source": "source07"},
    "category": {"category": "emnews"},
    "dates": {"since": "2021-03-01", "until": "2021-05-31"},
}
_NEXT = re.compile(r'href="(/articles\?[^"]*)" id="next-page"')


def record(n: int) -> dict[str, Any]:
    source = n % SOURCES
    return {"_id": f"{(START + timedelta(minutes=2 * n)):%Y%m%d}{n:010d}",
            "title": f"第{n}号文章：公司公告与市场动态", "source": f"媒体{source:02d}",
            "source_slug": f"source{source:02d}",
            "categories": sorted({CATEGORIES[n % len(CATEGORIES)], CATEGORIES[(n // 7) % len(CATEGORIES)]}),
            "published_at": START + timedelta(minutes=2 * n), "published_at_proof": "share",
            "paragraphs": [f"第{n}段。"], "text": f"第{n}段。", "duplicate_of": None,
            "near_duplicate_of": None}


def fill(uri: str, database: str, articles: int) -> float:
    """Store the records unless they are there; seconds taken (0 when reused)."""
    from pipelines.config import mongo_client
    from pipelines.storage import ensure_indexes

    client = mongo_client(uri, appname="newscrawl-bench")
    try:
        db = client[database]
        if db["articles"].estimated_document_count() == articles:
            return 0.0
        client.drop_database(database)
        ensure_indexes(db, "articles", "rejects")
        began = time.perf_counter()
        batch = 1000
        for start in range(0, articles, batch):
            db["articles"].insert_many([record(n) for n in range(start, min(start + batch, articles))],
                                       ordered=False)
        return time.perf_counter() - began
    finally:
        client.close()


def get(url: str) -> tuple[float, str]:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as reply:
        body = reply.read().decode("utf-8")
    return time.perf_counter() - began, body


def explain_page(uri: str, database: str, params: dict[str, str], cursor: str) -> dict[str, Any]:
    """Whether the 50th page's reads (its cursor's second, then the older ones) use an index."""
    from newscrawl.ops import query as q
    from newscrawl.web import views
    from pipelines.config import mongo_client
    from pipelines.sources import SourceRegistry

    client = mongo_client(uri, appname="newscrawl-bench")
    try:
        articles = client[database]["articles"]
        filters = views.filters_from_params(params, [], SourceRegistry.load(), False)
        query, _ = q.build_query(filters)
        after = views.Cursor.decode(cursor)
        assert after.published_at is not None
        older = articles.find(views.older_than(query, after.published_at)).sort(
            "published_at", -1).limit(views.PAGE_SIZE + 1).explain()
        same = articles.find(views.at_moment(query, after.published_at)).explain()
        return {"older": q.plan_uses_index(older), "same_second": q.plan_uses_index(same)}
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=100_000, repeat=15)
    parser.add_argument("--keep", action="store_true", help="keep the database for the next run")
    args = parser.parse_args(argv)

    from bench.database import database_uri, drop_database
    from newscrawl.local.server import free_port

    uri = os.environ.get("MONGO_URI") or database_uri()
    database = f"bench_web_{args.articles}"
    facts = machine(uri)
    print(show_machine(facts))
    filled = fill(uri, database, args.articles)
    print(f"{args.articles} articles in {database}" +
          (f" (stored in {filled:.0f} s)" if filled else " (reused)"), flush=True)
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "newscrawl.ops.cli", "web", "--port", str(port),
                            "--database", database], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env={**os.environ, "MONGO_URI": uri})
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {"machine": facts, "articles": args.articles, "cases": {}}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(base + "/articles?limit=1")
                break
            except OSError:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise SystemExit("newscrawl web did not answer") from None
                time.sleep(0.3)
        for name, params in CASES.items():
            first = f"{base}/articles?{urlencode(params)}"
            url = first
            for _ in range(49):  # to the 50th page by the console's own links
                _, body = get(url)
                found = _NEXT.search(body)
                if found is None:
                    raise SystemExit(f"{name}: fewer than 50 pages")
                url = base + found.group(1).replace("&amp;", "&")
            fiftieth = url
            cursor = fiftieth.split("cursor=")[1].split("&")[0]
            timings = {}
            for label, target in (("page 1", first), ("page 50", fiftieth)):
                get(target)  # warm
                timings[label] = figures(1000 * get(target)[0] for _ in range(args.repeat))
            uses = explain_page(uri, database, params, urllib.request.unquote(cursor))
            results["cases"][name] = {"params": params, **timings, "index": uses}
            print(f"{name:9s} {params}: page 1 {show(timings['page 1'], 'ms')}; "
                  f"page 50 {show(timings['page 50'], 'ms')}; page 50 reads an index: {uses}",
                  flush=True)
    finally:
        web.terminate()
        web.wait(30)
        if not args.keep:
            drop_database(uri, database)
    worst = max(max(c["page 1"]["median"], c["page 50"]["median"]) for c in results["cases"].values())
    print(f"slowest median: {worst:.1f} ms (target: at most 200 ms); "
          f"load at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    write_json(args.json, results)
    return 0 if worst <= 200 else 1


if __name__ == "__main__":
    sys.exit(main())
