"""A word index for servers without text indexes (FerretDB): postings in segments.

MongoDB's `$text` ranks a record by a score that depends on its own `words` only
(pipelines.search.term_score: how often and how densely each query word occurs),
never on the rest of the collection. So each word's score in each record can be
computed once, when the record is written, and kept with the word: a posting
`(article id, score)`. A query reads the postings of its words, intersects them
(every word must be held), sums the scores in the query's order and fetches only
the records it returns.

Postings live in `<articles>_words`, in segments, as a log-structured merge
tree keeps them (Lucene's segments, LevelDB's tables):

- each write of the store adds one small segment: the postings of the records
  whose words it (re)wrote, written *before* the records, so a stored record
  always has its postings;
- a segment is split in buckets by a hash of the word (`<segment>/<bucket>`
  documents: a few dozen kilobytes each), so a word costs one bucket read per
  segment;
- a segment counts once its registry document (`segment:<id>`, one insert, so
  atomic) is stored; a merge writes one bigger segment whose registry names the
  segments it replaces, then deletes those. `TIER_FANOUT` segments of one size
  tier merge into one of the next tier (a lock document keeps merges one at a
  time), so there are at most `TIER_FANOUT - 1` segments per tier.

Postings are never rewritten in place. A record whose words changed after it
was indexed has its id in its new segment's `rewritten` list: its older
postings may be stale, so the query checks those records (and any with two
different scores for one word) against their stored `words` before ranking them.

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
from array import array
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
BUCKET_BYTES = 16 * 1024  # a bucket document's postings, about (before compression)
MAX_BUCKETS = 4096
TIER_FANOUT = 8  # segments of one tier merged into one of the next
MAX_MERGED_POSTINGS = 4_000_000  # no merge makes a segment bigger (memory of the merging process)
LOCK_SECONDS = 600

_WORD_HEADER = struct.Struct("<II")  # word length in bytes (hostile words are long), postings
_POSTING_BYTES = 16  # an id (u64) and a score (f64)


# --- scores and postings of records (pure) ----------------------------------------------------

def record_postings(words: str) -> dict[str, float]:
    """Each distinct word of a `words` field, with its MongoDB text score in that record."""
    tokens = words.split()
    total = len(tokens)
    return {word: search.term_score(count, total, words == word)
            for word, count in Counter(tokens).items()}


@dataclass
class Postings:
    """Postings by word: the ids (as integers: ids are 18 digits) and scores, in step."""
    ids: dict[str, array[int]] = field(default_factory=dict)
    scores: dict[str, array[float]] = field(default_factory=dict)

    def add(self, article_id: str, words: str) -> None:
        number = int(article_id)
        for word, score in record_postings(words).items():
            ids = self.ids.get(word)
            if ids is None:
                ids = self.ids[word] = array("Q")
                self.scores[word] = array("d")
            ids.append(number)
            self.scores[word].append(score)

    def extend(self, word: str, ids: bytes, scores: bytes) -> None:
        if word not in self.ids:
            self.ids[word], self.scores[word] = array("Q"), array("d")
        self.ids[word].frombytes(ids)
        self.scores[word].frombytes(scores)

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.ids.values())


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
    """The segment's bucket documents' data: per word, its name, then ids, then scores;
    zlib-compressed (level 1: about half the bytes, and bytes are what a FerretDB read costs)."""
    parts: dict[int, list[bytes]] = defaultdict(list)
    for word, ids in postings.ids.items():
        name = word.encode()
        parts[bucket_of(word, buckets)].extend(
            (_WORD_HEADER.pack(len(name), len(ids)), name, ids.tobytes(), postings.scores[word].tobytes()))
    return {bucket: zlib.compress(b"".join(chunks), 1) for bucket, chunks in parts.items()}


def unpack_bucket(data: bytes) -> Iterator[tuple[str, bytes, bytes]]:
    """(word, ids bytes, scores bytes) of a bucket's data."""
    view = memoryview(zlib.decompress(data))
    at = 0
    while at < len(view):
        name_len, count = _WORD_HEADER.unpack_from(view, at)
        at += _WORD_HEADER.size
        word = bytes(view[at:at + name_len]).decode()
        at += name_len
        ids = bytes(view[at:at + 8 * count])
        at += 8 * count
        scores = bytes(view[at:at + 8 * count])
        at += 8 * count
        yield word, ids, scores


