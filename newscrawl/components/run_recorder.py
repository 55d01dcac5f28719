"""Run records: one document per crawl in the `crawl_runs` collection.

`RunRecorder` is a Scrapy extension: at spider_opened it writes the run with
status `running`; at spider_closed (after the item pipelines' final flush) it
rewrites it with the finish reason, the counts and the errors taken from the
crawl's stats. A database that cannot be reached costs a warning, never the
crawl. The rest of the module is plain functions from stats and arguments to
documents (newscrawl.ops.runs reads them back).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import PyMongoError
from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import threads

from newscrawl import __version__
from newscrawl.database import one_line
from pipelines.config import StorageConfig, mongo_client
from pipelines.records import bson_time
from pipelines.storage import StorageUnavailable, with_retries

# Sent by RunRecorder once a crawl's end is written (run: the document; None when the spider
# never opened or the end could not be written): the monitors (newscrawl.components.run_monitor)
# take it from there.
run_recorded = object()

logger = logging.getLogger(__name__)

Document = dict[str, Any]

RUN_INDEXES: list[tuple[str, list[tuple[str, int]]]] = [
    ("started_at", [("started_at", DESCENDING)]),
    ("spider_started_at", [("spider", ASCENDING), ("started_at", DESCENDING)]),
    # a job's recent runs (the monitors' history, `newscrawl health`, the metrics)
    ("job_started_at", [("job", ASCENDING), ("started_at", DESCENDING)]),
    # the processes of one distributed run (the last to close runs the monitors)
    ("distributed_run", [("distributed_run", ASCENDING)]),
]

# counts.<name> <- the crawl stat that holds it
COUNT_STATS: dict[str, str] = {
    "pages": "response_received_count",
    "article_pages": "newscrawl/article_pages",
    "listing_pages": "newscrawl/listing_pages",
    "items": "item_scraped_count",
    "stored": "newscrawl/articles/stored",
    "updated": "newscrawl/articles/updated",
    "unchanged": "newscrawl/articles/unchanged",
    "skipped_stored": "newscrawl/articles/skipped_stored",
    "skipped_rejected": "newscrawl/articles/skipped_rejected",
    "rejected": "newscrawl/articles/rejected",
    "spooled": "newscrawl/storage/spooled",
    # records a bug of ours failed on: in rejects (reason internal_error), never spooled
    "internal_errors": "newscrawl/storage/internal_errors",
    # what the monitors (newscrawl.monitoring) judge a run by
    "requests": "downloader/request_count",
    "retries": "retry/count",
    "backoff_ms": "newscrawl/backoff/milliseconds",
    "cleaned": "newscrawl/clean/items",  # articles the pipeline took (+ clean_rejected)
    "clean_rejected": "newscrawl/clean/rejected",
    "empty_body": "newscrawl/clean/rejected/empty_body",  # no paragraphs
    "no_title": "newscrawl/identity/rejected/empty_title",
    "no_article_id": "newscrawl/identity/rejected/no_article_id",
    "no_date": "newscrawl/date/rejected/no_date",
    "unreadable_date": "newscrawl/date/rejected/unreadable_date",
    "no_source": "newscrawl/source/rejected/no_source",
    "unproven": "newscrawl/date/proof/unproven",
    "share_answered": "newscrawl/share/answered",
    "share_not_found": "newscrawl/share/not_found",
    "share_failed": "newscrawl/share/failed",
}

# errors[].type is "<kind>/<name>"; kind <- the stat prefix that counts it
ERROR_STAT_PREFIXES: dict[str, str] = {
    "log_count/": "log",                                 # log/ERROR, log/CRITICAL
    "downloader/exception_type_count/": "download",      # download/twisted.internet.error.…
    "spider_exceptions/": "spider",                      # spider/ValueError
    "downloader/response_status_count/": "http",         # http/503 (5xx only)
}
LOGGED_ERROR_TYPES = ("log/ERROR", "log/CRITICAL")

# Finish reasons of a crawl that did what it was asked; any other is `failed`
# (shutdown: interrupted; closespider_errorcount: too many errors; cancelled, …).
FINISHED_REASONS = frozenset({"finished", "limit", "closespider_timeout", "closespider_itemcount",
                              "closespider_pagecount", "closespider_timeout_no_item",
                              "closespider_pagecount_no_item"})

CONNECT_TIMEOUT_MS = 5000
CLOSE_RETRIES = 2


# --- pure: documents from arguments and stats ------------------------------------------------

def safe_key(key: str) -> str:
    """A field name MongoDB and FerretDB accept: no `.`, no leading `$`, not empty."""
    cleaned = str(key).replace(".", "_").lstrip("$")
    return cleaned or "_"


def safe_keys(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {safe_key(key): value for key, value in mapping.items()}


def is_scrapy_command(argv: Sequence[str]) -> bool:
    """`scrapy …` or `python -m scrapy …` (whose `crawl` Scrapy removes from sys.argv)."""
    if not argv:
        return False
    program = Path(argv[0])
    return (program.name == "scrapy" or (program.name == "__main__.py" and program.parent.name == "scrapy")
            or any(word in ("crawl", "runspider") for word in argv[1:]))


def arguments_from_argv(argv: Sequence[str]) -> dict[str, str]:
    """The `-a NAME=VALUE` pairs of a `scrapy crawl` command line (the last one wins)."""
    if not is_scrapy_command(argv):
        return {}
    pairs: list[str] = []
    words = iter(argv[1:])
    for word in words:
        if word == "-a":
            pairs.append(next(words, ""))
        elif word.startswith("-a") and not word.startswith("--"):
            pairs.append(word[2:])
    arguments: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if sep and name:
            arguments[name] = value
    return arguments


def spider_arguments(spider: Spider, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The spider's `-a` arguments, with keys the database accepts.

    Scrapy keeps no copy of the keyword arguments a spider was built with: a
    spider that saves them as `self.arguments` (a mapping) is read; otherwise
    they come from the `scrapy crawl … -a NAME=VALUE` command line.
    """
    declared = getattr(spider, "arguments", None)
    if isinstance(declared, Mapping):
        arguments: Mapping[str, Any] = {str(k): v for k, v in declared.items()}
    else:
        arguments = arguments_from_argv(sys.argv if argv is None else argv)
    return safe_keys(arguments)


