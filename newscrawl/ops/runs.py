"""`newscrawl runs`: the crawl_runs documents (newscrawl.components.run_recorder) as a table."""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection

from newscrawl.components.run_recorder import LOGGED_ERROR_TYPES, Document
from newscrawl.local.server import alive
from newscrawl.ops.command import connect, count_option, print_lines


def find_runs(collection: Collection[Document], *, last: int = 20,
              spider: str | None = None) -> list[Document]:
    """The `last` runs (0: all), newest first."""
    query: Document = {"spider": spider} if spider else {}
    cursor = collection.find(query).sort("started_at", DESCENDING)
    if last:
        cursor = cursor.limit(last)
    return list(cursor)


# What a crawl did, in the words every command prints (the scheduler's log, backfill's steps).
COUNT_WORDS = ("stored", "updated", "unchanged", "rejected")


def counts_text(counts: Mapping[str, int]) -> str:
    """`120 pages, 40 stored, 2 updated, 0 unchanged, 1 rejected[, 3 failed] (70 skipped as
    stored)[, 2 internal errors]`, from counts_from_stats (plus `failed` where the caller
    counts it); internal errors only when there are some."""
    words = [*COUNT_WORDS, "failed"] if "failed" in counts else list(COUNT_WORDS)
    return (f"{counts.get('pages', 0)} pages, "
            + ", ".join(f"{counts.get(name, 0)} {name}" for name in words)
            + f" ({counts.get('skipped_stored', 0)} skipped as stored)"
            + internal_errors_text(counts))


def internal_errors_text(counts: Mapping[str, Any]) -> str:
    """`, 2 internal errors` (records a bug of ours sent to rejects), or nothing."""
    found = int(counts.get("internal_errors") or 0)
    return f", {found} internal error{'s' if found != 1 else ''}" if found else ""


# --- the `newscrawl runs` table --------------------------------------------------------------

RUN_COLUMNS: list[tuple[str, str]] = [
    # header, alignment
    ("start (UTC)", "<"), ("spider", "<"), ("outcome", "<"), ("duration", ">"), ("pages", ">"),
    ("stored", ">"), ("updated", ">"), ("unchanged", ">"), ("skipped", ">"), ("rejected", ">"),
    ("errors", ">"), ("health", "<"),
]


def format_duration(seconds: float) -> str:
    seconds = max(round(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def run_outcome(run: Mapping[str, Any], host: str | None = None) -> str:
    """The finish reason, with its internal errors when it had some (`finished, 2 internal
    errors`); `running`, or `lost` when its process on this host is gone without recording
    an end (killed, or the database was away at its end)."""
    if run.get("status") != "running":
        return (str(run.get("outcome") or run.get("status") or "?")
                + internal_errors_text(run.get("counts") or {}))
    if run.get("host") == (host or socket.gethostname()) and isinstance(run.get("pid"), int) \
            and not alive(run["pid"]):
        return "lost"
    return "running"


def logged_errors(run: Mapping[str, Any]) -> int:
    return sum(int(e.get("count", 0)) for e in run.get("errors") or []
               if e.get("type") in LOGGED_ERROR_TYPES)


def health_text(run: Mapping[str, Any]) -> str:
    """`ok`, `warn`/`fail` with the monitors that said so (`fail: empty_pages, errors`), `fail:
    lost` for a run whose process is gone without an end, `-` when not judged (yet)."""
    health = run.get("health")
    if not health:
        return "fail: lost" if run_outcome(run) == "lost" else "-"
    names = list(dict.fromkeys(str(f.get("monitor")) for f in health.get("failed") or []))
    return str(health.get("status")) + (f": {', '.join(names)}" if names else "")


def run_row(run: Mapping[str, Any], now: datetime | None = None) -> list[str]:
    started: datetime | None = run.get("started_at")
    finished: datetime | None = run.get("finished_at")
    counts: Mapping[str, Any] = run.get("counts") or {}
    if started and finished:
        duration = format_duration((finished - started).total_seconds())
    elif started and run.get("status") == "running":
        duration = format_duration(((now or datetime.now(UTC)) - started).total_seconds()) + "+"
    else:
        duration = "-"

    def count(name: str) -> str:
        return str(counts[name]) if name in counts else "-"

    return [
        started.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if started else "-",
        str(run.get("spider", "?")),
        run_outcome(run),
        duration,
        count("pages"), count("stored"), count("updated"), count("unchanged"),
        count("skipped_stored"), count("rejected"),
        str(logged_errors(run)) if counts else "-",
        health_text(run),
    ]


def runs_table(runs: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[str], list[list[str]]]:
    """Headers, alignments and rows of the runs table."""
    return ([h for h, _ in RUN_COLUMNS], [a for _, a in RUN_COLUMNS], [run_row(r) for r in runs])


# --- the command --------------------------------------------------------------------------------

def cmd_runs(args: argparse.Namespace) -> int:
    from newscrawl.ops import query, runs

    client, config = connect(args.database)
    try:
        found = runs.find_runs(client[config.database][config.runs], last=args.last,
                               spider=args.spider)
    finally:
        client.close()
    if args.format == "jsonl":
        print_lines(query.json_line(run) for run in found)
    elif not found:
        print(f"no runs recorded in {config.database}.{config.runs}", file=sys.stderr)
    else:
        print_lines(query.render_table(*runs.runs_table(found)))
    return 0


def add_command(sub: Any) -> None:
    runs = sub.add_parser(
        "runs", help="list the recorded crawls, newest first",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Every crawl writes one record to the crawl_runs collection "
                    "(MONGO_RUNS_COLLECTION) of MONGO_DATABASE: when it ran, its arguments, "
                    "how it ended and what it counted.",
        epilog="columns: start (UTC), spider, outcome (Scrapy's finish reason, followed by "
               "`, N internal errors` when a bug of ours sent N records to the rejects; running, "
               "or lost when its process is gone without an end), duration, pages fetched, articles "
               "stored / updated / unchanged, article pages skipped as already stored, rejected, "
               "errors logged, health (the monitors' verdict: ok, or warn/fail and the monitors "
               "that said so; README \"Operating it\").\nexample: newscrawl runs --last 5 --spider finews")
    runs.add_argument("--last", type=count_option, default=20, metavar="N",
                      help="the N newest runs (default 20; 0: all)")
    runs.add_argument("--spider", metavar="NAME", help="only the runs of this spider")
    runs.add_argument("--format", choices=["table", "jsonl"], default="table",
                      help="an aligned table (default), or one JSON document per line")
    runs.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    runs.set_defaults(func=cmd_runs)
