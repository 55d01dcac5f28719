"""MongoPipeline: batched storage of articles, rejects, and the spool for outages."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from itemadapter import ItemAdapter
from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured
from scrapy.http import Response
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from scrapy.utils.log import failure_to_exc_info
from twisted.internet import defer, task, threads

from newscrawl.incremental import known_records_loaded
from newscrawl.items import ListingSighting
from pipelines.errors import RejectItem
from pipelines.records import bson_time, sighting_from_item, sighting_from_listing
from pipelines.storage import (
    ArticleStore,
    KnownRecords,
    Spool,
    StorageUnavailable,
    WriteReport,
    ensure_indexes,
    with_retries,
)

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("article_id", "title", "paragraphs", "published_at", "published_at_raw",
                   "source", "source_slug", "content_hash", "body_kind")
RAW_BODY_LIMIT = 1_000_000  # characters of raw HTML kept in a reject; a document caps at 16 MB


def database_uri(configured: str | None) -> str:
    """MONGO_URI when set, else the project's local database, else a clear error."""
    if configured:
        return configured
    from newscrawl import localdb

    uri = localdb.running_uri()
    if uri is None:
        raise NotConfigured(
            "no database: set MONGO_URI, or start the local one with `newscrawl db start`"
        )
    return uri


def reject_document(item: Any, reason: str, spider_name: str) -> dict[str, Any]:
    raw = ItemAdapter(item).asdict()
    for name in ("body_html", "share_html"):
        if isinstance(raw.get(name), str) and len(raw[name]) > RAW_BODY_LIMIT:
            raw[name] = raw[name][:RAW_BODY_LIMIT]
            raw.setdefault("extra", {})[f"{name}_truncated"] = True
    raw["extra"] = {str(k).replace(".", "_").lstrip("$"): v for k, v in raw.get("extra", {}).items()}
    return {
        "url": raw.get("url"),
        "article_id": raw.get("article_id"),
        "reason": reason,
        "spider": spider_name,
        "raw": raw,
        "rejected_at": bson_time(datetime.now(UTC)),
    }