def word_in_bucket(data: bytes, word: str) -> tuple[array[int], array[float]]:
    """The postings of one word in a bucket's data (empty if it has none)."""
    wanted = word.encode()
    view = memoryview(zlib.decompress(data)) if data else memoryview(b"")
    at = 0
    ids, scores = array("Q"), array("d")
    while at < len(view):
        name_len, count = _WORD_HEADER.unpack_from(view, at)
        at += _WORD_HEADER.size
        if view[at:at + name_len] == wanted:
            at += name_len
            ids.frombytes(view[at:at + 8 * count])
            scores.frombytes(view[at + 8 * count:at + 16 * count])
            return ids, scores
        at += name_len + 16 * count
    return ids, scores


def tier_of(postings: int) -> int:
    """Size tier: segments within a factor TIER_FANOUT of each other share one."""
    tier, size = 0, max(postings, 1)
    while size >= TIER_FANOUT:
        size //= TIER_FANOUT
        tier += 1
    return tier


# --- the ranking (pure) -----------------------------------------------------------------------

@dataclass
class Candidates:
    """Records holding every query word, with their scores from the postings."""
    scores: dict[int, float]
    to_check: set[int]  # postings may be stale: score them again from the stored words


def intersect(per_term: Sequence[Mapping[int, float]], conflicting: set[int]) -> Candidates:
    """Records in every term's postings, scores summed in the query's order (as `text_score`)."""
    if not per_term:
        return Candidates({}, set())
    smallest = min(per_term, key=len)
    scores: dict[int, float] = {}
    for number in smallest:
        total = 0.0
        for postings in per_term:
            score = postings.get(number)
            if score is None:
                break
            total += score
        else:
            scores[number] = total
    return Candidates(scores, conflicting & scores.keys())


def merge_term_postings(parts: Iterable[tuple[array[int], array[float]]],
                        rewritten: set[int]) -> tuple[dict[int, float], set[int]]:
    """One term's postings from all segments: the score of each record, and the records to
    check (rewritten ones, and any with two different scores: the highest one is kept, an
    upper bound of the stored record's score)."""
    scores: dict[int, float] = {}
    conflicting: set[int] = set()
    for ids, values in parts:
        if not scores:
            scores = dict(zip(ids, values, strict=True))
            continue
        for number, score in zip(ids, values, strict=True):
            known = scores.get(number)
            if known is None:
                scores[number] = score
            elif known != score:
                conflicting.add(number)
                if score > known:
                    scores[number] = score
    return scores, conflicting | (rewritten & scores.keys())


def article_id(number: int) -> str:
    return f"{number:018d}"


