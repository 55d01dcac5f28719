"""MongoDB storage of article records, without Scrapy.

`ArticleStore.write` takes a batch of sightings, reads the records they touch
in one query, folds the sightings in (pipelines.records), and writes the
result in one unordered bulk write. Transient errors are retried with
backoff; `Spool` keeps what could not be written as JSON lines for
`newscrawl replay`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util
from pymongo import ASCENDING, InsertOne, MongoClient, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from pipelines.records import bson_time, duplicate_links, merge_batch

logger = logging.getLogger(__name__)

Document = dict[str, Any]

# Errors after which the same write may succeed later.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError, ExecutionTimeout, WTimeoutError,
)

ARTICLE_INDEXES: list[tuple[str, list[tuple[str, int]]]] = [
    ("published_at", [("published_at", ASCENDING)]),
    ("source_slug_published_at", [("source_slug", ASCENDING), ("published_at", ASCENDING)]),
    ("categories", [("categories", ASCENDING)]),
    ("content_hash", [("content_hash", ASCENDING)]),
]
MAX_CONFLICT_ROUNDS = 5
DUPLICATE_KEY = 11000
MAX_FERRETDB_OPS = 16


class StorageUnavailable(RuntimeError):
    """The database stayed away through every retry."""


def is_ferretdb(db: Database[Document]) -> bool:
    return "ferretdbVersion" in db.client.admin.command("buildInfo")


def ensure_indexes(db: Database[Document], collection: str, rejects: str) -> list[str]:
    """Create the collection's indexes; returns warnings for what the server lacks."""
    coll = db[collection]
    for name, keys in ARTICLE_INDEXES:
        coll.create_index(keys, name=name)
    db[rejects].create_index([("rejected_at", ASCENDING)], name="rejected_at")
    warnings: list[str] = []
    try:
        coll.create_index(
            [("title", "text"), ("text", "text")], name="title_text",
            default_language="none",  # no stemmer knows Chinese; tokens as written
        )
    except OperationFailure as exc:
        warnings.append(
            f"text index on title and text not created ({exc.code}: the server lacks text "
            "indexes, e.g. FerretDB); text queries fall back to a regex scan"
        )
    return warnings


@dataclass
class WriteReport:
    outcomes: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    duplicates_linked: int = 0
    orphans: int = 0


