"""A round of writes planned without a database: stored records + sightings -> write plan.

`ArticleStore.write` reads the records a batch touches, then plans here, the
same way whatever the server: `merge_round` folds each article's sightings into
its stored record (pipelines.records) and fills its search words and MinHash;
`duplicate_changes` says which `duplicate_of` values the batch changes, from
the records sharing its texts; `plan_writes` turns the merged records and the
links into writes. The store's executor applies them as the server can
(pipelines.capabilities): every write of a record adds one to its write
counter, and a replace names the counter it read (its guard), so a concurrent
write is seen whether the server checks the guard (MongoDB) or the store reads
again just before writing (FerretDB).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipelines import neardup, search
from pipelines.records import duplicate_links, merge_batch

Document = dict[str, Any]

WRITE_COUNTER = "writes"  # +1 on every write of a record: the guard against concurrent writers


@dataclass(frozen=True)
class Insert:
    """A record not stored yet (a stored copy makes it a duplicate key: read, merge again)."""

    record: Document


@dataclass(frozen=True)
class Replace:
    """A stored record rewritten whole, if its write counter is still `guard`."""

    record: Document
    guard: int | None


@dataclass(frozen=True)
class Update:
    """Fields of a record this round does not rewrite: `set` (a link), `max` (last_seen_at),
    while the record matches `where` too."""

    article_id: str
    set: Mapping[str, Any] = field(default_factory=dict)
    max: Mapping[str, Any] = field(default_factory=dict)
    where: Mapping[str, Any] = field(default_factory=dict)


Write = Insert | Replace | Update


def write_id(write: Write) -> str:
    return write.article_id if isinstance(write, Update) else str(write.record["_id"])


@dataclass
class MergedRound:
    records: dict[str, Document] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    text_changed: dict[str, Document] = field(default_factory=dict)  # to look for near-duplicates
    # Records whose words were (re)made, for the word index: True when a stored record had words.
    words_changed: dict[str, bool] = field(default_factory=dict)
    orphans: int = 0  # listings of records gone since they were read


def merge_round(by_id: Mapping[str, list[Mapping[str, Any]]], stored: Mapping[str, Document],
                now: datetime) -> MergedRound:
    """Each article's sightings folded into its stored record (or a new one)."""
    merged = MergedRound()
    for article_id, group in by_id.items():
        old = stored.get(article_id)
        if old is None and all(s["page_kind"] == "listing" for s in group):
            merged.orphans += 1  # a listing cannot make a record
            continue
        result = merge_batch(old, group, now)
        record = result.record
        merged.records[article_id], merged.outcomes[article_id] = record, result.outcome
        if search.annotate(record, old):  # words, when title or text changed
            merged.words_changed[article_id] = old is not None and search.WORDS_FIELD in old
        if neardup.annotate(record, old):  # minhash, when the text changed
            merged.text_changed[article_id] = record
    return merged


def new_texts(merged: Mapping[str, Document], stored: Mapping[str, Document]) -> set[str]:
    """The content hashes the round writes that its records did not hold."""
    return {record["content_hash"] for article_id, record in merged.items()
            if article_id not in stored or stored[article_id]["content_hash"] != record["content_hash"]}


def duplicate_changes(merged: Mapping[str, Document], hashes: set[str],
                      groups: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, str | None]:
    """`duplicate_of` of every record sharing a text with the round, where it changes (and of
    every record of the round sharing one). `hashes`: the round's new texts (`new_texts`);
    `groups`: the stored records holding each (`_id`, `published_at`, `content_hash`,
    `duplicate_of`), by content hash."""
    regrouped: dict[str, dict[str, Mapping[str, Any]]] = {h: dict(groups.get(h, {})) for h in hashes}
    held = {article_id: h for h, group in regrouped.items() for article_id in group}
    for article_id, record in merged.items():
        if held.get(article_id, record["content_hash"]) != record["content_hash"]:
            del regrouped[held[article_id]][article_id]  # its text changed: it left that group
        if record["content_hash"] in regrouped:
            regrouped[record["content_hash"]][article_id] = record
    changes: dict[str, str | None] = {}
    for group in regrouped.values():
        for article_id, duplicate_of in duplicate_links(group.values()).items():
            if group[article_id].get("duplicate_of") != duplicate_of or article_id in merged:
                changes[article_id] = duplicate_of
    return changes


def relink_changes(groups: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, str | None]:
    """`duplicate_of` values that differ from the stored ones, from the records holding each text."""
    return {article_id: duplicate_of
            for group in groups.values()
            for article_id, duplicate_of in duplicate_links(group.values()).items()
            if group[article_id].get("duplicate_of") != duplicate_of}


def plan_writes(merged: Mapping[str, Document], stored: Mapping[str, Document],
                links: Mapping[str, Mapping[str, Any]]) -> list[Write]:
    """The round's writes. `links`: field -> {article id: value} (duplicate_of,
    near_duplicate_of), set on the merged records and updated on the others.

    A merged record that changed is inserted (not stored) or replaced with its counter
    plus one, guarded by the counter read; one that did not change is not written.
    """
    writes: list[Write] = []
    for link_field, values in links.items():
        for article_id, value in values.items():
            if article_id in merged:
                merged[article_id][link_field] = value
    for article_id, record in merged.items():
        old = stored.get(article_id)
        if old is None:
            record[WRITE_COUNTER] = 1
            writes.append(Insert(record))
        elif record != old:
            guard = old.get(WRITE_COUNTER)
            record[WRITE_COUNTER] = (guard or 0) + 1
            writes.append(Replace(record, guard))
    for link_field, values in links.items():
        writes += [Update(article_id, set={link_field: value})
                   for article_id, value in values.items() if article_id not in merged]
    return writes


def last_seen_writes(due: Mapping[str, datetime]) -> list[Write]:
    """`last_seen_at` moved forward for records whose sightings add nothing else."""
    return [Update(article_id, max={"last_seen_at": seen_at}) for article_id, seen_at in due.items()]


def linked(writes: Iterable[Write], link_field: str) -> int:
    """How many of `writes` set `link_field` on a record the round does not rewrite."""
    return sum(isinstance(w, Update) and link_field in w.set for w in writes)
