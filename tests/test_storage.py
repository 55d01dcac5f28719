"""ArticleStore against the real server: batched upserts, dedup, rejects, spool and replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import monitoring
from pymongo.database import Database
from pymongo.write_concern import WriteConcern

from pipelines import storage
from pipelines.capabilities import Capabilities
from pipelines.config import StorageConfig
from pipelines.identity import content_hash
from pipelines.storage import (
    ArticleStore,
    KnownRecords,
    Spool,
    StorageUnavailable,
    ensure_indexes,
    replay,
    with_retries,
)
from pipelines.storage import (
    mongo_client as open_client,
)
from tests.helpers import PUBLISHED, T0, other_article, sighting


@pytest.fixture
def store(mongo_db: Database[dict[str, Any]], capabilities: Capabilities) -> ArticleStore:
    ensure_indexes(mongo_db, "articles", "rejects")
    return ArticleStore(mongo_db, capabilities=capabilities)


def test_a_store_made_from_its_config_writes_its_collections_with_its_write_concern(
        mongo_uri: str, mongo_db: Database[dict[str, Any]]) -> None:
    config = StorageConfig.from_env({"MONGO_URI": mongo_uri, "MONGO_DATABASE": mongo_db.name,
                                     "MONGO_COLLECTION": "stories", "MONGO_REJECTS_COLLECTION": "refused",
                                     "MONGO_WRITE_CONCERN": "majority,journal"})
    store = ArticleStore.from_config(config)
    try:
        ensure_indexes(store.db, config.collection, config.rejects)
        assert store.articles.write_concern == store.rejects.write_concern == WriteConcern(
            w="majority", j=True)
        assert store.write([sighting("media", ["a", "b"])], now=T0).outcomes == {"stored": 1}
        store.write_rejects([{"url": "https://finews.withounder.com/x.html", "reason": "empty body",
                              "rejected_at": T0}])
    finally:
        store.close()
    assert (mongo_db["stories"].count_documents({}), mongo_db["refused"].count_documents({})) == (1, 1)


def test_indexes_exist(store: ArticleStore) -> None:
    names = set(store.articles.index_information())
    assert {"published_at", "source_slug_published_at", "categories_published_at", "content_hash"} <= names


def test_a_batch_is_stored_once_and_a_rerun_changes_nothing(store: ArticleStore) -> None:
    batch = [sighting("media", ["a", "b"]), other_article("202112312232330001", ["c"], PUBLISHED)]
    report = store.write(batch, now=T0)
    assert report.outcomes == {"stored": 2}
    first = {d["_id"]: d for d in store.articles.find()}
    again = store.write(batch, now=T0 + timedelta(hours=1))
    assert again.outcomes == {"unchanged": 2}
    second = {d["_id"]: d for d in store.articles.find()}
    assert first == second
    assert first["202112312232339262"]["published_at"] == PUBLISHED
    assert first["202112312232339262"]["published_at"].tzinfo is not None


def test_a_changed_body_bumps_the_revision(store: ArticleStore) -> None:
    store.write([sighting("media", ["a", "b"])], now=T0)
    later = T0 + timedelta(days=1)
    report = store.write([sighting("media", ["a", "b", "c"], seen=later)], now=later)
    assert report.outcomes == {"updated": 1}
    doc = store.articles.find_one({"_id": "202112312232339262"})
    assert doc is not None
    assert doc["revision"] == 2
    assert doc["text"] == "a\nb\nc"
    assert doc["content_hash"] == content_hash("a\nb\nc")
    assert doc["updated_at"] == later
    assert doc["first_seen_at"] == T0
    assert doc["last_seen_at"] == later


def test_same_text_under_two_ids_links_the_later_whatever_the_order(store: ArticleStore) -> None:
    early = other_article("202112312232330001", ["同一篇稿子"], PUBLISHED)
    late = other_article("202112312232330002", ["同一篇稿子"], PUBLISHED + timedelta(hours=2))
    store.write([late], now=T0)  # the later copy arrives first
    store.write([early], now=T0)
    docs = {d["_id"]: d for d in store.articles.find()}
    assert docs["202112312232330001"]["duplicate_of"] is None
    assert docs["202112312232330002"]["duplicate_of"] == "202112312232330001"


def test_rejects_are_kept_once_per_url_and_reason(store: ArticleStore) -> None:
    reject = {"url": "https://finews.withounder.com/emnews/202205262391921712.html",
              "reason": "missing title", "raw": {"title": ""}, "rejected_at": T0}
    store.write_rejects([reject])
    store.write_rejects([{**reject, "rejected_at": T0 + timedelta(hours=1)}])
    docs = list(store.rejects.find())
    assert len(docs) == 1
    assert docs[0]["times"] == 2
    assert docs[0]["reason"] == "missing title"


def test_spooled_batches_replay_into_the_database(store: ArticleStore, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append("sighting", [sighting("media", ["a", "b"])], "finews-test")
    spool.append("reject", [{"url": "u", "reason": "r", "rejected_at": T0}], "finews-test")
    totals = replay(store, spool)
    assert totals["stored"] == 1
    assert totals["rejected"] == 1
    assert spool.files() == []
    doc = store.articles.find_one()
    assert doc is not None
    assert doc["published_at"] == PUBLISHED
    assert doc["first_seen_at"] == T0


def test_retries_give_up_with_storage_unavailable() -> None:
    from pymongo.errors import AutoReconnect

    calls: list[float] = []

    def always_down() -> None:
        raise AutoReconnect("down")

    with pytest.raises(StorageUnavailable):
        with_retries(always_down, times=3, backoff=0.1, what="test", sleep=calls.append)
    assert calls == [0.1, 0.2, 0.4]


def test_an_unreachable_server_is_reported_not_hung() -> None:
    dead = ArticleStore.connect("mongodb://127.0.0.1:9/", "x", timeout_ms=300)
    with pytest.raises(StorageUnavailable):
        with_retries(lambda: dead.write([sighting("media", ["a"])], now=datetime.now(UTC)),
                     times=1, backoff=0.01, what="write")
    dead.close()


def test_a_big_batch_of_updates_does_not_wedge_the_server(
        mongo_uri: str, mongo_db: Database[dict[str, Any]], capabilities: Capabilities) -> None:
    # FerretDB 1.24.2 deadlocks on one update command of 100+ statements; the store splits them.
    store = ArticleStore.connect(mongo_uri, mongo_db.name, timeout_ms=5000, capabilities=capabilities)
    ids = [f"2021123122323{n:05d}" for n in range(250)]
    first = [other_article(aid, [f"正文{aid}"], PUBLISHED) for aid in ids]
    assert store.write(first, now=T0).outcomes == {"stored": 250}
    later = T0 + timedelta(hours=1)
    edited = [other_article(aid, [f"正文{aid}", "更正"], PUBLISHED) | {"seen_at": later} for aid in ids]
    assert store.write(edited, now=later).outcomes == {"updated": 250}
    assert store.articles.count_documents({"revision": 2}) == 250
    store.close()


def test_an_article_another_store_wrote_is_merged_not_inserted_twice(
        mongo_uri: str, mongo_db: Database[dict[str, Any]], capabilities: Capabilities) -> None:
    # The second store has never written the article: it inserts unread, meets the duplicate
    # key, then reads and merges in a second round (not counted as a conflict).
    ensure_indexes(mongo_db, "articles", "rejects")
    first = ArticleStore.connect(mongo_uri, mongo_db.name, capabilities=capabilities)
    second = ArticleStore.connect(mongo_uri, mongo_db.name, capabilities=capabilities)
    try:
        assert first.write([sighting("media", ["a", "b"])], now=T0).outcomes == {"stored": 1}
        other_page = "https://finews.withounder.com/hubei/2021/12/31/NW202112312232339262.html"
        later = T0 + timedelta(hours=1)
        report = second.write([sighting("media", ["a", "b"], url=other_page, category="hubei",
                                        seen=later)], now=later)
        assert report.outcomes == {"unchanged": 1}
        assert report.conflicts == 0
        docs = list(mongo_db["articles"].find())
        assert len(docs) == 1
        assert docs[0]["categories"] == ["hubei", "jingzhouribao"]
        assert docs[0]["urls"] == sorted([other_page, sighting("media", ["a"])["urls"][0]])
        assert (docs[0]["revision"], docs[0]["first_seen_at"], docs[0]["last_seen_at"]) == (1, T0, later)
        # And the first store, which knows the article, reads it before merging its next sighting.
        listing = sighting("media", ["a", "b"], page_kind="listing", seen=later + timedelta(hours=1),
                           categories=["listing-only"], tags=[], urls=[])
        assert first.write([listing], now=later).outcomes == {"unchanged": 1}
        doc = mongo_db["articles"].find_one()
        assert doc is not None
        assert doc["categories"] == ["hubei", "jingzhouribao", "listing-only"]
    finally:
        first.close()
        second.close()


def test_two_stores_link_a_text_both_stored_once_both_closed(
        mongo_uri: str, mongo_db: Database[dict[str, Any]], capabilities: Capabilities) -> None:
    # Neither store sees the other's copy while writing; the links are right once both closed
    # (each store links again from what is stored after every write).
    ensure_indexes(mongo_db, "articles", "rejects")
    early = other_article("202112312232330001", ["同一篇稿子"], PUBLISHED)
    late = other_article("202112312232330002", ["同一篇稿子"], PUBLISHED + timedelta(hours=2))
    stores = [ArticleStore.connect(mongo_uri, mongo_db.name, capabilities=capabilities) for _ in range(2)]
    stores[0].write([sighting("media", ["预热"], _id="202112312232330009")], now=T0)  # loads its hashes
    stores[1].write([late], now=T0)
    stores[0].write([early], now=T0)
    for store in stores:
        store.close()
    docs = {d["_id"]: d for d in mongo_db["articles"].find()}
    assert docs["202112312232330001"]["duplicate_of"] is None
    assert docs["202112312232330002"]["duplicate_of"] == "202112312232330001"


def test_links_are_read_in_chunks_of_hashes(
        mongo_uri: str, mongo_db: Database[dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
        capabilities: Capabilities) -> None:
    # Five texts, each stored by two stores under two ids; linked again two hashes at a time.
    monkeypatch.setattr(storage, "IN_CHUNK", 2)
    ensure_indexes(mongo_db, "articles", "rejects")
    stores = [ArticleStore.connect(mongo_uri, mongo_db.name, capabilities=capabilities) for _ in range(2)]
    for store in stores:
        store.write([sighting("media", ["预热"], _id="202112312232330099")], now=T0)
    for n in range(5):
        later = PUBLISHED + timedelta(hours=2)
        stores[1].write([other_article(f"2021123122323302{n}", [f"稿子 {n}"], later)], now=T0)
        stores[0].write([other_article(f"2021123122323301{n}", [f"稿子 {n}"], PUBLISHED)], now=T0)
    for store in stores:
        store.close()
    docs = {d["_id"]: d for d in mongo_db["articles"].find()}
    for n in range(5):
        assert docs[f"2021123122323301{n}"]["duplicate_of"] is None
        assert docs[f"2021123122323302{n}"]["duplicate_of"] == f"2021123122323301{n}"


class ArticleCommands(monitoring.CommandListener):
    """The commands a client sends about the articles collection (a real server's traffic)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command.get(event.command_name) == "articles" or event.command_name == "getMore":
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_rerun_neither_reads_nor_writes_what_adds_nothing(
        mongo_uri: str, mongo_db: Database[dict[str, Any]], capabilities: Capabilities) -> None:
    from pipelines.records import sighting_from_listing

    ensure_indexes(mongo_db, "articles", "rejects")
    ids = [f"2021123122323{n:05d}" for n in range(40)]
    first = ArticleStore(mongo_db, capabilities=capabilities)
    first.write([other_article(aid, [f"正文 {aid}"], PUBLISHED) for aid in ids], now=T0)
    stored = {d["_id"]: d for d in mongo_db["articles"].find()}

    def listing(aid: str, seen: datetime, category: str | None = None) -> dict[str, Any]:
        doc = stored[aid]
        return sighting_from_listing({"article_id": aid, "url": doc["urls"][0], "tags": doc["tags"],
                                      "category": category or doc["categories"][0], "seen_at": seen})

    commands = ArticleCommands()
    client = open_client(mongo_uri, appname="newscrawl-test", event_listeners=[commands])
    rerun = ArticleStore(client[mongo_db.name], capabilities=capabilities)
    try:
        soon = T0 + timedelta(minutes=15)
        report = rerun.write([listing(aid, soon) for aid in ids], now=soon)
        assert report.outcomes == {"unchanged": 40}
        assert report.known == 40 and report.last_seen_moved == 0
        assert set(commands.names) <= {"find", "getMore"}  # the one read of what is known
        commands.names.clear()
        assert rerun.write([listing(aid, soon) for aid in ids], now=soon).known == 40
        assert commands.names == []  # no read, no write
        # What the incremental filter read at the spider's opening spares even that one read.
        handed = ArticleStore(client[mongo_db.name], capabilities=capabilities)
        handed.use_known(KnownRecords.load(mongo_db["articles"]))
        assert handed.write([listing(aid, soon) for aid in ids], now=soon).known == 40
        assert commands.names == []
        # One article brings a new category: it alone is read and written.
        report = rerun.write([listing(aid, soon, "hubei" if aid == ids[3] else None)
                              for aid in ids], now=soon)
        assert report.known == 39
        assert "hubei" in mongo_db["articles"].find_one({"_id": ids[3]})["categories"]  # type: ignore[index]
        assert mongo_db["articles"].count_documents({"categories": "hubei"}) == 1
        # Over an hour later, last_seen_at moves: writes, and no read of any document.
        commands.names.clear()
        later = T0 + timedelta(hours=2)
        report = rerun.write([listing(aid, later) for aid in ids], now=later)
        assert report.last_seen_moved == 40
        assert "find" not in commands.names and "update" in commands.names
        after = {d["_id"]: d for d in mongo_db["articles"].find()}
        assert all(after[aid]["last_seen_at"] == later for aid in ids)
        # (and the write counter, which every write increments: the concurrent writers' guard)
        assert all({k for k in after[aid] if after[aid][k] != stored[aid][k]} == {"last_seen_at", "writes"}
                   for aid in ids if aid != ids[3])
    finally:
        rerun.close()
