"""A word index for servers without text indexes (FerretDB): postings in segments.

MongoDB's `$text` ranks a record by a score that depends on its own `words` only
(pipelines.search.term_score: how often and how densely each query word occurs),
never on the rest of the collection. So each word's score in each record can be
computed once, when the record is written, and kept with the word: a posting
`(article id, score, published_at)`. A query reads the postings of its words,
intersects them (every word must be held), sums the scores in the query's order,
orders by score, time and id, and reads only the records it returns. A phrase
orders its candidates by the postings' times and reads their `text` newest first.

Postings live in `<articles>_words`, in segments, as a log-structured merge
tree keeps them (Lucene's segments, LevelDB's tables):

- each write of the store adds one small segment: the postings of the records
  whose words or time it (re)wrote, written *before* the records, so a stored
  record always has its postings;
- a segment is split in buckets by a hash of the word (`<segment>/<bucket>`
  documents: zlib-compressed, about `BUCKET_BYTES` before), so a word costs one
  bucket read per segment;
- a segment counts once its registry document (`segment:<id>`, one insert, so
  atomic) is stored; a merge writes one bigger segment whose registry names the
  segments it replaces, then deletes those. `TIER_FANOUT` segments of one size
  tier merge into one of the next tier (a lock document keeps merges one at a
  time), so there are at most `TIER_FANOUT - 1` segments per tier.

Postings are never rewritten in place. A record indexed again (its words or its
time changed), or whose time a later proof moved, has its id in a newer
segment's `rewritten` list: its older postings may be stale, so the query checks
those records (and any with two different postings for one word) against the
stored record before ranking them.

Pure parts first (scoring, the segment format, bucketing, the ranking); then
`WordIndex`, the one class that talks to the server.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import secrets
import struct
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.cursor import Cursor
from pymongo.errors import DuplicateKeyError

from pipelines import search

logger = logging.getLogger(__name__)

Document = dict[str, Any]

SUFFIX = "_words"  # the index of collection `articles` is `articles_words`
STATE_ID = "state"
LOCK_ID = "merge-lock"
SEGMENT_PREFIX = "segment:"
BUCKET_BYTES = 32 * 1024  # a bucket document's postings, about (before compression)
MAX_BUCKETS = 4096
TIER_FANOUT = 8  # segments of one tier merged into one of the next
MAX_MERGED_POSTINGS = 4_000_000  # no merge makes a segment bigger (memory of the merging process)
LOCK_SECONDS = 600

_WORD_HEADER = struct.Struct("<II")  # word length in bytes (hostile words are long), postings
# An id (18 digits fit 64 bits), the word's score, the record's `published_at` (ms since
# 1970, UTC): side by side, so a record's three repeat together, which zlib finds.
_POSTING = struct.Struct("<Qdq")
NO_TIME = -(2 ** 63)  # a record without `published_at`: last, as the scan sorts it
_POSTING_BYTES = _POSTING.size


# --- scores and postings of records (pure) ----------------------------------------------------

def record_postings(words: str) -> dict[str, float]:
    """Each distinct word of a `words` field, with its MongoDB text score in that record.
    (The score depends on the word's count only, given the record: computed once a count.)"""
    tokens = words.split()
    total = len(tokens)
    counts = Counter(tokens)
    if total == 1:
        return {words: search.term_score(1, 1, True)}
    by_count = {count: search.term_score(count, total, False) for count in set(counts.values())}
    return {word: by_count[count] for word, count in counts.items()}


def time_ms(moment: Any) -> int:
    """`published_at` as postings keep it: milliseconds since 1970 (BSON's precision)."""
    if not isinstance(moment, datetime):
        return NO_TIME
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Postings:
    """Postings by word: (id, score, time) packed side by side (a record's id, time and
    score, the same for each of its words seen as often, repeat within a few kilobytes:
    zlib keeps a fraction of them)."""
    pairs: dict[str, bytearray] = field(default_factory=dict)

    def add(self, article_id: str, words: str, published_at: Any = None) -> None:
        number, published = int(article_id), time_ms(published_at)
        pairs, pack = self.pairs, _POSTING.pack
        for word, score in record_postings(words).items():
            try:
                pairs[word] += pack(number, score, published)
            except KeyError:
                pairs[word] = bytearray(pack(number, score, published))

    def extend(self, word: str, packed: bytes) -> None:
        try:
            self.pairs[word] += packed
        except KeyError:
            self.pairs[word] = bytearray(packed)

    @property
    def count(self) -> int:
        return sum(len(packed) for packed in self.pairs.values()) // _POSTING_BYTES


def bucket_of(word: str, buckets: int) -> int:
    return zlib.crc32(word.encode()) % buckets


def bucket_count(postings: int) -> int:
    """Buckets for a segment of `postings`: about BUCKET_BYTES each, a power of two."""
    wanted = postings * _POSTING_BYTES // BUCKET_BYTES
    count = 1
    while count < wanted and count < MAX_BUCKETS:
        count *= 2
    return count


def pack_buckets(postings: Postings, buckets: int) -> dict[int, bytes]:
    """The segment's bucket documents' data: per word, its name and its postings;
    zlib-compressed (level 1: bytes are what a FerretDB read and write cost)."""
    parts: dict[int, list[bytes | bytearray]] = defaultdict(list)
    for word, packed in postings.pairs.items():
        name = word.encode()
        parts[bucket_of(word, buckets)] += (
            _WORD_HEADER.pack(len(name), len(packed) // _POSTING_BYTES), name, packed)
    return {bucket: zlib.compress(b"".join(chunks), 1) for bucket, chunks in parts.items()}


def unpack_bucket(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(word, its packed postings) of a bucket's data."""
    view = memoryview(zlib.decompress(data))
    at = 0
    while at < len(view):
        name_len, count = _WORD_HEADER.unpack_from(view, at)
        at += _WORD_HEADER.size
        word = bytes(view[at:at + name_len]).decode()
        at += name_len
        yield word, bytes(view[at:at + _POSTING_BYTES * count])
        at += _POSTING_BYTES * count


def word_in_bucket(data: bytes, word: str) -> bytes:
    """The packed postings of one word in a bucket's data (empty if it has none)."""
    wanted = word.encode()
    view = memoryview(zlib.decompress(data)) if data else memoryview(b"")
    at = 0
    while at < len(view):
        name_len, count = _WORD_HEADER.unpack_from(view, at)
        at += _WORD_HEADER.size
        if view[at:at + name_len] == wanted:
            at += name_len
            return bytes(view[at:at + _POSTING_BYTES * count])
        at += name_len + _POSTING_BYTES * count
    return b""


def postings_of(packed: bytes) -> Iterator[tuple[int, float, int]]:
    """(id, score, time) of packed postings."""
    return _POSTING.iter_unpack(packed)


def tier_of(postings: int) -> int:
    """Size tier: segments within a factor TIER_FANOUT of each other share one."""
    tier, size = 0, max(postings, 1)
    while size >= TIER_FANOUT:
        size //= TIER_FANOUT
        tier += 1
    return tier


# --- the ranking (pure) -----------------------------------------------------------------------

TermPostings = dict[int, tuple[float, int]]  # id -> (score, time)


@dataclass
class Candidates:
    """Records holding every query word: their scores and times from the postings."""
    scores: dict[int, float]
    times: dict[int, int]
    to_check: set[int]  # postings may be stale: score and time them from the stored record


def intersect(per_term: Sequence[TermPostings], conflicting: set[int]) -> Candidates:
    """Records in every term's postings, scores summed in the query's order (as `text_score`)."""
    if not per_term:
        return Candidates({}, {}, set())
    first = per_term[0]
    if len(per_term) == 1:
        return Candidates({n: p[0] for n, p in first.items()}, {n: p[1] for n, p in first.items()},
                          conflicting & first.keys())
    smallest = min(per_term, key=len)
    scores: dict[int, float] = {}
    times: dict[int, int] = {}
    for number in smallest:
        total = 0.0
        for postings in per_term:
            posting = postings.get(number)
            if posting is None:
                break
            total += posting[0]
            if posting[1] != first[number][1]:
                conflicting.add(number)  # one word's posting older than another's: stale
        else:
            scores[number], times[number] = total, first[number][1]
    return Candidates(scores, times, conflicting & scores.keys())


def merge_term_postings(parts: Iterable[bytes], rewritten: set[int]) -> tuple[TermPostings, set[int]]:
    """One term's postings from all segments: the score and time of each record, and the
    records to check (rewritten ones, and any with two different postings: the highest is
    kept, an upper bound of the stored record's)."""
    postings: TermPostings = {}
    conflicting: set[int] = set()
    for packed in parts:
        part = {number: (score, published) for number, score, published in postings_of(packed)}
        for number in part.keys() & postings.keys():  # a record in two segments: rare
            if part[number] != postings[number]:
                conflicting.add(number)
                part[number] = max(part[number], postings[number])
        postings.update(part)
    return postings, conflicting | (rewritten & postings.keys())


def article_id(number: int) -> str:
    return f"{number:018d}"


def rank(candidates: Candidates, fetch: Callable[[list[str]], Mapping[str, Document]],
         check: Callable[[Document], tuple[float, int]], limit: int) -> list[Document]:
    """The best `limit` records (0: all) by score, then newest, then id; `score` set on each.

    The postings give every candidate's score and time, so the order is known before any
    record is read: `fetch` reads the first ones (whole; those gone or left out by the
    query's other filters are not returned) until `limit` are taken. A record to check
    gets its score and time from its stored words and `published_at` (`check`: score 0
    when it no longer holds every word); if they differ, it goes back in line.
    """
    heap = [(-score, -candidates.times[number], -number) for number, score in candidates.scores.items()]
    heapq.heapify(heap)
    taken: list[Document] = []
    fetched: dict[int, Document] = {}
    batch = max(limit, 16) if limit else 1024
    while heap and (not limit or len(taken) < limit):
        popped = [heapq.heappop(heap) for _ in range(min(batch, len(heap)))]
        wanted = [article_id(-key[2]) for key in popped if -key[2] not in fetched]
        if wanted:
            fetched.update((int(k), doc) for k, doc in fetch(wanted).items())
        for at, key in enumerate(popped):
            number = -key[2]
            doc = fetched.get(number)
            if doc is None:
                continue  # gone, or the other filters leave it out
            if number in candidates.to_check:
                candidates.to_check.discard(number)
                score, published = check(doc)
                if not score:
                    continue
                if (score, published) != (-key[0], -key[1]):
                    # Back in line, later: what this batch holds after it waits its turn again.
                    for later in [(-score, -published, key[2]), *popped[at + 1:]]:
                        heapq.heappush(heap, later)
                    break
            doc["score"] = -key[0]
            taken.append(doc)
            if limit and len(taken) == limit:
                break
        batch = min(batch * 2, 4096)
    return taken


# --- the index on the server -------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    id: str
    buckets: int
    postings: int
    records: int
    rewritten: tuple[int, ...] = ()
    replaces: tuple[str, ...] = ()

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Segment:
        return cls(doc["segment"], int(doc["buckets"]), int(doc["postings"]), int(doc["records"]),
                   tuple(int(n) for n in doc.get("rewritten", ())), tuple(doc.get("replaces", ())))

    def document(self) -> Document:
        return {"_id": SEGMENT_PREFIX + self.id, "kind": "segment", "segment": self.id,
                "buckets": self.buckets, "postings": self.postings, "records": self.records,
                "tier": tier_of(self.postings),
                "rewritten": [article_id(n) for n in self.rewritten], "replaces": list(self.replaces),
                "created_at": datetime.now(UTC)}

    def bucket_ids(self) -> list[str]:
        return [f"{self.id}/{bucket}" for bucket in range(self.buckets)]

    def bucket_id(self, word: str) -> str:
        return f"{self.id}/{bucket_of(word, self.buckets)}"


def new_segment_id() -> str:
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


def live_segments(registry: Iterable[Segment]) -> list[Segment]:
    """The registered segments no other registered segment replaces."""
    segments = list(registry)
    replaced = {old for segment in segments for old in segment.replaces}
    return [segment for segment in segments if segment.id not in replaced]


def merge_plan(segments: Sequence[Segment]) -> list[Segment] | None:
    """The segments to merge next: TIER_FANOUT of the lowest full tier, if any."""
    by_tier: dict[int, list[Segment]] = defaultdict(list)
    for segment in segments:
        by_tier[tier_of(segment.postings)].append(segment)
    for tier in sorted(by_tier):
        group = sorted(by_tier[tier], key=lambda s: s.id)[:TIER_FANOUT]
        if len(group) == TIER_FANOUT and sum(s.postings for s in group) <= MAX_MERGED_POSTINGS:
            return group
    return None


class WordIndex:
    """The postings of one articles collection (see the module's docstring)."""

    def __init__(self, articles: Collection[Document]) -> None:
        self.articles = articles
        self.collection: Collection[Document] = articles.database[articles.name + SUFFIX]
        self._indexed = False
        self._owner = ""

    # --- writing ---

    def add(self, records: Iterable[tuple[str, str, Any]], rewritten: Iterable[str] = ()) -> Segment | None:
        """Index (article id, words, published_at) of records as one new segment; `rewritten`:
        ids of records indexed before (their older postings may be stale). Call before the
        records are written."""
        postings = Postings()
        count = 0
        for record_id, words, published_at in records:
            postings.add(record_id, words, published_at)
            count += 1
        if not count:
            return None
        return self._write_segment(postings, count, tuple(int(n) for n in rewritten), ())

    def mark_rewritten(self, ids: Iterable[str]) -> None:
        """Records changed without new postings (a time proven later): their postings are
        checked against them at query time (a segment of no postings names them)."""
        numbers = tuple(sorted(int(n) for n in ids))
        if numbers:
            self._write_segment(Postings(), 0, numbers, ())

    def _write_segment(self, postings: Postings, records: int, rewritten: tuple[int, ...],
                       replaces: tuple[str, ...]) -> Segment:
        self._ensure_index()
        total = postings.count
        segment = Segment(new_segment_id(), bucket_count(total), total, records, rewritten, replaces)
        data = pack_buckets(postings, segment.buckets)
        docs = [{"_id": f"{segment.id}/{bucket}", "data": blob} for bucket, blob in data.items()]
        for start in range(0, len(docs), 16):  # FerretDB's bulk chunk; a few MB a command at most
            self.collection.insert_many(docs[start:start + 16], ordered=False)
        self.collection.insert_one(segment.document())  # it counts from here
        return segment

    def segment_cursor(self) -> Cursor[Document]:
        """The registry, on the `kind` index (FerretDB scans an `_id` range)."""
        return self.collection.find({"kind": "segment"})

    def _ensure_index(self) -> None:
        if not self._indexed:
            self.collection.create_index([("kind", ASCENDING)], name="kind")
            self._indexed = True

    def segments(self) -> list[Segment]:
        return [Segment.from_document(doc) for doc in self.segment_cursor()]

    def merge_due(self) -> int:
        """Merge full tiers (under the merge lock); returns how many merges ran."""
        merges = 0
        registry = self.segments()
        live = live_segments(registry)
        if merge_plan(live) is None and len(live) == len(registry):
            return 0  # the usual case, without taking the lock
        if not self._lock():
            return 0
        try:
            while True:
                registry = self.segments()
                live = live_segments(registry)
                self._drop_replaced([s for s in registry if s not in live])
                group = merge_plan(live)
                if group is None:
                    return merges
                self._merge(group)
                merges += 1
        finally:
            self._unlock()

    def _merge(self, group: Sequence[Segment]) -> Segment:
        postings = Postings()
        ids = [bucket for segment in group for bucket in segment.bucket_ids()]
        for start in range(0, len(ids), 64):
            for doc in self.collection.find({"_id": {"$in": ids[start:start + 64]}}):
                for word, packed in unpack_bucket(doc["data"]):
                    postings.extend(word, packed)
        rewritten = tuple(sorted({n for segment in group for n in segment.rewritten}))
        merged = self._write_segment(postings, sum(s.records for s in group), rewritten,
                                     tuple(s.id for s in group))
        self._drop_replaced(group)
        return merged

    def _drop_replaced(self, segments: Sequence[Segment]) -> None:
        """Delete replaced segments: their buckets, then their registry documents."""
        for segment in segments:
            ids = segment.bucket_ids()
            for start in range(0, len(ids), 500):
                self.collection.delete_many({"_id": {"$in": ids[start:start + 500]}})
            self.collection.delete_one({"_id": SEGMENT_PREFIX + segment.id})

    def _lock(self) -> bool:
        now = datetime.now(UTC)
        owner = secrets.token_hex(8)
        for _ in range(2):
            try:
                self.collection.insert_one({"_id": LOCK_ID, "owner": owner,
                                            "until": now + timedelta(seconds=LOCK_SECONDS)})
                self._owner = owner
                return True
            except DuplicateKeyError:
                held = self.collection.find_one({"_id": LOCK_ID})
                if held is None:
                    continue
                until = held.get("until")
                if until is not None and until.tzinfo is None:
                    until = until.replace(tzinfo=UTC)
                if until is not None and until > now:
                    return False  # another process merges
                self.collection.delete_one({"_id": LOCK_ID, "owner": held.get("owner")})  # expired
        return False

    def _unlock(self) -> None:
        self.collection.delete_one({"_id": LOCK_ID, "owner": self._owner})

    # --- whether it covers the collection ---

    def complete(self) -> bool:
        """Whether every stored record's words are indexed (set when the index started with
        an empty collection, or by `newscrawl index-words`)."""
        state = self.collection.find_one({"_id": STATE_ID})
        return bool(state and state.get("complete"))

    def start_if_empty(self) -> bool:
        """Mark the index complete when the articles collection is empty and the index has no
        state yet; returns whether the index is complete."""
        self._ensure_index()
        if (self.collection.find_one({"_id": STATE_ID}) is None
                and self.articles.find_one({}, {"_id": 1}) is None):
            with contextlib.suppress(DuplicateKeyError):  # another process did it
                self.collection.insert_one({"_id": STATE_ID, "complete": True,
                                            "since": datetime.now(UTC), "by": "an empty collection"})
        return self.complete()

    def rebuild(self, batch: int = 20_000, progress: Callable[[int], None] | None = None) -> int:
        """Index every stored record again (an older collection, or a repair); returns how many.
        Queries scan while it runs; records written meanwhile index themselves."""
        self._ensure_index()
        self.collection.update_one({"_id": STATE_ID}, {"$set": {"complete": False}}, upsert=True)
        old = self.segments()
        done = 0
        pending: list[tuple[str, str, Any]] = []
        fields = {"_id": 1, search.WORDS_FIELD: 1, "published_at": 1}
        for doc in self.articles.find({}, fields).sort("_id", 1):
            words = doc.get(search.WORDS_FIELD)
            if isinstance(words, str) and words:
                pending.append((str(doc["_id"]), words, doc.get("published_at")))
            if len(pending) >= batch:
                self.add(pending)
                done += len(pending)
                pending = []
                if progress:
                    progress(done)
        if pending:
            self.add(pending)
            done += len(pending)
        self._drop_replaced(old)  # what the old segments held, the new ones hold
        self.collection.update_one({"_id": STATE_ID}, {"$set": {
            "complete": True, "since": datetime.now(UTC), "by": "newscrawl index-words"}})
        self.merge_due()
        return done

    # --- reading ---

    def term_postings(self, segments: Sequence[Segment], term: str) -> list[bytes]:
        wanted = {segment.bucket_id(term) for segment in segments if segment.postings}
        return [word_in_bucket(doc["data"], term)
                for doc in self.collection.find({"_id": {"$in": sorted(wanted)}})]

    def reader(self) -> Callable[[str], tuple[TermPostings, set[int]]]:
        """A term's postings over the live segments (read once here), and the records to check."""
        segments = live_segments(self.segments())
        rewritten = {n for segment in segments for n in segment.rewritten}
        return lambda term: merge_term_postings(self.term_postings(segments, term), rewritten)

    def candidates(self, terms: Sequence[str]) -> Candidates:
        read = self.reader()
        per_term: list[TermPostings] = []
        conflicting: set[int] = set()
        for term in terms:
            postings, check = read(term)
            per_term.append(postings)
            conflicting |= check
        return intersect(per_term, conflicting)

    def holders(self, phrases: Sequence[Sequence[frozenset[str]]]) -> Candidates:
        """The records that hold, for each phrase, every word of one of its sets of words
        (`pipelines.search.phrase_word_sets`), with their times (no scores)."""
        read = self.reader()
        postings: dict[str, TermPostings] = {}
        to_check: set[int] = set()

        def holding(word: str) -> TermPostings:
            if word not in postings:
                postings[word], conflicting = read(word)
                to_check.update(conflicting)
            return postings[word]

        found: set[int] | None = None
        for readings in phrases:
            either: set[int] = set()
            for words in readings:
                held = [holding(word) for word in sorted(words)]
                either |= set.intersection(*(set(part) for part in held)) if held else set()
            found = either if found is None else found & either
        found = found or set()
        times: dict[int, int] = {}
        for part in postings.values():
            times.update((n, part[n][1]) for n in found & part.keys() if n not in times)
        return Candidates(dict.fromkeys(found, 0.0), times, to_check & found)

    def size(self) -> dict[str, int]:
        """Segments, postings and bytes of postings (the server's own storage adds its overhead)."""
        segments = live_segments(self.segments())
        postings = sum(s.postings for s in segments)
        return {"segments": len(segments), "postings": postings,
                "uncompressed_bytes": postings * _POSTING_BYTES}
