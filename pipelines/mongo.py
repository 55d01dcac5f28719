"""MongoPipeline: batched storage of articles, rejects, and the spool for outages."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from itemadapter import ItemAdapter
from pymongo.errors import PyMongoError
from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured
from scrapy.http import Response
from scrapy.settings import BaseSettings
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from scrapy.utils.log import failure_to_exc_info
from twisted.internet import defer, task, threads

from pipelines import signals as storage_signals
from pipelines.cleaning import without_lone_surrogates
from pipelines.config import NO_DATABASE, StorageConfig
from pipelines.errors import RejectItem
from pipelines.records import bson_time, is_listing_sighting, sighting_from_item, sighting_from_listing
from pipelines.storage import (
    RECORD_ERRORS,
    ArticleStore,
    KnownRecords,
    Spool,
    SpoolError,
    StorageUnavailable,
    WriteReport,
    blames_a_record,
    describe,
    ensure_indexes,
    with_retries,
)

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("article_id", "title", "paragraphs", "published_at", "published_at_raw",
                   "source", "source_slug", "content_hash", "body_kind")
RAW_BODY_LIMIT = 1_000_000  # characters of raw HTML kept in a reject; a document caps at 16 MB
# Characters of text one article may store. Its body is stored twice (`paragraphs` and
# `text`), up to 3 bytes a character in UTF-8: 2 x 6 MB, under BSON's 16 MB with room
# for the rest. (The hostile mirror's 5 MB page holds 1.6 million characters: stored.)
MAX_ARTICLE_CHARS = 2_000_000
# What a write may fail with that is no bug of ours: the database (away: spool; refusing a
# document: split) and a value one record holds (split). Anything else is a bug.
DATABASE_ERRORS: tuple[type[Exception], ...] = (PyMongoError, StorageUnavailable, *RECORD_ERRORS)
INTERNAL_ERROR = "internal_error"  # the reason of a record a bug kept from being written
INTERNAL_ERRORS_STAT = "newscrawl/storage/internal_errors"


def storage_config(settings: BaseSettings) -> StorageConfig:
    """A crawl's StorageConfig; NotConfigured when it names no server (newscrawl's
    LocalDatabase add-on fills MONGO_URI when it can)."""
    config = StorageConfig.from_settings(settings)
    if not config.uri:
        raise NotConfigured(NO_DATABASE)
    return config


def store_from_settings(settings: BaseSettings) -> ArticleStore:
    """The ArticleStore a crawl's settings name."""
    return ArticleStore.from_config(storage_config(settings))


def storable_keys(value: Any) -> Any:
    """Dict keys as every server takes them: no '.', no leading '$' (FerretDB refuses both)."""
    if isinstance(value, dict):
        return {str(k).replace(".", "_").lstrip("$"): storable_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable_keys(v) for v in value]
    return value


def fit_raw(raw: dict[str, Any], limit: int = RAW_BODY_LIMIT) -> dict[str, Any]:
    """A raw item or sighting cut to fit in a reject: each string and each list of strings
    to `limit` characters (`extra.<field>_truncated` says which)."""
    raw = dict(storable_keys(without_lone_surrogates(raw)))
    truncated: list[str] = []
    for name, value in raw.items():
        if isinstance(value, str) and len(value) > limit:
            raw[name] = value[:limit]
            truncated.append(name)
        elif isinstance(value, list) and sum(len(v) for v in value if isinstance(v, str)) > limit:
            kept, size = [], 0
            for entry in value:
                size += len(entry) if isinstance(entry, str) else 0
                if size > limit:
                    break
                kept.append(entry)
            raw[name] = kept
            truncated.append(name)
    given = raw.get("extra")
    extra = dict(given) if isinstance(given, dict) else {}
    for name in truncated:
        extra[f"{name}_truncated"] = True
    if extra or "extra" in raw:
        raw["extra"] = extra
    return raw


