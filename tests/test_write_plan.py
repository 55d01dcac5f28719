"""The round of writes, planned without a database (pipelines.write_plan): the same plan
whatever the server; the store's executor applies it as the server can."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pipelines.records import order_key
from pipelines.write_plan import (
    WRITE_COUNTER,
    Insert,
    Replace,
    Update,
    duplicate_changes,
    last_seen_writes,
    linked,
    merge_round,
    new_texts,
    plan_writes,
    relink_changes,
)
from tests.helpers import AID, PUBLISHED, T0, other_article, sighting

EARLY, LATE = "202112312232330001", "202112312232330002"


def stored_round(*sightings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Records as a first round stores them (inserted, write counter 1)."""
    merged = merge_round({s["_id"]: [s] for s in sightings}, {}, T0)
    plan_writes(merged.records, {}, {})
    return merged.records


def test_a_new_record_is_inserted_with_its_counter_at_one_and_its_words_and_minhash() -> None:
    merged = merge_round({AID: [sighting("media", ["a", "b"])]}, {}, T0)
    assert merged.outcomes == {AID: "stored"} and set(merged.text_changed) == {AID}
    writes = plan_writes(merged.records, {}, {})
    assert writes == [Insert(merged.records[AID])]
    record = merged.records[AID]
    assert record[WRITE_COUNTER] == 1 and record["words"] and record["minhash_bands"]


def test_a_changed_record_is_replaced_under_the_counter_it_was_read_with() -> None:
    stored = stored_round(sighting("media", ["a", "b"]))
    stored[AID][WRITE_COUNTER] = 7  # other writers wrote it since
    later = T0 + timedelta(hours=1)
    merged = merge_round({AID: [sighting("media", ["a", "b", "c"], seen=later)]}, stored, later)
    assert merged.outcomes == {AID: "updated"}
    (write,) = plan_writes(merged.records, stored, {})
    assert isinstance(write, Replace) and write.guard == 7 and write.record[WRITE_COUNTER] == 8
    assert write.record["text"] == "a\nb\nc"


def test_a_record_the_round_does_not_change_is_not_written() -> None:
    stored = stored_round(sighting("media", ["a", "b"]))
    merged = merge_round({AID: [sighting("media", ["a", "b"])]}, stored, T0)
    assert merged.outcomes == {AID: "unchanged"}
    assert plan_writes(merged.records, stored, {}) == []


def test_a_listing_of_a_record_that_is_gone_is_an_orphan_not_a_record() -> None:
    listing = sighting("media", ["a"], page_kind="listing", categories=["c"], tags=[], urls=[])
    merged = merge_round({AID: [listing]}, {}, T0)
    assert merged.orphans == 1 and merged.records == {}


def test_links_are_set_on_the_round_and_updated_on_the_others() -> None:
    merged = merge_round({LATE: [other_article(LATE, ["同一篇"], PUBLISHED + timedelta(hours=2))]}, {}, T0)
    near = {"_id": LATE, "similarity": 0.9, "published_at": PUBLISHED + timedelta(hours=2)}
    writes = plan_writes(merged.records, {}, {"duplicate_of": {LATE: EARLY, "x": None},
                                              "near_duplicate_of": {"y": near}})
    assert merged.records[LATE]["duplicate_of"] == EARLY
    assert writes[1:] == [Update("x", set={"duplicate_of": None}),
                          Update("y", set={"near_duplicate_of": near})]
    assert linked(writes, "duplicate_of") == 1 and linked(writes, "near_duplicate_of") == 1


def test_the_earliest_copy_of_a_text_is_the_original_whichever_round_brings_it() -> None:
    late = other_article(LATE, ["同一篇稿子"], PUBLISHED + timedelta(hours=2))
    stored = stored_round(late)
    merged = merge_round({EARLY: [other_article(EARLY, ["同一篇稿子"], PUBLISHED)]}, {}, T0)
    groups = {stored[LATE]["content_hash"]: {LATE: stored[LATE]}}
    hashes = new_texts(merged.records, {})
    assert duplicate_changes(merged.records, hashes, groups) == {EARLY: None, LATE: EARLY}


def test_a_record_whose_text_changed_leaves_its_old_texts_group() -> None:
    # EARLY held text h1 and LATE copied it; EARLY's text changes, and a third record brings
    # h1 again in the same round: h1's original is LATE now, not EARLY.
    stored = stored_round(other_article(EARLY, ["甲"], PUBLISHED),
                          other_article(LATE, ["甲"], PUBLISHED + timedelta(hours=1)))
    stored[LATE]["duplicate_of"] = EARLY
    third = "202112312232330003"
    merged = merge_round({EARLY: [other_article(EARLY, ["乙"], PUBLISHED) | {"seen_at": T0}],
                          third: [other_article(third, ["甲"], PUBLISHED + timedelta(hours=2))]},
                         stored, T0 + timedelta(hours=1))
    h1 = stored[EARLY]["content_hash"]
    hashes = new_texts(merged.records, {EARLY: stored[EARLY]})
    changes = duplicate_changes(merged.records, hashes, {h1: {EARLY: stored[EARLY], LATE: stored[LATE]}})
    assert changes[LATE] is None and changes[third] == LATE and changes[EARLY] is None


def test_relinking_names_what_differs_from_the_stored_links() -> None:
    a = {"_id": EARLY, "published_at": PUBLISHED, "duplicate_of": LATE}
    b = {"_id": LATE, "published_at": PUBLISHED + timedelta(hours=1), "duplicate_of": None}
    assert relink_changes({"h": {EARLY: a, LATE: b}}) == {EARLY: None, LATE: EARLY}
    assert order_key(a) < order_key(b)


def test_last_seen_moves_by_max_one_update_per_record() -> None:
    assert last_seen_writes({AID: T0}) == [Update(AID, max={"last_seen_at": T0})]
