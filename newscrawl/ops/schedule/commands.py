"""How the web console's actions reach a running `newscrawl schedule`: the `schedule_commands`
collection.

The console inserts one document per action (`run`, `pause`, `resume` a job) with status
`pending`; the scheduler polls the collection every `POLL_SECONDS`, claims each pending
command atomically (status `applying`), applies it to its APScheduler and records the
outcome (`done` or `failed`, with a detail). The scheduler owns its timetable: nothing else
writes `schedule_jobs` (APScheduler keeps a pickled job state there that the store and
the scheduler's in-memory wake-up must agree with).

- `run`: the job's next run time becomes now, so APScheduler fires it at once through
  the usual path (never two crawls of one job: a run already going makes it a skipped
  firing, reason `running`). A cron job then keeps its timetable; an interval job counts
  its interval from this run. A paused job is not run (resume it first).
- `pause`: no firing until `resume`; with the MongoDB job store, a restart keeps it paused.
- `resume`: the next firing is computed again from the trigger.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymongo.collection import Collection

Document = dict[str, Any]

COMMANDS_COLLECTION = "schedule_commands"
ACTIONS = ("run", "pause", "resume")
POLL_SECONDS = 1.0

logger = logging.getLogger("newscrawl.ops.schedule")


def command_document(job: str, action: str, requested_by: str, now: datetime | None = None) -> Document:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    return {"_id": uuid.uuid4().hex, "job": job, "action": action, "status": "pending",
            "requested_at": now or datetime.now(UTC), "requested_by": requested_by,
            "applied_at": None, "detail": None}


def ensure_indexes(collection: Collection[Document]) -> None:
    # The scheduler's poll (status) and the console's list per job, newest first.
    collection.create_index([("status", 1)], name="status")
    collection.create_index([("job", 1), ("requested_at", -1)], name="job_requested_at")


def request(collection: Collection[Document], job: str, action: str, requested_by: str) -> Document:
    document = command_document(job, action, requested_by)
    collection.insert_one(document)
    return document


def apply(scheduler: Any, command: Mapping[str, Any], now: datetime | None = None) -> tuple[str, str]:
    """Apply one command to a running APScheduler: (`done` or `failed`, what happened)."""
    name, action = str(command.get("job")), command.get("action")
    job = scheduler.get_job(name)
    if job is None:
        return "failed", f"no job {name!r} in the scheduler's timetable"
    if action == "pause":
        scheduler.pause_job(name)
        return "done", "paused"
    if action == "resume":
        scheduler.resume_job(name)
        resumed = scheduler.get_job(name)
        when = resumed.next_run_time if resumed else None
        return "done", f"resumed, next firing {when.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z" if when \
            else "resumed; its trigger fires no more"
    if action == "run":
        if job.next_run_time is None:
            return "failed", "the job is paused: resume it first"
        scheduler.modify_job(name, next_run_time=now or datetime.now(UTC))
        return "done", "fired now"
    return "failed", f"unknown action {action!r}"


def poll(collection: Collection[Document], scheduler: Any) -> int:
    """Claim and apply every pending command, oldest first; how many were applied."""
    applied = 0
    while True:
        command = collection.find_one_and_update(
            {"status": "pending"},
            {"$set": {"status": "applying", "host": socket.gethostname(), "pid": os.getpid()}},
            sort=[("requested_at", 1)])
        if command is None:
            return applied
        try:
            status, detail = apply(scheduler, command)
        except Exception as exc:  # a bad command never stops the scheduler
            status, detail = "failed", f"{type(exc).__name__}: {exc}"
        collection.update_one({"_id": command["_id"]},
                              {"$set": {"status": status, "detail": detail,
                                        "applied_at": datetime.now(UTC)}})
        log = logger.info if status == "done" else logger.warning
        log("schedule: %s: %s (asked by %s): %s", command.get("job"), command.get("action"),
            command.get("requested_by"), detail)
        applied += 1
