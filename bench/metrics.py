"""`newscrawl metrics` with 100,000 stored articles (issue 20): how long a scrape takes.

Fills a fresh database with N synthetic articles of the mirror's shape (bench/scaling.py's
`Articles`, inserted raw with the collection's indexes in place) and `--jobs` jobs of
`--runs` recorded runs each (judged, as the monitors leave them), counts the articles summary
once (the whole-collection `$group` a run makes at most hourly: timed), then times a scrape:
the collector alone (`generate_latest`) and over HTTP (`newscrawl metrics`' own server),
`--repeats` times each.

    .local/venv/bin/python bench/metrics.py [--articles 100000] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import figures, machine, show, write_json
from bench.database import database_name, database_uri, drop_database
from bench.scaling import Articles

PROOFS = ("share", "id_day", "counter", "unproven")


def fill(uri: str, database: str, size: int, jobs: int, runs: int) -> dict[str, float]:
    from newscrawl.components.run_recorder import end_document, ensure_run_indexes, start_document
    from newscrawl.monitoring.monitors import DEFAULT_THRESHOLDS, evaluate
    from newscrawl.monitoring.summary import record_last_run
    from pipelines.config import mongo_client
    from pipelines.storage import ensure_indexes

    client = mongo_client(uri, appname="bench-metrics", timeout_ms=5000, socket_timeout_ms=600_000)
    db = client[database]
    ensure_indexes(db, "articles", "rejects")
    rng = random.Random(20)
    articles = Articles(size)
    started = time.perf_counter()
    batch = []
    for n in range(size):
        item = articles.item(n)
        batch.append({"_id": item["article_id"], "title": item["title"], "paragraphs": item["paragraphs"],
                      "source": item["source"], "source_slug": item["source_slug"],
                      "categories": [item["category"]], "published_at": item["published_at"],
                      "published_at_proof": rng.choice(PROOFS), "content_hash": item["content_hash"]})
        if len(batch) == 1000:
            db["articles"].insert_many(batch, ordered=False)
            batch = []
    if batch:
        db["articles"].insert_many(batch, ordered=False)
    db["rejects"].insert_many([{"url": f"https://x/{n}", "reason": rng.choice(
        ["empty body", "no article id", "unreadable date: x", "empty title"])} for n in range(500)])
    inserted = time.perf_counter() - started
    ensure_run_indexes(db["crawl_runs"])
    now = datetime.now(UTC)
    documents = []
    for job in range(jobs):
        for run in range(runs):
            start = now - timedelta(hours=run + 1, minutes=job)
            stats = {"response_received_count": 500, "newscrawl/articles/stored": 300 + run,
                     "newscrawl/clean/items": 320, "downloader/request_count": 500,
                     "finish_reason": "finished"}
            document = end_document(start_document(f"job{job}-{run}", "finews", {}, start, host="bench",
                                                   pid=run, job=f"job{job}"), "finished", stats,
                                    start + timedelta(minutes=2))
            document["health"] = evaluate(document, [], DEFAULT_THRESHOLDS, start)
            documents.append(document)
    db["crawl_runs"].insert_many(documents)
    for job in range(jobs):  # as the monitors leave them: each job's last run
        record_last_run(db, documents[job * runs])
    client.close()
    return {"insert_seconds": inserted}


def main(argv: Sequence[str] | None = None) -> int:
    from prometheus_client import generate_latest, start_http_server

    from newscrawl.monitoring.summary import refresh_summary
    from newscrawl.ops.metrics import registry_for
    from pipelines.config import StorageConfig, mongo_client

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100, help="recorded runs per job")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    uri = database_uri()
    database = database_name("metrics")
    payload: dict[str, Any] = {"machine": machine(uri), "articles": args.articles, "jobs": args.jobs,
                               "runs_per_job": args.runs, "load_before": os.getloadavg()}
    try:
        print(f"filling {database}: {args.articles} articles, {args.jobs} jobs x {args.runs} runs ...",
              flush=True)
        payload.update(fill(uri, database, args.articles, args.jobs, args.runs))
        print(f"  inserted in {payload['insert_seconds']:.1f} s", flush=True)
        config = StorageConfig(uri=uri, database=database)
        client = mongo_client(uri, appname="bench-metrics", timeout_ms=5000, socket_timeout_ms=600_000)
        summary = refresh_summary(client[database], config, datetime.now(UTC), interval=0)
        assert summary is not None and summary["total"] == args.articles, summary
        payload["summary_ms"] = summary["took_ms"]
        print(f"  articles summary counted ($group x3 + rejects) in {summary['took_ms']} ms", flush=True)

        registry = registry_for(client, config)
        text = generate_latest(registry).decode()
        assert f"newscrawl_articles {float(args.articles)}" in text, text[:2000]
        assert text.count("newscrawl_last_run_health{") == args.jobs
        collect_ms = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            generate_latest(registry)
            collect_ms.append((time.perf_counter() - started) * 1000)
        server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        http_ms = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            with urllib.request.urlopen(url, timeout=30) as response:
                body = response.read()
            http_ms.append((time.perf_counter() - started) * 1000)
        server.shutdown()
        client.close()
        payload.update({"collect_ms": figures(collect_ms), "http_ms": figures(http_ms),
                        "series_bytes": len(body), "series": text.count("\n"),
                        "load_after": os.getloadavg()})
        p95 = sorted(http_ms)[int(0.95 * (len(http_ms) - 1))]
        print(f"  scrape, collector alone: {show(payload['collect_ms'], 'ms')}")
        print(f"  scrape over HTTP:        {show(payload['http_ms'], 'ms')}, p95 {p95:.1f} ms "
              f"({len(body)} bytes, {payload['series']} lines)")
        print(f"  load average before {payload['load_before']}, after {payload['load_after']}")
        payload["http_p95_ms"] = p95
    finally:
        if not args.keep:
            drop_database(uri, database)
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
