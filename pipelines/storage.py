"""MongoDB storage of article records, without Scrapy.

`ArticleStore.write` takes a batch of sightings, reads the stored records they
touch, folds the sightings in (pipelines.records), and writes the result in
one unordered bulk write. Articles the store has not written yet are inserted
without a read: a duplicate key sends them back for a read-merge-write round.
Transient errors are retried with backoff; `Spool` keeps what could not be
written as JSON lines for `newscrawl replay`.

A sighting that adds nothing to its record (a listing of a known article, in
categories, tags and at URLs the record has) is neither read nor written: from
its first listing sighting the store keeps what each stored record holds
(`KnownRecords`, one read of the collection); `last_seen_at` then moves only
once it is due (`pipelines.records.LAST_SEEN_RESOLUTION`), by a `$max` update.

FerretDB 1.24.2 (SQLite) pushes down to SQL only a filter that is exactly
`{_id: <string>}` (indexed with the project's patch); any other filter decodes
every document of the collection, and its updates read and write outside a
transaction anyway. So on FerretDB the store reads ids one `_id` find each
(never `$in`), replaces on `_id` alone after reading the records again by `_id`
(a guard in the filter buys no atomicity there and costs a full scan), keeps
the content hashes in memory (`LocalHashIndex`) and links duplicates across
writers once, at `close`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bson import json_util
from bson.errors import BSONError
from pymongo import ASCENDING, InsertOne, MongoClient, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    ExecutionTimeout,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WTimeoutError,
)

from pipelines import neardup, search
from pipelines.records import (
    KnownRecord,
    bson_time,
    duplicate_links,
    last_seen_is_due,
    merge_batch,
    sighting_adds_nothing,
)

logger = logging.getLogger(__name__)

Document = dict[str, Any]

# Errors after which the same write may succeed later. A write-concern error is one:
# the write was applied, or not, on too few members; writing again is idempotent.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError, ExecutionTimeout, WTimeoutError,
    WriteConcernError,
)
# Errors that one document of a batch causes (too large, a string BSON cannot hold, a
# value out of range, a server-side write error): the batch is split to find it.
RECORD_ERRORS: tuple[type[Exception], ...] = (BSONError, UnicodeError, OverflowError)

ARTICLE_INDEXES: list[tuple[str, list[tuple[str, int]]]] = [
    ("published_at", [("published_at", ASCENDING)]),
    ("source_slug_published_at", [("source_slug", ASCENDING), ("published_at", ASCENDING)]),
    # Newest in a category: the category's entries in date order (MongoDB and FerretDB alike).
    ("categories_published_at", [("categories", ASCENDING), ("published_at", ASCENDING)]),
    ("content_hash", [("content_hash", ASCENDING)]),
    # near-duplicates (pipelines.neardup): candidates by band key, and the records linked to one
    ("minhash_bands", [("minhash_bands", ASCENDING)]),
    ("near_duplicate_of_id", [("near_duplicate_of._id", ASCENDING)]),
]
MAX_CONFLICT_ROUNDS = 5
WRITE_COUNTER = "writes"  # +1 on every write of a record: the guard against concurrent writers
DUPLICATE_KEY = 11000
MAX_FERRETDB_OPS = 16
LINK_FIELDS = {"_id": 1, "published_at": 1, "content_hash": 1, "duplicate_of": 1}
KNOWN_FIELDS = {"categories": 1, "tags": 1, "urls": 1, "last_seen_at": 1}
HASH_IN_CHUNK = 500


class StorageUnavailable(RuntimeError):
    """The database stayed away through every retry."""


def is_transient(exc: BaseException) -> bool:
    """Whether the same write may succeed later (retry it, then spool it)."""
    if isinstance(exc, BulkWriteError):
        # Some documents could not be written: only a write-concern failure is transient.
        errors = [e for e in exc.details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
        return not errors and bool(exc.details.get("writeConcernErrors"))
    return isinstance(exc, TRANSIENT_ERRORS)


def describe(exc: BaseException, limit: int = 500) -> str:
    """An error in one line of at most `limit` characters; a bulk error by its first error
    (its text would hold every document of the batch)."""
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or exc.details.get("writeConcernErrors") or [{}]
        message = f"code {errors[0].get('code')}: {errors[0].get('errmsg')}"
    else:
        message = str(exc)
    return f"{type(exc).__name__}: {' '.join(message.split())}"[:limit]


def blames_a_record(exc: BaseException) -> bool:
    """Whether a failed write is one document's fault: splitting the batch finds it."""
    if isinstance(exc, BulkWriteError):
        return not is_transient(exc)
    return isinstance(exc, RECORD_ERRORS)


