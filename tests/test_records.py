"""Folding sightings into one record per article (pure, no database)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pipelines.identity import content_hash
from pipelines.records import (
    duplicate_links,
    merge_batch,
    merge_sighting,
    sighting_from_item,
    sighting_title,
    union_categories,
)
from tests.helpers import AID, PUBLISHED, T0, sighting


def test_sighting_title_is_the_posts_else_the_share_jsons() -> None:
    assert sighting_title(" 标题 ", "分享标题") == "标题"
    assert sighting_title("\u3000 ", " 分享标题 ") == sighting_title(None, "分享标题") == "分享标题"
    assert sighting_title("", " ") is None and sighting_title(None, None) is None


def test_sighting_from_item_takes_the_id_and_title_the_item_carries() -> None:
    url = "https://finews.withounder.com/jingzhouribao/2021/12/31/NW202112312232339262.html"
    item = {
        "url": url, "page_kind": "post", "fetched_at": T0, "article_id": AID,
        "share_code": "NW" + AID, "title": "标题", "share_title": "分享标题",
        "paragraphs": ["一", "二"], "body_kind": "media", "published_at": PUBLISHED,
        "published_at_raw": "2021-12-31 08:58:25", "source": "荆州日报",
        "source_slug": "jingzhouribao", "content_hash": content_hash("一\n二"),
        "category": "jingzhouribao", "tags": ["荆州日报新闻"],
    }
    got = sighting_from_item(item)
    assert (got["_id"], got["info_code"], got["title"]) == (AID, "NW" + AID, "标题")
    assert (got["text"], got["urls"], got["body_url"]) == ("一\n二", [url], url)


def test_first_sighting_is_stored_at_revision_one() -> None:
    merge = merge_sighting(None, sighting("media", ["a", "b"]), T0)
    assert merge.outcome == "stored"
    assert merge.record["revision"] == 1
    assert merge.record["first_seen_at"] == merge.record["last_seen_at"] == T0
    assert merge.record["duplicate_of"] is None


def test_unchanged_sighting_only_moves_last_seen() -> None:
    first = merge_sighting(None, sighting("media", ["a", "b"]), T0).record
    later = T0 + timedelta(hours=3)
    again = merge_sighting(first, sighting("media", ["a", "b"], seen=later), later)
    assert again.outcome == "unchanged"
    changed = {k for k in first if first[k] != again.record[k]}
    assert changed == {"last_seen_at"}


def test_media_body_beats_digest_and_sets_are_unions() -> None:
    digest = sighting("digest", ["短讯"], category="emnews", tag="东财滚动新闻",
                      url="https://finews.withounder.com/emnews/2021/12/31/202112312232339262.html",
                      source="东方财富", source_slug="emnews", source_from="tag",
                      origin_url="http://finance.eastmoney.com/a/202112312232339262.html")
    media = sighting("media", ["第一段", "第二段"],
                     share_url="http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW1")
    record = merge_sighting(None, digest, T0).record
    merged = merge_sighting(record, media, T0)
    assert merged.outcome == "updated"
    assert merged.record["paragraphs"] == ["第一段", "第二段"]
    assert merged.record["source"] == "荆州日报"
    assert merged.record["categories"] == ["emnews", "jingzhouribao"]
    assert merged.record["tags"] == ["东财滚动新闻", "荆州日报新闻"]
    assert len(merged.record["urls"]) == 2
    assert merged.record["origin_url"].startswith("http://finance.eastmoney.com/")
    assert merged.record["share_url"].endswith("NW1")
    # And the other way round: a digest never replaces the media body.
    back = merge_sighting(merged.record, digest, T0)
    assert back.outcome == "unchanged"
    assert back.record["paragraphs"] == ["第一段", "第二段"]


def test_order_of_sightings_in_a_batch_does_not_matter() -> None:
    digest = sighting("digest", ["短讯"], category="emnews", url="https://x/emnews/1.html")
    media = sighting("media", ["第一段", "第二段"])
    one = merge_batch(None, [digest, media], T0)
    two = merge_batch(None, [media, digest], T0)
    assert one.outcome == two.outcome == "stored"
    assert one.record == two.record
    assert one.record["revision"] == 1


def test_an_edit_from_the_same_page_updates_even_when_shorter() -> None:
    record = merge_sighting(None, sighting("media", ["很长的一段正文", "第二段"]), T0).record
    edited = merge_sighting(record, sighting("media", ["更正后的正文"]), T0 + timedelta(days=1))
    assert edited.outcome == "updated"
    assert edited.record["revision"] == 2
    assert edited.record["paragraphs"] == ["更正后的正文"]
    assert edited.record["updated_at"] == T0 + timedelta(days=1)


def test_a_share_answer_never_replaces_the_post_title() -> None:
    record = merge_sighting(None, sighting("digest", ["短讯"], category="emnews"), T0).record
    share = sighting("share", ["全文第一段", "全文第二段"], page_kind="share", title="别的标题",
                     url="http://finews.zning.xyz/NewsData/GetNewsText.do?id=NW1",
                     source="上海证券报", source_slug="shanghaizhengquanbao")
    merged = merge_sighting(record, share, T0).record
    assert merged["title"] == "标题"
    assert merged["paragraphs"] == ["全文第一段", "全文第二段"]
    assert merged["source"] == "上海证券报"
    assert merged["urls"] == record["urls"]


def test_duplicate_links_point_later_copies_at_the_earliest() -> None:
    records = [
        {"_id": "202112312232339999", "published_at": PUBLISHED + timedelta(hours=1)},
        {"_id": "202112312232339262", "published_at": PUBLISHED},
        {"_id": "202112312232330000", "published_at": PUBLISHED + timedelta(hours=1)},
    ]
    assert duplicate_links(records) == {
        "202112312232339262": None,
        "202112312232330000": "202112312232339262",
        "202112312232339999": "202112312232339262",
    }


def test_categories_as_written_replace_the_lower_cased_form_of_older_records() -> None:
    assert union_categories(["wind"], ["Wind"]) == ["Wind"]
    assert union_categories(["Wind", "emnews"], ["wind"]) == ["Wind", "emnews"]
    assert union_categories(["jingzhouribao"], ["emnews"]) == ["emnews", "jingzhouribao"]
    # A name only in the lower case is a name as written.
    assert union_categories(["techweb"], []) == ["techweb"]


def test_a_rerun_corrects_an_older_record_time_and_category() -> None:
    late = PUBLISHED + timedelta(hours=8)
    old = merge_sighting(None, sighting("media", ["a"], category="wind"), T0).record
    old.update(published_at=late)
    for name in ("published_at_proof", "published_at_shifted"):
        old.pop(name, None)  # stored before proofs were recorded
    proven = sighting("media", ["a"], category="Wind", published_at_proof="id_day",
                      published_at_shifted=True)
    fixed = merge_sighting(old, proven, T0).record
    assert fixed["categories"] == ["Wind"]
    assert (fixed["published_at"], fixed["published_at_proof"]) == (PUBLISHED, "id_day")
    assert fixed["published_at_shifted"] is True


def test_a_twin_page_proves_the_headline_time() -> None:
    media = sighting("media", ["a", "b"], published_at_proof="unproven")
    rolling = sighting("digest", ["a"], page_kind="post", category="emnews", tag="东财滚动新闻",
                       url="https://finews.withounder.com/emnews/2021/12/31/202112312232339262.html",
                       published_at=PUBLISHED + timedelta(hours=8), published_at_proof="unproven")
    for first, second in ((media, rolling), (rolling, media)):
        record = merge_batch(None, [first, second], T0).record
        assert record["body_kind"] == "media"
        assert (record["published_at"], record["published_at_proof"]) == (PUBLISHED, "twin")


def listing_of(record: dict[str, Any], seen: datetime, **changes: Any) -> dict[str, Any]:
    from pipelines.records import sighting_from_listing

    listing = {"article_id": record["_id"], "url": record["urls"][0],
               "category": record["categories"][0], "tags": record["tags"], "seen_at": seen}
    return sighting_from_listing({**listing, **changes})


def test_a_listing_adds_nothing_only_when_the_record_has_all_it_says() -> None:
    from pipelines.records import KnownRecord, sighting_adds_nothing

    record = merge_sighting(None, sighting("media", ["a", "b"]), T0).record
    known = KnownRecord.of(record)
    later = T0 + timedelta(minutes=15)
    assert sighting_adds_nothing(known, listing_of(record, later))
    assert not sighting_adds_nothing(known, listing_of(record, later, category="hubei"))
    assert not sighting_adds_nothing(known, listing_of(record, later, tags=["新标签"]))
    assert not sighting_adds_nothing(known, listing_of(record, later, url="https://x/other.html"))
    assert not sighting_adds_nothing(None, listing_of(record, later))
    # A page sighting, or a listing that says more than sets (a time, say), goes to the merge.
    assert not sighting_adds_nothing(known, sighting("media", ["a", "b"], seen=later))
    assert not sighting_adds_nothing(known, {**listing_of(record, later), "published_at": PUBLISHED})
    # What the function says, the merge agrees with: nothing but last_seen_at changes.
    merged = merge_sighting(record, listing_of(record, later), later).record
    assert {k for k in record if record[k] != merged[k]} == {"last_seen_at"}


def test_last_seen_moves_for_a_sighting_that_adds_nothing_once_an_hour() -> None:
    from pipelines.records import LAST_SEEN_RESOLUTION, KnownRecord, last_seen_is_due

    known = KnownRecord.of(merge_sighting(None, sighting("media", ["a"]), T0).record)
    assert not last_seen_is_due(known, T0 + timedelta(minutes=59))
    assert last_seen_is_due(known, T0 + LAST_SEEN_RESOLUTION)
