"""The `newscrawl` command: the Scrapy project for the people who run it.

  newscrawl db start|stop|status   the local database (FerretDB), unless MONGO_URI is set
  newscrawl demo                   the main job: database + mirror + crawl + summary
  newscrawl replay                 write what an outage spooled to disk
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from newscrawl import localdb


class UsageError(Exception):
    """An error in arguments or configuration: one line, non-zero exit."""


def cmd_db(args: argparse.Namespace) -> int:
    if args.action == "start":
        uri = localdb.start()
        print(uri)
        if not os.environ.get("MONGO_URI"):
            print(f"export MONGO_URI={uri}", file=sys.stderr)
        return 0
    if args.action == "stop":
        print("stopped" if localdb.stop() else "not running")
        return 0
    running = localdb.running_uri()
    if running and localdb.ping(running):
        print(f"running {running}")
        return 0
    print("not running")
    return 3


def scrapy_env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "SCRAPY_SETTINGS_MODULE": "newscrawl.settings", **extra}
    return env


def run_spider(spider: str, spider_args: dict[str, str], env: dict[str, str], log_file: Path,
               settings: Sequence[str] = ()) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "scrapy", "crawl", spider, "-s", f"LOG_FILE={log_file}"]
    for name, value in spider_args.items():
        command += ["-a", f"{name}={value}"]
    for setting in settings:
        command += ["-s", setting]
    return subprocess.run(command, env=env, cwd=localdb.PROJECT_ROOT).returncode


def summarize(uri: str, database: str, truth_ids: set[str] | None) -> tuple[str, bool]:
    from pymongo import MongoClient

    client: MongoClient[dict[str, Any]] = MongoClient(uri, tz_aware=True)
    db = client[database]
    articles = db["articles"]
    total = articles.count_documents({})
    lines = [f"articles stored: {total}"]
    ok = True
    if truth_ids is not None:
        stored_ids = {doc["_id"] for doc in articles.find({}, {"_id": 1})}
        found = len(truth_ids & stored_ids)
        ok = found == len(truth_ids) == total
        lines.append(f"mirror ground truth: {len(truth_ids)} articles, {found} of them stored"
                     f" -> {'OK' if ok else 'MISMATCH'}")
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
    lines.append(f"rejects: {db['rejects'].count_documents({})}")
    client.close()
    return "\n".join(lines), ok


def cmd_demo(args: argparse.Namespace) -> int:
    from fixtures.generate import build_mirror
    from fixtures.server import MirrorServer

    uri = localdb.start()
    database = args.database or os.environ.get("MONGO_DATABASE", "newscrawl")
    mirror_dir = localdb.local_dir() / "mirror" / f"{args.articles}-{args.seed}"
    if not (mirror_dir / "truth" / "manifest.json").exists():
        print(f"building the mirror ({args.articles} generated articles) in {mirror_dir} ...")
        build_mirror(mirror_dir, articles=args.articles, seed=args.seed)
    truth_file = mirror_dir / "truth" / "articles.jsonl"
    truth_ids = {json.loads(line)["_id"] for line in truth_file.read_text().splitlines() if line}
    log_file = localdb.local_dir() / "logs" / "demo.log"
    with MirrorServer(mirror_dir) as server:
        host_map = json.dumps(server.host_map)
        print(f"database: {uri} (database {database!r})")
        print(f"mirror:   {host_map}")
        print(f"crawling the mirror with the finews spider (log: {log_file}) ...", flush=True)
        code = run_spider("finews", {}, scrapy_env({
            "NEWSCRAWL_HOST_MAP": host_map, "MONGO_URI": uri, "MONGO_DATABASE": database,
        }), log_file, settings=["AUTOTHROTTLE_ENABLED=False", "LOG_LEVEL=INFO"])
    if code != 0:
        raise UsageError(f"the crawl failed with exit code {code}; see {log_file}")
    summary, ok = summarize(uri, database, truth_ids)
    print("\n== summary ==\n" + summary)
    return 0 if ok else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from scrapy.exceptions import NotConfigured

    from pipelines.mongo import database_uri
    from pipelines.storage import ArticleStore, Spool, replay

    try:
        uri = database_uri(os.environ.get("MONGO_URI"))
    except NotConfigured as exc:
        raise UsageError(str(exc)) from None
    spool_dir = Path(args.spool_dir or os.environ.get("NEWSCRAWL_SPOOL_DIR")
                     or localdb.local_dir() / "spool")
    store = ArticleStore.connect(uri, args.database or os.environ.get("MONGO_DATABASE", "newscrawl"),
                                 os.environ.get("MONGO_COLLECTION", "articles"))
    try:
        totals = replay(store, Spool(spool_dir))
    finally:
        store.close()
    print(", ".join(f"{k}: {v}" for k, v in sorted(totals.items())) or "nothing to replay")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newscrawl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="start, stop or check the local database (FerretDB)",
                        description="The local FerretDB on 127.0.0.1, data under .local/. "
                                    "With MONGO_URI set, that server is used and nothing starts.")
    db.add_argument("action", choices=["start", "stop", "status"])
    db.set_defaults(func=cmd_db)

    demo = sub.add_parser("demo", help="crawl the local mirror into the local database",
                          description="Start the database, build and serve the mirror of both "
                                      "sites, crawl it with the finews spider, print a summary.")
    demo.add_argument("--articles", type=int, default=300, help="generated articles (default 300)")
    demo.add_argument("--seed", type=int, default=20211231)
    demo.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    demo.set_defaults(func=cmd_demo)

    rep = sub.add_parser("replay", help="write spooled items to the database",
                         description="Write what a database outage spooled to disk, then "
                                     "remove the spool files that were written.")
    rep.add_argument("--spool-dir", help="default NEWSCRAWL_SPOOL_DIR or .local/spool")
    rep.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    rep.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, localdb.LocalDBError, ValueError) as exc:
        print(f"newscrawl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
