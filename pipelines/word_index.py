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
  whose words or time it (re)wrote. A pending document naming the records is
  written *before* them, and the segment is packed and written on a worker
  thread *while* they are (`WordIndex.adding`: the index's Python work hides in
  the wait on the server). Until the segment counts, a query reads the pending
  records' words from the records themselves, so a stored record is always
  found; a pending document a dead process left is indexed by `merge_due`;
- a segment is split in buckets by a hash of the word (`<segment>/<bucket>`
  documents, about `BUCKET_BYTES` of postings), so a word costs one bucket read
  per segment. A bucket keeps its records' ids and times once, in a table, and
  each posting as places in that table and in a table of scores: columns of
  numbers cut to the bytes they need, byte-planed, zlib-compressed (FerretDB's
  cost is per byte read, written and deleted: docs/schema.md has the layout);
- a segment counts once its registry document (`segment:<id>`, one insert, so
  atomic) is stored; a merge writes one bigger segment whose registry names the
  segments it replaces, then deletes those. The store merges on a thread of its
  own (`merge_beside`), so its writes go on meanwhile. `TIER_FANOUT` segments of one size
  tier merge into one of the next tier (a lock document keeps merges one at a
  time), so there are at most `TIER_FANOUT - 1` segments per tier. A query
  reads a bucket per segment and a merge rewrites its postings: 16 a tier keeps
  about 17 segments at 100,000 articles, each posting written three times, off
  the writes' path (bench/RESULTS.md 23).

Postings are never rewritten in place. A record indexed again (its words or its
time changed), or whose time a later proof moved, has its id in a newer
segment's `rewritten` list: its older postings may be stale, so the query checks
those records (and any with two different postings for one word) against the
stored record before ranking them.

