"""Sightings and stored records: pure functions, no database.

A sighting is what one item says about an article (one post page, with the
share text merged in, or one share-host answer). A record is the one document
per article. `merge_sighting` folds a sighting into a record; the storage
pipeline only fetches, calls it, and writes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from itemadapter import ItemAdapter

from pipelines.dates import PROOF_UNPROVEN, TimeClaim, reconcile_times
from pipelines.identity import BODY_RANK, article_text, better_body, info_code

Outcome = Literal["stored", "updated", "unchanged"]

# Fields a record takes from the sighting that supplies its body.
BODY_FIELDS = ("paragraphs", "text", "content_hash", "body_kind", "body_url")
# Fields a record takes from its best post-page sighting (or a share one, if that is all).
HEADLINE_FIELDS = (
    "title", "published_at", "published_at_raw", "published_at_proof", "published_at_shifted",
)
SOURCE_FIELDS = ("source", "source_slug")
SET_FIELDS = ("categories", "tags", "urls")


def bson_time(moment: datetime) -> datetime:
    """A UTC datetime at BSON's millisecond precision, so what we write is what we read."""
    return moment.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000)


def sighting_title(title: str | None, share_title: str | None) -> str | None:
    """A sighting's title: the post's `<h1>`, else the share JSON's title, stripped;
    None when neither says anything."""
    return (title or "").strip() or (share_title or "").strip() or None


def sighting_from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """The sighting of a normalised item (the pipelines' derived fields filled,
    its title chosen by `sighting_title`)."""
    is_post = item.get("page_kind") == "post"
    category = item.get("category")
    return {
        "_id": item["article_id"],
        "info_code": info_code(item["article_id"]),
        "page_kind": item["page_kind"],
        "title": item["title"],
        "paragraphs": list(item["paragraphs"]),
        "text": article_text(item["paragraphs"]),
        "body_kind": item["body_kind"],
        # The share text's own address: a later look at the post page is not an edit of it.
        "body_url": (item.get("share_url") or item["url"]) if item["body_kind"] == "share"
        else item["url"],
        "published_at": bson_time(item["published_at"]),
        "published_at_raw": item["published_at_raw"],
        "published_at_proof": item.get("published_at_proof") or PROOF_UNPROVEN,
        "published_at_shifted": bool(item.get("published_at_shifted")),
        "source": item["source"],
        "source_slug": item["source_slug"],
        "source_from": item.get("extra", {}).get("source_from"),
        "categories": [category] if is_post and category else [],
        "tags": list(item.get("tags") or []) if is_post else [],
        "urls": [item["url"]] if is_post else [],
        "share_url": item.get("share_url"),
        "origin_url": item.get("origin_url"),
        "content_hash": item["content_hash"],
        "share_pending": _share_pending(item),
        "seen_at": bson_time(item["fetched_at"]),
    }


def _share_pending(item: Mapping[str, Any]) -> bool | None:
    """Whether the share text is still to come: None when the share host was not asked."""
    extra = item.get("extra") or {}
    if item.get("share_html") is None and "share_error" not in extra:
        return None
    return bool(extra.get("share_pending"))


def is_listing_sighting(adapter: ItemAdapter) -> bool:
    """Whether an item is a listing sighting (newscrawl.items.ListingSighting): an article a
    listing still shows, whose page was not fetched. Only a sighting carries `seen_at`."""
    return "seen_at" in adapter.field_names()


def sighting_from_listing(listing: Mapping[str, Any]) -> dict[str, Any]:
    """The sighting of a listing entry whose page was not refetched: sets and time only."""
    category = listing.get("category")
    return {
        "_id": listing["article_id"],
        "page_kind": "listing",
        "categories": [category] if category else [],
        "tags": list(listing.get("tags") or []),
        "urls": [listing["url"]],
        "seen_at": bson_time(listing["seen_at"]),
    }


def _union(*lists: Iterable[str]) -> list[str]:
    return sorted({value for values in lists for value in values})


