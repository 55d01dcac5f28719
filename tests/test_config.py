"""StorageConfig (pipelines.config): one storage configuration for crawls and commands,
built from Scrapy settings or the environment. No server: clients connect lazily."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.write_concern import WriteConcern
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from newscrawl.ops.cli import main
from pipelines.config import StorageConfig, StorageConfigError, mongo_client, parse_write_concern
from pipelines.mongo import MongoPipeline
from pipelines.storage import ArticleStore

NOWHERE = "mongodb://127.0.0.1:9/"  # never reached: these tests open no connection

EVERY_SETTING = {
    "MONGO_URI": "mongodb://crawler:secret@mongo.example:27017/",
    "MONGO_DATABASE": "news",
    "MONGO_COLLECTION": "stories",
    "MONGO_REJECTS_COLLECTION": "refused",
    "MONGO_RUNS_COLLECTION": "runs",
    "NEWSCRAWL_SPOOL_DIR": "/var/spool/newscrawl",
    "MONGO_WRITE_CONCERN": "majority,journal",
}


def test_defaults_when_nothing_is_set() -> None:
    expected = StorageConfig(uri="", database="newscrawl", collection="articles", rejects="rejects",
                             runs="crawl_runs", spool_dir=None, write_concern=None)
    assert StorageConfig.from_env({}) == expected
    assert StorageConfig.from_settings(Settings()) == expected
    # Set but empty is unset (an exported empty variable, a `-s MONGO_DATABASE=`).
    assert StorageConfig.from_env(dict.fromkeys(EVERY_SETTING, "")) == expected


def test_settings_and_environment_read_the_same_names() -> None:
    expected = StorageConfig(uri=EVERY_SETTING["MONGO_URI"], database="news", collection="stories",
                             rejects="refused", runs="runs", spool_dir=Path("/var/spool/newscrawl"),
                             write_concern=WriteConcern(w="majority", j=True))
    assert StorageConfig.from_env(EVERY_SETTING) == expected
    assert StorageConfig.from_settings(Settings(EVERY_SETTING)) == expected


def test_overrides_win_over_the_environment_and_none_is_not_given() -> None:
    environ = {"MONGO_DATABASE": "news", "MONGO_COLLECTION": "stories"}
    config = StorageConfig.from_env(environ, database="other", spool_dir=Path("/tmp/spool"),
                                    runs=None, write_concern="2")
    assert (config.database, config.collection, config.runs) == ("other", "stories", "crawl_runs")
    assert config.spool_dir == Path("/tmp/spool")
    assert config.write_concern == WriteConcern(w=2)
    with pytest.raises(TypeError, match="not a storage setting: collections"):
        StorageConfig.from_env(environ, collections="x")


def test_the_uri_stays_out_of_the_repr() -> None:
    assert "secret" not in repr(StorageConfig.from_env(EVERY_SETTING))


@pytest.mark.parametrize(("text", "expected"), [
    ("", None),
    ("  ", None),
    ("majority", WriteConcern(w="majority")),
    ("1", WriteConcern(w=1)),
    ("3", WriteConcern(w=3)),
    ("majority,journal", WriteConcern(w="majority", j=True)),
    (" Majority , JOURNAL ", WriteConcern(w="majority", j=True)),
    ("1,journal", WriteConcern(w=1, j=True)),
])
def test_write_concern_values(text: str, expected: WriteConcern | None) -> None:
    assert parse_write_concern(text) == expected


@pytest.mark.parametrize("text", ["fast", "-1", "1.5", "²", "majority,fsync", "journal",
                                  "majority,journal,journal", "1;journal", "0", "0,journal"])
def test_a_bad_write_concern_says_what_is_expected(text: str) -> None:
    with pytest.raises(StorageConfigError) as raised:
        StorageConfig.from_env({"MONGO_WRITE_CONCERN": text})
    message = str(raised.value)
    assert message.startswith(f"MONGO_WRITE_CONCERN={text!r}: ")
    assert "`majority` or a number of members (1, 2, …)" in message


def test_the_store_writes_every_collection_with_the_write_concern() -> None:
    config = StorageConfig.from_env({"MONGO_URI": NOWHERE, "MONGO_DATABASE": "news",
                                     "MONGO_COLLECTION": "stories", "MONGO_WRITE_CONCERN": "majority"})
    store = ArticleStore.from_config(config)
    try:
        assert (store.db.name, store.articles.name, store.rejects.name) == ("news", "stories", "rejects")
        assert store.articles.write_concern == store.rejects.write_concern == WriteConcern(w="majority")
    finally:
        store.close()
    client = mongo_client(NOWHERE)
    try:
        # Unset: the server's default, as a plain client has it.
        assert StorageConfig().database_on(client)["x"].write_concern == client.write_concern
    finally:
        client.close()


def test_the_pipeline_reads_its_settings_once_into_one_config(tmp_path: Path) -> None:
    crawler = get_crawler(settings_dict={**EVERY_SETTING, "NEWSCRAWL_SPOOL_DIR": str(tmp_path)})
    pipeline = MongoPipeline(crawler)
    assert pipeline.config == StorageConfig.from_settings(crawler.settings)
    assert pipeline.spool.directory == tmp_path
    with pytest.raises(StorageConfigError, match="MONGO_WRITE_CONCERN='fast'"):
        MongoPipeline(get_crawler(settings_dict={**EVERY_SETTING, "MONGO_WRITE_CONCERN": "fast"}))


def test_a_command_given_a_bad_write_concern_says_so_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MONGO_URI", NOWHERE)
    monkeypatch.setenv("MONGO_WRITE_CONCERN", "fast")
    assert main(["runs"]) == 2  # before any connection
    err = capsys.readouterr().err
    assert err.startswith("newscrawl: error: MONGO_WRITE_CONCERN='fast': expected `majority`")
    assert len(err.splitlines()) == 1
