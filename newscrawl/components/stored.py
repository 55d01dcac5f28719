"""What the crawl's components read from the database, and the one way they read it.

`StoredRecords` (an extension, settings' EXTENSIONS) reads once what every stored record
holds, for every component that needs it. `read_store` runs one read (an `ArticleStore`
read method) on a store of its own, with the one error handling: a database that cannot
answer is a warning and None, and the caller goes on without what it wanted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pymongo.errors import PyMongoError
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.settings import BaseSettings

from pipelines.mongo import MongoPipeline, store_from_settings
from pipelines.storage import ArticleStore, KnownRecords

logger = logging.getLogger(__name__)

T = TypeVar("T")
DIGEST_ONLY = "digest"  # body_kind of a rolling-news digest


def read_store(settings: BaseSettings, read: Callable[[ArticleStore], T], what: str,
               otherwise: str) -> T | None:
    """`read` on a store of the crawl's database (closed after). None when the database
    cannot answer (no MONGO_URI, the server away), logged once: `what` is unknown, and
    `otherwise` says what the crawl does instead."""
    store: ArticleStore | None = None
    try:
        store = store_from_settings(settings)
        return read(store)
    except (PyMongoError, NotConfigured) as exc:
        logger.warning("%s unknown (%s): %s", what, exc, otherwise)
        return None
    finally:
        if store is not None:
            store.close()


@dataclass
class StoredSnapshot:
    """What every stored record holds that a crawl decides from, read once."""

    known: KnownRecords  # categories, tags, URLs and last_seen_at of each record
    ids: set[str]  # every stored article
    share_pending: set[str]  # stored, but its share text failed for a reason that may pass
    digest_only: set[str]  # stored with a rolling-news digest as its body
    final_reject_urls: set[str]  # pages rejected for a reason that does not pass

    @classmethod
    def read(cls, store: ArticleStore) -> StoredSnapshot:
        snapshot = cls(KnownRecords(), set(), set(), set(), store.final_reject_urls())
        for doc in store.record_summaries():
            snapshot.known.put(doc)
            snapshot.ids.add(doc["_id"])
            if doc.get("share_pending"):
                snapshot.share_pending.add(doc["_id"])
            if doc.get("body_kind") == DIGEST_ONLY:
                snapshot.digest_only.add(doc["_id"])
        return snapshot


class StoredRecords:
    """Extension: what every stored record holds, read once for the whole crawl.

    The incremental filter, the finews spider (the categories a rerun starts from) and
    MongoPipeline's store (which listings add nothing) all need it. The first to ask
    `snapshot()` has it read, the others get the same one: no component depends on
    which of them runs first. The records known to the store are handed to MongoPipeline
    as they are read (`MongoPipeline.known_records_loaded`): pipelines never import
    newscrawl, so the pipeline cannot ask this extension itself. A store given none
    reads them at its first listing.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._snapshot: StoredSnapshot | None = None
        self._asked = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StoredRecords:
        return cls(crawler)

    @classmethod
    def of(cls, crawler: Crawler) -> StoredRecords:
        """The crawl's instance (crawler.get_extension); an error when EXTENSIONS lacks it."""
        extension = crawler.get_extension(cls)
        if extension is None:
            raise RuntimeError(f"{cls.__module__}.{cls.__name__} is not enabled (EXTENSIONS): "
                               "nothing reads the stored records")
        return extension

    def snapshot(self) -> StoredSnapshot | None:
        """What is stored, read at the first call; None when the database cannot say (logged
        once: then every article page is fetched, and a rerun starts from home alone)."""
        if not self._asked:
            self._asked = True
            started = time.monotonic()
            self._snapshot = read_store(self.crawler.settings, StoredSnapshot.read, "stored records",
                                        "every article page is fetched")
            if self._snapshot is not None:
                self._count(len(self._snapshot.ids), time.monotonic() - started)
                self._hand_to_storage(self._snapshot.known)
        return self._snapshot

    def _count(self, records: int, seconds: float) -> None:
        logger.info("read %d stored records in %.1f s", records, seconds)
        stats = self.crawler.stats
        stats.set_value("newscrawl/stored_records/read", records)
        stats.set_value("newscrawl/stored_records/milliseconds", round(seconds * 1000))

    def _hand_to_storage(self, known: KnownRecords) -> None:
        try:
            pipeline = self.crawler.get_item_pipeline(MongoPipeline)
        except RuntimeError:  # no engine yet, so no pipeline either
            return
        if pipeline is not None:
            pipeline.known_records_loaded(known)
            self.crawler.stats.set_value("newscrawl/stored_records/handed_to_storage", 1)
