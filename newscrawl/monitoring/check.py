"""The monitors against the database: a recorded run judged with its job's recent runs, its
`health` written into its document(s) in `crawl_runs`, and its alerts sent once.

- A distributed run (processes sharing NEWSCRAWL_RUN_ID, each with its own document) is
  judged once all its processes have ended (or are lost), as one run: the process that
  closes last judges the sum of all of them and writes the same `health` into each document.
- "Once per run": before alerting, the run's first document is claimed atomically
  (`alert_claimed_at`), so two processes closing together, or a second look at the
  same run, never alert twice.
- A run of the job that never recorded its end (`lost`: its process on this host is gone)
  is judged by the next run of the job that ends, and alerted like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection

from newscrawl.monitoring.alerts import AlertConfig, send_alerts
from newscrawl.monitoring.monitors import (
    DEFAULT_HISTORY,
    Limit,
    combined_run,
    evaluate,
    lost_health,
)

logger = logging.getLogger(__name__)

Document = dict[str, Any]
ENDED = ("finished", "internal_error", "failed")
HISTORY_STATUSES = ("finished", "internal_error")  # the usual: runs that did what was asked


def is_lost(run: Mapping[str, Any]) -> bool:
    """Recorded as lost, or `running` with its process on this host gone (newscrawl runs'
    rule)."""
    from newscrawl.ops.runs import run_outcome

    return run.get("status") == "lost" or (run.get("status") == "running" and run_outcome(run) == "lost")


def as_runs(documents: Sequence[Document]) -> list[Document]:
    """Documents as runs, newest first: a distributed run's processes combined into one."""
    groups: dict[str, list[Document]] = {}
    for document in documents:
        groups.setdefault(document.get("distributed_run") or document["_id"], []).append(document)
    runs = [parts[0] if len(parts) == 1 else combined_run(parts) for parts in groups.values()]
    return sorted(runs, key=lambda r: r["started_at"], reverse=True)


def job_history(collection: Collection[Document], job: str, before: datetime, *,
                exclude: Sequence[str] = (), size: int = DEFAULT_HISTORY) -> list[Document]:
    """The job's `size` latest runs that did what was asked, started before `before`
    (index job_started_at)."""
    found = collection.find({"job": job, "started_at": {"$lt": before}}) \
        .sort("started_at", DESCENDING).limit(size * 4)
    documents = [d for d in found if d["_id"] not in exclude and d.get("status") in HISTORY_STATUSES]
    return as_runs(documents)[:size]


def distributed_parts(collection: Collection[Document], run: Document) -> list[Document] | None:
    """The documents of `run`'s distributed run once every process has ended or is lost;
    None while one still runs. A run of one process is its own part."""
    if not run.get("distributed_run"):
        return [run]
    parts = list(collection.find({"distributed_run": run["distributed_run"]}))  # index distributed_run
    if not any(p["_id"] == run["_id"] for p in parts):
        parts.append(run)
    if any(p.get("status") == "running" and not is_lost(p) for p in parts):
        return None
    return [p for p in parts if not is_lost(p)]


def write_health(collection: Collection[Document], ids: Sequence[str], health: Mapping[str, Any]) -> None:
    collection.update_many({"_id": {"$in": list(ids)}}, {"$set": {"health": dict(health)}})


def claim_alert(collection: Collection[Document], key: str, now: datetime) -> bool:
    """True for the one caller that may alert for the run whose first document is `key`."""
    claimed = collection.find_one_and_update({"_id": key, "alert_claimed_at": None},
                                             {"$set": {"alert_claimed_at": now}})
    return claimed is not None


def judge_and_alert(collection: Collection[Document], run: Document, ids: Sequence[str],
                    health: Document, alerts: AlertConfig, now: datetime) -> Document:
    # judged again (a second look): the alerts already sent stay on record
    before = collection.find_one({"_id": min(ids)}, {"health.alerts": 1}) or {}
    health = {**health, "alerts": (before.get("health") or {}).get("alerts") or health["alerts"]}
    write_health(collection, ids, health)
    if alerts.channels and alerts.wants(health["status"]) and claim_alert(collection, min(ids), now):
        health = {**health, "alerts": send_alerts(alerts, run.get("job") or run["spider"], run, health)}
        write_health(collection, ids, health)
    return health


def monitor_run(collection: Collection[Document], run: Document, limits: Mapping[str, Limit],
                alerts: AlertConfig, now: datetime, *,
                history_size: int = DEFAULT_HISTORY) -> Document | None:
    """Judge a run that has just recorded its end: the run as judged (a distributed run's
    processes combined) with its `health`, or None when other processes of its distributed
    run are still going (the last of them judges)."""
    parts = distributed_parts(collection, run)
    if parts is None:
        logger.info("monitors: run %s: other processes of distributed run %s are still going; "
                    "the last to end judges the run", run["_id"], run.get("distributed_run"))
        return None
    judged = parts[0] if len(parts) == 1 else combined_run(parts)
    ids = sorted(p["_id"] for p in parts)
    job = run.get("job") or run["spider"]
    history = job_history(collection, job, judged["started_at"], exclude=ids, size=history_size)
    health = judge_and_alert(collection, judged, ids, evaluate(judged, history, limits, now), alerts, now)
    judge_lost_runs(collection, job, judged["started_at"], limits, alerts, now)
    return {**judged, "health": health}


def judge_lost_runs(collection: Collection[Document], job: str, before: datetime,
                    limits: Mapping[str, Limit], alerts: AlertConfig, now: datetime) -> list[Document]:
    """Earlier runs of the job whose process is gone without an end, not judged yet."""
    found = collection.find({"job": job, "started_at": {"$lt": before}}) \
        .sort("started_at", DESCENDING).limit(DEFAULT_HISTORY * 4)
    judged = []
    for run in found:
        if run.get("health") is None and is_lost(run):
            health = judge_and_alert(collection, run, [run["_id"]], lost_health(run, now, limits),
                                     alerts, now)
            logger.warning("monitors: run %s of job %s is lost: %s", run["_id"], job, health["status"])
            judged.append(health)
    return judged