Pure parts first (scoring, the bucket format, the ranking, in numpy: a word may
have 50,000 postings); then `WordIndex`, the one class that talks to the server.
"""

from __future__ import annotations

import functools
import heapq
import logging
import secrets
import struct
import time
import zlib
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.cursor import Cursor
from pymongo.errors import DuplicateKeyError

from pipelines import search

logger = logging.getLogger(__name__)

Document = dict[str, Any]
Record = tuple[str, str, Any]  # what the index takes of a record: id, words, published_at

SUFFIX = "_words"  # the index of collection `articles` is `articles_words`
STATE_ID = "state"
LOCK_ID = "merge-lock"
SEGMENT_PREFIX = "segment:"
PENDING_PREFIX = "pending:"  # records being written beside their segment
BUCKET_BYTES = 32 * 1024  # a bucket document's postings, about (before compression)
MAX_BUCKETS = 4096
TIER_FANOUT = 16  # segments of one tier merged into one of the next (bench/RESULTS.md 23)
MAX_MERGED_POSTINGS = 4_000_000  # no merge makes a segment bigger (memory of the merging process)
LOCK_SECONDS = 600

FORMAT = 2  # of the buckets; an index of another format is built again (`newscrawl index-words`)
NO_TIME = -(2 ** 63)  # a record without `published_at`: last, as the scan sorts it
LATEST = 2 ** 63 - 1
_POSTING_BYTES = 20  # a posting's id, score and time before compression (bucket sizes)


# --- scores and postings of records (pure) ----------------------------------------------------

def record_postings(words: str) -> dict[str, float]:
    """Each distinct word of a `words` field, with its MongoDB text score in that record."""
    counts, scores = _counted(words)
    return dict(zip(counts, scores, strict=True))


def _counted(words: str) -> tuple[Counter[str], list[float]]:
    """The distinct words of a `words` field with their counts, and their scores in order.
    (A score depends on the word's count only, given the record: computed once a count.)"""
    tokens = words.split()
    counts = Counter(tokens)
    if len(tokens) == 1 and words == tokens[0]:
        return counts, [search.term_score(1, 1, True)]  # the whole field: MongoDB's 1.1
    by_count = {count: search.term_score(count, len(tokens), False) for count in set(counts.values())}
    return counts, list(map(by_count.__getitem__, counts.values()))


def time_ms(moment: Any) -> int:
    """`published_at` as postings keep it: milliseconds since 1970 (BSON's precision)."""
    if not isinstance(moment, datetime):
        return NO_TIME
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Columns:
    """Postings as parallel arrays: record ids, scores, times (`ids` sorted where said)."""
    ids: npt.NDArray[np.uint64]
    scores: npt.NDArray[np.float64]
    times: npt.NDArray[np.int64]

    @classmethod
    def empty(cls) -> Columns:
        return cls(np.empty(0, np.uint64), np.empty(0, np.float64), np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, at: Any) -> Columns:
        return Columns(self.ids[at], self.scores[at], self.times[at])

    def as_dict(self) -> dict[int, tuple[float, int]]:
        """id -> (score, time): for tests and small sets."""
        return {int(n): (float(s), int(t)) for n, s, t in zip(self.ids, self.scores, self.times, strict=True)}


class Postings:
    """The postings of many records, by word, gathered for one segment: flat while records
    are added (the words in a list, numbers in typed arrays), numpy's arrays to pack."""

    def __init__(self) -> None:
        self._words: list[str] = []  # each posting's word
        self._scores = array("d")
        self._ids = array("Q")
        self._times = array("q")
        self._sizes = array("q")
        self._parts: list[tuple[list[str], npt.NDArray[np.int64], Columns]] = []  # a merge's

    def add(self, article_id: str, words: str, published_at: Any = None) -> None:
        counts, scores = _counted(words)
        self._words += counts
        self._scores.extend(scores)
        self._ids.append(int(article_id))
        self._times.append(time_ms(published_at))
        self._sizes.append(len(counts))

    def extend(self, words: list[str], counts: npt.NDArray[np.int64], columns: Columns) -> None:
        """Postings already in columns: `counts[i]` of them, in a row, for `words[i]`."""
        self._parts.append((words, counts, columns))

    def of_words(self, words: Iterable[str]) -> dict[str, Columns]:
        """Each word's postings, by id (of records added once each)."""
        names, numbers, columns = self.columns()
        code = {name: place for place, name in enumerate(names)}
        found = {}
        for word in words:
            held = columns.take(numbers == code.get(word, -1))
            found[word] = held.take(np.argsort(held.ids, kind="stable"))
        return found

    @property
    def count(self) -> int:
        return len(self._words) + sum(len(columns) for _, _, columns in self._parts)

    def columns(self) -> tuple[list[str], npt.NDArray[np.int64], Columns]:
        """(the distinct words, each posting's place among them, the postings)."""
        codes = {word: code for code, word in enumerate(dict.fromkeys(
            [*self._words, *(word for words, _, _ in self._parts for word in words)]))}
        numbers = [np.fromiter(map(codes.__getitem__, self._words), np.int64, len(self._words)),
                   *(np.repeat(np.fromiter(map(codes.__getitem__, words), np.int64, len(words)), counts)
                     for words, counts, _ in self._parts)]
        sizes = np.frombuffer(self._sizes, np.int64)
        columns = Columns(
            np.concatenate([np.repeat(np.frombuffer(self._ids, np.uint64), sizes),
                            *(c.ids for _, _, c in self._parts)]),
            np.concatenate([np.frombuffer(self._scores, np.float64), *(c.scores for _, _, c in self._parts)]),
            np.concatenate([np.repeat(np.frombuffer(self._times, np.int64), sizes),
                            *(c.times for _, _, c in self._parts)]))
        return list(codes), np.concatenate(numbers), columns


def bucket_of(word: str, buckets: int) -> int:
    return zlib.crc32(word.encode()) % buckets


def bucket_count(postings: int) -> int:
    """Buckets for a segment of `postings`: about BUCKET_BYTES each, a power of two."""
    wanted = postings * _POSTING_BYTES // BUCKET_BYTES
    count = 1
    while count < wanted and count < MAX_BUCKETS:
        count *= 2
    return count


# A bucket: a header; each word's name length and postings count; the names; a table of the
# records its postings name, (id, time) sorted; then the postings of its words one word
# after another: each a place in the record table and a place in a table of the bucket's
# distinct scores (a score is one of a few per record length). A record's id and time are
# kept once per bucket, not once per word. Number columns are differences where sorted,
# cut to the bytes their largest value needs, and byte-planed (all first bytes, then all
# second bytes...: blosc's shuffle), so what varies little lies together for zlib.
_BUCKET_HEADER = struct.Struct("<IIIIqQ5B")
# words, postings, records, distinct scores, earliest time, first id; then the width in
# bytes of the columns: id steps, seconds, milliseconds, record places, score places


def _width(values: npt.NDArray[Any]) -> int:
    """The low bytes that hold every value (0 when all are 0)."""
    largest = int(values.max()) if len(values) else 0
    return (largest.bit_length() + 7) // 8


def _planes(values: npt.NDArray[Any], width: int) -> bytes:
    """The low `width` bytes of each value, byte-planed."""
    as_bytes = values.astype(np.uint64).view(np.uint8).reshape(len(values), 8)
    return as_bytes[:, :width].T.tobytes()


def _unplane(data: memoryview, at: int, count: int, width: int, lo: int = 0,
             hi: int | None = None) -> npt.NDArray[np.uint64]:
    """Values lo:hi of a byte-planed column of `count` values `width` bytes wide at `at`."""
    hi = count if hi is None else hi
    whole = np.zeros((hi - lo, 8), np.uint8)
    if width:
        whole[:, :width] = np.frombuffer(data, np.uint8, count * width, at).reshape(width, count)[:, lo:hi].T
    return whole.view(np.uint64).ravel()


class Bucket:
    """A bucket's data, decoded lazily: its words, and one word's postings at a time."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(zlib.decompress(data))
        (self.words, self.postings, self.records, self.distinct, self.earliest, self.first_id,
         *self.widths) = _BUCKET_HEADER.unpack_from(self.data)
        at = _BUCKET_HEADER.size
        self.name_lengths = np.frombuffer(self.data, np.uint32, self.words, at).astype(np.int64)
        self.counts = np.frombuffer(self.data, np.uint32, self.words, at + 4 * self.words).astype(np.int64)
        at += 8 * self.words
        self.name_starts = np.cumsum(self.name_lengths) - self.name_lengths
        self.names = bytes(self.data[at:at + int(self.name_lengths.sum())])
        self.starts = np.cumsum(self.counts) - self.counts
        self.table_at = at + len(self.names)
        self.postings_at = self.table_at + sum(self.widths[:3]) * self.records

    def names_list(self) -> list[str]:
        ends = self.name_starts + self.name_lengths
        return [self.names[s:e].decode()
                for s, e in zip(self.name_starts.tolist(), ends.tolist(), strict=True)]

    def find(self, word: str) -> int | None:
        """The place of `word` among the bucket's words."""
        wanted = word.encode()
        at = self.names.find(wanted)
        while at >= 0:
            place = int(np.searchsorted(self.name_starts, at))
            if (place < self.words and self.name_starts[place] == at
                    and self.name_lengths[place] == len(wanted)):
                return place
            at = self.names.find(wanted, at + 1)
        return None

    def _postings(self, lo: int, hi: int, record_of: npt.NDArray[np.int64]) -> Columns:
        n, r, at = self.postings, self.records, self.table_at
        id_width, second_width, milli_width, record_width, score_width = self.widths
        ids = np.cumsum(_unplane(self.data, at, r, id_width), dtype=np.uint64) + np.uint64(self.first_id)
        at += id_width * r
        after = _unplane(self.data, at, r, second_width) * np.uint64(1000)
        at += second_width * r
        after += _unplane(self.data, at, r, milli_width)
        times = after.view(np.int64) + np.int64(self.earliest)
        at = self.postings_at + record_width * n
        scores = np.frombuffer(self.data, np.float64, self.distinct, at)
        score_of = _unplane(self.data, at + 8 * self.distinct, n, score_width, lo, hi)
        return Columns(ids[record_of], scores[score_of], times[record_of])

    def _steps(self, lo: int, hi: int) -> npt.NDArray[np.int64]:
        """Postings lo:hi's places in the record table: a word's first whole, then steps."""
        return _unplane(self.data, self.postings_at, self.postings, self.widths[3], lo, hi).view(np.int64)

    def word(self, word: str) -> Columns:
        """The postings of one word, by id (none if the bucket does not hold it)."""
        place = self.find(word)
        if place is None:
            return Columns.empty()
        lo = int(self.starts[place])
        hi = lo + int(self.counts[place])
        return self._postings(lo, hi, np.cumsum(self._steps(lo, hi)))

    def everything(self) -> tuple[list[str], npt.NDArray[np.int64], Columns]:
        """(words, postings per word, all the postings, word after word)."""
        steps = self._steps(0, self.postings)
        totals = np.cumsum(steps)
        record_of = totals - np.repeat(totals[self.starts] - steps[self.starts], self.counts)
        return self.names_list(), self.counts, self._postings(0, self.postings, record_of)


def _firsts(keys: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.bool_]:
    """Where sorted rows of `keys` (columns of equal length) differ from the row before."""
    first = np.zeros(len(keys[0]), bool)
    first[:1] = True
    for key in keys:
        first[1:] |= key[1:] != key[:-1]
    return first


def _places(order: npt.NDArray[np.int64], keys: Sequence[npt.NDArray[Any]],
            group: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Each row's place among the distinct rows of its group (rows sorted by `order`, `keys`
    already in that order, the group first); and which sorted rows are distinct."""
    distinct = _firsts(keys)
    number = np.cumsum(distinct) - 1
    first_of_group = np.maximum.accumulate(np.where(_firsts(keys[:1]), number, 0))
    places = np.empty(len(order), np.int64)
    places[order] = number - first_of_group
    return places, distinct


PACK_POSTINGS = 1 << 18  # postings laid out at once (the memory a pack takes grows with it)


def pack_buckets(postings: Postings, buckets: int) -> dict[int, bytes]:
    """The segment's bucket documents' data (zlib level 1: bytes are what a FerretDB read
    and write cost). Buckets are laid out in numpy a group at a time (PACK_POSTINGS)."""
    words, numbers, columns = postings.columns()
    word_bucket = np.fromiter((bucket_of(word, buckets) for word in words), np.int64, len(words))
    posting_bucket = word_bucket[numbers]
    by_bucket = np.argsort(posting_bucket, kind="stable")
    sizes = np.bincount(posting_bucket, minlength=buckets)
    names = [word.encode() for word in words]
    packed: dict[int, bytes] = {}
    start = first = 0
    while first < buckets:
        last = first + max(int(np.searchsorted(np.cumsum(sizes[first:]), PACK_POSTINGS)), 1)
        end = start + int(sizes[first:last].sum())
        if end > start:
            part = by_bucket[start:end]
            packed.update(_pack_group(names, numbers[part], posting_bucket[part], columns.take(part)))
        start, first = end, last
    return packed


def _pack_group(names: Sequence[bytes], numbers: npt.NDArray[np.int64], bucket: npt.NDArray[np.int64],
                columns: Columns) -> dict[int, bytes]:
    """The data of the buckets these postings fall in (all their postings given)."""
    # bucket, word, id and time: a word's records in the record table's order (a merged
    # segment may hold one record twice, with two times), so its places never fall
    order = np.lexsort((columns.times, columns.ids, numbers, bucket))
    numbers, bucket, columns = numbers[order], bucket[order], columns.take(order)
    by_record = np.lexsort((columns.times, columns.ids, bucket))
    record_of, new_record = _places(by_record, [bucket[by_record], columns.ids[by_record],
                                                columns.times[by_record]], bucket)
    records = columns.take(by_record[new_record])
    record_bucket = bucket[by_record][new_record]
    table, score_code = np.unique(columns.scores, return_inverse=True)
    by_score = np.argsort(bucket * len(table) + score_code.ravel(), kind="stable")
    score_of, new_score = _places(by_score, [bucket[by_score], score_code.ravel()[by_score]], bucket)
    scores, score_bucket = columns.scores[by_score][new_score], bucket[by_score][new_score]
    new_word = _firsts([numbers])
    steps = np.diff(record_of, prepend=np.int64(0))  # ids sorted in a word: places rise
    steps[new_word] = record_of[new_word]
    id_steps = np.diff(records.ids, prepend=np.uint64(0))

    def bounds(keys: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
        cuts = (np.flatnonzero(np.diff(keys)) + 1).tolist()
        return list(zip([0, *cuts], [*cuts, len(keys)], strict=True))

    packed: dict[int, bytes] = {}
    for (lo, hi), (rlo, rhi), (slo, shi) in zip(bounds(bucket), bounds(record_bucket),
                                               bounds(score_bucket), strict=True):
        word_at = np.flatnonzero(new_word[lo:hi])
        counts = np.diff(word_at, append=hi - lo)
        times = records.times[rlo:rhi]
        earliest = int(times.min())
        seconds, millis = np.divmod((times - np.int64(earliest)).view(np.uint64), np.uint64(1000))
        id_steps[rlo] = 0  # the first id is in the header
        planed = (id_steps[rlo:rhi], seconds, millis, steps[lo:hi], score_of[lo:hi])
        widths = [_width(column) for column in planed]
        held = numbers[lo:hi][word_at].tolist()
        packed[int(bucket[lo])] = zlib.compress(b"".join((
            _BUCKET_HEADER.pack(len(word_at), hi - lo, rhi - rlo, shi - slo, earliest,
                                int(records.ids[rlo]), *widths),
            np.array([len(names[n]) for n in held], np.uint32).tobytes(), counts.astype(np.uint32).tobytes(),
            *(names[n] for n in held),
            *(_planes(column, width) for column, width in zip(planed[:4], widths, strict=False)),
            scores[slo:shi].tobytes(), _planes(planed[4], widths[4]))), 1)
    return packed


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
    """Records holding every query word: their scores and times from the postings."""
    columns: Columns  # ids unique, sorted
    to_check: set[int]  # postings may be stale: score and time them from the stored record

    @property
    def numbers(self) -> list[int]:
        return [int(n) for n in self.columns.ids.tolist()]

    def restrict(self, ids: npt.NDArray[np.uint64]) -> Candidates:
        """Those of the candidates among `ids` (sorted)."""
        kept = self.columns.take(np.isin(self.columns.ids, ids, assume_unique=True))
        return Candidates(kept, self.to_check & set(kept.ids.tolist()))


def intersect(per_term: Sequence[Columns], conflicting: set[int]) -> Candidates:
    """Records in every term's postings (each sorted by id, unique), scores summed in the
    query's order (as `text_score`)."""
    if not per_term:
        return Candidates(Columns.empty(), set())
    found = per_term[0]
    scores = found.scores.copy()
    for postings in per_term[1:]:
        ids, here, there = np.intersect1d(found.ids, postings.ids, assume_unique=True, return_indices=True)
        stale = found.times[here] != postings.times[there]  # one word's posting older than another's
        conflicting.update(ids[stale].tolist())
        found = Columns(ids, scores[here] + postings.scores[there], found.times[here])
        scores = found.scores
    found = Columns(found.ids, scores, found.times)
    return Candidates(found, conflicting & set(found.ids.tolist()) if conflicting else set())


def merge_term_postings(parts: Sequence[Columns],
                        rewritten: npt.NDArray[np.uint64]) -> tuple[Columns, set[int]]:
    """One term's postings from all segments, sorted by id: the score and time of each
    record, and the records to check (rewritten ones, and any with two different postings:
    the highest is kept, an upper bound of the stored record's)."""
    parts = [part for part in parts if len(part)]
    if not parts:
        return Columns.empty(), set()
    if len(parts) == 1:
        merged = parts[0]
    else:
        merged = Columns(np.concatenate([p.ids for p in parts]), np.concatenate([p.scores for p in parts]),
                         np.concatenate([p.times for p in parts]))
    merged = merged.take(np.argsort(merged.ids, kind="stable"))  # sorted runs: a merge
    conflicting: set[int] = set()
    first = _firsts([merged.ids])
    if not first.all():  # a record in two segments (or twice in one): rare
        merged = merged.take(np.lexsort((merged.times, merged.scores, merged.ids)))  # runs stay
        last = np.append(first[1:], True)
        differs = ((merged.scores[first] != merged.scores[last])
                   | (merged.times[first] != merged.times[last]))
        conflicting.update(merged.ids[last][differs].tolist())
        merged = merged.take(last)
    if len(rewritten):
        conflicting.update(merged.ids[np.isin(merged.ids, rewritten)].tolist())
    return merged, conflicting


def article_id(number: int) -> str:
    return f"{number:018d}"


RankKey = tuple[float, int, int]  # (-score, -time, -id): ascending is the search's order


def rank(candidates: Candidates, fetch: Callable[[list[str]], Mapping[str, Document]],
         check: Callable[[Document], tuple[float, int]], limit: int) -> list[Document]:
    """The best `limit` records (0: all) by score, then newest, then id; `score` set on each.

    The postings give every candidate's score and time, so the order is known before any
    record is read: `fetch` reads the first ones (whole; those gone or left out by the
    query's other filters are not returned) until `limit` are taken. Each record read
    gets its score and time from its stored words and `published_at` (`check`: score 0
    when it no longer holds every word); if they differ, it goes back in line. That is
    exact as long as no record comes later in line than its stored self would: a record
    to check has the highest of its postings' scores (its newest postings are among
    them) and, its time unknown, the newest time.
    """
    columns = candidates.columns
    times = columns.times
    if candidates.to_check:
        times = times.copy()
        times[np.isin(columns.ids, np.array(sorted(candidates.to_check), np.uint64))] = LATEST
    order = np.lexsort((columns.ids, times, columns.scores))[::-1]  # best first
    scores, times, ids = columns.scores[order], times[order], columns.ids[order]
    checked: set[int] = set()
    again: list[RankKey] = []  # records back in line, merged with the postings' order
    taken: list[Document] = []
    fetched: dict[int, Document] = {}
    asked: set[int] = set()
    batch = max(limit, 16) if limit else 1024
    at = 0

    def next_key() -> RankKey:
        nonlocal at
        if at < len(order):
            key = (-float(scores[at]), -int(times[at]), -int(ids[at]))
            if not again or key < again[0]:
                at += 1
                return key
        return heapq.heappop(again)

    while (at < len(order) or again) and (not limit or len(taken) < limit):
        popped = [next_key() for _ in range(min(batch, len(order) - at + len(again)))]
        wanted = [-key[2] for key in popped if -key[2] not in asked]
        if wanted:
            asked.update(wanted)
            fetched.update((int(k), doc) for k, doc in fetch([article_id(n) for n in wanted]).items())
        for place, key in enumerate(popped):
            number = -key[2]
            doc = fetched.get(number)
            if doc is None:
                continue  # gone, or the other filters leave it out
            if number not in checked:
                checked.add(number)
                score, published = check(doc)
                if not score:
                    continue
                if (score, published) != (-key[0], -key[1]):
                    # Back in line, later: what this batch holds after it waits its turn again.
                    for later in [(-score, -published, key[2]), *popped[place + 1:]]:
                        heapq.heappush(again, later)
                    break
            doc["score"] = -key[0]
            taken.append(doc)
            if limit and len(taken) == limit:
                break
        batch = min(batch * 2, 4096)
    return taken


def holding(phrases: Sequence[Sequence[frozenset[str]]],
            read: Mapping[str, tuple[Columns, set[int]]]) -> Candidates:
    """The records that hold, for each phrase, every word of one of its sets of words, with
    their times, from the words' postings (`read`)."""
    found: npt.NDArray[np.uint64] | None = None
    for readings in phrases:
        either = np.empty(0, np.uint64)
        for words in readings:
            held = [read[word][0].ids for word in sorted(words)]
            either = np.union1d(either, functools.reduce(
                lambda a, b: np.intersect1d(a, b, assume_unique=True), held))
        found = either if found is None else np.intersect1d(found, either, assume_unique=True)
    if found is None or not len(found):
        return Candidates(Columns.empty(), set())
    times = np.full(len(found), NO_TIME, np.int64)
    unset = np.ones(len(found), bool)
    for postings, _ in read.values():  # a record's time from the first postings holding it
        here = np.isin(found, postings.ids, assume_unique=True) & unset
        times[here] = postings.times[np.searchsorted(postings.ids, found[here])]
        unset &= ~here
    to_check = set().union(*(check for _, check in read.values())) & set(found.tolist())
    return Candidates(Columns(found, np.zeros(len(found)), times), to_check)


# --- the index on the server -------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    id: str
    buckets: int
    postings: int
    records: int
    rewritten: tuple[int, ...] = ()
    replaces: tuple[str, ...] = ()
    format: int = FORMAT

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Segment:
        return cls(doc["segment"], int(doc["buckets"]), int(doc["postings"]), int(doc["records"]),
                   tuple(int(n) for n in doc.get("rewritten", ())), tuple(doc.get("replaces", ())),
                   int(doc.get("format", 1)))

    def document(self) -> Document:
        return {"_id": SEGMENT_PREFIX + self.id, "kind": "segment", "segment": self.id,
                "buckets": self.buckets, "postings": self.postings, "records": self.records,
                "tier": tier_of(self.postings), "format": self.format,
                "rewritten": [article_id(n) for n in self.rewritten], "replaces": list(self.replaces),
                "created_at": datetime.now(UTC)}

    def bucket_ids(self) -> list[str]:
        return [f"{self.id}/{bucket}" for bucket in range(self.buckets)]

    def bucket_id(self, word: str) -> str:
        return f"{self.id}/{bucket_of(word, self.buckets)}"


def _tell_failed_merge(merging: Future[int]) -> None:
    error = merging.exception()
    if error is not None:
        logger.warning("the word index's merge failed (%s: %s): the next write's check tries again",
                       type(error).__name__, error)


def new_segment_id() -> str:
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


def live_segments(registry: Iterable[Segment]) -> list[Segment]:
    """The registered segments no other registered segment replaces (and of this version's
    format: an older one's are garbage, dropped at the next merge)."""
    segments = list(registry)
    replaced = {old for segment in segments for old in segment.replaces}
    return [segment for segment in segments if segment.id not in replaced and segment.format == FORMAT]


def merge_plan(segments: Sequence[Segment]) -> list[Segment] | None:
    """The segments to merge next: the oldest TIER_FANOUT of the lowest full tier, or as
    many of them as MAX_MERGED_POSTINGS holds (two at least; the store's writes may be big
    batches), if any."""
    by_tier: dict[int, list[Segment]] = defaultdict(list)
    for segment in segments:
        by_tier[tier_of(segment.postings)].append(segment)
    for tier in sorted(by_tier):
        if len(by_tier[tier]) < TIER_FANOUT:
            continue
        group: list[Segment] = []
        for segment in sorted(by_tier[tier], key=lambda s: s.id)[:TIER_FANOUT]:
            if sum(s.postings for s in group) + segment.postings > MAX_MERGED_POSTINGS:
                break
            group.append(segment)
        if len(group) >= 2:
            return group
    return None


class WordIndex:
    """The postings of one articles collection (see the module's docstring)."""

    def __init__(self, articles: Collection[Document]) -> None:
        self.articles = articles
        self.collection: Collection[Document] = articles.database[articles.name + SUFFIX]
        self._indexed = False
        self._owner = ""
        self._worker: ThreadPoolExecutor | None = None
        self._merger: ThreadPoolExecutor | None = None
        self._merging: Future[int] | None = None

    # --- writing ---

    def add(self, records: Iterable[Record], rewritten: Iterable[str] = (),
            segment_id: str | None = None) -> Segment | None:
        """Index (article id, words, published_at) of records as one new segment; `rewritten`:
        ids of records indexed before (their older postings may be stale). Call before the
        records are written (or inside `adding`)."""
        postings = Postings()
        count = 0
        for record_id, words, published_at in records:
            postings.add(record_id, words, published_at)
            count += 1
        if not count:
            return None
        return self._write_segment(postings, count, tuple(int(n) for n in rewritten), (), segment_id)

    @contextmanager
    def adding(self, records: Sequence[Record], rewritten: Sequence[str] = ()) -> Iterator[None]:
        """`add` the records while the body writes them: first one pending document names
        them (a query reads their words from the records until their segment counts), then
        a worker thread packs and writes the segment. Leaving waits for it; its error is
        raised unless the body raised one."""
        if not records:
            yield
            return
        self._ensure_index()
        segment_id = new_segment_id()
        self._insert_once({
            "_id": PENDING_PREFIX + segment_id, "kind": "pending", "segment": segment_id,
            "ids": [record_id for record_id, _, _ in records], "rewritten": list(rewritten),
            "created_at": datetime.now(UTC)})
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="word-index")
        written: Future[None] = self._worker.submit(self._settle, segment_id, records, rewritten)
        try:
            yield
        except BaseException:
            written.exception()  # waited for; the body's error is the one to tell
            raise
        written.result()

    def _settle(self, segment_id: str, records: Sequence[Record], rewritten: Sequence[str]) -> None:
        self.add(records, rewritten, segment_id)
        self.collection.delete_one({"_id": PENDING_PREFIX + segment_id})

    def close(self) -> None:
        """Wait for the worker threads (a merge running beside the writes ends first)."""
        for worker in (self._worker, self._merger):
            if worker is not None:
                worker.shutdown()
        self._worker = self._merger = self._merging = None

    def mark_rewritten(self, ids: Iterable[str]) -> None:
        """Records changed without new postings (a time proven later): their postings are
        checked against them at query time (a segment of no postings names them)."""
        numbers = tuple(sorted(int(n) for n in ids))
        if numbers:
            self._write_segment(Postings(), 0, numbers, ())

    def _write_segment(self, postings: Postings, records: int, rewritten: tuple[int, ...],
                       replaces: tuple[str, ...], segment_id: str | None = None) -> Segment:
        self._ensure_index()
        total = postings.count
        segment = Segment(segment_id or new_segment_id(), bucket_count(total), total, records,
                          rewritten, replaces)
        data = pack_buckets(postings, segment.buckets)
        docs = [{"_id": f"{segment.id}/{bucket}", "data": blob} for bucket, blob in data.items()]
        for start in range(0, len(docs), 16):  # FerretDB's bulk chunk; a few MB a command at most
            self.collection.insert_many(docs[start:start + 16], ordered=False)
        self._insert_once(segment.document())  # it counts from here
        return segment

    def _insert_once(self, doc: Document) -> None:
        """Insert a document whose `_id` is new to the world (a fresh segment id): a duplicate
        is this insert's own first attempt, which a retried write (FerretDB keeps no record of
        retryable writes) finds stored."""
        with suppress(DuplicateKeyError):
            self.collection.insert_one(doc)

    def segment_cursor(self, rewritten: bool = True) -> Cursor[Document]:
        """The registry, on the `kind` index (FerretDB scans an `_id` range); `rewritten`:
        with those lists (up to a batch of ids a segment)."""
        return self.collection.find({"kind": "segment"}, None if rewritten else {"rewritten": 0})

    def _ensure_index(self) -> None:
        if not self._indexed:
            self.collection.create_index([("kind", ASCENDING)], name="kind")
            self._indexed = True

    def segments(self, rewritten: bool = True) -> list[Segment]:
        return [Segment.from_document(doc) for doc in self.segment_cursor(rewritten)]

    def live(self) -> list[Segment]:
        return live_segments(self.segments())

    def merge_beside(self) -> None:
        """`merge_due` on a thread of its own, unless it runs already: the writes go on
        meanwhile (a merge of millions of postings takes seconds). `close` waits for it."""
        if self._merging is not None and not self._merging.done():
            return
        if self._merger is None:
            self._merger = ThreadPoolExecutor(1, thread_name_prefix="word-merge")
        self._merging = self._merger.submit(self.merge_due)
        self._merging.add_done_callback(_tell_failed_merge)

    def merge_due(self) -> int:
        """Merge full tiers (under the merge lock), after indexing the records of pending
        documents a dead process left; returns how many merges ran."""
        merges = 0
        registry = self.segments(rewritten=False)  # after every write: what a plan needs
        live = live_segments(registry)
        left = list(self.collection.find({"kind": "pending", "created_at": {
            "$lt": datetime.now(UTC) - timedelta(seconds=LOCK_SECONDS)}}))
        if merge_plan(live) is None and len(live) == len(registry) and not left:
            return 0  # the usual case, without taking the lock
        if not self._lock():
            return 0
        try:
            registered = {segment.id for segment in registry}
            for pending in left:
                if pending["segment"] not in registered:  # its records' words as stored now
                    self.add(self.stored_records(pending["ids"]), rewritten=pending["ids"])
                self.collection.delete_one({"_id": pending["_id"]})
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
                postings.extend(*Bucket(doc["data"]).everything())
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
        an empty collection, or by `newscrawl index-words`) in this version's format."""
        state = self.collection.find_one({"_id": STATE_ID})
        return bool(state and state.get("complete") and state.get("format") == FORMAT)

    def start_if_empty(self) -> bool:
        """Mark the index complete when the articles collection is empty and the index is not
        (no state yet, or one of an older format); returns whether the index is complete."""
        self._ensure_index()
        if not self.complete() and self.articles.find_one({}, {"_id": 1}) is None:
            state = {"complete": True, "format": FORMAT, "since": datetime.now(UTC),
                     "by": "an empty collection"}
            # The same from any process; another's upsert may win the race (FerretDB's upserts
            # are not atomic).
            with suppress(DuplicateKeyError):
                self.collection.replace_one({"_id": STATE_ID}, state, upsert=True)
        return self.complete()

    def rebuild(self, batch: int = 5_000, progress: Callable[[int], None] | None = None) -> int:
        """Index every stored record again (an older collection, or a repair); returns how many.
        Queries scan while it runs; records written meanwhile index themselves."""
        self._ensure_index()
        self.collection.update_one({"_id": STATE_ID}, {"$set": {"complete": False}}, upsert=True)
        old = self.segments()
        done = 0
        pending: list[Record] = []
        for record in self.stored_records():
            pending.append(record)
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
            "complete": True, "format": FORMAT, "since": datetime.now(UTC), "by": "newscrawl index-words"}})
        self.merge_due()
        return done

    def stored_records(self, ids: Sequence[str] | None = None) -> Iterator[Record]:
        """(id, words, published_at) of the stored records with words: all of them by id, or
        those of `ids`."""
        fields = {"_id": 1, search.WORDS_FIELD: 1, "published_at": 1}
        docs = (self.articles.find({}, fields).sort("_id", 1) if ids is None
                else self.articles.find({"_id": {"$in": list(ids)}}, fields))
        for doc in docs:
            words = doc.get(search.WORDS_FIELD)
            if isinstance(words, str) and words:
                yield str(doc["_id"]), words, doc.get("published_at")

    # --- reading ---

    def postings(self, words: Iterable[str]) -> dict[str, tuple[Columns, set[int]]]:
        """Each word's postings over the live segments and the pending records, and the
        records to check: the registry read once, and every bucket of those words in one
        query."""
        # Pending documents first: one goes only after its segment counts, so a record is
        # in one or the other.
        pending = list(self.collection.find({"kind": "pending"}, {"segment": 1, "ids": 1}))
        registry = self.segments()
        live = live_segments(registry)
        registered = {segment.id for segment in registry}
        unsettled = sorted({n for doc in pending if doc["segment"] not in registered for n in doc["ids"]})
        segments = [segment for segment in live if segment.postings]
        rewritten = np.array(sorted({n for segment in live for n in segment.rewritten}
                                    | set(map(int, unsettled))), np.uint64)
        words = sorted(set(words))
        from_records = Postings()
        for record in self.stored_records(unsettled) if unsettled else ():
            from_records.add(*record)
        read = from_records.of_words(words)
        wanted = sorted({segment.bucket_id(word) for segment in segments for word in words})
        buckets: dict[str, Bucket] = {}
        for start in range(0, len(wanted), 1000):
            buckets.update((doc["_id"], Bucket(doc["data"]))
                           for doc in self.collection.find({"_id": {"$in": wanted[start:start + 1000]}}))
        return {word: merge_term_postings([*(buckets[bucket].word(word) for bucket in
                                             (segment.bucket_id(word) for segment in segments)
                                             if bucket in buckets), read[word]], rewritten)
                for word in words}

    def candidates(self, terms: Sequence[str],
                   phrases: Sequence[Sequence[frozenset[str]]] = ()) -> Candidates:
        """The records holding every term (and, for each phrase, one of its sets of words),
        with their scores summed in the terms' order."""
        phrase_words = (word for readings in phrases for words in readings for word in words)
        read = self.postings([*terms, *phrase_words])
        found = intersect([read[term][0] for term in terms], set().union(*(read[term][1] for term in terms)))
        return found.restrict(holding(phrases, read).columns.ids) if phrases else found

    def holders(self, phrases: Sequence[Sequence[frozenset[str]]]) -> Candidates:
        """The records that hold, for each phrase, every word of one of its sets of words
        (`pipelines.search.phrase_word_sets`), with their times (no scores)."""
        return holding(phrases, self.postings(word for readings in phrases for words in readings
                                              for word in words))

    def size(self) -> dict[str, int]:
        """Segments, postings and bytes of postings (the server's own storage adds its overhead)."""
        segments = self.live()
        postings = sum(s.postings for s in segments)
        return {"segments": len(segments), "postings": postings,
                "uncompressed_bytes": postings * _POSTING_BYTES}