def make_run_id(spider: str, started_at: datetime, pid: int) -> str:
    """`finews-20211231T083000.123Z-4242`: sorts by time within a spider, unique per process."""
    stamp = started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{spider}-{stamp}Z-{pid}"


def run_status(reason: str, internal_errors: int = 0) -> str:
    """`finished`: the crawl did what it was asked; `failed`: it did not (the finish reason
    says why); `internal_error`: it did, but a bug of ours kept `internal_errors` records
    from being stored (they are in rejects, reason `internal_error`)."""
    if reason not in FINISHED_REASONS:
        return "failed"
    return "internal_error" if internal_errors else "finished"


def counts_from_stats(stats: Mapping[str, Any]) -> dict[str, int]:
    return {name: int(stats.get(stat) or 0) for name, stat in COUNT_STATS.items()}


def errors_from_stats(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Errors by type: logged errors, download exceptions, spider exceptions, 5xx answers.

    The type is a value (`download/twisted.internet.error.TimeoutError`), never
    a key: Python class names have dots, which field names may not.
    """
    errors: list[dict[str, Any]] = []
    for key, value in sorted(stats.items()):
        for prefix, kind in ERROR_STAT_PREFIXES.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix):]
            if kind == "log" and name not in ("ERROR", "CRITICAL"):
                continue
            if kind == "http" and not (name.isdigit() and 500 <= int(name) <= 599):
                continue
            if value:
                errors.append({"type": f"{kind}/{name}", "count": int(value)})
    return errors


def job_name(spider: str, arguments: Mapping[str, Any]) -> str:
    """A crawl started by hand is the job of its spider and arguments (`finews categories=wind`);
    scrapyd's own arguments (`_job`, …) are left out. The scheduler names its jobs
    (NEWSCRAWL_JOB)."""
    words = [f"{name}={value}" for name, value in sorted(arguments.items()) if not name.startswith("_")]
    return " ".join([spider, *words])


def start_document(run_id: str, spider: str, arguments: Mapping[str, Any], started_at: datetime, *,
                   host: str, pid: int, job: str | None = None,
                   distributed_run: str | None = None) -> Document:
    return {
        "_id": run_id,
        "spider": spider,
        "job": job or job_name(spider, arguments),
        "distributed_run": distributed_run,
        "arguments": dict(arguments),
        "started_at": bson_time(started_at),
        "finished_at": None,
        "outcome": None,
        "status": "running",
        "host": host,
        "pid": pid,
        "version": __version__,
        "counts": {},
        "errors": [],
    }


def end_document(start: Mapping[str, Any], reason: str, stats: Mapping[str, Any],
                 finished_at: datetime) -> Document:
    counts = counts_from_stats(stats)
    return {
        **start,
        "finished_at": bson_time(finished_at),
        "outcome": reason,
        "status": run_status(reason, counts["internal_errors"]),
        "counts": counts,
        "errors": errors_from_stats(stats),
    }


# --- the database ----------------------------------------------------------------------------

def ensure_run_indexes(collection: Collection[Document]) -> None:
    for name, keys in RUN_INDEXES:
        collection.create_index(keys, name=name)


def save_run(collection: Collection[Document], document: Mapping[str, Any]) -> None:
    """Write the whole run document: idempotent, and the end write needs no start write."""
    collection.replace_one({"_id": document["_id"]}, dict(document), upsert=True)


# --- the Scrapy extension --------------------------------------------------------------------

class RunRecorder:
    """Records every crawl in MONGO_RUNS_COLLECTION (default `crawl_runs`) of MONGO_DATABASE."""

    def __init__(self, crawler: Crawler, config: StorageConfig, *,
                 retries: int = CLOSE_RETRIES, backoff: float = 0.5,
                 timeout_ms: int = CONNECT_TIMEOUT_MS) -> None:
        self.crawler = crawler
        self.timeout_ms = timeout_ms
        self.config = config
        self.where = f"{config.database}.{config.runs}"  # for the log
        self.retries = retries
        self.backoff = backoff
        self.client: MongoClient[Document] | None = None
        self.start: Document | None = None
        self.end_saved = False
        settings = crawler.settings
        self.job: str | None = settings.get("NEWSCRAWL_JOB") or None
        self.distributed_run: str | None = (settings.get("NEWSCRAWL_RUN_ID") or None
                                            if settings.get("NEWSCRAWL_REDIS_URL") else None)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RunRecorder:
        from pipelines.mongo import storage_config

        settings = crawler.settings
        try:
            config = storage_config(settings)
        except NotConfigured as exc:
            raise NotConfigured(f"no run records: {exc}") from None
        recorder = cls(crawler, config,
                       retries=min(settings.getint("MONGO_RETRY_TIMES", CLOSE_RETRIES), CLOSE_RETRIES),
                       backoff=settings.getfloat("MONGO_RETRY_BACKOFF", 0.5))
        crawler.signals.connect(recorder.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(recorder.spider_closed, signal=signals.spider_closed)
        return recorder

    @property
    def collection(self) -> Collection[Document]:
        if self.client is None:
            self.client = mongo_client(self.config.uri, appname="newscrawl-runs",
                                       timeout_ms=self.timeout_ms, socket_timeout_ms=60_000)
        return self.config.database_on(self.client)[self.config.runs]

    # Signal handlers: the writes go to a thread, the crawl waits for them.
    async def spider_opened(self, spider: Spider) -> None:
        await maybe_deferred_to_future(threads.deferToThread(self.record_start, spider))

    async def spider_closed(self, spider: Spider, reason: str) -> None:
        document = await maybe_deferred_to_future(threads.deferToThread(self.record_end, reason))
        # the monitors judge what is in the database: nothing when the end could not be written
        await self.crawler.signals.send_catch_log_async(run_recorded,
                                                        run=document if self.end_saved else None)

    def record_start(self, spider: Spider, now: datetime | None = None) -> Document:
        started_at = now or datetime.now(UTC)
        pid = os.getpid()
        self.start = start_document(make_run_id(spider.name, started_at, pid), spider.name,
                                    spider_arguments(spider), started_at,
                                    host=socket.gethostname(), pid=pid, job=self.job,
                                    distributed_run=self.distributed_run)
        start = self.start
        try:
            collection = self.collection
            ensure_run_indexes(collection)
            save_run(collection, start)
        except PyMongoError as exc:
            logger.warning("run %s: start not recorded in %s (%s); will try again at the end",
                           start["_id"], self.where, one_line(exc))
        return start

    def record_end(self, reason: str, now: datetime | None = None) -> Document | None:
        if self.start is None:  # the spider never opened
            return None
        stats = self.crawler.stats.get_stats() if self.crawler.stats is not None else {}
        document = end_document(self.start, reason, stats, now or datetime.now(UTC))
        collection = self.collection
        try:
            with_retries(lambda: save_run(collection, document), times=self.retries,
                         backoff=self.backoff, what=f"recording run {document['_id']}")
            self.end_saved = True
        except (StorageUnavailable, PyMongoError) as exc:
            logger.warning("run %s not recorded in %s (%s): %s", document["_id"], self.where,
                           one_line(exc),
                           {k: v for k, v in document.items() if k not in ("arguments",)})
        finally:
            self.close()
        return document

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