def is_ferretdb(db: Database[Document]) -> bool:
    return "ferretdbVersion" in db.client.admin.command("buildInfo")


def ensure_indexes(db: Database[Document], collection: str, rejects: str) -> list[str]:
    """Create the collection's indexes; returns warnings for what the server lacks."""
    coll = db[collection]
    for name, keys in ARTICLE_INDEXES:
        coll.create_index(keys, name=name)
    db[rejects].create_index([("rejected_at", ASCENDING)], name="rejected_at")
    return search.ensure_text_index(coll)


@dataclass
class WriteReport:
    outcomes: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    duplicates_linked: int = 0
    near_duplicates_linked: int = 0
    orphans: int = 0
    known: int = 0  # articles whose sightings added nothing: neither read nor rewritten
    last_seen_moved: int = 0  # of those, the ones whose last_seen_at was due to move


def with_retries(
    action: Callable[[], Any], *, times: int, backoff: float, what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run `action`, retrying transient database errors with exponential backoff."""
    delay = backoff
    for attempt in range(times + 1):
        try:
            return action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == times:
                raise StorageUnavailable(f"{what}: {describe(exc)}") from exc
            logger.warning("%s failed (%s), retry %d/%d in %.1fs", what, describe(exc), attempt + 1, times,
                           delay)
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class LocalHashIndex:
    """content_hash -> the articles holding that text, in memory.

    FerretDB's stand-in for the `content_hash` index it never uses. It knows
    the collection as loaded and this store's writes since, not another
    writer's: `ArticleStore.close` links again from the collection.
    """

    def __init__(self) -> None:
        self.members: dict[str, list[str]] = {}
        self.links: dict[str, tuple[str, datetime, str | None]] = {}  # id -> hash, published_at, dup

    @classmethod
    def load(cls, articles: Collection[Document]) -> LocalHashIndex:
        index = cls()
        for doc in articles.find({}, LINK_FIELDS):
            if doc.get("content_hash"):
                index.put(doc)
        return index

    def put(self, record: Mapping[str, Any]) -> None:
        article_id, content_hash = record["_id"], record["content_hash"]
        old = self.links.get(article_id)
        if old is None or old[0] != content_hash:
            if old is not None:
                self._leave(article_id, old[0])
            self.members.setdefault(content_hash, []).append(article_id)
        self.links[article_id] = (content_hash, record["published_at"], record.get("duplicate_of"))

    def set_duplicate_of(self, article_id: str, duplicate_of: str | None) -> None:
        if article_id in self.links:
            content_hash, published_at, _ = self.links[article_id]
            self.links[article_id] = (content_hash, published_at, duplicate_of)

    def _leave(self, article_id: str, content_hash: str) -> None:
        members = self.members[content_hash]
        members.remove(article_id)
        if not members:
            del self.members[content_hash]

    def groups(self, hashes: Iterable[str]) -> dict[str, dict[str, Mapping[str, Any]]]:
        """What a `content_hash $in` find with LINK_FIELDS would return, grouped by hash."""
        groups: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        for content_hash in hashes:
            for article_id in self.members.get(content_hash, ()):
                _, published_at, duplicate_of = self.links[article_id]
                groups[content_hash][article_id] = {
                    "_id": article_id, "content_hash": content_hash,
                    "published_at": published_at, "duplicate_of": duplicate_of,
                }
        return groups


class KnownRecords:
    """What the store knows of every stored record from its first listing sighting on.

    Loaded once (one read of the collection), then kept up with this store's
    writes; it tells which sightings add nothing (`sighting_adds_nothing`).
    Another writer's additions are unknown here: a sighting bringing them
    again is merged as usual, which changes nothing.
    """

    def __init__(self, records: dict[str, KnownRecord] | None = None) -> None:
        self.records = records or {}

    @classmethod
    def load(cls, articles: Collection[Document]) -> KnownRecords:
        known = cls()
        for doc in articles.find({}, KNOWN_FIELDS):
            known.put(doc)
        return known

    def get(self, article_id: str) -> KnownRecord | None:
        return self.records.get(article_id)

    def put(self, record: Mapping[str, Any]) -> None:
        """Know a record (one with KNOWN_FIELDS at least; one without last_seen_at is not stored
        by this project and stays unknown)."""
        if record.get("last_seen_at") is not None:
            self.records[record["_id"]] = KnownRecord.of(record)

    def categories(self) -> list[str]:
        """Every category a known record was listed in, sorted."""
        return sorted(set().union(*(known.categories for known in self.records.values())))

    def seen(self, article_id: str, seen_at: datetime) -> None:
        known = self.records.get(article_id)
        if known is not None and seen_at > known.last_seen_at:
            self.records[article_id] = replace(known, last_seen_at=seen_at)


NO_DATABASE = "no database: set MONGO_URI, or start the local one with `newscrawl db start`"


def mongo_client(uri: str, *, appname: str = "newscrawl", timeout_ms: int = 5000,
                 socket_timeout_ms: int | None = 120_000, **options: Any) -> MongoClient[Document]:
    """A client with the project's options, for every caller: times in UTC (tz_aware), and
    a server that stops answering fails an operation (to retry, then spool), never hangs it.
    `options` go to MongoClient as they are (event_listeners, …)."""
    return MongoClient(uri, tz_aware=True, appname=appname, serverSelectionTimeoutMS=timeout_ms,
                       connectTimeoutMS=timeout_ms, socketTimeoutMS=socket_timeout_ms, **options)


class ArticleStore:
    def __init__(self, db: Database[Document], collection: str = "articles",
                 rejects: str = "rejects") -> None:
        self.db = db
        self.articles: Collection[Document] = db[collection]
        self.rejects: Collection[Document] = db[rejects]
        self._ferretdb: bool | None = None
        self._written_hashes: set[str] = set()
        self._unlinked_hashes: set[str] = set()  # FerretDB: written, to link again at close
        self._known_ids: set[str] = set()  # stored, as far as this store knows: read before merging
        self._hash_index: LocalHashIndex | None = None
        self._known: KnownRecords | None = None  # given (use_known) or read at the first listing
        self._near_duplicates: neardup.NearDuplicateLinker | None = None
        self._near_todo: dict[str, Document] = {}  # records whose text is new or changed

    @classmethod
    def connect(cls, uri: str, database: str, collection: str = "articles",
                rejects: str = "rejects", *, timeout_ms: int = 5000) -> ArticleStore:
        return cls(mongo_client(uri, timeout_ms=timeout_ms)[database], collection, rejects)

    def close(self) -> None:
        """Link again the texts written since the last link (FerretDB waits for this), disconnect."""
        try:
            if self._near_duplicates is not None and self.ferretdb:
                linked = self._near_duplicates.relink_written()
                logger.info("linked %d near-duplicates again at close", linked)
            if self._unlinked_hashes:
                linked = self._relink(self._unlinked_hashes)
                logger.info("linked %d duplicate texts again at close", linked)
                self._unlinked_hashes = set()
        except PyMongoError as exc:
            logger.warning("duplicate links not checked again at close (%s): the next write "
                           "of those texts will", exc)
        finally:
            self.db.client.close()

    def stored_categories(self) -> list[str]:
        """Every category a stored article was listed in, sorted."""
        return sorted(str(name) for name in self.articles.distinct("categories")
                      if isinstance(name, str) and name)

    def record_summaries(self) -> Iterator[Document]:
        """Every stored record's KNOWN_FIELDS, `body_kind` and `share_pending` (one read of the
        collection, of those fields alone): what a rerun decides from."""
        yield from self.articles.find({}, {**KNOWN_FIELDS, "body_kind": 1, "share_pending": 1})

    def final_reject_urls(self) -> set[str]:
        """The URLs of the rejects whose reason is final (not `retryable`): the pages that fail
        the same way every time."""
        return {doc["url"] for doc in self.rejects.find({}, {"url": 1, "retryable": 1})
                if isinstance(doc.get("url"), str) and not doc.get("retryable")}

    def headlines(self, ids: Iterable[str]) -> dict[str, Document]:
        """`title` and `published_at_raw` of the stored records among `ids`, by id."""
        ordered = sorted(set(ids))
        found: dict[str, Document] = {}
        # By `_id`, in chunks: FerretDB (patched) serves an `_id` $in of up to 1,000 values
        # from its index.
        for start in range(0, len(ordered), HASH_IN_CHUNK):
            chunk = ordered[start:start + HASH_IN_CHUNK]
            for doc in self.articles.find({"_id": {"$in": chunk}}, {"title": 1, "published_at_raw": 1}):
                found[doc["_id"]] = doc
        return found

    def digest_only_ids(self, since: datetime | None = None, until: datetime | None = None) -> list[str]:
        """Ids of the records whose body is a rolling-news digest only, published from `since`
        (inclusive) to `until` (exclusive), in id order. The bounds go by the `published_at`
        index; without them every record is read."""
        query: dict[str, Any] = {"body_kind": "digest"}
        bounds = {op: moment.astimezone(UTC) for op, moment in (("$gte", since), ("$lt", until))
                  if moment is not None}
        if bounds:
            query["published_at"] = bounds
        return [doc["_id"] for doc in self.articles.find(query, {"_id": 1}).sort("_id", ASCENDING)]

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
        self._set_aside_known(by_id, report)
        pending = dict(by_id)
        for _ in range(MAX_CONFLICT_ROUNDS):
            if not pending:
                break
            lost = self._write_round(pending, now, report)
            pending = {article_id: by_id[article_id] for article_id in lost}
        else:
            raise StorageUnavailable(f"articles {sorted(pending)} kept changing under us")
        # Another writer may have stored a copy of the same text meanwhile: link again
        # from what is stored now. (A narrow window remains; a full fix needs a lock per text.)
        # On FerretDB that read scans the collection: it is done once, at close.
        if self.ferretdb:
            self._unlinked_hashes |= self._written_hashes
        else:
            report.duplicates_linked += self._relink(self._written_hashes)
        self._written_hashes = set()
        # As for hashes: link again from what is stored now (MongoDB; FerretDB at close).
        todo, self._near_todo = self._near_todo, {}
        if todo and not self.ferretdb:
            report.near_duplicates_linked += self.near_duplicates.link(todo)
        return report

    def use_known(self, known: KnownRecords) -> None:
        """What is known of the stored records, read by someone else (the incremental filter
        reads every stored record when the spider opens): this store need not read it again."""
        if self._known is None:
            self._known = known

    def _set_aside_known(self, by_id: dict[str, list[Mapping[str, Any]]],
                         report: WriteReport) -> None:
        """Take out of `by_id` the articles whose sightings add nothing; move their
        `last_seen_at` where it is due (one `$max` per batch on MongoDB, one per id on FerretDB)."""
        if self._known is None:
            if not any(s["page_kind"] == "listing" for group in by_id.values() for s in group):
                return
            self._known = KnownRecords.load(self.articles)
        due: dict[str, datetime] = {}
        for article_id, group in list(by_id.items()):
            known = self._known.get(article_id)
            if known is None or not all(sighting_adds_nothing(known, s) for s in group):
                continue
            del by_id[article_id]
            report.known += 1
            report.outcomes["unchanged"] += 1
            seen_at = max(s["seen_at"] for s in group)
            if last_seen_is_due(known, seen_at):
                due[article_id] = seen_at
        if not due:
            return
        if self.ferretdb:
            ops = [UpdateOne({"_id": article_id}, {"$max": {"last_seen_at": seen_at},
                                                   "$inc": {WRITE_COUNTER: 1}})
                   for article_id, seen_at in due.items()]
            self._bulk_write(self.articles, ops)
        else:
            self.articles.update_many({"_id": {"$in": list(due)}},
                                      {"$max": {"last_seen_at": max(due.values())},
                                       "$inc": {WRITE_COUNTER: 1}})
        for article_id, seen_at in due.items():
            self._known.seen(article_id, seen_at)
        report.last_seen_moved += len(due)

    @property
    def near_duplicates(self) -> neardup.NearDuplicateLinker:
        if self._near_duplicates is None:
            self._near_duplicates = neardup.NearDuplicateLinker(self.articles, self.ferretdb,
                                                                self._bulk_write, WRITE_COUNTER)
        return self._near_duplicates

    def _relink(self, hashes: set[str]) -> int:
        """`duplicate_of` of every record sharing these hashes, read again after writing."""
        if not hashes:
            return 0
        groups = self._stored_hash_groups(hashes)
        ops: list[Any] = []
        changed: list[tuple[str, str | None]] = []
        for content_hash, group in groups.items():
            for article_id, duplicate_of in duplicate_links(group.values()).items():
                if group[article_id].get("duplicate_of") != duplicate_of:
                    ops.append(UpdateOne({"_id": article_id, "content_hash": content_hash},
                                         {"$set": {"duplicate_of": duplicate_of},
                                          "$inc": {WRITE_COUNTER: 1}}))
                    changed.append((article_id, duplicate_of))
        if ops:
            self._bulk_write(self.articles, ops)
            if self._hash_index is not None:
                for article_id, duplicate_of in changed:
                    self._hash_index.set_duplicate_of(article_id, duplicate_of)
        return len(ops)

    def _read(self, ids: list[str]) -> dict[str, Document]:
        """The stored records of these ids."""
        if not ids:
            return {}
        if self.ferretdb:
            # One indexed `_id` find each (tools/ferretdb/patches): FerretDB scans for an `$in`.
            found = (self.articles.find_one({"_id": article_id}) for article_id in ids)
            return {doc["_id"]: doc for doc in found if doc is not None}
        return {doc["_id"]: doc for doc in self.articles.find({"_id": {"$in": ids}})}

    def _write_round(self, by_id: Mapping[str, list[Mapping[str, Any]]], now: datetime,
                     report: WriteReport) -> set[str]:
        """One read-merge-write pass; returns the ids to write again in another round.

        Those are the ids another writer changed meanwhile (counted as conflicts)
        and the ids inserted unread that turned out to be stored already.
        """
        # A listing sighting cannot make a record: its article is read whoever wrote it.
        to_read = [article_id for article_id, group in by_id.items()
                   if article_id in self._known_ids or all(s["page_kind"] == "listing" for s in group)]
        stored = self._read(to_read)
        merged, outcomes, near_todo = self._merge(by_id, stored, now, report)
        links, near_others = self._link(merged, stored, near_todo, report)
        lost = self._changed_meanwhile(merged, stored) if self.ferretdb else set()
        ops, op_ids, replaced = self._write_ops(merged, stored, lost, links, near_others, report)
        if ops:
            matched, duplicate_keys = self._bulk_write(self.articles, ops)
            lost |= {op_ids[index] for index in duplicate_keys}
            inserts = sum(isinstance(op, InsertOne) for op in ops)
            if matched < len(ops) - inserts:
                lost |= self._lost_writes({aid: merged[aid] for aid in replaced})
        report.conflicts += len(lost & set(to_read))  # the others were inserted unread
        self._known_ids.update(by_id)
        self._remember(merged, links, lost)
        for article_id, outcome in outcomes.items():
            if article_id not in lost:
                report.outcomes[outcome] += 1
        return lost

    def _merge(self, by_id: Mapping[str, list[Mapping[str, Any]]], stored: Mapping[str, Document],
               now: datetime, report: WriteReport) -> tuple[dict[str, Document], dict[str, str],
                                                            dict[str, Document]]:
        """Each article's sightings merged into its stored record: the records, their outcomes
        and those whose text is new or changed (to look for near-duplicates)."""
        merged: dict[str, Document] = {}
        outcomes: dict[str, str] = {}
        near_todo: dict[str, Document] = {}
        for article_id, group in by_id.items():
            if article_id not in stored and all(s["page_kind"] == "listing" for s in group):
                report.orphans += 1  # its record went away since the filter saw it
                continue
            result = merge_batch(stored.get(article_id), group, now)
            merged[article_id], outcomes[article_id] = result.record, result.outcome
            search.annotate(result.record, stored.get(article_id))  # words, when title/text changed
            if neardup.annotate(result.record, stored.get(article_id)):  # minhash, when text changed
                near_todo[article_id] = result.record
        return merged, outcomes, near_todo

    def _link(self, merged: dict[str, Document], stored: Mapping[str, Document],
              near_todo: dict[str, Document],
              report: WriteReport) -> tuple[dict[str, str | None], dict[str, Any]]:
        """Exact and near duplicates: set on the merged records; returns the links of records
        not in this round (to update)."""
        links = self._duplicate_links(merged, stored)
        for article_id, duplicate_of in links.items():
            if article_id in merged:
                merged[article_id]["duplicate_of"] = duplicate_of
        # Near-duplicates (pipelines.neardup): written with the records; others' links updated.
        near_links, near_others = self.near_duplicates.plan(near_todo)
        for article_id, near_link in [*near_links.items(), *near_others.items()]:
            if article_id in merged:
                merged[article_id][neardup.LINK_FIELD] = near_link
        report.near_duplicates_linked += sum(link is not None for link in near_links.values())
        self._near_todo.update(near_todo)
        return links, near_others

    def _changed_meanwhile(self, merged: Mapping[str, Document], stored: Mapping[str, Document]) -> set[str]:
        """FerretDB matches any filter but `{_id}` by decoding the whole collection, so its
        guard is a read by _id just before the write (a narrow window remains)."""
        changing = [aid for aid, record in merged.items() if aid in stored and record != stored[aid]]
        now_stored = self._read(changing)
        return {aid for aid in changing if now_stored.get(aid) != stored[aid]}

    def _write_ops(self, merged: Mapping[str, Document], stored: Mapping[str, Document], lost: set[str],
                   links: Mapping[str, str | None], near_others: Mapping[str, Any],
                   report: WriteReport) -> tuple[list[Any], list[str], list[str]]:
        """The writes of a round, the article each op writes (by op index), the replaced ids."""
        ops: list[InsertOne[Document] | ReplaceOne[Document] | UpdateOne] = []
        replaced: list[str] = []
        op_ids: list[str] = []
        for article_id, record in merged.items():
            old = stored.get(article_id)
            if article_id in lost:
                continue
            if old is None:
                # A plain insert: a stored copy (another writer's, or one this store has not
                # read) makes it a duplicate-key error. (Not $setOnInsert: FerretDB drops
                # its null and empty-array fields.)
                record[WRITE_COUNTER] = 1
                ops.append(InsertOne(record))
                op_ids.append(article_id)
            elif record != old:
                # Guarded by the write counter we read: every write adds one, so any
                # concurrent write, even one that only added a category, makes this match
                # nothing (on MongoDB; FerretDB's guard is the read above).
                record[WRITE_COUNTER] = (old.get(WRITE_COUNTER) or 0) + 1
                guard = {"_id": article_id} if self.ferretdb else {
                    "_id": article_id, WRITE_COUNTER: old.get(WRITE_COUNTER)}
                ops.append(ReplaceOne(guard, record))
                op_ids.append(article_id)
                replaced.append(article_id)
        for link_field, others in (("duplicate_of", links), (neardup.LINK_FIELD, near_others)):
            for article_id, link in others.items():
                if article_id not in merged:
                    ops.append(UpdateOne({"_id": article_id}, {"$set": {link_field: link},
                                                               "$inc": {WRITE_COUNTER: 1}}))
                    op_ids.append(article_id)
                    if link_field == "duplicate_of":
                        report.duplicates_linked += 1
                    else:
                        report.near_duplicates_linked += 1
        return ops, op_ids, replaced

    def _remember(self, merged: Mapping[str, Document], links: Mapping[str, str | None],
                  lost: set[str]) -> None:
        """What this store now knows is stored (the known records, the local hash index)."""
        written = [record for article_id, record in merged.items() if article_id not in lost]
        if self._known is not None:
            for record in written:
                self._known.put(record)
        if self._hash_index is not None:
            for record in written:
                self._hash_index.put(record)
            for article_id, duplicate_of in links.items():
                if article_id not in merged:
                    self._hash_index.set_duplicate_of(article_id, duplicate_of)

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
                if (any(error.get("code") != DUPLICATE_KEY for error in errors)
                        or exc.details.get("writeConcernErrors")):
                    raise  # a record's fault (split the batch), or transient (retry it)
                duplicate_keys += [start + error["index"] for error in errors]
                matched += exc.details.get("nMatched", 0)
        return matched, duplicate_keys

    @property
    def ferretdb(self) -> bool:
        if self._ferretdb is None:
            self._ferretdb = is_ferretdb(self.db)
            if self._ferretdb:
                logger.warning(
                    "the server is FerretDB: bulk writes go in commands of %d ops; a replace is "
                    "guarded by reading the record again just before it, not atomically "
                    "(FerretDB's updates are not atomic); "
                    "content hashes are kept in memory and duplicates linked again at close; "
                    "there is no text index", MAX_FERRETDB_OPS)
        return self._ferretdb

    def _lost_writes(self, merged: Mapping[str, Document]) -> set[str]:
        """Ids whose stored document is not what this round wrote (a concurrent writer won)."""
        now_stored = self._read(list(merged))
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
        groups = self._hash_groups(hashes)
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

    def _hash_groups(self, hashes: set[str]) -> dict[str, dict[str, Mapping[str, Any]]]:
        """The stored records (LINK_FIELDS) holding these texts, by content hash."""
        if self.ferretdb:
            if self._hash_index is None:
                self._hash_index = LocalHashIndex.load(self.articles)
            return self._hash_index.groups(hashes)
        return self._stored_hash_groups(hashes)

    def _stored_hash_groups(self, hashes: set[str]) -> dict[str, dict[str, Mapping[str, Any]]]:
        groups: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        ordered = sorted(hashes)
        # In chunks: FerretDB (patched) serves an $in of up to 1,000 values from the index and
        # matches a longer one against every document, value by value (a crawl's close
        # relinks every text it wrote).
        for start in range(0, len(ordered), HASH_IN_CHUNK):
            chunk = ordered[start:start + HASH_IN_CHUNK]
            for doc in self.articles.find({"content_hash": {"$in": chunk}}, LINK_FIELDS):
                groups[doc["content_hash"]][doc["_id"]] = doc
        return groups

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


class SpoolError(OSError):
    """A batch could not be written to the spool (a full disk, a folder we may not write)."""


class Spool:
    """Sightings and rejects the database could not take, as extended-JSON lines on disk.

    Each process appends to files of its own (the name holds host, pid and a random
    part), whole lines at once under an exclusive lock, then fsyncs: a batch is
    on disk entirely or, when the disk is full, not at all (SpoolError). `replay`
    claims a file by renaming it before reading: a process still appending to the
    old name starts a new file, and two replays never take the same file.
    """

    CLAIMED = ".replaying-"  # <file>.jsonl.replaying-<host>-<pid>-<random>: taken by a replay
    BAD_LINES = "bad-lines.jsonl"  # in bad/: lines a replay could not read, with file and line

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.bad_lines = 0  # set aside by read()

    @staticmethod
    def unique_name(spider: str) -> str:
        """A file name no other process uses: spider, UTC time, host, pid, random part."""
        return (f"{spider}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{socket.gethostname()}-{os.getpid()}"
                f"-{secrets.token_hex(3)}")

    def append(self, kind: str, records: Iterable[Mapping[str, Any]], name: str) -> Path:
        path = self.directory / f"{name}.{kind}.jsonl"
        data = "".join(
            json_util.dumps({"kind": kind, "record": record},
                            json_options=json_util.RELAXED_JSON_OPTIONS, ensure_ascii=False) + "\n"
            for record in records).encode("utf-8")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._append_locked(path, data)
        except OSError as exc:
            raise SpoolError(exc.errno, f"spooling to {path}: {exc.strerror or exc}") from exc
        return path

    @staticmethod
    def _append_locked(path: Path, data: bytes) -> None:
        while True:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    continue  # a replay claimed it between our open and our lock: a new file
                before = os.fstat(fd).st_size
                try:
                    written = 0
                    while written < len(data):
                        written += os.write(fd, data[written:])
                    os.fsync(fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, before)  # no half batch, no torn line
                    raise
                return
            finally:
                os.close(fd)  # releases the lock

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("*.jsonl")) if self.directory.exists() else []

    def claim(self, path: Path) -> Path | None:
        """Take `path` for this process by renaming it; None when another took it first."""
        claimed = path.with_name(f"{path.name}{self.CLAIMED}{socket.gethostname()}-{os.getpid()}"
                                 f"-{secrets.token_hex(3)}")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            return None
        # An append that opened the old name before the rename finishes first.
        with claimed.open("rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        return claimed

    def abandoned(self) -> list[Path]:
        """Files claimed by a replay of this host that is gone (it stopped half-way)."""
        if not self.directory.exists():
            return []
        found = []
        prefix = f"{self.CLAIMED}{socket.gethostname()}-"
        for path in sorted(self.directory.glob(f"*.jsonl{self.CLAIMED}*")):
            owner = path.name.rpartition(prefix)[2].partition("-")[0]
            if owner.isdigit() and not pid_alive(int(owner)):
                found.append(path)
        return found

    def set_aside(self, path: Path, number: int, line: str, error: Exception) -> None:
        bad = self.directory / "bad"
        bad.mkdir(parents=True, exist_ok=True)
        name = path.name.partition(self.CLAIMED)[0]
        entry = {"file": name, "line": number, "error": f"{type(error).__name__}: {error}",
                 "text": line.rstrip("\n")}
        with (bad / self.BAD_LINES).open("a", encoding="utf-8", errors="surrogateescape") as out:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.bad_lines += 1
        logger.error("spool file %s, line %d: %s: set aside in %s", name, number, entry["error"],
                     bad / self.BAD_LINES)

    def read(self, path: Path) -> Iterator[tuple[str, Document]]:
        """The entries of a spool file; a line that cannot be read is set aside."""
        options = json_util.JSONOptions(tz_aware=True, tzinfo=UTC)
        with path.open(encoding="utf-8", errors="surrogateescape") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    entry = json_util.loads(line, json_options=options)
                    kind, record = entry["kind"], entry["record"]
                    if kind not in ("sighting", "reject") or not isinstance(record, dict):
                        raise ValueError(f"not a spooled sighting or reject: kind {kind!r}")
                    if kind == "sighting" and not isinstance(record.get("_id"), str):
                        raise ValueError("a sighting without an article id")
                except (ValueError, KeyError, TypeError) as exc:
                    self.set_aside(path, number, line, exc)
                    continue
                yield kind, record


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def replay(store: ArticleStore, spool: Spool, *, batch_size: int = 500) -> Counter[str]:
    """Write every spooled file, then remove it; a failure leaves it claimed for the next replay.

    Each file is first claimed (renamed): two replays at once, or a replay while a
    crawl appends, neither read a line twice nor lose one. Lines that cannot be read
    are set aside (`bad/bad-lines.jsonl`, with file and line number) and counted.
    """
    totals: Counter[str] = Counter()
    for path in spool.abandoned() + spool.files():
        claimed = spool.claim(path)
        if claimed is None:
            continue  # another replay has it
        sightings: list[Document] = []
        rejects: list[Document] = []
        bad_before = spool.bad_lines
        for kind, record in spool.read(claimed):
            (sightings if kind == "sighting" else rejects).append(record)
        totals["bad_lines"] += spool.bad_lines - bad_before
        for start in range(0, len(sightings), batch_size):
            report = store.write(sightings[start:start + batch_size])
            totals.update(report.outcomes)
        totals["rejected"] += store.write_rejects(rejects)
        totals["files"] += 1
        claimed.unlink()
    return +totals

