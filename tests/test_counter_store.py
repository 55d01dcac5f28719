"""The article counter's proofs in the store (issue 18, point 3), against the real server:
anchors from the same batch, a later batch, a rerun, another process, and a collection
written by an earlier version (`newscrawl prove-times`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from pymongo.database import Database

from pipelines.capabilities import Capabilities
from pipelines.dates import JEKYLL_SHIFT, SHANGHAI
from pipelines.storage import ArticleStore, ensure_indexes
from tests.helpers import newscrawl, other_article

pytestmark = pytest.mark.integration

# One quiet stretch of the site's clock: an article every 2 minutes, 2,800 numbers apart
# (84,000 an hour, the trading-hour rate of the site doc), from 10:00 Shanghai on.
START = datetime(2021, 12, 31, 10, 0, tzinfo=SHANGHAI)
FIRST_COUNTER = 2_232_000_000


def article_id(n: int) -> str:
    return f"20211231{FIRST_COUNTER + 2_800 * n:010d}"


def truth_time(n: int) -> datetime:
    return START + timedelta(minutes=2 * n)


def anchor(n: int, text: str | None = None) -> dict[str, Any]:
    """An article whose time a share answer proved."""
    return other_article(article_id(n), [text or f"锚点稿件 {n}"], truth_time(n)) | {
        "published_at_proof": "share"}


def unproven(n: int, *, late: bool, text: str | None = None) -> dict[str, Any]:
    """An article whose page shows its time with nothing to prove it: 8 hours late when its
    post was written without an offset (`late`), right otherwise."""
    shown = truth_time(n) + (JEKYLL_SHIFT if late else timedelta(0))
    return other_article(article_id(n), [text or f"无从证明的稿件 {n}"], shown)


def times(db: Database[dict[str, Any]]) -> dict[str, tuple[datetime, str, bool]]:
    return {doc["_id"]: (doc["published_at"], doc["published_at_proof"], doc["published_at_shifted"])
            for doc in db["articles"].find({}, {"published_at": 1, "published_at_proof": 1,
                                                 "published_at_shifted": 1})}


def assert_proven(db: Database[dict[str, Any]], late: dict[int, bool]) -> None:
    stored = times(db)
    for n, was_late in late.items():
        assert stored[article_id(n)] == (truth_time(n), "counter", was_late), n


@pytest.fixture
def db(mongo_db: Database[dict[str, Any]]) -> Database[dict[str, Any]]:
    ensure_indexes(mongo_db, "articles", "rejects")
    return mongo_db


def test_anchors_already_stored_prove_a_batch_as_it_is_written(
        mongo_uri: str, db: Database[dict[str, Any]], capabilities: Capabilities) -> None:
    store = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    store.write([anchor(n) for n in range(0, 30, 3)])
    report = store.write([unproven(4, late=True), unproven(8, late=False)])
    assert report.times_proven == 2
    assert_proven(db, {4: True, 8: False})  # before close: as written
    store.close()


def test_anchors_of_a_later_batch_prove_earlier_records_at_close(
        mongo_uri: str, db: Database[dict[str, Any]], capabilities: Capabilities) -> None:
    store = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    store.write([unproven(4, late=True), unproven(8, late=False), unproven(40, late=True)])
    store.write([anchor(n) for n in range(0, 30, 3)])
    assert times(db)[article_id(4)][1] == "unproven"
    store.close()
    assert_proven(db, {4: True, 8: False})
    # Past the last anchor nothing brackets it: kept as the page shows it, unproven.
    assert times(db)[article_id(40)] == (truth_time(40) + JEKYLL_SHIFT, "unproven", False)


def test_anchors_of_a_rerun_and_of_another_process_prove_what_is_stored(
        mongo_uri: str, db: Database[dict[str, Any]], capabilities: Capabilities) -> None:
    first = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    first.write([unproven(4, late=True)])
    first.close()  # nothing to prove it yet
    assert times(db)[article_id(4)][1] == "unproven"
    # A rerun brings anchors: its store proves what an earlier run left unproven.
    rerun = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    rerun.write([unproven(16, late=False)])
    rerun.write([anchor(n) for n in range(0, 12, 3)])
    rerun.close()
    assert_proven(db, {4: True})
    # Two processes at once: one writes an unproven record, the other the anchors around it;
    # the first proves its record from the other's anchors when it closes.
    mine = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    theirs = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    mine.write([unproven(20, late=True)])
    theirs.write([anchor(n) for n in range(12, 30, 3)])
    assert times(db)[article_id(20)][1] == "unproven"
    mine.close()
    assert_proven(db, {16: False, 20: True})
    theirs.close()
    # And the other way round: the process writing the anchors proves, when it closes, what
    # another process left unproven.
    mine = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    theirs = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    mine.write([unproven(37, late=False)])
    mine.close()
    theirs.write([anchor(n) for n in range(30, 45, 3)])
    assert times(db)[article_id(37)][1] == "unproven"
    theirs.close()
    assert_proven(db, {37: False})


def test_a_time_moved_back_makes_its_record_the_original_of_its_copy(
        mongo_uri: str, db: Database[dict[str, Any]], capabilities: Capabilities) -> None:
    # The page of 4 shows it 8 hours late, after its copy 10 (published 12 minutes after 4
    # really was): until 4's time is proven, 10 looks like the original.
    text = "同一篇稿子，两个编号，一字不差"
    store = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    store.write([unproven(4, late=True, text=text), anchor(10, text)])
    links = {d["_id"]: d["duplicate_of"] for d in db["articles"].find({}, {"duplicate_of": 1})}
    assert links == {article_id(4): article_id(10), article_id(10): None}
    store.write([anchor(n) for n in (0, 3, 6, 9, 12)])
    store.close()
    assert_proven(db, {4: True})
    docs = {d["_id"]: d for d in db["articles"].find()}
    assert docs[article_id(10)]["duplicate_of"] == article_id(4)
    assert docs[article_id(4)]["duplicate_of"] is None
    assert docs[article_id(10)]["near_duplicate_of"]["_id"] == article_id(4)


def test_prove_times_corrects_a_collection_an_earlier_version_wrote(
        mongo_uri: str, db: Database[dict[str, Any]]) -> None:
    # Written before the counter proof: anchors and unproven records, stored and closed.
    store = ArticleStore.connect(mongo_uri, db.name)
    store.write([anchor(n) for n in range(0, 30, 3)])
    store.close()
    late = {4: True, 8: False, 22: True}
    db["articles"].insert_many([
        {**unproven(n, late=was_late), "published_at_proof": "unproven",
         "published_at_shifted": False, "duplicate_of": None, "revision": 1}
        for n, was_late in late.items()])
    result = newscrawl("prove-times", "--database", db.name, env={"MONGO_URI": mongo_uri})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "proven by the article counter: 3; still unproven: 0"
    assert_proven(db, late)


def media_and_rolling_twins(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Article n posted as media news with `+0800` (its page right, and unproven: before 16:00
    and after 08:00 fit both readings) and as rolling news a minute later without an offset,
    whose page shows the next day: the id's day proves it late (pipelines.dates)."""
    media = unproven(n, late=False, text=f"媒体稿件全文 {n}") | {
        "published_at_proof": "unproven", "published_at_shifted": False}  # as DatePipeline says
    rolling_at = truth_time(n) + timedelta(minutes=1)
    rolling = other_article(article_id(n), [f"滚动新闻摘要 {n}"], rolling_at) | {
        "body_kind": "digest", "title": "快讯：标题",
        "url": f"https://finews.withounder.com/emnews/2022/01/01/{article_id(n)}.html",
        "published_at_proof": "id_day", "published_at_shifted": True,
        "categories": ["emnews"], "tags": ["东财滚动新闻"]}
    rolling["urls"] = [rolling["url"]]
    rolling["body_url"] = rolling["url"]
    return media, rolling


