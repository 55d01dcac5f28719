"""MongoDB storage of article records, without Scrapy.

`ArticleStore.write` takes a batch of sightings, reads the stored records they
touch, plans the round of writes without the database (pipelines.write_plan:
the merged records, their duplicate and near-duplicate links) and executes the
plan in unordered bulk writes. Articles the store has not written yet are
inserted without a read: a duplicate key sends them back for another round, as
does a replace whose guard (the record's write counter) another writer moved.
Transient errors are retried with backoff; `Spool` keeps what could not be
written as JSON lines for `newscrawl replay`.

One algorithm for every server: what differs (an atomic guarded replace or
read-then-write, bulk chunks, where near-duplicate candidates come from) is
read once into `Capabilities` (pipelines.capabilities), which only the
executor and the near-duplicate linker's set-up consult.

A sighting that adds nothing to its record (a listing of a known article, in
categories, tags and at URLs the record has) is neither read nor written: from
its first listing sighting the store keeps what each stored record holds
(`KnownRecords`, one read of the collection); `last_seen_at` then moves only
once it is due (`pipelines.records.LAST_SEEN_RESOLUTION`), by a `$max` update.
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
from pymongo import ASCENDING, InsertOne, ReplaceOne, UpdateOne
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

from pipelines import neardup, search, word_index
from pipelines.capabilities import Capabilities
from pipelines.config import (
    DEFAULT_COLLECTION,
    DEFAULT_REJECTS_COLLECTION,
    StorageConfig,
    mongo_client,
    pid_alive,
)
from pipelines.counter import ANCHOR_PROOFS, CounterClock
from pipelines.dates import PROOF_UNPROVEN, TimeClaim
from pipelines.records import (
    KnownRecord,
    bson_time,
    last_seen_is_due,
    sighting_adds_nothing,
    time_claim,
)
from pipelines.write_plan import (
    WRITE_COUNTER,
    Insert,
    Replace,
    Update,
    Write,
    duplicate_changes,
    last_seen_writes,
    linked,
    merge_round,
    new_texts,
    plan_writes,
    relink_changes,
    write_id,
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
DUPLICATE_KEY = 11000
LINK_FIELDS = {"_id": 1, "published_at": 1, "content_hash": 1, "duplicate_of": 1}
KNOWN_FIELDS = {"categories": 1, "tags": 1, "urls": 1, "last_seen_at": 1}
TIME_FIELDS = {"_id": 1, "published_at": 1, "published_at_proof": 1, "published_at_shifted": 1}
IN_CHUNK = 500


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
    times_proven: int = 0  # unproven page times the article counter proved


def with_retries(
    action: Callable[[], Any], *, times: int, backoff: float, what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run `action`, retrying transient database errors with exponential backoff.

    Only a database error can be transient: anything else (a bug) goes up at once."""
    delay = backoff
    for attempt in range(times + 1):
        try:
            return action()
        except PyMongoError as exc:
            if not is_transient(exc):
                raise
            if attempt == times:
                raise StorageUnavailable(f"{what}: {describe(exc)}") from exc
            logger.warning("%s failed (%s), retry %d/%d in %.1fs", what, describe(exc), attempt + 1, times,
                           delay)
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


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


class CounterProofs:
    """The article counter's proofs (pipelines.counter) for one store: the anchors (records
    whose time is proven independently) and the unproven records, read from the collection
    once, then kept up with the store's writes."""

    def __init__(self) -> None:
        self.clock = CounterClock()
        self.unproven: dict[str, datetime] = {}  # id -> the page's time, kept

    @classmethod
    def load(cls, docs: Iterable[Mapping[str, Any]]) -> CounterProofs:
        proofs = cls()
        anchors = []
        for doc in docs:
            claim = time_claim(doc)
            if claim.proof == PROOF_UNPROVEN:
                proofs.unproven[doc["_id"]] = claim.at
            elif claim.proof in ANCHOR_PROOFS:
                anchors.append((doc["_id"], claim.at))
        proofs.clock.add_many(anchors)
        return proofs

    def observe(self, record: Mapping[str, Any]) -> None:
        """A record as written: an anchor, an unproven time, or neither."""
        claim = time_claim(record)
        self.clock.track(record["_id"], claim)
        if claim.proof == PROOF_UNPROVEN:
            self.unproven[record["_id"]] = claim.at
        else:
            self.unproven.pop(record["_id"], None)

    def prove(self, record: dict[str, Any]) -> bool:
        """Prove an unproven record's time by its counter, if the anchors decide; True if so."""
        if time_claim(record).proof != PROOF_UNPROVEN:
            return False
        claim = self.clock.prove(record["_id"], record["published_at"])
        if claim is None:
            return False
        record.update(published_at=claim.at, published_at_proof=claim.proof,
                      published_at_shifted=claim.shifted)
        return True

    def decide(self) -> dict[str, TimeClaim]:
        """What the anchors now prove of the unproven records."""
        found = ((article_id, self.clock.prove(article_id, shown))
                 for article_id, shown in self.unproven.items())
        return {article_id: claim for article_id, claim in found if claim is not None}


