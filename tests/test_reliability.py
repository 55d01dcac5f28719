"""Issue 13: no batch lost, no transient failure made permanent, no secret printed.

Each test names the point of the issue it covers (README, "The fault suite").
They talk to the real servers: FerretDB (or MONGO_URI), redis-server.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database
from pymongo.errors import BulkWriteError, WriteConcernError
from scrapy.utils.test import get_crawler

from pipelines.mongo import MAX_ARTICLE_CHARS, MongoPipeline
from pipelines.storage import (
    WRITE_COUNTER,
    ArticleStore,
    Spool,
    SpoolError,
    StorageUnavailable,
    ensure_indexes,
    replay,
    with_retries,
)
from tests.test_records import PUBLISHED, T0, sighting
from tests.test_storage import other_article

pytestmark = pytest.mark.integration


def article(n: int, **extra: Any) -> dict[str, Any]:
    aid = f"2021123122323{n:05d}"
    return other_article(aid, [f"正文{n}", "第二段"], PUBLISHED) | extra


@pytest.fixture
def pipeline(mongo_uri: str, mongo_db: Database[dict[str, Any]], tmp_path: Path) -> Iterator[MongoPipeline]:
    """MongoPipeline writing to this test's database; `_write` is what its thread runs."""
    crawler = get_crawler(settings_dict={
        "MONGO_URI": mongo_uri, "MONGO_DATABASE": mongo_db.name, "MONGO_RETRY_TIMES": 1,
        "MONGO_RETRY_BACKOFF": 0.01, "NEWSCRAWL_SPOOL_DIR": str(tmp_path / "spool")})
    ensure_indexes(mongo_db, "articles", "rejects")
    pipe = MongoPipeline(crawler)
    pipe.store = ArticleStore.connect(mongo_uri, mongo_db.name)
    pipe.spool_name = Spool.unique_name("test")
    yield pipe
    pipe.store.close()


# --- 2. one bad record never loses a batch ---------------------------------------------------

def test_2_a_record_the_server_refuses_becomes_a_reject_and_its_batch_is_stored(
        pipeline: MongoPipeline, mongo_db: Database[dict[str, Any]]) -> None:
    good = [article(n) for n in range(40)]
    # BSON cannot hold a lone surrogate (refused before it is sent) ...
    surrogate = article(90, title="半个\ud800代理对")
    # ... and the server refuses a document: over 16 MB on MongoDB (paragraphs + text);
    # FerretDB takes that one, but not a key with a dot.
    assert pipeline.store is not None
    if pipeline.store.ferretdb:
        refused = article(91, origin_url={"a.b": "c"}, paragraphs=["长" * 2_000_000])
        reason = "not stored: BulkWriteError"
    else:
        huge_paragraphs = ["长" * 3_000_000] * 2
        refused = article(91, paragraphs=huge_paragraphs, text="\n".join(huge_paragraphs))
        reason = "not stored: DocumentTooLarge"
    batch = [*good[:20], surrogate, *good[20:], refused]
    pipeline._write(batch, [])
    stored_ids = {d["_id"] for d in mongo_db["articles"].find({}, {"_id": 1})}
    assert stored_ids == {a["_id"] for a in good}
    rejects = {r["article_id"]: r for r in mongo_db["rejects"].find()}
    assert set(rejects) == {surrogate["_id"], refused["_id"]}
    assert rejects[surrogate["_id"]]["reason"].startswith("not stored: UnicodeEncodeError")
    assert rejects[surrogate["_id"]]["raw"]["title"] == "半个\ufffd代理对"
    assert rejects[refused["_id"]]["reason"].startswith(reason)
    kept = rejects[refused["_id"]]["raw"]
    assert sum(map(len, kept["paragraphs"])) <= 1_000_000 and kept["extra"]["paragraphs_truncated"]
    assert "text" not in kept
    stats = pipeline.stats.get_stats()
    # What the failed write had already stored counts as unchanged when written again.
    assert stats["newscrawl/articles/stored"] + stats.get("newscrawl/articles/unchanged", 0) == 40
    assert stats["newscrawl/articles/rejected"] == 2


