"""The database is real: a MongoDB wire-protocol server over TCP."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from newscrawl import localdb


def test_server_answers_over_tcp(mongo_uri: str) -> None:
    parts = urlsplit(mongo_uri)
    # A plain TCP connect first: nothing in-process stands in for the server.
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 27017), timeout=5):
        pass
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
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
    state = localdb.read_state()
    if state is None or state.uri != mongo_uri:
        pytest.skip("MONGO_URI names another server: nothing local to check")
    assert localdb.binary_path().exists()
    # A second start finds the running server: same URI, nothing rebuilt.
    assert localdb.start() == mongo_uri
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri)
    try:
        assert "ferretdbVersion" in client.admin.command("buildInfo")
    finally:
        client.close()
    assert str(localdb.local_dir()) in state.data_dir
