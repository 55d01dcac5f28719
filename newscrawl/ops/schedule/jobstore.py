"""Where `newscrawl schedule` keeps its timetable: MongoDB (APScheduler's MongoDBJobStore)
when the server can hold it, checked with a probe at start; else memory, loudly.
"""


from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from newscrawl.database import DatabaseUnreachable

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.collection import Collection
from newscrawl.ops.schedule.config import DB_TIMEOUT_MS, JOBS_COLLECTION, PROBE_COLLECTION, Document

logger = logging.getLogger("newscrawl.ops.schedule")


class ScheduleDatabaseError(DatabaseUnreachable):
    """`job_store = "mongodb"` and the database cannot hold the timetable."""


def job_store_problem(probe: Collection[Document]) -> str | None:
    """What MongoDBJobStore needs, tried on a scratch collection: None when all works."""
    import pickle

    from bson.binary import Binary
    from pymongo import ASCENDING
    from pymongo.errors import DuplicateKeyError, PyMongoError

    from newscrawl.database import one_line

    now = time.time()
    state = pickle.dumps({"probe": "é"}, pickle.HIGHEST_PROTOCOL)
    try:
        probe.drop()
        probe.create_index("next_run_time", sparse=True)
        probe.insert_many([
            {"_id": "due", "next_run_time": now - 10, "job_state": Binary(state)},
            {"_id": "paused", "next_run_time": None, "job_state": Binary(state)},
            {"_id": "later", "next_run_time": now + 10, "job_state": Binary(state)},
        ])
        due = [d["_id"] for d in probe.find({"next_run_time": {"$lte": now}}, ["_id", "job_state"],
                                            sort=[("next_run_time", ASCENDING)])]
        if due != ["due"]:
            return f"a due-jobs query ($lte on a float, nulls excluded) found {due}"
        first = probe.find_one({"next_run_time": {"$ne": None}}, projection=["next_run_time"],
                               sort=[("next_run_time", ASCENDING)])
        if not first or first["_id"] != "due":
            return "the next-run-time query ($ne null, sorted) found the wrong job"
        stored = probe.find_one("due", ["job_state"])
        if not stored or bytes(stored["job_state"]) != state:
            return "a binary job state did not come back unchanged"
        try:
            probe.insert_one({"_id": "due"})
            return "a second insert of the same _id was accepted"
        except DuplicateKeyError:
            pass
        if probe.update_one({"_id": "later"}, {"$set": {"next_run_time": now}}).matched_count != 1:
            return "update_one did not report its match"
        if probe.delete_one({"_id": "paused"}).deleted_count != 1:
            return "delete_one did not report its deletion"
        return None
    except PyMongoError as exc:
        return one_line(exc)
    finally:
        with contextlib.suppress(PyMongoError):
            probe.drop()


def connect(uri: str | None) -> tuple[MongoClient[Document] | None, str | None]:
    """A client of the database, checked with a ping; or None and why not."""
    from newscrawl.database import DatabaseError
    from newscrawl.database import connect as connect_database

    if uri is None:
        return None, "no database configured (MONGO_URI unset and no local database running)"
    try:
        return connect_database("newscrawl-schedule", uri=uri, timeout_ms=DB_TIMEOUT_MS,
                                socket_timeout_ms=30_000), None
    except DatabaseError as exc:
        return None, str(exc)


def choose_job_store(kind: str, uri: str | None, client: MongoClient[Document] | None,
                     database: str, problem: str | None) -> tuple[Any, str]:
    """The job store and its name; warns once when it falls back to memory.

    `client` is a reachable client (else `problem` says why there is none)."""
    from apscheduler.jobstores.memory import MemoryJobStore

    if kind == "memory":
        return MemoryJobStore(), "memory (job_store = \"memory\")"
    if client is not None and uri is not None:
        problem = job_store_problem(client[database][f"{PROBE_COLLECTION}_{os.getpid()}"])
        if problem is None:
            from apscheduler.jobstores.mongodb import MongoDBJobStore

            from pipelines.config import mongo_client

            # A client of its own: the store closes it when the scheduler shuts down.
            store_client = mongo_client(uri, appname="newscrawl-schedule-jobs", timeout_ms=DB_TIMEOUT_MS,
                                        socket_timeout_ms=30_000)
            return (MongoDBJobStore(database=database, collection=JOBS_COLLECTION,
                                    client=store_client), f"{database}.{JOBS_COLLECTION}")
    if kind == "mongodb":
        raise ScheduleDatabaseError(f"job_store = \"mongodb\": the database cannot keep the "
                                    f"timetable: {problem}")
    logger.warning("schedule: the timetable is kept in memory, not in %s.%s: %s; firings missed "
                   "while the scheduler is down will not be run", database, JOBS_COLLECTION, problem)
    return MemoryJobStore(), "memory"
