"""The `newscrawl` command: the Scrapy project for the people who run it.

  newscrawl db start|stop|status   the local database (FerretDB), unless MONGO_URI is set
  newscrawl demo                   the main job: database + mirror + crawl + summary
  newscrawl replay                 write what an outage spooled to disk
  newscrawl runs                   the recorded crawls, newest first
  newscrawl query                  stored articles by source, category, dates or text
  newscrawl schedule               run crawls on a timetable (schedule.toml)
  newscrawl backfill               crawl one date range completely: finews, then share

The database is MONGO_URI (else the local one) and MONGO_DATABASE (default newscrawl).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from newscrawl.local import ferretdb
from newscrawl.redaction import install_log_redaction, redact

if TYPE_CHECKING:
    from pymongo import MongoClient

CLI_TIMEOUT_MS = 3000  # an unreachable server is reported after this long


class UsageError(Exception):
    """An error in arguments or configuration: one line, non-zero exit."""


class Parser(argparse.ArgumentParser):
    """Argument errors as one `newscrawl: error:` line (no usage dump), exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def count_option(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {value!r}")
    return number


def connect(database: str | None = None) -> tuple[MongoClient[dict[str, Any]], str]:
    """A client of the configured server, checked with a ping, and the database name."""
    from newscrawl.database import connect as connect_database
    from newscrawl.database import database_name

    client = connect_database("newscrawl-cli", timeout_ms=CLI_TIMEOUT_MS, socket_timeout_ms=None)
    return client, database_name(database)


def manage_server(action: str, *, start: Any, stop: Any, running: Any, ping: Any,
                  env_name: str) -> int:
    """start / stop / status of a local server (FerretDB or Redis); exit 3: not running."""
    if action == "start":
        url = start()
        print(redact(url))  # a local server has no password; one given in env_name may
        if not os.environ.get(env_name):
            print(f"export {env_name}={url}", file=sys.stderr)
        return 0
    if action == "stop":
        print("stopped" if stop() else "not running")
        return 0
    url = running()
    if url and ping(url):
        print(f"running {redact(url)}")
        return 0
    print("not running")
    return 3


def cmd_db(args: argparse.Namespace) -> int:
    return manage_server(args.action, start=ferretdb.start, stop=ferretdb.stop,
                         running=ferretdb.running_uri, ping=ferretdb.ping, env_name="MONGO_URI")


def cmd_redis(args: argparse.Namespace) -> int:
    from newscrawl.local import redis_server

    return manage_server(args.action, start=redis_server.start, stop=redis_server.stop,
                         running=redis_server.running_url, ping=redis_server.ping,
                         env_name="NEWSCRAWL_REDIS_URL")


def summarize(uri: str, database: str,
              truth: list[dict[str, Any]] | None) -> tuple[str, bool]:
    from fixtures.check import compare
    from newscrawl.database import connect

    client = connect("newscrawl-demo", uri=uri, socket_timeout_ms=None)
    db = client[database]
    articles = db["articles"]
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
    lines.append(f"rejects: {db['rejects'].count_documents({})}")
    client.close()
    return "\n".join(lines), ok


def cmd_demo(args: argparse.Namespace) -> int:
    from fixtures.generate import build_mirror
    from fixtures.jekyll import JekyllMissing
    from fixtures.server import MirrorServer
    from newscrawl.database import database_name
    from newscrawl.ops.crawl import crawl_env, run_crawl

    uri = ferretdb.start()
    database = database_name(args.database)
    mirror_dir = ferretdb.local_dir() / "mirror" / "demo"
    print(f"building the mirror ({args.articles} generated articles, rendered by Jekyll; "
          f"cached by size and seed) in {mirror_dir} ...", flush=True)
    try:
        build_mirror(mirror_dir, articles=args.articles, seed=args.seed)
    except JekyllMissing as exc:
        raise UsageError(str(exc)) from None
    truth_file = mirror_dir / "truth" / "articles.jsonl"
    truth = [json.loads(line) for line in truth_file.read_text(encoding="utf-8").splitlines()
             if line]
    log_file = ferretdb.local_dir() / "logs" / "demo.log"
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
    summary, ok = summarize(uri, database, truth)
    print("\n== summary ==\n" + summary)
    return 0 if ok else 1


def cmd_replay(args: argparse.Namespace) -> int:
    from newscrawl.database import database_name, resolve_uri, spool_dir
    from pipelines.storage import ArticleStore, Spool, replay

    spool = Spool(spool_dir(args.spool_dir))
    store = ArticleStore.connect(resolve_uri(), database_name(args.database),
                                 os.environ.get("MONGO_COLLECTION", "articles"))
    try:
        totals = replay(store, spool)
    finally:
        store.close()
    print(", ".join(f"{k}: {v}" for k, v in sorted(totals.items())) or "nothing to replay")
    if totals["bad_lines"]:
        print(f"newscrawl: {totals['bad_lines']} lines could not be read: set aside in "
              f"{spool.directory / 'bad' / Spool.BAD_LINES} (with their file and line number)",
              file=sys.stderr)
    return 0


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(line if line.endswith("\n") else line + "\n")


def cmd_runs(args: argparse.Namespace) -> int:
    from newscrawl.components.runs import DEFAULT_RUNS_COLLECTION
    from newscrawl.ops import query, runs

    client, database = connect(args.database)
    name = os.environ.get("MONGO_RUNS_COLLECTION") or DEFAULT_RUNS_COLLECTION
    try:
        found = runs.find_runs(client[database][name], last=args.last, spider=args.spider)
    finally:
        client.close()
    if args.format == "jsonl":
        print_lines(query.json_line(run) for run in found)
    elif not found:
        print(f"no runs recorded in {database}.{name}", file=sys.stderr)
    else:
        print_lines(query.render_table(*runs.runs_table(found)))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    import shutil

    from newscrawl.ops import query
    from pipelines.sources import SourceRegistry

    slug = None
    if args.source:
        extra = os.environ.get("NEWSCRAWL_SOURCES_FILE")
        try:
            registry = SourceRegistry.load(*([extra] if extra else []))
        except (OSError, ValueError) as exc:
            raise UsageError(f"source registry (NEWSCRAWL_SOURCES_FILE): {exc}") from None
        slug = query.source_slug(args.source, registry)
    filters = query.Filters(source_slug=slug, category=args.category, since=args.since,
                            until=args.until, text=" ".join(args.text) if args.text else None,
                            phrases=tuple(args.phrase or ()))
    query.validate(filters)
    client, database = connect(args.database)
    try:
        articles = client[database][os.environ.get("MONGO_COLLECTION") or "articles"]
        if filters.text:
            with_index = query.has_text_index(articles)
            if not with_index:
                print("newscrawl: note: the server has no text index on words (FerretDB cannot "
                      "have one): --text scans them with a regex per word and ranks them here",
                      file=sys.stderr)
            filters = dataclasses.replace(filters, text_index=with_index)
        if args.explain:
            explain = query.explain_query(articles, filters, limit=args.limit)
            print(query.json_line(explain))
            uses = query.plan_uses_index(explain)
            print("newscrawl: the plan " + {True: "uses an index", False: "reads no index (a full "
                  "scan)", None: "is in a format newscrawl does not know"}[uses], file=sys.stderr)
            return 0
        documents = query.find_articles(articles, filters, limit=args.limit)
        if args.format == "jsonl":
            print_lines(query.json_line(doc) for doc in documents)
        elif args.format == "csv":
            print_lines(query.csv_lines(documents))
        else:
            columns = shutil.get_terminal_size(fallback=(120, 24)).columns
            print_lines(query.article_table(documents, columns))
    finally:
        client.close()
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from newscrawl.ops.schedule import config as schedule_config
    from newscrawl.ops.schedule import runner

    try:
        config = schedule_config.load_config(Path(args.config))
        lines = runner.check_and_describe(config)
    except schedule_config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.check:
        print_lines(lines)
        return 0
    runner.setup_logging()
    return runner.serve(config, database=args.database)


def cmd_backfill(args: argparse.Namespace) -> int:
    import signal
    import time

    from newscrawl.ops import backfill
    from newscrawl.ops.crawl import crawl_env

    job = backfill.Backfill(
        since=args.since, until=args.until, categories=args.categories or (),
        ids_file=args.ids_file,
        env=crawl_env({"MONGO_DATABASE": args.database} if args.database else None),
        settings=dict(args.set or ()),
        log_dir=args.log_dir or ferretdb.local_dir() / "logs" / "backfill")
    job.steps()  # arguments and the ids file checked before anything runs
    client, _ = connect(args.database)  # so is the database
    client.close()
    progress = backfill.Progress(sys.stdout, tty=sys.stdout.isatty(), every=args.progress_every)
    started = time.monotonic()

    def summary() -> None:
        progress.line(backfill.summary_line(job.summary(), len(job.results),
                                            time.monotonic() - started))

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
    try:
        job.run(progress)
    except backfill.BackfillStopped as exc:
        summary()
        return fail(exc, 1)
    except KeyboardInterrupt:
        summary()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary()
    return 0


def day_option(value: str) -> Any:
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day YYYY-MM-DD (Asia/Shanghai), "
                                         f"got {value!r}") from None


