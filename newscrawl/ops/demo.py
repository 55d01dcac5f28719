"""`newscrawl demo`: the main job. The local database, the Jekyll mirror of both sites
(fixtures/, so a checkout only), a crawl of it, and a summary against the mirror's truth."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from newscrawl.local import ferretdb
from newscrawl.local.server import PROJECT_ROOT, local_dir
from newscrawl.ops.command import (
    UsageError,
)
from newscrawl.redaction import redact

if TYPE_CHECKING:
    from pipelines.config import StorageConfig


def summarize(config: StorageConfig, truth: list[dict[str, Any]] | None) -> tuple[str, bool]:
    from fixtures.check import compare
    from newscrawl.database import connect

    client = connect("newscrawl-demo", uri=config.uri, socket_timeout_ms=None)
    db = client[config.database]
    articles = db[config.collection]
    total = articles.count_documents({})
    lines = [f"articles stored: {total}"]
    ok = True
    if truth is not None:
        comparison = compare(truth, articles.find())
        ok = comparison.ok
        lines += comparison.summary_lines()
    by_source = list(articles.aggregate([
        {"$group": {"_id": "$source", "n": {"$sum": 1}}}, {"$sort": {"n": -1, "_id": 1}},
        {"$limit": 5},
    ]))
    lines.append("top sources: " + ", ".join(f"{d['_id']} {d['n']}" for d in by_source))
    first = articles.find_one({}, sort=[("published_at", 1)])
    last = articles.find_one({}, sort=[("published_at", -1)])
    if first and last:
        lines.append(f"published: {first['published_at']:%Y-%m-%d %H:%M}Z .. "
                     f"{last['published_at']:%Y-%m-%d %H:%M}Z")
    lines.append(f"digest-only bodies: {articles.count_documents({'body_kind': 'digest'})}")
    lines.append(f"duplicates (same text, another id): "
                 f"{articles.count_documents({'duplicate_of': {'$ne': None}})}")
    lines.append(f"rejects: {db[config.rejects].count_documents({})}")
    client.close()
    return "\n".join(lines), ok


def checkout_on_path() -> None:
    """Put the checkout this package runs from on sys.path, for its fixtures/ (the mirror):
    an editable install maps only the packages it installs."""
    if (PROJECT_ROOT / "fixtures" / "__init__.py").is_file() and str(PROJECT_ROOT) not in sys.path:
        sys.path.append(str(PROJECT_ROOT))


def cmd_demo(args: argparse.Namespace) -> int:
    checkout_on_path()
    try:
        from fixtures.generate import SITE_SCALE_ARTICLES, SITE_SCALE_CATEGORIES, build_mirror
        from fixtures.jekyll import JekyllMissing
        from fixtures.server import MirrorServer
    except ModuleNotFoundError as exc:
        if exc.name != "fixtures":
            raise
        raise UsageError("`newscrawl demo` runs from a checkout of the project: it builds the sites' "
                         "mirror from its fixtures/ folder, which an installed package does not "
                         "carry. Clone the repository and run scripts/demo there") from None
    from newscrawl.database import storage_config
    from newscrawl.ops.crawl import crawl_env, run_crawl

    if args.site_scale:
        args.articles, args.categories = SITE_SCALE_ARTICLES, SITE_SCALE_CATEGORIES
    config = storage_config(uri=ferretdb.start(), database=args.database)
    uri, database = config.uri, config.database
    mirror_dir = local_dir() / "mirror" / "demo"
    shape = f" in {args.categories} categories" if args.categories else ""
    print(f"building the mirror ({args.articles} generated articles{shape}, rendered by Jekyll; "
          f"cached by size and seed) in {mirror_dir} ...", flush=True)
    try:
        build_mirror(mirror_dir, articles=args.articles, seed=args.seed,
                     categories=args.categories)
    except (JekyllMissing, ValueError) as exc:
        raise UsageError(str(exc)) from None
    truth_file = mirror_dir / "truth" / "articles.jsonl"
    truth = [json.loads(line) for line in truth_file.read_text(encoding="utf-8").splitlines()
             if line]
    log_file = local_dir() / "logs" / "demo.log"
    with MirrorServer(mirror_dir) as server:
        host_map = json.dumps(server.host_map)
        print(f"database: {redact(uri)} (database {database!r})")
        print(f"mirror:   {host_map}")
        print(f"crawling the mirror with the finews spider (log: {log_file}) ...", flush=True)
        result = run_crawl("finews", settings={"AUTOTHROTTLE_ENABLED": "False", "LOG_LEVEL": "INFO"},
                           log_file=log_file, stats_file=log_file.with_suffix(".stats.json"),
                           env=crawl_env({"NEWSCRAWL_HOST_MAP": host_map, "MONGO_URI": uri,
                                          "MONGO_DATABASE": database}))
    if result.returncode != 0:
        raise UsageError(f"the crawl failed with exit code {result.returncode}; see {log_file}")
    summary, ok = summarize(config, truth)
    print("\n== summary ==\n" + summary)
    return 0 if ok else 1


def add_command(sub: Any) -> None:
    demo = sub.add_parser("demo", help="crawl the local mirror into the local database",
                          description="Start the database, build and serve the mirror of both "
                                      "sites, crawl it with the finews spider, print a summary.")
    demo.add_argument("--articles", type=int, default=300, help="generated articles (default 300)")
    demo.add_argument("--seed", type=int, default=20211231)
    demo.add_argument("--categories", type=int,
                      help="categories of the mirror (default: as many as its size brings)")
    demo.add_argument("--site-scale", action="store_true",
                      help="the real site's size: about 17,000 posts in 2,000 categories "
                           "(15,800 generated articles; Jekyll renders it in a few minutes, cached after)")
    demo.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    demo.set_defaults(func=cmd_demo)