def rank(candidates: Candidates, fetch: Callable[[list[str]], Mapping[str, Document]],
         rescore: Callable[[Document], float], limit: int) -> list[Document]:
    """The best `limit` records (0: all) by score, then newest, then id; `score` set on each.

    Candidates are read in score order, in growing batches (`fetch` returns those of the
    ids that are stored and pass the query's other filters). A record to check is scored
    again from its stored words (`rescore`, 0 when it no longer holds every word): a lower
    score puts it back in line. Reading stops once `limit` records are taken and the next
    candidate scores strictly less than the last of them, so ties are decided by time and
    id over every tied record.
    """
    heap = [(-score, number) for number, score in candidates.scores.items()]
    heapq.heapify(heap)
    taken: list[Document] = []
    fetched: dict[int, Document] = {}
    batch = max(limit * 2, 64) if limit else 1024

    def enough() -> bool:
        if not limit or len(taken) < limit or not heap:
            return False
        kth = sorted((doc["score"] for doc in taken), reverse=True)[limit - 1]
        return -heap[0][0] < kth

    while heap and not enough():
        popped = [heapq.heappop(heap) for _ in range(min(batch, len(heap)))]
        wanted = [article_id(number) for _, number in popped if number not in fetched]
        if wanted:
            for key, found in fetch(wanted).items():
                fetched[int(key)] = found
        for negative, number in popped:
            doc = fetched.get(number)
            if doc is None:
                continue  # gone, or the other filters leave it out
            claimed = -negative
            if number in candidates.to_check:
                actual = rescore(doc)
                candidates.to_check.discard(number)
                if not actual:
                    continue
                if actual != claimed:
                    heapq.heappush(heap, (-actual, number))
                    continue
            doc["score"] = claimed
            taken.append(doc)
        batch = min(batch * 2, 4096)
    taken.sort(key=lambda d: (d["score"], d.get("published_at") or datetime.min.replace(tzinfo=UTC),
                              d["_id"]), reverse=True)
    return taken[:limit] if limit else taken


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

    def add(self, records: Iterable[tuple[str, str]], rewritten: Iterable[str] = ()) -> Segment | None:
        """Index (article id, words) pairs as one new segment; `rewritten`: ids of records
        whose earlier words were indexed. Call before the records are written."""
        postings = Postings()
        count = 0
        for record_id, words in records:
            postings.add(record_id, words)
            count += 1
        if not count:
            return None
        return self._write_segment(postings, count, tuple(int(n) for n in rewritten), ())

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
                for word, word_ids, scores in unpack_bucket(doc["data"]):
                    postings.extend(word, word_ids, scores)
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
        an empty collection, or by `newscrawl db index-words`)."""
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
        pending: list[tuple[str, str]] = []
        for doc in self.articles.find({}, {"_id": 1, search.WORDS_FIELD: 1}).sort("_id", 1):
            words = doc.get(search.WORDS_FIELD)
            if isinstance(words, str) and words:
                pending.append((str(doc["_id"]), words))
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
            "complete": True, "since": datetime.now(UTC), "by": "newscrawl db index-words"}})
        self.merge_due()
        return done

    # --- reading ---

    def term_postings(self, segments: Sequence[Segment], term: str) -> list[tuple[array[int], array[float]]]:
        wanted = {segment.bucket_id(term) for segment in segments}
        return [word_in_bucket(doc["data"], term)
                for doc in self.collection.find({"_id": {"$in": sorted(wanted)}})]

    def candidates(self, terms: Sequence[str]) -> Candidates:
        segments = live_segments(self.segments())
        rewritten = {n for segment in segments for n in segment.rewritten}
        per_term: list[dict[int, float]] = []
        conflicting: set[int] = set()
        for term in terms:
            scores, check = merge_term_postings(self.term_postings(segments, term), rewritten)
            per_term.append(scores)
            conflicting |= check
        return intersect(per_term, conflicting)

    def holders(self, phrases: Sequence[Sequence[frozenset[str]]]) -> set[int]:
        """The records that hold, for each phrase, every word of one of its sets of words
        (`pipelines.search.phrase_word_sets`)."""
        segments = live_segments(self.segments())
        ids: dict[str, set[int]] = {}

        def holding(word: str) -> set[int]:
            if word not in ids:
                ids[word] = set(merge_term_postings(self.term_postings(segments, word), set())[0])
            return ids[word]

        found: set[int] | None = None
        for readings in phrases:
            either: set[int] = set()
            for words in readings:
                both = [holding(word) for word in sorted(words)]
                either |= set.intersection(*sorted(both, key=len)) if both else set()
            found = either if found is None else found & either
        return found or set()

    def size(self) -> dict[str, int]:
        """Segments, postings and bytes of postings (the server's own storage adds its overhead)."""
        segments = live_segments(self.segments())
        postings = sum(s.postings for s in segments)
        return {"segments": len(segments), "postings": postings,
                "uncompressed_bytes": postings * _POSTING_BYTES}
