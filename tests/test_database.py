"""The database is real: a MongoDB wire-protocol server over TCP."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from newscrawl.local import ferretdb
from newscrawl.ops.query import plan_uses_index
from pipelines.config import mongo_client as open_client


def test_server_answers_over_tcp(mongo_uri: str) -> None:
    parts = urlsplit(mongo_uri)
    # A plain TCP connect first: nothing in-process stands in for the server.
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 27017), timeout=5):
        pass
    client = open_client(mongo_uri, appname="newscrawl-test")
    try:
        assert client.admin.command("ping")["ok"] == 1.0
        assert client.admin.command("buildInfo")["versionArray"][0] >= 6
    finally:
        client.close()


def test_unique_index_rejects_a_duplicate(mongo_db: Database[dict[str, Any]]) -> None:
    coll = mongo_db["articles"]
    coll.create_index("info_code", unique=True)
    coll.insert_one({"_id": "202112312232339262", "info_code": "NW202112312232339262"})
    with pytest.raises(DuplicateKeyError) as caught:
        coll.insert_one({"_id": "other", "info_code": "NW202112312232339262"})
    assert caught.value.code == 11000
    assert coll.count_documents({}) == 1


def test_local_server_is_ferretdb_and_its_build_is_cached(mongo_uri: str) -> None:
    state = ferretdb.read_state()
    if state is None or state.uri != mongo_uri:
        pytest.skip("MONGO_URI names another server: nothing local to check")
    assert ferretdb.binary_path().exists()
    # A second start finds the running server: same URI, nothing rebuilt.
    assert ferretdb.start() == mongo_uri
    client = open_client(mongo_uri, appname="newscrawl-test")
    try:
        assert "ferretdbVersion" in client.admin.command("buildInfo")
    finally:
        client.close()
    assert str(ferretdb.local_dir()) in state.data_dir


# Every collection the project writes (settings' defaults, `newscrawl schedule`'s two).
PROJECT_COLLECTIONS = ("articles", "rejects", "crawl_runs", "schedule_skips", "schedule_jobs")


def id_lookup_uses_an_index(collection: Any, doc_id: str) -> bool | None:
    explain = collection.database.command("explain", {"find": collection.name,
                                                      "filter": {"_id": doc_id}})
    return plan_uses_index(explain)


@pytest.mark.parametrize("name", PROJECT_COLLECTIONS)
def test_id_lookups_use_an_index_again_after_a_drop(name: str,
                                                    mongo_db: Database[dict[str, Any]]) -> None:
    """On FerretDB (patched: tools/ferretdb/patches) SQLite's plan is `SEARCH … USING INDEX`."""
    coll = mongo_db[name]
    coll.insert_many([{"_id": f"doc{n:03d}", "n": n} for n in range(30)])
    assert id_lookup_uses_an_index(coll, "doc007") is True
    coll.drop()
    coll.insert_one({"_id": "again", "n": 1})
    assert id_lookup_uses_an_index(coll, "again") is True
    # The extra index is no MongoDB index: listIndexes shows only `_id_`.
    assert [info["name"] for info in coll.list_indexes()] == ["_id_"]
    assert coll.find_one({"_id": "again"}) == {"_id": "again", "n": 1}