def reject_document(item: Any, reason: str, spider_name: str) -> dict[str, Any]:
    raw = fit_raw(ItemAdapter(item).asdict())
    raw.setdefault("extra", {})
    # A fetch that failed for a reason that may pass (timeout, 5xx, 429, a refused
    # connection: the spider marks the item share_pending) left it without a body:
    # later runs ask again. Any other reason is final and later runs skip the page.
    retryable = raw["extra"].get("share_pending") is True
    return {
        "url": raw.get("url"),
        "article_id": raw.get("article_id"),
        "reason": without_lone_surrogates(reason),
        "retryable": retryable,
        "spider": spider_name,
        "raw": raw,
        "rejected_at": bson_time(datetime.now(UTC)),
    }


def refused_sighting(sighting: Mapping[str, Any], exc: BaseException, spider_name: str) -> dict[str, Any]:
    """The reject of a sighting the database refused: the sighting (its text once), cut to fit."""
    raw = fit_raw({k: v for k, v in sighting.items() if k != "text"})
    urls = sighting.get("urls") or []
    return {
        "url": urls[0] if urls else sighting.get("body_url"),
        "article_id": sighting.get("_id"),
        "reason": f"not stored: {describe(exc)}",
        "retryable": False,
        "spider": spider_name,
        "raw": raw,
        "rejected_at": bson_time(datetime.now(UTC)),
    }


