"""`newscrawl health`: the last run of each job (or of one), one line each, and a Nagios-style
exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (no runs recorded, or the database
cannot be reached). Cron or any monitoring system can call it (README, "Operating it").

The verdict is the run's `health` (the monitors wrote it when the run ended). A run still
going is judged now: `lost` (its process on this host is gone without an end) fails, one
that has gone on far longer than the job's usual duration warns or fails
(duration_vs_usual), otherwise the job's last ended run speaks. An ended run without a
`health` (monitors off, or the database away at its end) is judged now, without alerts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection

from newscrawl.monitoring.check import as_runs, is_lost, job_history
from newscrawl.monitoring.monitors import (
    EXIT_CODES,
    FAIL,
    NO_RUNS_EXIT,
    OK,
    WARN,
    Limit,
    evaluate,
    health_document,
    lost_health,
    overdue,
    parse_thresholds,
    summary_line,
)

Document = dict[str, Any]
LOOK_BACK = 20  # a job's newest runs read to find its last ended one


def jobs_of(collection: Collection[Document]) -> list[str]:
    """Every job with a recorded run (index job_started_at)."""
    return sorted(str(job) for job in collection.distinct("job") if job)


def job_health(collection: Collection[Document], job: str, limits: Mapping[str, Limit],
               now: datetime) -> tuple[Document | None, Document | None]:
    """The run that speaks for the job and its health; (None, None) when it has no runs."""
    recent = as_runs(list(collection.find({"job": job}).sort("started_at", DESCENDING).limit(LOOK_BACK)))
    if not recent:
        return None, None
    newest = recent[0]
    if is_lost(newest):
        return newest, newest.get("health") or lost_health(newest, now, limits)
    if newest.get("status") == "running":
        history = job_history(collection, job, newest["started_at"])
        late = overdue(newest, history, limits, now)
        if late is not None:
            return newest, health_document([late], now)
        ended = next((run for run in recent if run.get("status") != "running" and not is_lost(run)),
                     None)
        if ended is None:  # its first run, still going: nothing to judge yet (UNKNOWN)
            return newest, None
        newest = ended
    health = newest.get("health")
    if not health:
        history = job_history(collection, job, newest["started_at"], exclude=[newest["_id"]])
        health = evaluate(newest, history, limits, now)
    return newest, health


def exit_code(statuses: list[str | None]) -> int:
    """The worst: CRITICAL, then WARNING, then UNKNOWN (a job without runs), then OK."""
    if FAIL in statuses:
        return EXIT_CODES[FAIL]
    if WARN in statuses:
        return EXIT_CODES[WARN]
    if None in statuses or not statuses:
        return NO_RUNS_EXIT
    return EXIT_CODES[OK]


def cmd_health(args: argparse.Namespace) -> int:
    from pymongo.errors import PyMongoError

    from newscrawl.database import DatabaseUnreachable, one_line
    from newscrawl.ops.command import connect

    limits = parse_thresholds(os.environ.get("NEWSCRAWL_MONITORS"))
    try:
        client, config = connect(args.database)
    except DatabaseUnreachable as exc:
        print(f"newscrawl UNKNOWN: {exc}")
        return NO_RUNS_EXIT
    now = datetime.now(UTC)
    try:
        collection = client[config.database][config.runs]
        jobs = [args.job] if args.job else jobs_of(collection)
        if not jobs:
            print(f"newscrawl UNKNOWN: no runs recorded in {config.database}.{config.runs}")
            return NO_RUNS_EXIT
        statuses: list[str | None] = []
        for job in jobs:
            run, health = job_health(collection, job, limits, now)
            statuses.append(health["status"] if health else None)
            print(summary_line(job, run, health))
    except PyMongoError as exc:
        print(f"newscrawl UNKNOWN: database: {one_line(exc)}")
        return NO_RUNS_EXIT
    finally:
        client.close()
    sys.stdout.flush()
    return exit_code(statuses)


def add_command(sub: Any) -> None:
    health = sub.add_parser(
        "health", help="the last run of each job: one line each, Nagios exit code",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check the last run of each job (or of --job), as the monitors judged it "
                    "when it ended: one line per job, `JOB OK|WARNING|CRITICAL|UNKNOWN: run ID "
                    "(outcome): what failed`. A run still going is judged now: lost (its process "
                    "is gone) is CRITICAL; far longer than usual warns.",
        epilog="exit: 0 all OK, 1 a WARNING, 2 a CRITICAL, 3 UNKNOWN (no runs recorded for a "
               "job, or the database cannot be reached), as Nagios-style checks do.\n"
               "A job is a `newscrawl schedule` job's name, or `SPIDER ARG=VALUE …` for a crawl "
               "started by hand.\n"
               "cron: */15 * * * * newscrawl health >/var/log/newscrawl-health.log || mail …\n"
               "examples:\n  newscrawl health\n  newscrawl health --job media")
    health.add_argument("--job", metavar="NAME", help="only this job")
    health.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    health.set_defaults(func=cmd_health)
