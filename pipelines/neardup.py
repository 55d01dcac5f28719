"""Reprints of one story linked as near-duplicates: MinHash, LSH bands, exact Jaccard.

The same report reprinted by another medium differs by an attribution line, a
paragraph added or cut, punctuation, a sentence: its content hash differs, its
text barely does. Each record's text is cut into character shingles (K
characters of its letters and digits: punctuation and spaces dropped, so a
punctuation-only edit changes nothing), summarised by a MinHash signature
(rensa's RMinHash, in Rust; datasketch's is several times slower here, see
bench/RESULTS.md) and stored as BANDS band keys (`minhash_bands`, R
signature rows each, hashed with the band's number). Two texts share a band key with
probability 1 - (1 - J^R)^BANDS for Jaccard similarity J: the candidates. The
similarity of each candidate is then computed exactly from both texts' shingle
sets, and a record whose exact Jaccard with an earlier one (published_at, then
_id) is at least THRESHOLD names the earliest of those in `near_duplicate_of`
(`{_id, similarity}`). Exact copies are near-duplicates too (similarity 1.0);
they also keep `duplicate_of`.

The threshold and parameters are chosen on the mirror's reprints and unrelated
articles (bench/neardup.py, bench/RESULTS.md "Near-duplicates").

`NearDuplicateLinker` plans the links of each write of `ArticleStore`, through a
small interface (`StoredRecords`: what it reads of the store; the store writes
what it plans). Candidates come from where the server's capabilities say
(pipelines.capabilities): the `minhash_bands` index (`IndexedCandidates`), or
`BandIndex` in memory (`MemoryCandidates`: loaded from the collection at the
first write, numpy arrays, bounded: see RESULTS; linked again from the
collection at close, so the later of two concurrent writers sees both).
Records are ordered by one key (pipelines.records.order_key) everywhere.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
import zlib
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from rensa import RMinHash

from pipelines.records import order_key

logger = logging.getLogger(__name__)

K = 5  # characters per shingle
NUM_PERM = 60
BANDS = 20
ROWS = NUM_PERM // BANDS
THRESHOLD = 0.6
SEED = 20211231
NUMBERS_KEPT = 0.8
ESTIMATE_MARGIN = 0.2  # candidates whose estimate is this far under THRESHOLD are not checked
SIGNATURE_FIELD = "minhash"
BANDS_FIELD = "minhash_bands"
LINK_FIELD = "near_duplicate_of"

_NOT_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """Letters and digits only, NFKC, lowercased: what a reprint keeps of a story's wording."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text)).lower()