class ArticleStore:
    """Article records in one collection, rejects in another; see the module's docstring.

    Implements `neardup.StoredRecords` (`read`, `with_band_keys`, `linked_to`,
    `all_with_bands`): what the near-duplicate linker reads, by the store's rules.
    """

    def __init__(self, db: Database[Document], collection: str = DEFAULT_COLLECTION,
                 rejects: str = DEFAULT_REJECTS_COLLECTION, *,
                 capabilities: Capabilities | None = None) -> None:
        self.db = db
        self.articles: Collection[Document] = db[collection]
        self.rejects: Collection[Document] = db[rejects]
        self._capabilities = capabilities  # None: asked of the server at the first write
        self._known_ids: set[str] = set()  # stored, as far as this store knows: read before merging
        self._known: KnownRecords | None = None  # given (use_known) or read at the first listing
        self._linker: neardup.NearDuplicateLinker | None = None
        self._times: CounterProofs | None = None  # read at the first time new to the store
        self._times_changed = False  # a time was written: prove again at close
        self._word_index: word_index.WordIndex | bool | None = None  # False: the server has $text

    @classmethod
    def connect(cls, uri: str, database: str, collection: str = DEFAULT_COLLECTION,
                rejects: str = DEFAULT_REJECTS_COLLECTION, *, timeout_ms: int = 5000,
                capabilities: Capabilities | None = None) -> ArticleStore:
        return cls(mongo_client(uri, timeout_ms=timeout_ms)[database], collection, rejects,
                   capabilities=capabilities)

    @classmethod
    def from_config(cls, config: StorageConfig, *, timeout_ms: int = 5000,
                    capabilities: Capabilities | None = None) -> ArticleStore:
        """The store a StorageConfig names, its collections writing with its write concern."""
        return cls(config.database_on(mongo_client(config.uri, timeout_ms=timeout_ms)),
                   config.collection, config.rejects, capabilities=capabilities)

    @property
    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            self._capabilities = Capabilities.detect(self.db)
        return self._capabilities

    @property
    def word_index(self) -> word_index.WordIndex | None:
        """The postings of word search, where the server has no text index (FerretDB)."""
        if self._word_index is None:
            if self.capabilities.text_index:
                self._word_index = False
            else:
                index = word_index.WordIndex(self.articles)
                if not index.start_if_empty():
                    logger.warning("the word index of %s does not cover its older records (or "
                                   "holds an older format): `newscrawl query --text` scans them "
                                   "until `newscrawl index-words` has run", self.articles.name)
                self._word_index = index
        return self._word_index if isinstance(self._word_index, word_index.WordIndex) else None

    @property
    def linker(self) -> neardup.NearDuplicateLinker:
        if self._linker is None:
            source: neardup.CandidateSource = (
                neardup.MemoryCandidates(self) if self.capabilities.band_candidates == "memory"
                else neardup.IndexedCandidates(self))
            self._linker = neardup.NearDuplicateLinker(self, source)
        return self._linker

    def close(self) -> None:
        """Link again what only now can be seen (near-duplicate candidates kept in memory),
        disconnect."""
        try:
            if self._times_changed:
                # Anchors stored later in the run, or by another process, prove earlier records;
                # the run's anchors prove records earlier runs left unproven.
                proven, left = self.prove_stored_times()
                logger.info("at close, the article counter proved %d stored times (%d left unproven)",
                            proven, left)
            if self._linker is not None:
                linked = self._write_near_links(self._linker.at_close())
                if linked:
                    logger.info("linked %d near-duplicates again at close", linked)
        except PyMongoError as exc:
            logger.warning("times and near-duplicate links not checked again at close (%s): "
                           "`newscrawl prove-times` or the next write of those records will",
                           describe(exc))
        finally:
            if isinstance(self._word_index, word_index.WordIndex):
                self._word_index.close()
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
        return self.read(ids, {"title": 1, "published_at_raw": 1})

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
        written = WrittenTexts()
        pending = dict(by_id)
        for _ in range(MAX_CONFLICT_ROUNDS):
            if not pending:
                break
            lost = self._write_round(pending, now, report, written)
            pending = {article_id: by_id[article_id] for article_id in lost}
        else:
            raise StorageUnavailable(f"articles {sorted(pending)} kept changing under us")
        # Another writer may have stored a copy or a reprint of the same text meanwhile: link
        # again from what is stored now. (A narrow window remains; a full fix needs a lock per
        # text.)
        report.duplicates_linked += self._relink_duplicates(written.hashes)
        near = self.linker.after_write(written.records)
        if written.moved:
            near.update(self.linker.relink({aid: record for aid, record in written.moved.items()
                                            if record.get(neardup.BANDS_FIELD) is not None}))
        report.near_duplicates_linked += self._write_near_links(near)
        if self.word_index is not None:
            self.word_index.merge_beside()
        return report

    def use_known(self, known: KnownRecords) -> None:
        """What is known of the stored records, read by someone else (the incremental filter
        reads every stored record when the spider opens): this store need not read it again."""
        if self._known is None:
            self._known = known

    def _set_aside_known(self, by_id: dict[str, list[Mapping[str, Any]]],
                         report: WriteReport) -> None:
        """Take out of `by_id` the articles whose sightings add nothing; move their
        `last_seen_at` where it is due."""
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
        self._execute(last_seen_writes(due))
        for article_id, seen_at in due.items():
            self._known.seen(article_id, seen_at)
        report.last_seen_moved += len(due)

    def _write_round(self, by_id: Mapping[str, list[Mapping[str, Any]]], now: datetime,
                     report: WriteReport, written: WrittenTexts) -> set[str]:
        """One read-plan-write pass; returns the ids to write again in another round.

        Those are the ids another writer changed meanwhile (counted as conflicts)
        and the ids inserted unread that turned out to be stored already.
        """
        # A listing sighting cannot make a record: its article is read whoever wrote it.
        to_read = [article_id for article_id, group in by_id.items()
                   if article_id in self._known_ids or all(s["page_kind"] == "listing" for s in group)]
        stored = self.read(to_read)
        merged = merge_round(by_id, stored, now)
        report.orphans += merged.orphans  # their records went away since the filter saw them
        # Records whose time is new to the store: new anchors, or times to prove. (A listing
        # that only adds a category leaves the time as it was: nothing to read for it.)
        timed = {aid: r for aid, r in merged.records.items()
                 if aid not in stored or time_claim(stored[aid]) != time_claim(r)}
        if timed:
            times = self._counter_proofs()
            for record in timed.values():
                if times.prove(record):
                    report.times_proven += 1
                    if record["published_at_shifted"] and record["_id"] in stored:
                        written.moved[record["_id"]] = record  # earlier now: relink it
        hashes = new_texts(merged.records, stored)
        duplicates = duplicate_changes(merged.records, hashes, self._hash_groups(hashes))
        near_own, near_others = self.linker.plan(merged.text_changed)
        writes = plan_writes(merged.records, stored, {
            "duplicate_of": duplicates, neardup.LINK_FIELD: {**near_own, **near_others}})
        report.duplicates_linked += linked(writes, "duplicate_of")
        report.near_duplicates_linked += (sum(link is not None for link in near_own.values())
                                          + linked(writes, neardup.LINK_FIELD))
        # Postings of the records whose words or time changed, written beside them (a stored
        # record is always found); those indexed before are `rewritten` (older postings stale).
        to_index = {**merged.words_changed, **{aid: True for aid in timed if aid in stored}}
        index, records = self.word_index, merged.records
        with (index.adding([(aid, records[aid].get(search.WORDS_FIELD) or "",
                             records[aid].get("published_at")) for aid in to_index],
                           rewritten=[aid for aid, old in to_index.items() if old])
              if index is not None else contextlib.nullcontext()):
            lost = self._execute(writes)
        report.conflicts += len(lost & set(to_read))  # the others were inserted unread
        written.hashes |= hashes | {written.moved[aid]["content_hash"] for aid in written.moved}
        written.records.update(merged.text_changed)
        self._known_ids.update(by_id)
        for article_id, record in merged.records.items():
            if article_id not in lost:
                if self._known is not None:
                    self._known.put(record)
                if article_id in timed and self._times is not None:
                    self._times.observe(record)
                    self._times_changed = True
        for article_id, outcome in merged.outcomes.items():
            if article_id not in lost:
                report.outcomes[outcome] += 1
        return lost

    # --- times the article counter proves -----------------------------------------------------

    def _counter_proofs(self) -> CounterProofs:
        if self._times is None:
            self._times = CounterProofs.load(self.articles.find({}, TIME_FIELDS))
        return self._times

    def prove_stored_times(self) -> tuple[int, int]:
        """Prove the stored unproven times from the stored anchors (read again: another
        process may have stored some); relink what moved. Returns how many were proven,
        and how many stay unproven."""
        times = self._times = CounterProofs.load(self.articles.find({}, TIME_FIELDS))
        decided = times.decide()
        if not decided:
            return 0, len(times.unproven)
        if self.word_index is not None:
            self.word_index.mark_rewritten(decided)  # their postings hold the unproven times
        # Only while the record is as read: a share answer may have proven it meanwhile.
        self._execute([
            Update(article_id, set={"published_at": claim.at, "published_at_proof": claim.proof,
                                    "published_at_shifted": claim.shifted},
                   where={"published_at_proof": PROOF_UNPROVEN,
                          "published_at": times.unproven[article_id]})
            for article_id, claim in decided.items()])
        moved = [article_id for article_id, claim in decided.items() if claim.shifted]
        for article_id, claim in decided.items():
            times.observe({"_id": article_id, "published_at": claim.at,
                           "published_at_proof": claim.proof})
        if moved:
            # Earlier now: the original of its copies and reprints may change.
            records = self.read(moved, {**neardup.TEXT_FIELDS, "content_hash": 1})
            self._relink_duplicates({r["content_hash"] for r in records.values()})
            self._write_near_links(self.linker.relink({aid: r for aid, r in records.items()
                                                       if r.get(neardup.BANDS_FIELD) is not None}))
        return len(decided), len(times.unproven)

    def _write_near_links(self, links: neardup.Links) -> int:
        """Write near-duplicate links of records the round does not rewrite; how many."""
        if links:
            self._execute([Update(aid, set={neardup.LINK_FIELD: link}) for aid, link in links.items()])
        return len(links)

    # --- the executor: a plan's writes, as the server can take them ---------------------------

    def _execute(self, writes: list[Write]) -> set[str]:
        """Apply `writes` to the articles; returns the ids of the inserts and replaces that did
        not take (a concurrent writer won, or the record was stored already): to plan again."""
        atomic = self.capabilities.atomic_replace
        replaces = {write_id(w): w for w in writes if isinstance(w, Replace)}
        lost: set[str] = set()
        if replaces and not atomic:
            # The guard is a read by `_id` just before the write (a narrow window remains).
            now_stored = self.read(list(replaces), {"_id": 1, WRITE_COUNTER: 1})
            lost = {aid for aid, w in replaces.items()
                    if aid not in now_stored or now_stored[aid].get(WRITE_COUNTER) != w.guard}
        ops: list[InsertOne[Document] | ReplaceOne[Document] | UpdateOne] = []
        op_ids: list[str] = []
        for write in writes:
            article_id = write_id(write)
            if article_id in lost and not isinstance(write, Update):
                continue
            if isinstance(write, Insert):
                # A plain insert: a stored copy (another writer's, or one this store has not
                # read) makes it a duplicate-key error. (Not $setOnInsert: FerretDB drops
                # its null and empty-array fields.)
                ops.append(InsertOne(write.record))
            elif isinstance(write, Replace):
                guard = {"_id": article_id, WRITE_COUNTER: write.guard} if atomic else {"_id": article_id}
                ops.append(ReplaceOne(guard, write.record))
            else:
                update: dict[str, Any] = {"$inc": {WRITE_COUNTER: 1}}
                if write.set:
                    update["$set"] = dict(write.set)
                if write.max:
                    update["$max"] = dict(write.max)
                ops.append(UpdateOne({"_id": article_id, **write.where}, update))
            op_ids.append(article_id)
        if not ops:
            return lost
        matched, duplicate_keys = self._bulk_write(self.articles, ops)
        lost |= {op_ids[index] for index in duplicate_keys}
        inserts = sum(isinstance(op, InsertOne) for op in ops)
        if matched < len(ops) - inserts:
            # A guard matched nothing (or an updated record is gone): which replace lost?
            lost |= self._lost_writes({aid: w.record for aid, w in replaces.items() if aid not in lost})
        return lost

    def _bulk_write(self, collection: Collection[Document], ops: list[Any]) -> tuple[int, list[int]]:
        """Unordered bulk writes in commands of the server's chunk; returns the matched count
        and the indexes of duplicate keys."""
        step = self.capabilities.bulk_chunk or max(len(ops), 1)
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

    def _lost_writes(self, replaced: Mapping[str, Document]) -> set[str]:
        """Ids whose stored document is not what this round wrote (a concurrent writer won)."""
        now_stored = self.read(list(replaced))
        return {article_id for article_id, record in replaced.items()
                if now_stored.get(article_id) != record}

    # --- reads (and neardup.StoredRecords) ----------------------------------------------------

    def read(self, ids: Iterable[str], fields: Mapping[str, int] | None = None) -> dict[str, Document]:
        """The stored records of these ids (with `fields`, or whole)."""
        ids = sorted(set(ids))
        projection = dict(fields) if fields else None
        return {doc["_id"]: doc for chunk in chunks(ids)
                for doc in self.articles.find({"_id": {"$in": chunk}}, projection)}

    def with_band_keys(self, keys: Iterable[int]) -> list[Document]:
        found: dict[str, Document] = {}
        for chunk in chunks(sorted(set(keys))):
            for doc in self.articles.find({neardup.BANDS_FIELD: {"$in": chunk}}, neardup.CANDIDATE_FIELDS):
                found[doc["_id"]] = doc
        return list(found.values())

    def linked_to(self, ids: Iterable[str]) -> set[str]:
        return {doc["_id"] for chunk in chunks(sorted(set(ids)))
                for doc in self.articles.find({f"{neardup.LINK_FIELD}._id": {"$in": chunk}}, {"_id": 1})}

    def all_with_bands(self) -> Iterator[Document]:
        return self.articles.find({neardup.BANDS_FIELD: {"$exists": True}}, neardup.CANDIDATE_FIELDS)

    def _hash_groups(self, hashes: set[str]) -> dict[str, dict[str, Mapping[str, Any]]]:
        """The stored records (LINK_FIELDS) holding these texts, by content hash."""
        groups: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        for chunk in chunks(sorted(hashes)):
            for doc in self.articles.find({"content_hash": {"$in": chunk}}, LINK_FIELDS):
                groups[doc["content_hash"]][doc["_id"]] = doc
        return groups

    def _relink_duplicates(self, hashes: set[str]) -> int:
        """`duplicate_of` of every record sharing these texts, read again after writing."""
        if not hashes:
            return 0
        groups = self._hash_groups(hashes)
        changes = relink_changes(groups)
        if changes:
            held = {aid: content_hash for content_hash, group in groups.items() for aid in group}
            # Only while the record still holds that text.
            self._execute([Update(aid, set={"duplicate_of": duplicate_of},
                                  where={"content_hash": held[aid]})
                           for aid, duplicate_of in changes.items()])
        return len(changes)

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


@dataclass
class WrittenTexts:
    """What one `write` stored that may have a copy or a reprint another writer stored meanwhile."""

    hashes: set[str] = field(default_factory=set)
    records: dict[str, Document] = field(default_factory=dict)  # text new or changed
    moved: dict[str, Document] = field(default_factory=dict)  # stored, now proven 8 h earlier


def chunks(values: list[Any]) -> Iterator[list[Any]]:
    """`$in` lists of at most IN_CHUNK values: FerretDB (patched) serves an `$in` of up to
    1,000 values from its index (`_id` too) and matches a longer one against every document."""
    for start in range(0, len(values), IN_CHUNK):
        yield values[start:start + IN_CHUNK]


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

