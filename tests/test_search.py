"""Word and phrase search: segmentation (pure), then records written by the store and
queried through `newscrawl query` on the real server."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import pytest
from pymongo.database import Database

from newscrawl.ops import cli
from newscrawl.ops.query import Filters, find_articles, has_text_index
from pipelines.capabilities import is_ferretdb
from pipelines.search import annotate, query_terms, search_words, segment, text_score, word_filter
from pipelines.storage import ArticleStore, ensure_indexes
from pipelines.word_index import WordIndex
from tests.helpers import PUBLISHED, sighting

# --- pure ------------------------------------------------------------------------------------

def test_words_are_search_mode_runs_of_letters_and_digits_lowercased() -> None:
    assert segment("净利润率创新高") == ["净利", "利润", "净利润", "利润率", "净利润率", "创新", "高"]
    assert segment("降准0.5个百分点，Model Y") == [
        "降准", "0", "5", "个", "百分", "分点", "百分点", "model", "y"]
    assert search_words("央行降准", "净利润") == "央行 降准 净利 利润 净利润"


def test_search_words_is_the_title_and_text_segments_joined() -> None:
    # search_words joins runs of words between punctuation (faster than one match a word):
    # the same string as the segments' words joined, for any text
    pieces = ["净利润", "央行降准", "上市公司", "，", "。", "（", "）", "12.3%", "0.5", "600519.SH",
              "HFO-1234yf", "Model Y", "ΑΣ", "İstanbul", "ſ", "K", "Ⅻ", "ⓐ", "３４", "a_b", "__",
              "’", "-", " ", "\n", "\t", "\u3000", "\u200b", "é", "ß", "ΣΑΣ σ", "ǅ"]
    rng = random.Random(14)
    cases: list[tuple[str | None, str | None]] = [(None, None), ("", "，"), ("，", None), (None, "x")]
    for _ in range(5_000):
        title = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        cases.append((title, text))
    for maybe_title, maybe_text in cases:
        expected = " ".join(segment(maybe_title or "") + segment(maybe_text or ""))
        assert search_words(maybe_title, maybe_text) == expected


def test_query_terms_are_precise_mode_words_once() -> None:
    assert query_terms(["央行降准", "净利润 降准", "  "]) == ["央行", "降准", "净利润"]
    assert query_terms("，。") == []


def test_text_score_is_mongodbs_formula() -> None:
    # a: 2 of 3 tokens -> freq 1 + 1/2, coeff 0.5 * 2/3 + 0.5; b: 1 of 3 -> 1 * (0.5/3 + 0.5)
    assert text_score("a b a", ["a"]) == pytest.approx(1.5 * (0.5 * 2 / 3 + 0.5))
    assert text_score("a b a", ["a", "b"]) == pytest.approx(1.25 + 0.5 / 3 + 0.5)
    assert text_score("a", ["a"]) == pytest.approx(1.1)  # the whole field is the term
    assert text_score("a b", ["c"]) == 0.0


def test_words_are_recomputed_only_when_title_or_text_change() -> None:
    record: dict[str, Any] = {"title": "央行降准", "text": "净利润"}
    assert annotate(record, None) and record["words"] == "央行 降准 净利 利润 净利润"
    again = dict(record)
    assert not annotate(again, record)
    edited = {**record, "text": "营业收入"}
    assert annotate(edited, record) and edited["words"] == "央行 降准 营业 收入"


def test_a_word_filter_wants_whole_words() -> None:
    assert word_filter(["a.b"]) == {"words": {"$regex": r"(?:^| )a\.b(?: |$)"}}


# --- the real server ---------------------------------------------------------------------------

ARTICLES = {
    # 降准 in the title, 净利润 in the text
    "202112310000000001": ("央行宣布降准", ["公司的净利润同比增长。"]),
    # 净利润 glued into 净利润率 in the title (precise mode: one word), 降准 in the text
    "202112310000000002": ("净利润率创新高", ["央行降准0.5个百分点。", "净利润、净利润、净利润。"]),
    # 净利润 only
    "202112310000000003": ("净利润同比增长", ["营业收入同比增长。"]),
    # neither; 降 and 准 apart
    "202112310000000004": ("降息与准备金", ["营业收入同比增长，降 准预期升温不在此文。"]),
}


@pytest.fixture
def searchable(mongo_db: Database[dict[str, Any]], mongo_uri: str,
               monkeypatch: pytest.MonkeyPatch) -> Database[dict[str, Any]]:
    ensure_indexes(mongo_db, "articles", "rejects")
    store = ArticleStore(mongo_db)
    store.write([
        sighting("media", paragraphs, _id=aid, info_code="NW" + aid, title=title,
                 published_at=PUBLISHED + timedelta(minutes=n),
                 url=f"https://finews.withounder.com/x/2021/12/31/NW{aid}.html")
        for n, (aid, (title, paragraphs)) in enumerate(ARTICLES.items())])
    monkeypatch.setenv("MONGO_URI", mongo_uri)
    monkeypatch.setenv("MONGO_DATABASE", mongo_db.name)
    return mongo_db


def query(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[list[dict[str, Any]], str]:
    assert cli.main(["query", *args, "--limit", "0", "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    return [json.loads(line) for line in out.splitlines()], err


@pytest.mark.integration
def test_the_store_writes_words_and_the_index_where_the_server_has_one(
        searchable: Database[dict[str, Any]]) -> None:
    doc = searchable["articles"].find_one({"_id": "202112310000000001"})
    assert doc is not None and doc["words"] == "央行 宣布 降准 公司 的 净利 利润 净利润 同比 增长"
    assert has_text_index(searchable["articles"]) is not is_ferretdb(searchable)
    # Without a text index, the store keeps the word index from the collection's first record.
    assert WordIndex(searchable["articles"]).complete() is is_ferretdb(searchable)


@pytest.mark.integration
def test_two_words_anywhere_in_title_and_text_best_score_first(
        searchable: Database[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    found, err = query(capsys, "--text", "净利润", "降准")
    # 2 holds 净利润 four times (glued into 净利润率 in its title): the higher score
    assert [d["_id"] for d in found] == ["202112310000000002", "202112310000000001"]
    assert found[0]["score"] > found[1]["score"] > 0
    for doc in found:
        assert doc["score"] == pytest.approx(text_score(doc["words"], ["净利润", "降准"]))
    assert err == ""  # an index serves it: the text index, or on FerretDB the word index
    # One argument segmented into both words finds the same; one word finds more.
    assert [d["_id"] for d in query(capsys, "--text", "降准净利润")[0]] == [d["_id"] for d in found]
    assert {d["_id"] for d in query(capsys, "--text", "净利润")[0]} == {
        "202112310000000001", "202112310000000002", "202112310000000003"}


@pytest.mark.integration
def test_no_match_prints_nothing(searchable: Database[dict[str, Any]],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert query(capsys, "--text", "降准", "制冷剂")[0] == []
    assert query(capsys, "--text", "利润率", "营业收入")[0] == []
    assert list(find_articles(searchable["articles"], Filters(text="茅台"))) == []


@pytest.mark.integration
def test_phrases_are_exact_and_combine_with_words(searchable: Database[dict[str, Any]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert [d["_id"] for d in query(capsys, "--phrase", "降准0.5个百分点")[0]] == ["202112310000000002"]
    assert query(capsys, "--phrase", "降准 0.5个百分点")[0] == []  # not the text's spacing
    assert query(capsys, "--phrase", "降准0.5个百分点.")[0] == []  # nor its punctuation
    assert [d["_id"] for d in query(capsys, "--phrase", "同比增长。")[0]] == [
        "202112310000000003", "202112310000000001"]  # newest first
    assert [d["_id"] for d in query(capsys, "--text", "降准", "--phrase", "同比增长。")[0]] == [
        "202112310000000001"]
    assert [d["_id"] for d in query(capsys, "--phrase", "营业收入", "--phrase", "降 准")[0]] == [
        "202112310000000004"]