def shingles(text: str, k: int = K) -> set[str]:
    norm = normalize(text)
    if len(norm) <= k:
        return {norm} if norm else set()
    return {norm[i:i + k] for i in range(len(norm) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def signature(shingle_set: Iterable[str]) -> np.ndarray[Any, np.dtype[np.uint32]]:
    """The MinHash signature (rensa's RMinHash: NUM_PERM 32-bit values)."""
    minhash = RMinHash(num_perm=NUM_PERM, seed=SEED)
    minhash.update(list(shingle_set))
    return np.asarray(minhash.digest(), dtype=np.uint32)


def band_keys_of(sig: np.ndarray[Any, Any]) -> list[int]:
    """BANDS signed 64-bit keys (BSON longs): band number and its R signature rows, hashed."""
    keys = []
    for band in range(BANDS):
        digest = hashlib.blake2b(sig[band * ROWS:(band + 1) * ROWS].tobytes(), digest_size=8,
                                 person=band.to_bytes(16, "little")).digest()
        keys.append(int.from_bytes(digest, "little", signed=True))
    return keys


def band_keys(text: str) -> list[int]:
    return band_keys_of(signature(shingles(text)))


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def figures_mask(text: str) -> int:
    """A 64-bit set of the text's figures (each sets one bit): `numbers_kept` before reading texts."""
    mask = 0
    for figure in set(_NUMBER.findall(text)):
        mask |= 1 << (zlib.crc32(figure.encode()) & 63)
    return mask


def figures_kept_at_most(a: int, b: int) -> float:
    """From two figures masks: about the share `numbers_kept` can reach (a bit shared by two
    figures only raises it: a prefilter, with a margin)."""
    na, nb = a.bit_count(), b.bit_count()
    if not na and not nb:
        return 1.0
    if not na or not nb:
        return 0.0
    return (a & b).bit_count() / min(na, nb)


def pack(sig: np.ndarray[Any, Any], mask: int) -> bytes:
    """`minhash`: NUM_PERM little-endian uint32, then the figures mask (uint64)."""
    return sig.astype("<u4").tobytes() + mask.to_bytes(8, "little")


def unpack(blob: bytes) -> tuple[np.ndarray[Any, np.dtype[np.uint32]], int]:
    return np.frombuffer(blob[:4 * NUM_PERM], dtype="<u4"), int.from_bytes(blob[4 * NUM_PERM:], "little")


def estimate(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    """MinHash's estimate of the Jaccard similarity: the share of equal rows."""
    return float(np.count_nonzero(a == b)) / len(a)


def numbers_kept(a: str, b: str) -> float:
    """The share of the figures of the text with fewer that the other has too (1.0 if neither
    has any). A reprint keeps a story's figures; formula news of different days does not."""
    na, nb = Counter(_NUMBER.findall(a)), Counter(_NUMBER.findall(b))
    if not na and not nb:
        return 1.0
    if not na or not nb:
        return 0.0
    return sum((na & nb).values()) / min(sum(na.values()), sum(nb.values()))


def similarity(a: str, b: str, shingles_a: set[str] | None = None,
               shingles_b: set[str] | None = None) -> float:
    """Exact Jaccard of the shingles, or 0.0 when the figures differ (NUMBERS_KEPT)."""
    if numbers_kept(a, b) < NUMBERS_KEPT:
        return 0.0
    return jaccard(shingles(a) if shingles_a is None else shingles_a,
                   shingles(b) if shingles_b is None else shingles_b)


def annotate(record: dict[str, Any], stored: Mapping[str, Any] | None) -> bool:
    """Fill `minhash` and `minhash_bands` when the text changed (or they are missing)."""
    if (stored is not None and BANDS_FIELD in stored and BANDS_FIELD in record
            and stored.get("content_hash") == record.get("content_hash")):
        return False
    text = record.get("text") or ""
    sig = signature(shingles(text))
    record[SIGNATURE_FIELD] = pack(sig, figures_mask(text))
    record[BANDS_FIELD] = band_keys_of(sig)
    record.setdefault(LINK_FIELD, None)
    return True


@dataclass(frozen=True)
class Link:
    target: str
    similarity: float

    def as_field(self) -> dict[str, Any]:
        return {"_id": self.target, "similarity": round(self.similarity, 4)}


def earliest_link(own: tuple[datetime, str], similar: Mapping[str, tuple[tuple[datetime, str], float]]
                  ) -> Link | None:
    """The link of a record to the earliest of its similar records, if that one is earlier."""
    earlier = [(key, aid, sim) for aid, (key, sim) in similar.items() if key < own]
    if not earlier:
        return None
    _, target, sim = min(earlier)
    return Link(target, sim)


# --- linking against the stored records --------------------------------------------------------

Document = dict[str, Any]
CANDIDATE_FIELDS = {"_id": 1, "published_at": 1, SIGNATURE_FIELD: 1, BANDS_FIELD: 1, LINK_FIELD: 1}
TEXT_FIELDS = {**CANDIDATE_FIELDS, "text": 1}
TEXT_CACHE = 10_000  # texts kept (about 1 kB each)

Links = dict[str, Mapping[str, Any] | None]


class StoredRecords(Protocol):
    """What the linker reads of the store (ArticleStore gives it; its reads are its rules)."""

    def read(self, ids: Iterable[str], fields: Mapping[str, int]) -> dict[str, Document]:
        """These records (those still stored), with `fields`."""
        ...

    def with_band_keys(self, keys: Iterable[int]) -> Iterable[Document]:
        """The records holding any of these band keys, with CANDIDATE_FIELDS."""
        ...

    def linked_to(self, ids: Iterable[str]) -> set[str]:
        """The ids of the records whose `near_duplicate_of` names one of these."""
        ...

    def all_with_bands(self) -> Iterable[Document]:
        """Every record with band keys, with CANDIDATE_FIELDS."""
        ...


@dataclass
class Candidate:
    key: tuple[datetime, str]  # order_key
    sig: np.ndarray[Any, Any]
    figures: int
    link: Mapping[str, Any] | None

    @property
    def article_id(self) -> str:
        return self.key[1]


def candidate_of(doc: Mapping[str, Any]) -> Candidate:
    sig, figures = unpack(bytes(doc[SIGNATURE_FIELD]))
    return Candidate(order_key(doc), sig, figures, doc.get(LINK_FIELD))


class BandIndex:
    """The `minhash_bands` index in memory, for a server where reading it costs more.

    Rows of numpy arrays: signatures (NUM_PERM uint32), figures masks and band
    keys (BANDS int64), plus a sorted copy of all band keys for binary search;
    the keys of rows written since the last sort (new rows, and rows whose text
    changed) are in a dict until there are RESORT_AT such rows. bench/neardup.py
    measures its memory.
    """

    RESORT_AT = 4096

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.published: list[datetime] = []
        self.links: dict[str, Mapping[str, Any]] = {}  # linked records only
        self.sigs = np.zeros((1024, NUM_PERM), dtype=np.uint32)
        self.figures = np.zeros(1024, dtype=np.uint64)
        self.bands = np.zeros((1024, BANDS), dtype=np.int64)
        self.sorted_keys = np.zeros(0, dtype=np.int64)
        self.sorted_rows = np.zeros(0, dtype=np.int32)
        self.sorted_upto = 0
        self.dirty: set[int] = set()  # sorted rows whose keys changed since
        self.recent: dict[int, list[int]] = {}  # band key -> rows put since the sort
        self.recent_rows = 0

    @classmethod
    def load(cls, docs: Iterable[Mapping[str, Any]]) -> BandIndex:
        index = cls()
        for doc in docs:
            index.put(candidate_of(doc), doc[BANDS_FIELD], recent=False)
        index._resort()  # once, for all of them
        return index

    def __len__(self) -> int:
        return len(self.ids)

    def nbytes(self) -> int:
        return int(self.sigs.nbytes + self.figures.nbytes + self.bands.nbytes
                   + self.sorted_keys.nbytes + self.sorted_rows.nbytes)

    def put(self, candidate: Candidate, bands: list[int], *, recent: bool = True) -> None:
        """Add or update a record, with its link (`recent=False`: the caller sorts when done)."""
        published_at, article_id = candidate.key
        row = self.rows.get(article_id)
        if row is None:
            row = len(self.ids)
            if row == len(self.sigs):
                self.sigs = np.concatenate([self.sigs, np.zeros_like(self.sigs)])
                self.figures = np.concatenate([self.figures, np.zeros_like(self.figures)])
                self.bands = np.concatenate([self.bands, np.zeros_like(self.bands)])
            self.ids.append(article_id)
            self.published.append(published_at)
            self.rows[article_id] = row
        else:
            self.published[row] = published_at
            if row < self.sorted_upto:
                self.dirty.add(row)
        self.sigs[row] = candidate.sig
        self.figures[row] = candidate.figures
        self.bands[row] = bands
        # Loaded records keep their stored links too: a later record similar to one of them
        # must not take over a link to an earlier original.
        self.set_link(article_id, candidate.link)
        if not recent:
            return
        for key in bands:
            self.recent.setdefault(key, []).append(row)
        self.recent_rows += 1
        if self.recent_rows > self.RESORT_AT:
            self._resort()

    def set_link(self, article_id: str, link: Mapping[str, Any] | None) -> None:
        if link is None:
            self.links.pop(article_id, None)
        else:
            self.links[article_id] = link

    def candidate(self, article_id: str) -> Candidate:
        row = self.rows[article_id]
        return Candidate((self.published[row], article_id), self.sigs[row],
                         int(self.figures[row]), self.links.get(article_id))

    def lookup(self, bands: list[int]) -> set[str]:
        """Ids of the records sharing a band key with `bands`."""
        return {self.ids[row] for row in self._rows(bands)}

    def close(self, bands: list[int], sig: np.ndarray[Any, Any], figures: int) -> set[str]:
        """`lookup`, less the records whose estimate or figures mask rule them out (as
        `NearDuplicateLinker` would, in one numpy pass instead of one object each)."""
        found = self._rows(bands)
        if not found:
            return set()
        rows = np.fromiter(found, dtype=np.int64, count=len(found))
        estimates = np.count_nonzero(self.sigs[rows] == sig, axis=1) / NUM_PERM
        masks = self.figures[rows]
        theirs, ours = np.bitwise_count(masks), figures.bit_count()
        shared = np.bitwise_count(masks & np.uint64(figures))
        fewer = np.minimum(theirs, ours)
        kept = np.where(fewer > 0, shared / np.maximum(fewer, 1),
                        np.where((theirs == 0) & (ours == 0), 1.0, 0.0))
        keep = (estimates >= THRESHOLD - ESTIMATE_MARGIN) & (kept >= NUMBERS_KEPT - ESTIMATE_MARGIN)
        return {self.ids[row] for row in rows[keep].tolist()}

    def _rows(self, bands: list[int]) -> set[int]:
        keys = np.asarray(bands, dtype=np.int64)
        found: set[int] = set()
        left = np.searchsorted(self.sorted_keys, keys, side="left")
        right = np.searchsorted(self.sorted_keys, keys, side="right")
        for lo, hi in zip(left.tolist(), right.tolist(), strict=True):
            if hi > lo:
                found.update(self.sorted_rows[lo:hi].tolist())
        found -= self.dirty  # their keys changed since the sort: found in `recent` if still held
        for key in bands:
            for row in self.recent.get(key, ()):
                if key in self.bands[row].tolist():  # not a key the row held before an edit
                    found.add(row)
        return found

    def _resort(self) -> None:
        n = len(self.ids)
        flat = self.bands[:n].ravel()
        order = np.argsort(flat, kind="stable")
        self.sorted_keys = flat[order]
        self.sorted_rows = (order // BANDS).astype(np.int32)
        self.sorted_upto = n
        self.dirty = set()
        self.recent = {}
        self.recent_rows = 0

    def dependents(self, targets: set[str]) -> set[str]:
        return {aid for aid, link in self.links.items() if link["_id"] in targets}


class IndexedCandidates:
    """Candidates from the `minhash_bands` index: every writer's records as stored now, so
    the store links again right after each write, and nothing is left for close."""

    def __init__(self, records: StoredRecords) -> None:
        self.records = records

    def learn(self, todo: Mapping[str, Mapping[str, Any]]) -> None:
        """Nothing to learn: the index has what is written."""

    def near(self, todo: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Candidate]]:
        """Each record's candidates: the stored records and the other `todo` records (which may
        not be written yet) sharing a band key with it."""
        keys = sorted({key for record in todo.values() for key in record[BANDS_FIELD]})
        by_key: dict[int, list[Candidate]] = {}
        for doc in [*self.records.with_band_keys(keys), *todo.values()]:
            candidate = candidate_of(doc)
            for key in doc.get(BANDS_FIELD) or ():
                by_key.setdefault(key, []).append(candidate)
        out: dict[str, dict[str, Candidate]] = {aid: {} for aid in todo}
        for aid, record in todo.items():
            for key in record[BANDS_FIELD]:
                for candidate in by_key.get(key, ()):
                    if candidate.article_id != aid:
                        out[aid][candidate.article_id] = candidate
        return out

    def dependents(self, ids: set[str]) -> set[str]:
        return self.records.linked_to(sorted(ids))

    def note_links(self, changes: Links) -> None:
        """Nothing to note: links are read with the candidates."""

    def written(self, todo: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """The records to link again from what is stored now: all of them, at once."""
        return set(todo)

    def at_close(self) -> set[str]:
        return set()


class MemoryCandidates:
    """Candidates from a BandIndex loaded from the collection at the first write, kept up
    with this store's writes. Another writer's records are unknown until close, which
    reloads the index and links again what this store wrote near what others wrote."""

    def __init__(self, records: StoredRecords) -> None:
        self.records = records
        self.index: BandIndex | None = None
        self.unchecked: set[str] = set()  # written since the last load: linked again at close

    def _index(self) -> BandIndex:
        if self.index is None:
            self.index = BandIndex.load(self.records.all_with_bands())
        return self.index

    def learn(self, todo: Mapping[str, Mapping[str, Any]]) -> None:
        index = self._index()
        for record in todo.values():
            index.put(candidate_of(record), record[BANDS_FIELD])

    def near(self, todo: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Candidate]]:
        index = self._index()
        out: dict[str, dict[str, Candidate]] = {}
        for aid, record in todo.items():
            sig, figures = unpack(bytes(record[SIGNATURE_FIELD]))
            out[aid] = {other: index.candidate(other)
                        for other in index.close(record[BANDS_FIELD], sig, figures) - {aid}}
        return out

    def dependents(self, ids: set[str]) -> set[str]:
        return self._index().dependents(ids)

    def note_links(self, changes: Links) -> None:
        if self.index is not None:
            for aid, link in changes.items():
                if aid in self.index.rows:
                    self.index.set_link(aid, link)

    def written(self, todo: Mapping[str, Mapping[str, Any]]) -> set[str]:
        self.unchecked.update(todo)
        return set()

    def at_close(self) -> set[str]:
        """Reload the index; the records this store wrote that share a band key with one
        another writer stored or changed meanwhile. (Nothing to read when none did.)"""
        if not self.unchecked:
            return set()
        before, self.index = self.index, BandIndex.load(self.records.all_with_bands())
        index = self.index
        foreign = [aid for aid in index.ids if aid not in self.unchecked
                   and not (before is not None and aid in before.rows
                            and np.array_equal(before.bands[before.rows[aid]],
                                               index.bands[index.rows[aid]]))]
        affected: set[str] = set()
        for aid in foreign:
            affected |= index.lookup(index.bands[index.rows[aid]].tolist())
        affected &= self.unchecked
        self.unchecked = set()
        return affected


CandidateSource = IndexedCandidates | MemoryCandidates


class NearDuplicateLinker:
    """Plans the links of the records of each write to their earliest near-duplicate, and
    back; the store writes them. Candidates come from `candidates`, anything else it reads
    from `records`."""

    def __init__(self, records: StoredRecords, candidates: CandidateSource) -> None:
        self.records = records
        self.candidates = candidates
        # Texts of the records written or read lately: a reprint's original is often one of them.
        self.texts: OrderedDict[str, str] = OrderedDict()

    def plan(self, records: Mapping[str, Mapping[str, Any]]) -> tuple[Links, Links]:
        """The links of records whose text is new or changed (about to be written, or
        written), and the changed links of other records: records that now have an earlier
        near-duplicate among these, and records linked to one whose text changed."""
        todo: dict[str, Mapping[str, Any]] = {aid: r for aid, r in records.items()
                                              if r.get(BANDS_FIELD) is not None}
        if not todo:
            return {}, {}
        self.candidates.learn(todo)
        dependents = self.candidates.dependents(set(todo)) - set(todo)
        # Records linked to one whose text changed are linked anew.
        todo.update(self.records.read(dependents, TEXT_FIELDS))
        links, others = self._plan(todo)
        own = {aid: link for aid, link in links.items() if aid in records}
        others.update({aid: link for aid, link in links.items()
                       if aid not in records and link != todo[aid].get(LINK_FIELD)})
        return own, others

    def after_write(self, written: Mapping[str, Mapping[str, Any]]) -> Links:
        """Links that differ from the written ones, planned again from what is stored now (as
        far as the candidates know it now: another writer may have stored a reprint meanwhile)."""
        return self.relink({aid: written[aid] for aid in self.candidates.written(written)})

    def at_close(self) -> Links:
        """Links that differ from the stored ones, for what the candidates find only now."""
        affected = self.candidates.at_close()
        if not affected:
            return {}
        self.texts.clear()  # another writer may have changed one
        return self.relink(self.records.read(affected, TEXT_FIELDS))

    def relink(self, records: Mapping[str, Mapping[str, Any]]) -> Links:
        """Links that differ from these stored (or written) records' own, and the changed links
        of others: after their texts or times changed."""
        own, others = self.plan(records)
        changed = {aid: link for aid, link in own.items() if link != records[aid].get(LINK_FIELD)}
        changed.update(others)
        return changed

    def _plan(self, todo: Mapping[str, Mapping[str, Any]]) -> tuple[Links, Links]:
        """Links of the `todo` records (all), and changed links of other records."""
        candidates = self.candidates.near(todo)
        signatures = {aid: unpack(bytes(r[SIGNATURE_FIELD])) for aid, r in todo.items()}
        close: dict[str, list[Candidate]] = {}
        need_text: set[str] = set()
        for aid, found in candidates.items():
            sig, figures = signatures[aid]
            close[aid] = [c for c in found.values()
                          if figures_kept_at_most(figures, c.figures) >= NUMBERS_KEPT - ESTIMATE_MARGIN
                          and estimate(sig, c.sig) >= THRESHOLD - ESTIMATE_MARGIN]
            need_text.update(c.article_id for c in close[aid] if c.article_id not in todo)
        texts = {aid: r.get("text") or "" for aid, r in todo.items()}
        texts.update({aid: self.texts[aid] for aid in need_text if aid in self.texts})
        texts.update({aid: doc.get("text") or "" for aid, doc in
                      self.records.read(need_text - set(texts), {"_id": 1, "text": 1}).items()})
        for aid, text in texts.items():
            self.texts[aid] = text
            self.texts.move_to_end(aid)
        while len(self.texts) > TEXT_CACHE:
            self.texts.popitem(last=False)
        shingle_sets: dict[str, set[str]] = {}  # only of the texts compared

        def shingles_of(aid: str) -> set[str]:
            if aid not in shingle_sets:
                shingle_sets[aid] = shingles(texts[aid])
            return shingle_sets[aid]
        changes: Links = {}
        current: Links = {aid: r.get(LINK_FIELD) for aid, r in todo.items()}
        for aid, record in todo.items():
            own = order_key(record)
            similar: dict[str, tuple[tuple[datetime, str], float]] = {}
            for c in close[aid]:
                if c.article_id not in texts:
                    continue  # gone since the lookup
                if numbers_kept(texts[aid], texts[c.article_id]) < NUMBERS_KEPT:
                    continue
                sim = similarity(texts[aid], texts[c.article_id], shingles_of(aid),
                                 shingles_of(c.article_id))
                if sim >= THRESHOLD:
                    similar[c.article_id] = (c.key, sim)
                    current.setdefault(c.article_id, c.link)
            best = earliest_link(own, similar)
            changes[aid] = None if best is None else {
                **best.as_field(), "published_at": similar[best.target][0][0]}
            # The others may now have an earlier near-duplicate: this one.
            for other, (key, sim) in similar.items():
                if other in todo or key <= own:
                    continue
                link = changes.get(other, current.get(other))
                if link is None or order_key(link) > own:
                    changes[other] = {"_id": aid, "similarity": round(sim, 4),
                                      "published_at": record["published_at"]}
        others = {aid: link for aid, link in changes.items()
                  if aid not in todo and link != current.get(aid)}
        self.candidates.note_links(changes)
        return {aid: changes[aid] for aid in todo}, others
