"""What the crawl's components read from the database, and the one way they read it.

`read_store` runs one read (an `ArticleStore` read method) on a store of its own, with
the one error handling: a database that cannot answer is a warning and None, and the
caller goes on without what it wanted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from pymongo.errors import PyMongoError
from scrapy.exceptions import NotConfigured
from scrapy.settings import BaseSettings

from pipelines.mongo import store_from_settings
from pipelines.storage import ArticleStore

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