def internal_error_reject(record: Mapping[str, Any], exc: BaseException,
                          spider_name: str) -> dict[str, Any]:
    """The reject of a sighting (or of a reject) that a bug kept from being written: the whole
    record in `raw` (keys and lone surrogates made storable), so nothing is lost; retryable,
    so once the bug is fixed the next run fetches its page again."""
    urls = record.get("urls")
    candidates = [record.get("url"), *(urls if isinstance(urls, list) else []), record.get("body_url")]
    return {
        "url": next((url for url in candidates if isinstance(url, str)), None),
        "article_id": record.get("article_id", record.get("_id")),
        "reason": f"{INTERNAL_ERROR}: {describe(exc)}",
        "retryable": True,
        "spider": spider_name,
        "raw": storable_keys(without_lone_surrogates(dict(record))),
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
    Rejected items (RejectItem from any pipeline) go to the rejects collection, and so
    does a record the server refuses or a bug of ours fails on (`internal_error`).
    """

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.crawler = crawler
        self.stats = crawler.stats
        # Read once; no database: not configured, before the crawl starts.
        self.config = storage_config(settings)
        self.batch_size = settings.getint("MONGO_BATCH_SIZE", 200)
        self.max_pending = max(settings.getint("MONGO_MAX_PENDING", 2000), self.batch_size)
        self.flush_interval = settings.getfloat("MONGO_FLUSH_INTERVAL", 2.0)
        self.retry_times = settings.getint("MONGO_RETRY_TIMES", 5)
        self.retry_backoff = settings.getfloat("MONGO_RETRY_BACKOFF", 0.5)
        if self.config.spool_dir is None:  # newscrawl's LocalDatabase add-on sets .local/spool
            raise NotConfigured("NEWSCRAWL_SPOOL_DIR is empty: items could not be spooled in an outage")
        self.spool = Spool(self.config.spool_dir)
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
        return pipeline

    def open_spider(self, spider: Spider | None = None) -> None:
        name = self.crawler.spider.name if self.crawler.spider else "crawl"
        self.spool_name = Spool.unique_name(name)
        config = self.config
        store = self.store = ArticleStore.from_config(config)
        try:
            warnings = with_retries(
                lambda: ensure_indexes(store.db, config.collection, config.rejects),
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
        self.crawler.signals.send_catch_log(storage_signals.storage_opened)

    def _durable(self, taken_at: float) -> None:
        """Say that every item received by `taken_at` is stored or spooled (the frontier of a
        distributed crawl forgets a finished request only then)."""
        self.crawler.signals.send_catch_log(storage_signals.items_durable, taken_at=taken_at)

    async def process_item(self, item: Any, spider: Spider | None = None) -> Any:
        adapter = ItemAdapter(item)
        if is_listing_sighting(adapter):
            self.sightings.append(sighting_from_listing(adapter))
        else:
            missing = [name for name in REQUIRED_FIELDS if adapter.get(name) in (None, "", [])]
            if missing:
                raise RejectItem(f"missing {', '.join(missing)}")
            size = sum(len(p) for p in adapter["paragraphs"])
            if size > MAX_ARTICLE_CHARS:
                raise RejectItem(f"body too large: {size} characters (the cap is {MAX_ARTICLE_CHARS})")
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
        """Every stored record, read by whoever reads them for the crawl (newscrawl's StoredRecords
        extension calls this once the pipeline is open): the store need not read them again."""
        if self.store is not None:
            self.store.use_known(known)

    def item_dropped(self, item: Any, response: Response, exception: Exception,
                     spider: Spider | None = None) -> None:
        if isinstance(exception, RejectItem):
            self.rejects.append(reject_document(item, exception.reason, self._spider_name()))
            self.stats.inc_value("newscrawl/articles/rejected")
        elif isinstance(exception, DropItem):
            self.stats.inc_value("newscrawl/articles/dropped")

    def _timed_flush(self) -> defer.Deferred[None]:
        # A write still running takes the buffer when it ends if the buffer is full by then,
        # else the next tick does.
        if self.writing:
            return defer.succeed(None)
        if not self.sightings and not self.rejects:
            self._durable(time.monotonic())  # nothing waits
            return defer.succeed(None)
        done = deferred_from_coro(self.flush())
        # A failure returned to the LoopingCall would stop it for the rest of the crawl.
        done.addErrback(self._log_failed_flush)
        return done

    def _flush_in_background(self) -> None:
        deferred_from_coro(self.flush()).addErrback(self._log_failed_flush)

    @staticmethod
    def _log_failed_flush(failure: Any) -> None:
        logger.error("writing a batch failed: %s", failure.value, exc_info=failure_to_exc_info(failure))

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
        taken_at = time.monotonic()
        if not sightings and not rejects:
            self._durable(taken_at)
            return
        self.writing = True
        try:
            await maybe_deferred_to_future(threads.deferToThread(self._write, sightings, rejects))
            self._durable(taken_at)  # however long its retries took
        finally:
            self.writing = False
            # Each waiter resumes on its own (no chain of callbacks, however many wait).
            waiters, self.write_waiters = self.write_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            if not waiters and len(self.sightings) >= self.batch_size:
                self._flush_in_background()  # a full batch came in meanwhile

    def _write(self, sightings: list[dict[str, Any]], rejects: list[dict[str, Any]]) -> None:
        """Runs in a thread: write with retries, spool what the server would not take.

        Never raises. Only a database error that blames no record spools the batch
        (replay writes it once the server is back). A record the server refuses, or
        that a bug of ours fails on, is found by splitting the batch and becomes a
        reject; the rest is stored.
        """
        if sightings:
            self._write_sightings(sightings)
        if rejects:
            self._write_rejects(rejects)

    def _spider_name(self) -> str:
        return self.crawler.spider.name if self.crawler.spider else "crawl"

    def _write_sightings(self, sightings: list[dict[str, Any]]) -> None:
        assert self.store is not None
        store = self.store
        try:
            report: WriteReport = with_retries(
                lambda: store.write(sightings), times=self.retry_times,
                backoff=self.retry_backoff, what=f"writing {len(sightings)} articles",
            )
        except DATABASE_ERRORS as exc:
            if blames_a_record(exc):
                self._set_aside_sighting(sightings, exc)
                return
            if not isinstance(exc, StorageUnavailable):
                logger.error("writing %d articles failed: %s", len(sightings), describe(exc))
            self._spool("sighting", sightings, exc)
            return
        except Exception as exc:
            # A bug (a merge meeting a field it does not expect, …), not an outage: a replay
            # would meet it again. The record it fails on is found like a refused one.
            self._set_aside_sighting(sightings, exc)
            return
        self._count(report)
        if report.orphans:
            self.stats.inc_value("newscrawl/storage/orphan_sightings", report.orphans)

    def _set_aside_sighting(self, sightings: list[dict[str, Any]], exc: Exception) -> None:
        """Write each half again (what was written is written again, idempotently) until the
        record at fault is alone; it goes to the rejects."""
        if len(sightings) > 1:
            self.stats.inc_value("newscrawl/storage/batches_split")
            middle = len(sightings) // 2
            self._write_sightings(sightings[:middle])
            self._write_sightings(sightings[middle:])
            return
        sighting = sightings[0]
        self.stats.inc_value("newscrawl/articles/rejected")
        if blames_a_record(exc):
            logger.error("article %s not stored (%s): written to the rejects",
                         sighting.get("_id"), describe(exc))
            self.stats.inc_value("newscrawl/storage/refused")
            self._write_rejects([refused_sighting(sighting, exc, self._spider_name())])
            return
        logger.error("article %s not stored: internal error (%s); written to the rejects with "
                     "its whole sighting", sighting.get("_id"), describe(exc), exc_info=exc)
        self.stats.inc_value(INTERNAL_ERRORS_STAT)
        self._write_rejects([internal_error_reject(sighting, exc, self._spider_name())])

    def _write_rejects(self, rejects: list[dict[str, Any]], *, last_try: bool = False) -> None:
        assert self.store is not None
        store = self.store
        try:
            with_retries(lambda: store.write_rejects(rejects), times=self.retry_times,
                         backoff=self.retry_backoff, what=f"writing {len(rejects)} rejects")
        except DATABASE_ERRORS as exc:
            if blames_a_record(exc):
                self._set_aside_reject(rejects, exc, last_try=last_try)
            else:
                self._spool("reject", rejects, exc)
        except Exception as exc:  # a bug: as for sightings, never spooled
            self._set_aside_reject(rejects, exc, last_try=last_try)

    def _set_aside_reject(self, rejects: list[dict[str, Any]], exc: Exception, *,
                          last_try: bool) -> None:
        if len(rejects) > 1:
            middle = len(rejects) // 2
            self._write_rejects(rejects[:middle], last_try=last_try)
            self._write_rejects(rejects[middle:], last_try=last_try)
            return
        reject = rejects[0]
        if blames_a_record(exc) or last_try:
            logger.error("the reject of %s could not be written either (%s): %r", reject.get("url"),
                         describe(exc), {k: reject.get(k) for k in ("article_id", "reason")},
                         exc_info=None if blames_a_record(exc) else exc)
            self.stats.inc_value("newscrawl/storage/rejects_lost")
            return
        logger.error("the reject of %s not written: internal error (%s); written again whole, "
                     "as an internal error", reject.get("url"), describe(exc), exc_info=exc)
        self.stats.inc_value(INTERNAL_ERRORS_STAT)
        # Once: a bug that fails every reject must not wrap this one forever.
        self._write_rejects([internal_error_reject(reject, exc, self._spider_name())], last_try=True)

    def _spool(self, kind: str, records: list[dict[str, Any]], exc: BaseException) -> None:
        """Append records to this process's spool file; a spool that fails loses them, loudly."""
        what = "articles" if kind == "sighting" else "rejects"
        try:
            path = self.spool.append(kind, records, self.spool_name)
        except SpoolError as spool_exc:
            # The crawl goes on (the database may be back for the next batch); these are lost.
            logger.error("database unavailable (%s) and the spool failed (%s): %d %s LOST",
                         describe(exc), spool_exc, len(records), what)
            self.stats.inc_value(f"newscrawl/storage/{'lost' if kind == 'sighting' else 'rejects_lost'}",
                                 len(records))
            return
        logger.error("database unavailable (%s): %d %s spooled to %s; "
                     "run `newscrawl replay` when it takes them", describe(exc), len(records), what, path)
        self.stats.inc_value("newscrawl/storage/spooled" if kind == "sighting"
                             else "newscrawl/storage/rejects_spooled", len(records))

    def _count(self, report: WriteReport) -> None:
        for outcome, count in report.outcomes.items():
            self.stats.inc_value(f"newscrawl/articles/{outcome}", count)
        if report.conflicts:
            self.stats.inc_value("newscrawl/storage/conflicts", report.conflicts)
        if report.known:  # sightings that added nothing: not read, not written
            self.stats.inc_value("newscrawl/storage/known_unchanged", report.known)
        if report.near_duplicates_linked:
            self.stats.inc_value("newscrawl/storage/near_duplicates_linked",
                                 report.near_duplicates_linked)
        if report.times_proven:  # by the article counter, as they were written
            self.stats.inc_value("newscrawl/storage/times_proven_by_counter", report.times_proven)
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
