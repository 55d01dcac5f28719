"""Hostile and malformed posts: no title, no date, an empty body, a 5 MB body,
share keys with `$` and `.`, a `<script>` in a paragraph. Each is stored
cleanly or lands in rejects with a reason; nothing crashes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from fixtures.generate import build_mirror
from fixtures.server import MirrorServer
from tests.conftest import MIRROR_SEED, CrawlRunner, Mirror
from tests.helpers import assert_truth_stored

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hostile_mirror(tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    root = tmp_path_factory.mktemp("hostile")
    build_mirror(root, articles=60, seed=MIRROR_SEED, hostile=True)
    return Mirror(root)


@pytest.fixture(scope="module")
def hostile_server(hostile_mirror: Mirror) -> Iterator[MirrorServer]:
    with MirrorServer(hostile_mirror.root) as server:
        yield server


def test_hostile_posts_are_stored_cleanly_or_rejected_with_a_reason(
        mongo_uri: str, hostile_server: MirrorServer, hostile_mirror: Mirror,
        mongo_db: Database[dict[str, Any]], tmp_path: Path) -> None:
    crawl = CrawlRunner(mongo_uri, hostile_server.host_map, mongo_db.name, tmp_path)
    result = crawl("finews")
    assert_truth_stored(mongo_db, hostile_mirror.truth("articles"))
    expected = {r["url"] for r in hostile_mirror.truth("rejects") if r["scope"] == "crawl"}
    rejects = list(mongo_db["rejects"].find())
    assert {r["url"] for r in rejects} == expected
    assert all(r["reason"] for r in rejects)
    assert result.stats["newscrawl/articles/rejected"] == len(expected)
    hostile = hostile_mirror.manifest["cases"]["hostile"]
    script_doc = mongo_db["articles"].find_one({"_id": hostile["script"]})
    assert script_doc is not None
    assert not any("<script" in p or "alert(" in p for p in script_doc["paragraphs"])
    big = mongo_db["articles"].find_one({"_id": hostile["oversized"]})
    assert big is not None and len(big["text"]) > 1_000_000
    # Keys from the share JSON never reach a document.
    for doc in mongo_db["articles"].find():
        assert not any(key.startswith("$") or "." in key for key in doc)
