"""`newscrawl query`: the query building (pure), its plans on the real server, and the
command against a crawl of the mirror."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import DESCENDING
from pymongo.database import Database

from newscrawl.ops import cli
from newscrawl.ops.query import (
    Filters,
    TimeBound,
    article_table,
    build_query,
    csv_lines,
    display_width,
    explain_query,
    has_text_index,
    iso_z,
    json_line,
    plan_uses_index,
    since_bound,
    source_slug,
    truncate,
    until_bound,
    validate,
    with_search_indexes,
)
from pipelines.search import search_words
from pipelines.sources import SourceRegistry
from pipelines.storage import ensure_indexes
from pipelines.word_index import WordIndex
from tests.helpers import newscrawl

NEWEST_FIRST = [("published_at", DESCENDING)]
SHANGHAI_MIDNIGHT_1231 = datetime(2021, 12, 30, 16, 0, tzinfo=UTC)


# --- bounds and sources ------------------------------------------------------------------------

def test_a_day_is_a_shanghai_day() -> None:
    assert since_bound("2021-12-31") == TimeBound(SHANGHAI_MIDNIGHT_1231, inclusive=True)
    # --until a day runs through that day's end: up to, not including, the next midnight
    assert until_bound("2021-12-31") == TimeBound(SHANGHAI_MIDNIGHT_1231 + timedelta(days=1),
                                                  inclusive=False)


@pytest.mark.parametrize(("value", "expected"), [
    ("2021-12-31T08:00:00Z", datetime(2021, 12, 31, 8, 0, tzinfo=UTC)),
    ("2021-12-31T08:00:00+00:00", datetime(2021, 12, 31, 8, 0, tzinfo=UTC)),
    ("2021-12-31T08:00:00+08:00", datetime(2021, 12, 31, 0, 0, tzinfo=UTC)),
    ("2021-12-31T08:00", datetime(2021, 12, 31, 0, 0, tzinfo=UTC)),  # naive: Shanghai
    ("2021-12-31 08:00:30", datetime(2021, 12, 31, 0, 0, 30, tzinfo=UTC)),
])
def test_an_iso_datetime_is_an_inclusive_moment(value: str, expected: datetime) -> None:
    assert since_bound(value) == TimeBound(expected, inclusive=True)
    assert until_bound(value) == TimeBound(expected, inclusive=True)


@pytest.mark.parametrize("value", ["2021-13-45", "2021-02-30", "yesterday", "", "31/12/2021",
                                   "2021-12-31T25:00"])
def test_an_unreadable_date_says_what_is_expected(value: str) -> None:
    with pytest.raises(ValueError, match="expected a date YYYY-MM-DD"):
        since_bound(value)


def test_since_after_until_is_refused() -> None:
    validate(Filters(since=since_bound("2021-12-31"), until=until_bound("2021-12-31")))
    with pytest.raises(ValueError, match="empty range"):
        validate(Filters(since=since_bound("2022-01-01"), until=until_bound("2021-12-31")))


@pytest.mark.parametrize(("given", "slug"), [
    ("荆州日报", "jingzhouribao"),
    ("jingzhouribao", "jingzhouribao"),
    ("荆州新闻网", "jingzhouribao"),  # an alias
    (" 上证报 ", "shanghaizhengquanbao"),
    ("某某晚报", "moumouwanbao"),  # not in the registry: stored under its pinyin
])
def test_a_source_is_found_by_name_alias_or_slug(given: str, slug: str) -> None:
    assert source_slug(given, SourceRegistry.load()) == slug


# --- build_query -------------------------------------------------------------------------------

def test_no_filter_is_everything_newest_first() -> None:
    assert build_query(Filters()) == ({}, NEWEST_FIRST)


def test_each_filter_maps_to_one_indexed_field() -> None:
    since, until = since_bound("2021-12-31"), until_bound("2021-12-31")
    assert build_query(Filters(source_slug="jingzhouribao")) == (
        {"source_slug": "jingzhouribao"}, NEWEST_FIRST)
    assert build_query(Filters(category="emnews")) == ({"categories": "emnews"}, NEWEST_FIRST)
    assert build_query(Filters(since=since)) == (
        {"published_at": {"$gte": SHANGHAI_MIDNIGHT_1231}}, NEWEST_FIRST)
    assert build_query(Filters(until=until)) == (
        {"published_at": {"$lt": SHANGHAI_MIDNIGHT_1231 + timedelta(days=1)}}, NEWEST_FIRST)
    assert build_query(Filters(until=until_bound("2021-12-31T08:00:00Z")))[0] == {
        "published_at": {"$lte": datetime(2021, 12, 31, 8, tzinfo=UTC)}}


def test_filters_combine() -> None:
    query, sort = build_query(Filters(source_slug="jingzhouribao", category="jingzhouribao",
                                      since=since_bound("2021-12-30"),
                                      until=until_bound("2021-12-31"), text="转型"))
    assert query == {
        "source_slug": "jingzhouribao",
        "categories": "jingzhouribao",
        "published_at": {"$gte": SHANGHAI_MIDNIGHT_1231 - timedelta(days=1),
                         "$lt": SHANGHAI_MIDNIGHT_1231 + timedelta(days=1)},
        "$and": [{"words": {"$regex": "(?:^| )转型(?: |$)"}}],
    }
    assert sort == NEWEST_FIRST


def test_text_is_every_word_with_the_index_ranking_and_a_regex_per_word() -> None:
    words = [{"words": {"$regex": "(?:^| )净利润(?: |$)"}}, {"words": {"$regex": "(?:^| )降准(?: |$)"}}]
    assert build_query(Filters(text="净利润 降准", text_index=True)) == (
        {"$text": {"$search": "净利润 降准"}, "$and": words},
        [("score", {"$meta": "textScore"}), *NEWEST_FIRST, ("_id", DESCENDING)])
    assert build_query(Filters(text='净利润 "降准"')) == ({"$and": words}, NEWEST_FIRST)


def test_phrases_are_literal_regexes_on_text() -> None:
    assert build_query(Filters(phrases=("a+b (c)", "同比增长")))[0] == {
        "$and": [{"text": {"$regex": r"a\+b \(c\)"}}, {"text": {"$regex": "同比增长"}}]}


# --- output formats ----------------------------------------------------------------------------

def test_dates_are_iso_utc_with_z() -> None:
    assert iso_z(datetime(2021, 12, 31, 0, 58, 25, tzinfo=UTC)) == "2021-12-31T00:58:25Z"
    assert iso_z(datetime(2021, 12, 31, 0, 58, 25, 123000, tzinfo=UTC)) == "2021-12-31T00:58:25.123Z"
    line = json_line({"_id": "1", "title": "荆州", "at": datetime(2021, 12, 31, tzinfo=UTC),
                      "nested": [{"at": datetime(2021, 12, 31, 8, tzinfo=UTC)}]})
    assert line == ('{"_id": "1", "title": "荆州", "at": "2021-12-31T00:00:00Z", '
                    '"nested": [{"at": "2021-12-31T08:00:00Z"}]}')


def test_csv_has_the_contract_columns_and_quotes_what_needs_it() -> None:
    doc = {"_id": "202112312232339262", "published_at": datetime(2021, 12, 31, 0, 58, 25, tzinfo=UTC),
           "source": "荆州日报", "title": 'A, "quoted" title', "categories": ["emnews", "jingzhouribao"],
           "urls": ["https://finews.withounder.com/a.html", "https://finews.withounder.com/b.html"]}
    text = "".join(csv_lines([doc, {"_id": "x", "share_url": "http://s/x"}]))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [
        ["_id", "published_at", "source", "title", "categories", "url"],
        ["202112312232339262", "2021-12-31T00:58:25Z", "荆州日报", 'A, "quoted" title',
         "emnews;jingzhouribao", "https://finews.withounder.com/a.html"],
        ["x", "", "", "", "", "http://s/x"],
    ]


def test_wide_characters_take_two_columns() -> None:
    assert display_width("荆州日报 ab") == 11
    assert truncate("荆州日报新闻", 7) == "荆州日…"
    assert display_width(truncate("荆州日报新闻", 7)) <= 7
    assert truncate("short", 10) == "short"


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_the_table_fits_the_terminal(columns: int) -> None:
    docs = [{"_id": "202112312232339262", "published_at": datetime(2021, 12, 31, 0, 58, 25, tzinfo=UTC),
             "source": "荆州日报", "title": "稳中求进增量提质转型升级跨越赶超" * 4}]
    lines = article_table(docs, columns)
    assert lines[0].split() == ["id", "published", "(+08)", "source", "title"]
    assert lines[1].startswith("202112312232339262  2021-12-31 08:58  荆州日报  稳中求进")
    assert all(display_width(line) <= columns for line in lines)


def test_plans_are_read_for_both_servers() -> None:
    mongodb_ix = {"queryPlanner": {"winningPlan": {"stage": "LIMIT", "inputStage": {
        "stage": "FETCH", "inputStage": {"stage": "IXSCAN", "indexName": "published_at"}}}}}
    mongodb_sbe = {"queryPlanner": {"winningPlan": {"queryPlan": {"stage": "FETCH", "inputStage": {
        "stage": "IXSCAN"}}, "slotBasedPlan": {"stages": "..."}}}}
    mongodb_text = {"queryPlanner": {"winningPlan": {"stage": "TEXT_MATCH", "inputStage": {
        "stage": "TEXT_OR"}}}}
    mongodb_scan = {"queryPlanner": {"winningPlan": {"stage": "SORT", "inputStage": {
        "stage": "COLLSCAN"}}, "rejectedPlans": [{"stage": "IXSCAN"}]}}
    sqlite_ix = {"queryPlanner": {"Plan": [
        "id=4 parent=0 notused=0 detail=SEARCH articles_01c7671e USING INDEX "
        "articles_01c7671e_source_slug_published_at (<expr>=?)"]}}
    sqlite_scan = {"queryPlanner": {"Plan": ["id=2 parent=0 notused=0 detail=SCAN articles_01c7671e"]}}
    assert plan_uses_index(mongodb_ix) is True
    assert plan_uses_index(mongodb_sbe) is True
    assert plan_uses_index(mongodb_text) is True
    assert plan_uses_index(mongodb_scan) is False
    assert plan_uses_index(sqlite_ix) is True
    assert plan_uses_index(sqlite_scan) is False
    assert plan_uses_index({"ok": 1}) is None


# --- the real server ---------------------------------------------------------------------------

def truth_document(record: dict[str, Any]) -> dict[str, Any]:
    """A ground-truth article as the database stores it."""
    published = datetime.strptime(record["published_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return {**record, "published_at": published}


@pytest.fixture
def stored(mongo_db: Database[dict[str, Any]], mirror: Any) -> Database[dict[str, Any]]:
    """The mirror's ground truth in this test's articles collection, with its indexes."""
    ensure_indexes(mongo_db, "articles", "rejects")
    mongo_db["articles"].insert_many([{**truth_document(r), "words": search_words(r["title"], r["text"])}
                                      for r in mirror.truth("articles")])
    if not has_text_index(mongo_db["articles"]):
        WordIndex(mongo_db["articles"]).rebuild()  # written around the store: index them
    return mongo_db


FILTER_CASES: dict[str, Filters] = {
    "none": Filters(),
    "source": Filters(source_slug="jingzhouribao"),
    "source+since": Filters(source_slug="jingzhouribao", since=since_bound("2021-12-31")),
    "category": Filters(category="emnews"),
    "since": Filters(since=since_bound("2021-12-31")),
    "until": Filters(until=until_bound("2021-12-29")),
    "text": Filters(text="净利润"),
    "text+source": Filters(text="净利润", source_slug="jingzhouribao"),
    "phrase": Filters(phrases=("投资者互动平台",)),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(FILTER_CASES))
def test_every_filter_is_served_by_an_index(case: str, stored: Database[dict[str, Any]],
                                            request: pytest.FixtureRequest) -> None:
    articles = stored["articles"]
    filters = FILTER_CASES[case]
    filters = with_search_indexes(articles, filters)
    if filters.phrases and filters.text_index:
        pytest.skip("with a text index (MongoDB), a phrase alone is a regex scan (docs/schema.md)")
    explain = explain_query(articles, filters)
    uses_index = plan_uses_index(explain)
    assert uses_index is not None, f"unknown explain format: {explain}"
    assert uses_index, json.dumps(explain, default=str)[:2000]
    if (filters.text or filters.phrases) and not filters.text_index:
        # No text index (FerretDB): the word index's registry and postings, by `_id`.
        assert filters.word_index
        for read, plan in explain["wordIndex"].items():
            assert plan_uses_index(plan), f"{read}: {json.dumps(plan, default=str)[:2000]}"


def query_results(filters: Filters, stored: Database[dict[str, Any]], limit: int = 0) -> list[str]:
    from newscrawl.ops.query import find_articles

    return [doc["_id"] for doc in find_articles(stored["articles"], filters, limit=limit)]


@pytest.mark.integration
def test_the_filters_select_what_they_say(stored: Database[dict[str, Any]], mirror: Any) -> None:
    truth = [truth_document(r) for r in mirror.truth("articles")]

    def expected(keep: Any) -> list[str]:
        chosen = [d for d in truth if keep(d)]
        return [d["_id"] for d in sorted(chosen, key=lambda d: d["published_at"], reverse=True)]

    def same(got: list[str], want: list[str]) -> None:
        # Newest first; articles published in the same second may come in either order.
        published = {d["_id"]: d["published_at"] for d in truth}
        assert sorted(got) == sorted(want)
        assert [published[a] for a in got] == [published[a] for a in want]

    since, until = SHANGHAI_MIDNIGHT_1231, SHANGHAI_MIDNIGHT_1231 - timedelta(days=1)
    same(query_results(Filters(category="emnews"), stored),
         expected(lambda d: "emnews" in d["categories"]))
    same(query_results(Filters(since=since_bound("2021-12-31")), stored),
         expected(lambda d: d["published_at"] >= since))
    same(query_results(Filters(until=until_bound("2021-12-29")), stored),
         expected(lambda d: d["published_at"] < until))
    same(query_results(Filters(source_slug="jingzhouribao", until=until_bound("2021-12-29")), stored),
         expected(lambda d: d["source_slug"] == "jingzhouribao" and d["published_at"] < until))
    with_word = expected(lambda d: "净利润" in search_words(d["title"], d["text"]).split())
    assert with_word and len(with_word) < len(truth)
    assert sorted(query_results(Filters(text="净利润"), stored)) == sorted(with_word)
    assert len(query_results(Filters(), stored, limit=20)) == 20


@pytest.mark.integration
def test_query_prints_exactly_the_ground_truth(crawl: Any, mirror: Any, mongo_uri: str,
                                               mongo_db: Database[dict[str, Any]]) -> None:
    crawl("finews")
    env = {"MONGO_URI": mongo_uri, "MONGO_DATABASE": mongo_db.name}
    proc = newscrawl("query", "--source", "荆州日报", "--since", "2021-12-31", "--format", "jsonl", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    since = "2021-12-30T16:00:00Z"  # 2021-12-31 00:00 in Asia/Shanghai
    truth = [r for r in mirror.truth("articles")
             if r["source"] == "荆州日报" and r["published_at"] >= since]
    assert 0 < len(truth) < 20  # the default limit does not cut it
    assert sorted(p["_id"] for p in printed) == sorted(r["_id"] for r in truth)
    by_id = {p["_id"]: p for p in printed}
    for record in truth:
        assert {k: by_id[record["_id"]].get(k) for k in record} == record
    assert [p["published_at"] for p in printed] == sorted((p["published_at"] for p in printed),
                                                          reverse=True)
    # The slug finds the same articles; the table and CSV show them too.
    by_slug = newscrawl("query", "--source", "jingzhouribao", "--since", "2021-12-31",
                        "--format", "jsonl", env=env)
    assert by_slug.stdout == proc.stdout
    table = newscrawl("query", "--source", "荆州日报", "--since", "2021-12-31", env=env)
    assert table.returncode == 0, table.stderr
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == [p["_id"] for p in printed]
    rows = list(csv.DictReader(io.StringIO(newscrawl(
        "query", "--source", "荆州日报", "--since", "2021-12-31", "--format", "csv", env=env).stdout)))
    assert [r["_id"] for r in rows] == [p["_id"] for p in printed]
    assert [r["published_at"] for r in rows] == [p["published_at"] for p in printed]


@pytest.mark.integration
def test_text_says_once_when_no_index_serves_it(stored: Database[dict[str, Any]], mongo_uri: str,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MONGO_URI", mongo_uri)
    monkeypatch.setenv("MONGO_DATABASE", stored.name)

    def found_and_note() -> tuple[list[str], str]:
        assert cli.main(["query", "--text", "净利润", "--limit", "0", "--format", "jsonl"]) == 0
        out, err = capsys.readouterr()
        found = [json.loads(line) for line in out.splitlines()]
        assert found and all("净利润" in d["title"] or "净利润" in d["text"] for d in found)
        return [d["_id"] for d in found], err

    indexed, err = found_and_note()
    assert err == ""  # the text index (MongoDB) or the word index serves it
    if has_text_index(stored["articles"]):
        return
    # A collection the word index does not cover (written by an older version): a scan, said once.
    stored["articles_words"].update_one({"_id": "state"}, {"$set": {"complete": False}})
    scanned, err = found_and_note()
    assert scanned == indexed
    assert len(err.splitlines()) == 1 and "newscrawl index-words" in err


@pytest.mark.integration
def test_explain_reports_the_plan(stored: Database[dict[str, Any]], mongo_uri: str,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MONGO_URI", mongo_uri)
    monkeypatch.setenv("MONGO_DATABASE", stored.name)
    assert cli.main(["query", "--category", "emnews", "--explain"]) == 0
    out, err = capsys.readouterr()
    assert "queryPlanner" in json.loads(out)
    assert err.startswith("newscrawl: the plan ")