def union_categories(*lists: Iterable[str]) -> list[str]:
    """Categories as written, sorted; a lower-cased twin of one is dropped.

    Records stored before categories were read from the site's links hold the
    URL's lower-cased form (`wind` for `Wind`): the name as written replaces it.
    """
    names = set(_union(*lists))
    lowered = {name.lower() for name in names if name != name.lower()}
    return sorted(name for name in names if name != name.lower() or name not in lowered)


def _union_field(name: str, *lists: Iterable[str]) -> list[str]:
    return union_categories(*lists) if name == "categories" else _union(*lists)


def time_claim(doc: Mapping[str, Any]) -> TimeClaim:
    """A record's or sighting's publication time and its proof (unproven for older records)."""
    return TimeClaim(doc["published_at"], doc.get("published_at_proof") or PROOF_UNPROVEN,
                     bool(doc.get("published_at_shifted")))


def new_record(sighting: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    record = {k: v for k, v in sighting.items() if k not in ("page_kind", "source_from", "seen_at")}
    record["share_pending"] = bool(sighting.get("share_pending"))
    record["published_at_proof"] = sighting.get("published_at_proof") or PROOF_UNPROVEN
    record["published_at_shifted"] = bool(sighting.get("published_at_shifted"))
    record.update(
        duplicate_of=None,
        revision=1,
        first_seen_at=sighting["seen_at"],
        last_seen_at=sighting["seen_at"],
        updated_at=now,
        headline_from=sighting["page_kind"],
    )
    for name in SET_FIELDS:
        record[name] = _union_field(name, record[name])
    return record


@dataclass(frozen=True)
class Merge:
    record: dict[str, Any]
    outcome: Outcome


def _replaces_body(record: Mapping[str, Any], sighting: Mapping[str, Any]) -> bool:
    if sighting["content_hash"] == record["content_hash"]:
        return False
    # The page that supplied the body changed it: an edit, whatever its length.
    if sighting["body_url"] == record.get("body_url") and (
        BODY_RANK[sighting["body_kind"]] >= BODY_RANK[record["body_kind"]]
    ):
        return True
    return better_body(
        sighting["body_kind"], sighting["text"], record["body_kind"], record["text"]
    )


def merge_sighting(
    record: Mapping[str, Any] | None, sighting: Mapping[str, Any], now: datetime
) -> Merge:
    """Fold one sighting into the record of its article (None: not stored yet)."""
    if record is None:
        if sighting["page_kind"] == "listing":
            raise ValueError(f"a listing sighting of {sighting['_id']} needs a stored record")
        return Merge(new_record(sighting, now), "stored")
    merged = dict(record)
    for name in SET_FIELDS:
        merged[name] = _union_field(name, record.get(name) or [], sighting[name])
    merged["last_seen_at"] = max(record["last_seen_at"], sighting["seen_at"])
    if sighting["page_kind"] == "listing":
        return Merge(merged, "unchanged")
    for name in ("share_url", "origin_url"):
        merged[name] = record.get(name) or sighting.get(name)
    merged["first_seen_at"] = min(record["first_seen_at"], sighting["seen_at"])
    # Pending until a sighting's share fetch did not fail for a reason that may pass.
    if sighting.get("share_pending") is not None:
        merged["share_pending"] = sighting["share_pending"]
    if merged["body_kind"] == "share":
        merged["share_pending"] = False

    is_post = sighting["page_kind"] == "post"
    replaces = _replaces_body(record, sighting)
    if replaces:
        for name in BODY_FIELDS:
            merged[name] = sighting[name]
        merged["revision"] = record.get("revision", 1) + 1
        merged["updated_at"] = now
    # Title and date come from post pages; a share answer only fills what is missing.
    takes_headline = (
        (is_post and (replaces or record.get("headline_from") != "post")) or not record.get("title"))
    if takes_headline:
        for name in HEADLINE_FIELDS:
            value = sighting.get(name)
            merged[name] = record.get(name) if value is None or value == "" else value
        if is_post:
            merged["headline_from"] = "post"
    # The other side's time may prove the headline's (pipelines.dates.reconcile_times).
    time = reconcile_times(time_claim(merged), time_claim(record if takes_headline else sighting))
    merged.update(published_at=time.at, published_at_proof=time.proof,
                  published_at_shifted=time.shifted)
    if replaces and (is_post or sighting.get("source_from") == "attribution"):
        for name in SOURCE_FIELDS:
            merged[name] = sighting[name]
    return Merge(merged, "updated" if replaces else "unchanged")


def merge_batch(
    record: Mapping[str, Any] | None, sightings: Iterable[Mapping[str, Any]], now: datetime
) -> Merge:
    """Fold one batch's sightings of an article into its stored record (or None).

    An article first stored by this batch starts at revision 1 whatever order
    its sightings came in: revisions count changes to a stored document.
    """
    merged: Mapping[str, Any] | None = record
    changed = False
    for sighting in sightings:
        step = merge_sighting(merged, sighting, now)
        merged, changed = step.record, changed or step.outcome == "updated"
    assert merged is not None, "merge_batch needs at least one sighting"
    if record is None:
        return Merge({**merged, "revision": 1}, "stored")
    return Merge(dict(merged), "updated" if changed else "unchanged")


def order_key(record: Mapping[str, Any]) -> tuple[datetime, str]:
    """Which of two records came first: the smaller (published_at, _id). The original of a
    copy or a reprint is the first; a link (`near_duplicate_of`) orders as the record it names."""
    return (record["published_at"], record["_id"])


def duplicate_links(records: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
    """`duplicate_of` for records sharing one content hash: the earliest (order_key) is the
    original, the others name it."""
    ordered = sorted(records, key=order_key)
    if not ordered:
        return {}
    first = ordered[0]["_id"]
    return {r["_id"]: (None if r["_id"] == first else first) for r in ordered}


# --- what a run knows of stored records from its start ----------------------------------------

# `last_seen_at` moves on a sighting that adds nothing else only when it is at least this much
# later than the stored value: a rerun every few minutes writes it once an hour, not every time.
LAST_SEEN_RESOLUTION = timedelta(hours=1)
# What a listing sighting says. A sighting saying more (a post page, a share answer, or a
# listing that learned to carry a time) is for the merge to judge.
LISTING_SIGHTING_FIELDS = frozenset({"_id", "page_kind", "seen_at", *SET_FIELDS})


@dataclass(frozen=True)
class KnownRecord:
    """The parts of a stored record a sighting that only lists it can add to."""

    categories: frozenset[str]
    tags: frozenset[str]
    urls: frozenset[str]
    last_seen_at: datetime

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> KnownRecord:
        # Categories and tags repeat across records: one string each (100,000 records in memory).
        categories, tags = (frozenset(map(sys.intern, record.get(name) or ()))
                            for name in ("categories", "tags"))
        return cls(categories, tags, frozenset(record.get("urls") or ()), record["last_seen_at"])


def sighting_adds_nothing(known: KnownRecord | None, sighting: Mapping[str, Any]) -> bool:
    """Whether folding `sighting` into the record would change nothing but `last_seen_at`.

    True only for a listing sighting of a known record whose categories, tags
    and URLs the record has: the store then neither reads nor rewrites it.
    """
    if known is None or sighting["page_kind"] != "listing" or set(sighting) - LISTING_SIGHTING_FIELDS:
        return False
    return (known.categories.issuperset(sighting["categories"])
            and known.tags.issuperset(sighting["tags"]) and known.urls.issuperset(sighting["urls"]))


def last_seen_is_due(known: KnownRecord, seen_at: datetime) -> bool:
    """Whether a sighting that adds nothing else should still move `last_seen_at`."""
    return seen_at >= known.last_seen_at + LAST_SEEN_RESOLUTION