@pytest.mark.parametrize("order", ["media_proven_first", "rolling_first", "one_batch_media_first",
                                   "one_batch_rolling_first"])
def test_twins_keep_the_media_posts_time_whatever_the_order(
        mongo_uri: str, db: Database[dict[str, Any]], capabilities: Capabilities,
        order: str) -> None:
    # The site-scale mirror's four wrong times: the media post stored and proven by the
    # counter, then its twin's own-day proof took the twin's time (a minute late) with it.
    n = 190  # 16:20 in Shanghai: its twin's page shows 00:21 the next day
    media, rolling = media_and_rolling_twins(n)
    store = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    store.write([anchor(m) for m in range(179, 200, 3)])  # not 190
    if order == "media_proven_first":
        store.write([media])
        assert times(db)[article_id(n)] == (truth_time(n), "counter", False)
        store.write([rolling])
    elif order == "rolling_first":
        store.write([rolling])
        store.write([media])
    elif order == "one_batch_media_first":
        store.write([media, rolling])
    else:
        store.write([rolling, media])
    store.close()
    doc = db["articles"].find_one({"_id": article_id(n)})
    assert doc is not None
    assert (doc["published_at"], doc["published_at_proof"], doc["published_at_shifted"]) == (
        truth_time(n), "id_day", False)
    assert doc["title"] == media["title"]
