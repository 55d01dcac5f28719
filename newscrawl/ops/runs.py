"""`newscrawl runs`: the crawl_runs documents (newscrawl.components.runs) as a table."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection

from newscrawl.components.runs import LOGGED_ERROR_TYPES, Document
from newscrawl.local.server import alive


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
    stored)`, from counts_from_stats (plus `failed` where the caller counts it)."""
    words = [*COUNT_WORDS, "failed"] if "failed" in counts else list(COUNT_WORDS)
    return (f"{counts.get('pages', 0)} pages, "
            + ", ".join(f"{counts.get(name, 0)} {name}" for name in words)
            + f" ({counts.get('skipped_stored', 0)} skipped as stored)")


# --- the `newscrawl runs` table --------------------------------------------------------------

RUN_COLUMNS: list[tuple[str, str]] = [
    # header, alignment
    ("start (UTC)", "<"), ("spider", "<"), ("outcome", "<"), ("duration", ">"), ("pages", ">"),
    ("stored", ">"), ("updated", ">"), ("unchanged", ">"), ("skipped", ">"), ("rejected", ">"),
    ("errors", ">"),
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
    """The finish reason; `running`, or `lost` when its process on this host is gone
    without recording an end (killed, or the database was away at its end)."""
    if run.get("status") != "running":
        return str(run.get("outcome") or run.get("status") or "?")
    if run.get("host") == (host or socket.gethostname()) and isinstance(run.get("pid"), int) \
            and not alive(run["pid"]):
        return "lost"
    return "running"


def logged_errors(run: Mapping[str, Any]) -> int:
    return sum(int(e.get("count", 0)) for e in run.get("errors") or []
               if e.get("type") in LOGGED_ERROR_TYPES)


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
    ]


def runs_table(runs: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[str], list[list[str]]]:
    """Headers, alignments and rows of the runs table."""
    return ([h for h, _ in RUN_COLUMNS], [a for _, a in RUN_COLUMNS], [run_row(r) for r in runs])
