"""What one query of the storage path costs, by filter, on a collection of a mirror's articles.

    .local/venv/bin/python bench/filters.py [--articles 10000] [--repeat 3] [--json PATH]

Loads the ground-truth records of a mirror (as ArticleStore would store them:
`revision` and `last_seen_at` set) into a fresh database with the pipeline's
indexes, then times each filter ArticleStore uses (and plain `_id` equality)
and asks the server's `explain` whether it was pushed down. Explains the
storage figures of bench/RESULTS.md: on FerretDB 1.24.2 (SQLite) only an
`_id`-equality filter is pushed down; every other one decodes every document.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench.common import bench_parser, figures, machine, show, show_machine, write_json
from bench.database import database_name, database_uri
from bench.mirror import mirror_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=10_000, repeat=3)
    args = parser.parse_args(argv)

    from pipelines.config import mongo_client
    from pipelines.storage import MAX_FERRETDB_OPS, ensure_indexes

    uri = database_uri()
    facts = machine(uri)
    print(show_machine(facts))
    out = mirror_dir(args.articles)
    seen = datetime(2021, 12, 31, 16, 0, tzinfo=UTC)
    records: list[dict[str, Any]] = []
    for line in (out / "truth" / "articles.jsonl").read_text(encoding="utf-8").splitlines():
        if line:
            record = json.loads(line)
            record["published_at"] = datetime.fromisoformat(record["published_at"].replace("Z", "+00:00"))
            record.update(revision=1, first_seen_at=seen, last_seen_at=seen, updated_at=seen)
            records.append(record)
    database = database_name("filters")
    client = mongo_client(uri, appname="newscrawl-bench", socket_timeout_ms=600_000)
    rows: list[dict[str, Any]] = []
    try:
        db = client[database]
        ensure_indexes(db, "articles", "rejects")
        articles = db["articles"]
        for start in range(0, len(records), MAX_FERRETDB_OPS):
            articles.insert_many(records[start:start + MAX_FERRETDB_OPS])
        middle = records[len(records) // 2]
        ids = [r["_id"] for r in records[:200]]
        hashes = [r["content_hash"] for r in records[:200]]
        cases: list[tuple[str, dict[str, Any]]] = [
            ("_id equality", {"_id": middle["_id"]}),
            ("_id + revision", {"_id": middle["_id"], "revision": 1}),
            ("_id + last_seen_at", {"_id": middle["_id"], "last_seen_at": seen}),
            ("_id + revision + last_seen_at (the replace guard)",
             {"_id": middle["_id"], "revision": 1, "last_seen_at": seen}),
            ("_id $in, 1 id", {"_id": {"$in": ids[:1]}}),
            ("_id $in, 200 ids (the batch read)", {"_id": {"$in": ids}}),
            ("content_hash equality", {"content_hash": middle["content_hash"]}),
            ("content_hash $in, 200 (duplicate links)", {"content_hash": {"$in": hashes}}),
        ]
        print(f"\n== one find each on {len(records)} documents, ms: median of {args.repeat} ==")
        for name, query in cases:
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                found = len(list(articles.find(query)))
                times.append(1000 * (time.perf_counter() - started))
            explain = db.command("explain", {"find": "articles", "filter": query})
            plan = explain.get("queryPlanner", {}).get("Plan", [])
            fig = figures(times)
            rows.append({"filter": name, "found": found, "ms": fig,
                         "filter_pushdown": explain.get("filterPushdown"), "plan": plan})
            print(f"{name:52s} {show(fig, 'ms')}  found {found}; filterPushdown "
                  f"{explain.get('filterPushdown')}; {'; '.join(plan)}")
        started = time.perf_counter()
        count = db.command("collStats", "articles")["count"]
        print(f"{'collStats count':52s} {1000 * (time.perf_counter() - started):.1f} ms ({count})")
    finally:
        client.drop_database(database)
        client.close()
    write_json(args.json, {"bench": "filters", "command": " ".join([Path(sys.executable).name, *sys.argv]),
                           "machine": facts, "documents": len(records), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