def test_2_lone_surrogates_are_cleaned_before_storage() -> None:
    from pipelines.cleaning import without_lone_surrogates

    value = {"title": "a\udc80b", "paragraphs": ["ok", "\ud83d"], "n": 3, "pair": "😀"}
    assert without_lone_surrogates(value) == {"title": "a\ufffdb", "paragraphs": ["ok", "\ufffd"],
                                              "n": 3, "pair": "😀"}
    clean = {"title": "fine"}
    assert without_lone_surrogates(clean) is clean


def test_2_an_article_over_the_size_cap_is_rejected_with_its_reason(pipeline: MongoPipeline) -> None:
    import asyncio

    from pipelines.errors import RejectItem

    item = {"article_id": "202112312232339262", "title": "t", "published_at": PUBLISHED,
            "published_at_raw": "x", "source": "s", "source_slug": "s", "content_hash": "h",
            "body_kind": "media", "url": "https://finews.withounder.com/a.html",
            "paragraphs": ["长" * (MAX_ARTICLE_CHARS // 2 + 1)] * 2}
    with pytest.raises(RejectItem, match="body too large"):
        asyncio.run(pipeline.process_item(item))


def test_2_a_write_concern_error_is_retried_then_spooled() -> None:
    calls: list[float] = []
    wc_bulk = BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64, "errmsg": "w"}],
                              "nInserted": 1})

    def fails(exc: Exception) -> Any:
        def action() -> None:
            raise exc
        return action

    for exc in (WriteConcernError("waiting for replication timed out", 64), wc_bulk):
        calls.clear()
        with pytest.raises(StorageUnavailable):
            with_retries(fails(exc), times=2, backoff=0.1, what="test", sleep=calls.append)
        assert calls == [0.1, 0.2]
    # A document's own error is not retried: splitting the batch finds it.
    doc_error = BulkWriteError({"writeErrors": [{"index": 0, "code": 2, "errmsg": "bad"}]})
    with pytest.raises(BulkWriteError):
        with_retries(fails(doc_error), times=2, backoff=0.1, what="test", sleep=calls.append)