class MongoPipeline:
    """Buffers sightings and writes them as batched bulk upserts.

    A batch is written when it is full, every MONGO_FLUSH_INTERVAL seconds and
    when the spider closes, in a thread so the reactor keeps crawling; one write
    runs at a time and takes all that is buffered. Items wait only when
    MONGO_MAX_PENDING sightings are buffered: back-pressure on a slow server. When the
    server stays away through MONGO_RETRY_TIMES retries, batches go to the spool
    (NEWSCRAWL_SPOOL_DIR) for `newscrawl replay`: an outage loses nothing.
    Rejected items (RejectItem from any pipeline) go to the rejects collection.
    """

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.crawler = crawler
        self.stats = crawler.stats
        self.uri = database_uri(settings.get("MONGO_URI"))
        self.database = settings.get("MONGO_DATABASE", "newscrawl")
        self.collection = settings.get("MONGO_COLLECTION", "articles")
        self.rejects_collection = settings.get("MONGO_REJECTS_COLLECTION", "rejects")
        self.batch_size = settings.getint("MONGO_BATCH_SIZE", 200)
        self.max_pending = max(settings.getint("MONGO_MAX_PENDING", 2000), self.batch_size)
        self.flush_interval = settings.getfloat("MONGO_FLUSH_INTERVAL", 2.0)
        self.retry_times = settings.getint("MONGO_RETRY_TIMES", 5)
        self.retry_backoff = settings.getfloat("MONGO_RETRY_BACKOFF", 0.5)
        spool_dir = settings.get("NEWSCRAWL_SPOOL_DIR")
        if not spool_dir:
            from newscrawl.localdb import local_dir

            spool_dir = str(local_dir() / "spool")
        self.spool = Spool(Path(spool_dir))
        self.sightings: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []
        self.writing = False  # one write at a time
        self.write_waiters: list[defer.Deferred[None]] = []
        self.store: ArticleStore | None = None
        self.flusher: task.LoopingCall | None = None
        self.spool_name = ""

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> MongoPipeline:
        pipeline = cls(crawler)
        crawler.signals.connect(pipeline.item_dropped, signal=signals.item_dropped)
        crawler.signals.connect(pipeline.known_records_loaded, signal=known_records_loaded)
        return pipeline

    def open_spider(self, spider: Spider | None = None) -> None:
        name = self.crawler.spider.name if self.crawler.spider else "crawl"
        self.spool_name = f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        store = self.store = ArticleStore.connect(self.uri, self.database, self.collection,
                                                  self.rejects_collection)
        try:
            warnings = with_retries(
                lambda: ensure_indexes(store.db, self.collection, self.rejects_collection),
                times=self.retry_times, backoff=self.retry_backoff, what="creating indexes",
            )
        except StorageUnavailable as exc:
            logger.error("database unavailable at start (%s): items will be spooled", exc)
            warnings = []
        for warning in warnings:
            logger.warning(warning)
            self.stats.set_value("newscrawl/storage/warnings", warning)
        self.flusher = task.LoopingCall(self._timed_flush)
        self.flusher.start(self.flush_interval, now=False)

    async def process_item(self, item: Any, spider: Spider | None = None) -> Any:
        adapter = ItemAdapter(item)
        if isinstance(item, ListingSighting):
            self.sightings.append(sighting_from_listing(adapter))
        else:
            missing = [name for name in REQUIRED_FIELDS if adapter.get(name) in (None, "", [])]
            if missing:
                raise RejectItem(f"missing {', '.join(missing)}")
            self.sightings.append(sighting_from_item(adapter))
        if len(self.sightings) >= self.max_pending:
            # The server is slower than the crawl: the item waits, the scraper fills up and
            # the engine stops fetching. (Below this, buffering a sighting costs far less
            # memory than holding its response.)
            self.stats.inc_value("newscrawl/storage/items_waited")
            await self.flush()
        elif len(self.sightings) >= self.batch_size and not self.writing:
            self._flush_in_background()
        return item

    def known_records_loaded(self, known: KnownRecords) -> None:
        """The incremental filter read every stored record: the store need not read them again."""
        if self.store is not None:
            self.store.use_known(known)

    def item_dropped(self, item: Any, response: Response, exception: Exception,
                     spider: Spider | None = None) -> None:
        if isinstance(exception, RejectItem):
            name = self.crawler.spider.name if self.crawler.spider else "crawl"
            self.rejects.append(reject_document(item, exception.reason, name))
            self.stats.inc_value("newscrawl/articles/rejected")
        elif isinstance(exception, DropItem):
            self.stats.inc_value("newscrawl/articles/dropped")

    def _timed_flush(self) -> defer.Deferred[None]:
        # A write still running takes the buffer when it ends if the buffer is full by then,
        # else the next tick does.
        if (not self.sightings and not self.rejects) or self.writing:
            return defer.succeed(None)
        return deferred_from_coro(self.flush())

    def _flush_in_background(self) -> None:
        done = deferred_from_coro(self.flush())
        done.addErrback(lambda failure: logger.error("writing a batch failed: %s", failure.value,
                                                     exc_info=failure_to_exc_info(failure)))

    async def flush(self) -> None:
        """Write what is buffered, once the running write is done.

        The buffer is taken when the write starts, so whatever came in while an
        earlier one ran goes with it; a waiter finding it empty has nothing to do.
        """
        while self.writing:
            waiter: defer.Deferred[None] = defer.Deferred()
            self.write_waiters.append(waiter)
            await maybe_deferred_to_future(waiter)
        sightings, self.sightings = self.sightings, []
        rejects, self.rejects = self.rejects, []
        if not sightings and not rejects:
            return
        self.writing = True
        try:
            await maybe_deferred_to_future(threads.deferToThread(self._write, sightings, rejects))
        finally:
            self.writing = False
            # Each waiter resumes on its own (no chain of callbacks, however many wait).
            waiters, self.write_waiters = self.write_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            if not waiters and len(self.sightings) >= self.batch_size:
                self._flush_in_background()  # a full batch came in meanwhile

    def _write(self, sightings: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> None:
        """Runs in a thread: write with retries, spool what the server would not take."""
        assert self.store is not None
        store = self.store
        if sightings:
            try:
                report: WriteReport = with_retries(
                    lambda: store.write(sightings), times=self.retry_times,
                    backoff=self.retry_backoff, what=f"writing {len(sightings)} articles",
                )
                self._count(report)
                if report.orphans:
                    self.stats.inc_value("newscrawl/storage/orphan_sightings", report.orphans)
            except StorageUnavailable as exc:
                path = self.spool.append("sighting", sightings, self.spool_name)
                logger.error("database unavailable (%s): %d articles spooled to %s; "
                             "run `newscrawl replay` when it is back", exc, len(sightings), path)
                self.stats.inc_value("newscrawl/storage/spooled", len(sightings))
        if rejects:
            try:
                with_retries(lambda: store.write_rejects(rejects), times=self.retry_times,
                             backoff=self.retry_backoff, what=f"writing {len(rejects)} rejects")
            except StorageUnavailable:
                self.spool.append("reject", rejects, self.spool_name)
                self.stats.inc_value("newscrawl/storage/rejects_spooled", len(rejects))

    def _count(self, report: WriteReport) -> None:
        for outcome, count in report.outcomes.items():
            self.stats.inc_value(f"newscrawl/articles/{outcome}", count)
        if report.conflicts:
            self.stats.inc_value("newscrawl/storage/conflicts", report.conflicts)
        if report.known:  # sightings that added nothing: not read, not written
            self.stats.inc_value("newscrawl/storage/known_unchanged", report.known)
        self.stats.inc_value("newscrawl/storage/batches")

    async def close_spider(self, spider: Spider | None = None) -> None:
        if self.flusher is not None and self.flusher.running:
            self.flusher.stop()
        # Dropped items of the last responses are signalled before this; flush them all.
        await self.flush()
        if self.store is not None:
            # Closing may link duplicates again (FerretDB): a database round trip, off the reactor.
            await maybe_deferred_to_future(threads.deferToThread(self.store.close))


def stats_summary(stats: Mapping[str, Any]) -> dict[str, int]:
    """The article counters of a crawl's stats, by outcome."""
    prefix = "newscrawl/articles/"
    return {key[len(prefix):]: int(value) for key, value in stats.items() if key.startswith(prefix)}