def list_option(value: str) -> list[str]:
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected slugs separated by commas, got {value!r}")
    return parts


def setting_option(value: str) -> tuple[str, str]:
    name, sep, setting = value.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {value!r}")
    return name.strip(), setting


def seconds_option(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {value!r}")
    return seconds


def time_option(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="newscrawl", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="start, stop or check the local database (FerretDB)",
                        description="The local FerretDB on 127.0.0.1, data under .local/. "
                                    "With MONGO_URI set, that server is used and nothing starts.")
    db.add_argument("action", choices=["start", "stop", "status"])
    db.set_defaults(func=cmd_db)

    redis = sub.add_parser("redis", help="start, stop or check the local Redis (distributed crawls)",
                           description="Debian's redis-server on 127.0.0.1, data under .local/redis/. "
                                       "With NEWSCRAWL_REDIS_URL set, that server is used and "
                                       "nothing starts.")
    redis.add_argument("action", choices=["start", "stop", "status"])
    redis.set_defaults(func=cmd_redis)

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

    runs = sub.add_parser(
        "runs", help="list the recorded crawls, newest first",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Every crawl writes one record to the crawl_runs collection "
                    "(MONGO_RUNS_COLLECTION) of MONGO_DATABASE: when it ran, its arguments, "
                    "how it ended and what it counted.",
        epilog="columns: start (UTC), spider, outcome (Scrapy's finish reason; running, or lost "
               "when its process is gone without an end), duration, pages fetched, articles "
               "stored / updated / unchanged, article pages skipped as already stored, rejected, "
               "errors logged.\nexample: newscrawl runs --last 5 --spider finews")
    runs.add_argument("--last", type=count_option, default=20, metavar="N",
                      help="the N newest runs (default 20; 0: all)")
    runs.add_argument("--spider", metavar="NAME", help="only the runs of this spider")
    runs.add_argument("--format", choices=["table", "jsonl"], default="table",
                      help="an aligned table (default), or one JSON document per line")
    runs.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    runs.set_defaults(func=cmd_runs)

    from newscrawl.ops.query import since_bound, until_bound

    query = sub.add_parser(
        "query", help="print stored articles by source, category, dates or text",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Stored articles (MONGO_COLLECTION of MONGO_DATABASE), newest first "
                    "(with --text: best text score first). "
                    "Filters combine (all must match).",
        epilog="dates: YYYY-MM-DD is a day in Asia/Shanghai (the site's zone); an ISO datetime "
               "without offset is Shanghai time too.\n"
               "examples:\n"
               "  newscrawl query --source 荆州日报 --since 2021-12-31\n"
               "  newscrawl query --category emnews --limit 100 --format csv > emnews.csv\n"
               "  newscrawl query --text 制冷剂 --since 2021-12-30T08:00 --format jsonl\n"
               "  newscrawl query --text 净利润 降准 --phrase 同比增长")
    query.add_argument("--source", metavar="NAME",
                       help="a medium: canonical name, alias or slug (荆州日报, jingzhouribao)")
    query.add_argument("--category", metavar="SLUG", help="a category slug (emnews, jingzhouribao)")
    query.add_argument("--since", type=time_option(since_bound), metavar="WHEN",
                       help="published on or after this day (00:00 Shanghai) or moment")
    query.add_argument("--until", type=time_option(until_bound), metavar="WHEN",
                       help="published on or before this day (through 24:00 Shanghai) or moment")
    query.add_argument("--text", metavar="WORD", nargs="+",
                       help="words the title and text must all hold (segmented as the stored "
                            "`words` are: 央行降准 is 央行 and 降准), best text score first")
    query.add_argument("--phrase", metavar="TEXT", action="append",
                       help="an exact phrase of the text (punctuation included); repeat for "
                            "more. A scan: combine it with --text or other filters")
    query.add_argument("--limit", type=count_option, default=20, metavar="N",
                       help="at most N articles (default 20; 0: all)")
    query.add_argument("--format", choices=["table", "jsonl", "csv"], default="table",
                       help="table (default): id, published, source, title; jsonl: whole "
                            "documents, dates as ISO-8601 UTC; csv: "
                            "_id,published_at,source,title,categories,url")
    query.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    query.add_argument("--explain", action="store_true",
                       help="print the server's plan for the query (JSON) instead of the articles, "
                            "and say on stderr whether it uses an index")
    query.set_defaults(func=cmd_query)

    sched = sub.add_parser(
        "schedule", help="run crawls on a timetable (schedule.toml) until stopped",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the jobs of a TOML file on their cron expressions or intervals, "
                    "each crawl in its own process (target \"local\") or on a scrapyd server "
                    "(target \"scrapyd\"). A job never overlaps itself: a firing that comes "
                    "while its previous crawl is still going is skipped, logged and recorded in "
                    "the schedule_skips collection. The timetable is kept in schedule_jobs "
                    "(MONGO_DATABASE) when the server can hold it, so firings missed while the "
                    "scheduler was down run once when it is back. SIGTERM or Ctrl-C stops the "
                    "running crawls cleanly and exits 0.",
        epilog="schedule.toml:\n"
               "  [scheduler]                       # all optional\n"
               "  timezone = \"Asia/Shanghai\"       # of the cron expressions\n"
               "  misfire_grace_time = \"1h\"        # how late a missed firing may still run\n"
               "  job_store = \"auto\"               # auto | mongodb | memory\n"
               "  log_dir = \".local/logs/schedule\" # one log per job, appended\n"
               "  stop_timeout = \"60s\"             # then running crawls are killed\n"
               "  scrapyd_url = \"http://127.0.0.1:6800/\"\n"
               "  [[job]]\n"
               "  name = \"media\"\n"
               "  spider = \"finews\"\n"
               "  args = {categories = \"jingzhouribao,emnews\"}\n"
               "  cron = \"*/15 * * * *\"             # or interval = \"10m\" (or seconds)\n"
               "  target = \"local\"                 # or \"scrapyd\"\n"
               "examples:\n"
               "  newscrawl schedule --check\n"
               "  newscrawl schedule --config /etc/newscrawl/schedule.toml")
    sched.add_argument("--config", default="schedule.toml", metavar="FILE",
                       help="the jobs (default schedule.toml in the current folder)")
    sched.add_argument("--check", action="store_true",
                       help="check the file, print the jobs and their next firing, and exit")
    sched.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    sched.set_defaults(func=cmd_schedule)

    back = sub.add_parser(
        "backfill", help="crawl one date range completely: finews, then share by ids and digests",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run, one after the other: the finews spider over --since/--until (and "
                    "--categories); the share spider over the ids of --ids-file; the share "
                    "spider for the articles of the range stored with a digest only. Shows "
                    "progress, then the summed counts: stored, updated, unchanged, rejected, "
                    "failed (pages given up). Crawls are incremental: running it again stores "
                    "nothing new.",
        epilog="days are in Asia/Shanghai (the site's zone), both inclusive.\n"
               "examples:\n"
               "  newscrawl backfill --since 2021-12-29 --until 2021-12-31\n"
               "  newscrawl backfill --since 2021-12-01 --until 2021-12-31 "
               "--categories jingzhouribao,emnews --ids-file ids.txt")
    back.add_argument("--since", type=day_option, required=True, metavar="DAY",
                      help="first day (YYYY-MM-DD)")
    back.add_argument("--until", type=day_option, required=True, metavar="DAY",
                      help="last day (YYYY-MM-DD), inclusive")
    back.add_argument("--categories", type=list_option, metavar="SLUGS",
                      help="only these category slugs for finews (jingzhouribao,emnews)")
    back.add_argument("--ids-file", type=Path, metavar="FILE",
                      help="article ids for the share spider, one a line (NW prefix optional)")
    back.add_argument("-s", "--set", type=setting_option, action="append", metavar="NAME=VALUE",
                      help="a Scrapy setting for every crawl (repeatable)")
    back.add_argument("--log-dir", type=Path, metavar="DIR",
                      help="the crawls' logs (default .local/logs/backfill)")
    back.add_argument("--progress-every", type=seconds_option, default=10.0, metavar="SECONDS",
                      help="when stdout is not a terminal: a progress line at most this often "
                           "(default 10)")
    back.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    back.set_defaults(func=cmd_backfill)
    return parser


def fail(message: object, code: int) -> int:
    print("newscrawl: error: " + redact(" ".join(str(message).split())), file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Errors are one `newscrawl: error:` line on stderr and a non-zero exit, never a
    traceback (NEWSCRAWL_DEBUG=1 shows it for unexpected ones)."""
    from pymongo.errors import PyMongoError

    from newscrawl.database import DatabaseNotConfigured, DatabaseUnreachable

    install_log_redaction()
    try:
        args = build_parser().parse_args(argv)
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except DatabaseUnreachable as exc:
        return fail(exc, 1)
    except (UsageError, DatabaseNotConfigured, ferretdb.LocalDBError, ValueError) as exc:
        return fail(exc, 2)
    except PyMongoError as exc:
        from newscrawl.database import one_line

        return fail(f"database: {one_line(exc)}", 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, like any Unix filter.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        if os.environ.get("NEWSCRAWL_DEBUG"):
            raise
        return fail(f"{type(exc).__name__}: {exc} (NEWSCRAWL_DEBUG=1 shows the traceback)", 1)


if __name__ == "__main__":
    sys.exit(main())