def with_retries(
    action: Callable[[], Any], *, times: int, backoff: float, what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run `action`, retrying transient database errors with exponential backoff."""
    delay = backoff
    for attempt in range(times + 1):
        try:
            return action()
        except TRANSIENT_ERRORS as exc:
            if attempt == times:
                raise StorageUnavailable(f"{what}: {exc}") from exc
            logger.warning("%s failed (%s), retry %d/%d in %.1fs", what, exc, attempt + 1, times,
                           delay)
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class ArticleStore:
    def __init__(self, db: Database[Document], collection: str = "articles",
                 rejects: str = "rejects") -> None:
        self.db = db
        self.articles: Collection[Document] = db[collection]
        self.rejects: Collection[Document] = db[rejects]
        self._ferretdb: bool | None = None
        self._written_hashes: set[str] = set()

    @classmethod
    def connect(cls, uri: str, database: str, collection: str = "articles",
                rejects: str = "rejects", *, timeout_ms: int = 5000) -> ArticleStore:
        client: MongoClient[Document] = MongoClient(
            uri, tz_aware=True, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
            # A server that stops answering must fail the write (retry, then spool), not hang it.
            socketTimeoutMS=120_000, appname="newscrawl",
        )
        return cls(client[database], collection, rejects)

    def close(self) -> None:
        self.db.client.close()

    def write(self, sightings: Iterable[Mapping[str, Any]], now: datetime | None = None) -> WriteReport:
        """Fold sightings into their records and write them. Idempotent: safe to redo."""
        now = bson_time(now or datetime.now(UTC))
        by_id: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for sighting in sightings:
            by_id[sighting["_id"]].append(sighting)
        # Articles first seen in this batch take their first sighting with a page.
        for group in by_id.values():
            group.sort(key=lambda s: s["page_kind"] == "listing")
        report = WriteReport()
        pending = dict(by_id)
        for _ in range(MAX_CONFLICT_ROUNDS):
            if not pending:
                break
            lost = self._write_round(pending, now, report)
            report.conflicts += len(lost)
            pending = {article_id: by_id[article_id] for article_id in lost}
        else:
            raise StorageUnavailable(f"articles {sorted(pending)} kept changing under us")
        # Another writer may have stored a copy of the same text meanwhile: link again
        # from what is stored now. (A narrow window remains; a full fix needs a lock per text.)
        report.duplicates_linked += self._relink(self._written_hashes)
        self._written_hashes = set()
        return report

    def _relink(self, hashes: set[str]) -> int:
        """`duplicate_of` of every record sharing these hashes, read again after writing."""
        if not hashes:
            return 0
        groups: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        projection = {"_id": 1, "published_at": 1, "content_hash": 1, "duplicate_of": 1}
        for doc in self.articles.find({"content_hash": {"$in": sorted(hashes)}}, projection):
            groups[doc["content_hash"]][doc["_id"]] = doc
        ops: list[Any] = []
        for content_hash, group in groups.items():
            for article_id, duplicate_of in duplicate_links(group.values()).items():
                if group[article_id].get("duplicate_of") != duplicate_of:
                    ops.append(UpdateOne({"_id": article_id, "content_hash": content_hash},
                                         {"$set": {"duplicate_of": duplicate_of}}))
        if ops:
            self._bulk_write(self.articles, ops)
        return len(ops)

    def _write_round(self, by_id: Mapping[str, list[Mapping[str, Any]]], now: datetime,
                     report: WriteReport) -> set[str]:
        """One read-merge-write pass; returns the ids another writer changed meanwhile."""
        stored = {doc["_id"]: doc for doc in self.articles.find({"_id": {"$in": list(by_id)}})}
        merged: dict[str, Document] = {}
        outcomes: dict[str, str] = {}
        for article_id, group in by_id.items():
            if article_id not in stored and all(s["page_kind"] == "listing" for s in group):
                report.orphans += 1  # its record went away since the filter saw it
                continue
            result = merge_batch(stored.get(article_id), group, now)
            merged[article_id], outcomes[article_id] = result.record, result.outcome
        links = self._duplicate_links(merged, stored)
        for article_id, duplicate_of in links.items():
            if article_id in merged:
                merged[article_id]["duplicate_of"] = duplicate_of
        ops: list[InsertOne[Document] | ReplaceOne[Document] | UpdateOne] = []
        replaced: list[str] = []
        op_ids: list[str] = []  # the article each op writes, by op index
        for article_id, record in merged.items():
            old = stored.get(article_id)
            if old is None:
                # A plain insert: a concurrent writer's copy makes it a duplicate-key error.
                # (Not $setOnInsert: FerretDB drops its null and empty-array fields.)
                ops.append(InsertOne(record))
                op_ids.append(article_id)
            elif record != old:
                # Guarded by what we read: a concurrent writer makes this match nothing.
                guard = {"_id": article_id, "revision": old["revision"],
                         "last_seen_at": old["last_seen_at"]}
                ops.append(ReplaceOne(guard, record))
                op_ids.append(article_id)
                replaced.append(article_id)
        for article_id, duplicate_of in links.items():
            if article_id not in merged:
                ops.append(UpdateOne({"_id": article_id}, {"$set": {"duplicate_of": duplicate_of}}))
                op_ids.append(article_id)
                report.duplicates_linked += 1
        lost: set[str] = set()
        if ops:
            matched, duplicate_keys = self._bulk_write(self.articles, ops)
            lost = {op_ids[index] for index in duplicate_keys}
            inserts = sum(isinstance(op, InsertOne) for op in ops)
            if matched < len(ops) - inserts:
                lost |= self._lost_writes({aid: merged[aid] for aid in replaced})
        for article_id, outcome in outcomes.items():
            if article_id not in lost:
                report.outcomes[outcome] += 1
        return lost

    def _bulk_write(self, collection: Collection[Document], ops: list[Any]) -> tuple[int, list[int]]:
        """Unordered bulk writes; returns the matched count and the indexes of duplicate keys.

        On FerretDB the ops go in commands of MAX_FERRETDB_OPS: its SQLite
        backend holds a pooled connection per update statement until the
        command ends and deadlocks at 100 (v1.24.2).
        """
        step = MAX_FERRETDB_OPS if self.ferretdb else max(len(ops), 1)
        matched = 0
        duplicate_keys: list[int] = []
        for start in range(0, len(ops), step):
            try:
                matched += collection.bulk_write(ops[start:start + step], ordered=False).matched_count
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(error.get("code") != DUPLICATE_KEY for error in errors):
                    raise
                duplicate_keys += [start + error["index"] for error in errors]
                matched += exc.details.get("nMatched", 0)
        return matched, duplicate_keys

    @property
    def ferretdb(self) -> bool:
        if self._ferretdb is None:
            self._ferretdb = is_ferretdb(self.db)
            if self._ferretdb:
                logger.warning("the server is FerretDB: bulk writes go in commands of %d ops, "
                               "and there is no text index", MAX_FERRETDB_OPS)
        return self._ferretdb

    def _lost_writes(self, merged: Mapping[str, Document]) -> set[str]:
        """Ids whose stored document is not what this round wrote (a concurrent writer won)."""
        now_stored = {doc["_id"]: doc for doc in self.articles.find({"_id": {"$in": list(merged)}})}
        return {article_id for article_id, record in merged.items()
                if now_stored.get(article_id) != record}

    def _duplicate_links(self, merged: Mapping[str, Document],
                         stored: Mapping[str, Document]) -> dict[str, str | None]:
        """New `duplicate_of` values for every record sharing a hash with this batch."""
        hashes = {r["content_hash"] for aid, r in merged.items()
                  if aid not in stored or stored[aid]["content_hash"] != r["content_hash"]}
        self._written_hashes |= hashes
        if not hashes:
            return {}
        groups: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        projection = {"_id": 1, "published_at": 1, "content_hash": 1, "duplicate_of": 1}
        for doc in self.articles.find({"content_hash": {"$in": sorted(hashes)}}, projection):
            groups[doc["content_hash"]][doc["_id"]] = doc
        for article_id, record in merged.items():
            if record["content_hash"] in hashes:
                groups[record["content_hash"]][article_id] = record
            else:
                groups[record["content_hash"]].pop(article_id, None)
        changes: dict[str, str | None] = {}
        for group in groups.values():
            for article_id, duplicate_of in duplicate_links(group.values()).items():
                if group[article_id].get("duplicate_of") != duplicate_of or article_id in merged:
                    changes[article_id] = duplicate_of
        return changes

    def write_rejects(self, rejects: Iterable[Mapping[str, Any]]) -> int:
        """Upsert rejects keyed by URL and reason, so a rerun does not repeat them."""
        ops = []
        for reject in rejects:
            key = hashlib.sha1(f"{reject['url']}\n{reject['reason']}".encode()).hexdigest()
            doc = {k: v for k, v in reject.items() if k != "rejected_at"}
            ops.append(UpdateOne(
                {"_id": key},
                {"$set": doc, "$setOnInsert": {"first_rejected_at": reject["rejected_at"]},
                 "$max": {"rejected_at": reject["rejected_at"]}, "$inc": {"times": 1}},
                upsert=True,
            ))
        if ops:
            self._bulk_write(self.rejects, ops)
        return len(ops)


class Spool:
    """Sightings and rejects the database could not take, as extended-JSON lines on disk."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def append(self, kind: str, records: Iterable[Mapping[str, Any]], name: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.{kind}.jsonl"
        with path.open("a", encoding="utf-8") as out:
            for record in records:
                out.write(json_util.dumps({"kind": kind, "record": record},
                                          json_options=json_util.RELAXED_JSON_OPTIONS,
                                          ensure_ascii=False) + "\n")
            out.flush()
        return path

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl")) if self.directory.exists() else []

    @staticmethod
    def read(path: Path) -> Iterator[tuple[str, Document]]:
        options = json_util.JSONOptions(tz_aware=True, tzinfo=UTC)
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    entry = json_util.loads(line, json_options=options)
                    yield entry["kind"], entry["record"]


def replay(store: ArticleStore, spool: Spool, *, batch_size: int = 500) -> Counter[str]:
    """Write every spooled file, then remove it; a failure leaves the file for next time."""
    totals: Counter[str] = Counter()
    for path in spool.files():
        sightings: list[Document] = []
        rejects: list[Document] = []
        for kind, record in spool.read(path):
            (sightings if kind == "sighting" else rejects).append(record)
        for start in range(0, len(sightings), batch_size):
            report = store.write(sightings[start:start + batch_size])
            totals.update(report.outcomes)
        totals["rejected"] += store.write_rejects(rejects)
        totals["files"] += 1
        path.unlink()
    return totals