def test_2_the_timed_flush_keeps_running_after_an_error(pipeline: MongoPipeline,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from twisted.internet import defer
    from twisted.python.failure import Failure

    # Whatever a write raises, the deferred the LoopingCall gets has succeeded.
    failing: defer.Deferred[None] = defer.fail(Failure(RuntimeError("boom")))
    failing.addErrback(pipeline._log_failed_flush)
    outcome: list[Any] = []
    failing.addBoth(outcome.append)
    assert outcome == [None]
    assert "writing a batch failed: boom" in caplog.text


# --- 6. concurrent writers --------------------------------------------------------------------

def test_6_two_stores_merging_categories_into_one_record_at_once_keep_both(
        mongo_uri: str, mongo_db: Database[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_indexes(mongo_db, "articles", "rejects")
    first, second = (ArticleStore.connect(mongo_uri, mongo_db.name) for _ in range(2))
    try:
        first.write([sighting("media", ["a", "b"])], now=T0)
        # Two listings seen no later than the stored record: neither changes its revision
        # or last_seen_at, only its categories.
        mine = sighting("media", ["a", "b"], page_kind="listing", seen=T0,
                        categories=["mine"], tags=[], urls=[])
        theirs = sighting("media", ["a", "b"], page_kind="listing", seen=T0 - timedelta(hours=1),
                          categories=["theirs"], tags=[], urls=[])
        read = first._read
        reads = 0

        def read_then_let_the_other_write(ids: list[str]) -> dict[str, Any]:
            nonlocal reads
            found = read(ids)
            reads += 1
            if reads == 1:  # between our read and our write, the other store writes
                second.write([theirs], now=T0)
            return found

        monkeypatch.setattr(first, "_read", read_then_let_the_other_write)
        report = first.write([mine], now=T0)
        assert report.conflicts == 1
        doc = mongo_db["articles"].find_one()
        assert doc is not None
        assert doc["categories"] == ["jingzhouribao", "mine", "theirs"]
        assert doc[WRITE_COUNTER] == 3  # stored, theirs, mine
        assert doc["revision"] == 1
    finally:
        first.close()
        second.close()


# --- 7. spool and replay --------------------------------------------------------------------

def test_7_spool_files_are_named_per_process() -> None:
    names = {Spool.unique_name("finews") for _ in range(20)}
    assert len(names) == 20
    assert all(f"-{os.getpid()}-" in name for name in names)


def test_7_a_full_disk_fails_the_spool_loudly_and_leaves_no_torn_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    name = Spool.unique_name("finews")
    good = spool.append("sighting", [article(1)], name)
    (tmp_path / f"{name}-full.sighting.jsonl").symlink_to("/dev/full")
    with pytest.raises(SpoolError) as raised:
        spool.append("sighting", [article(2), article(3)], f"{name}-full")
    assert raised.value.errno == 28  # ENOSPC
    assert good.read_text(encoding="utf-8").count("\n") == 1


def test_7_a_full_disk_with_the_database_away_is_counted_and_logged_as_lost(
        mongo_db: Database[dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    crawler = get_crawler(settings_dict={
        "MONGO_URI": "mongodb://127.0.0.1:9/", "MONGO_RETRY_TIMES": 0,
        "NEWSCRAWL_SPOOL_DIR": str(tmp_path)})
    pipe = MongoPipeline(crawler)
    pipe.store = ArticleStore.connect("mongodb://127.0.0.1:9/", "x", timeout_ms=200)
    pipe.spool_name = "full"
    (tmp_path / "full.sighting.jsonl").symlink_to("/dev/full")
    with caplog.at_level(logging.ERROR):
        pipe._write([article(1), article(2)], [])  # does not raise
    assert crawler.stats.get_value("newscrawl/storage/lost") == 2
    assert "2 articles LOST" in caplog.text
    pipe.store.close()


def test_7_replay_sets_a_bad_line_aside_with_its_file_and_line(
        mongo_uri: str, mongo_db: Database[dict[str, Any]], tmp_path: Path) -> None:
    ensure_indexes(mongo_db, "articles", "rejects")
    store = ArticleStore.connect(mongo_uri, mongo_db.name)
    spool = Spool(tmp_path)
    path = spool.append("sighting", [article(1), article(2)], "crawl")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    # A torn line in the middle (a crash mid-write, before fsync) and a line that is no entry.
    path.write_text(lines[0] + lines[1][:40] + "\n" + '{"kind": "x"}\n' + lines[1], encoding="utf-8")
    totals = replay(store, spool)
    store.close()
    assert totals["stored"] == 2 and totals["bad_lines"] == 2
    bad = [json.loads(line) for line in (tmp_path / "bad" / Spool.BAD_LINES).read_text().splitlines()]
    assert [(b["file"], b["line"]) for b in bad] == [(path.name, 2), (path.name, 3)]
    assert spool.files() == []


def test_7_two_replays_and_a_crawl_appending_at_once_lose_nothing(
        mongo_uri: str, mongo_db: Database[dict[str, Any]], tmp_path: Path) -> None:
    ensure_indexes(mongo_db, "articles", "rejects")
    spool = Spool(tmp_path)
    for n in range(6):  # earlier crawls' files
        spool.append("sighting", [article(n * 10 + k) for k in range(10)], f"old-{n}")
    appended: list[int] = []
    stop = threading.Event()

    def crawl_appends() -> None:  # a crawl still spooling, one batch after the other
        n = 100
        while not stop.is_set() and n < 400:
            spool.append("sighting", [article(n + k) for k in range(5)], "running")
            appended.extend(range(n, n + 5))
            n += 5

    errors: list[BaseException] = []

    def replays() -> None:
        store = ArticleStore.connect(mongo_uri, mongo_db.name)
        try:
            for _ in range(3):
                replay(store, Spool(tmp_path))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            store.close()

    writer = threading.Thread(target=crawl_appends)
    readers = [threading.Thread(target=replays) for _ in range(2)]
    writer.start()
    for thread in readers:
        thread.start()
    for thread in readers:
        thread.join()
    stop.set()
    writer.join()
    assert errors == []
    final = ArticleStore.connect(mongo_uri, mongo_db.name)
    replay(final, Spool(tmp_path))
    final.close()
    expected = {article(n)["_id"] for n in list(range(60)) + appended}
    stored_ids = {d["_id"] for d in mongo_db["articles"].find({}, {"_id": 1})}
    assert stored_ids == expected
    assert list(tmp_path.glob("*.jsonl*")) == []
