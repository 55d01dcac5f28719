"""Near-duplicates: MinHash/LSH pieces (pure), then links written by real stores on the real
server, across runs, processes and edits."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from typing import Any

import pytest
from pymongo.database import Database

from fixtures.content import TextMaker
from pipelines import neardup
from pipelines.capabilities import Capabilities
from pipelines.storage import ArticleStore, ensure_indexes
from tests.helpers import PROJECT_ROOT, PUBLISHED, T0, sighting


def story(seed: int, paragraphs: int = 5) -> list[str]:
    maker = TextMaker(random.Random(seed))
    return [maker.paragraph().text for _ in range(paragraphs)]


# --- pure ------------------------------------------------------------------------------------

def test_punctuation_and_spacing_do_not_count() -> None:
    text = "\n".join(story(1))
    edited = text.replace("，", ",").replace("。", ". ")
    assert neardup.shingles(text) == neardup.shingles(edited)
    assert neardup.similarity(text, edited) == 1.0
    assert neardup.band_keys(text) == neardup.band_keys(edited)


def test_a_paragraph_cut_stays_similar_other_figures_do_not() -> None:
    paragraphs = story(2)
    full, cut = "\n".join(paragraphs), "\n".join(paragraphs[:-1])
    assert neardup.similarity(full, cut) >= neardup.THRESHOLD
    # Same wording, other figures: another day's formula news, not a reprint.
    other_day = "".join(str((int(ch) + 1) % 10) if ch.isdigit() else ch for ch in full)
    assert neardup.jaccard(neardup.shingles(full), neardup.shingles(other_day)) > 0.3
    assert neardup.similarity(full, other_day) == 0.0
    assert neardup.similarity(full, "\n".join(story(3))) < neardup.THRESHOLD


def test_the_earliest_similar_record_is_named_if_earlier() -> None:
    t = PUBLISHED
    similar = {"b": ((t, "b"), 0.8), "c": ((t + timedelta(hours=2), "c"), 0.9)}
    assert neardup.earliest_link((t + timedelta(hours=1), "x"), similar) == neardup.Link("b", 0.8)
    assert neardup.earliest_link((t, "a"), similar) is None  # a is the earliest: ties go by _id


def test_the_band_index_finds_rows_sorted_recent_and_changed() -> None:
    index = neardup.BandIndex()
    index.RESORT_AT = 3
    texts = {f"id{n}": "\n".join(story(10 + n)) for n in range(8)}
    for n, (aid, text) in enumerate(texts.items()):
        sig = neardup.signature(neardup.shingles(text))
        index.put(neardup.Candidate((PUBLISHED + timedelta(minutes=n), aid), sig, 0, None),
                  neardup.band_keys_of(sig))
    for aid, text in texts.items():
        assert aid in index.lookup(neardup.band_keys(text))
    assert index.sorted_upto > 0
    # A row whose text changed is found by its new keys only.
    old = neardup.band_keys(texts["id0"])
    new_text = "\n".join(story(99))
    sig = neardup.signature(neardup.shingles(new_text))
    index.put(neardup.Candidate((PUBLISHED, "id0"), sig, 0, None), neardup.band_keys_of(sig))
    assert "id0" not in index.lookup(old)
    assert "id0" in index.lookup(neardup.band_keys(new_text))


# --- the real server ---------------------------------------------------------------------------

ORIGINAL, REPRINT, OTHER = "202112310000000011", "202112310000000012", "202112310000000013"


def article(aid: str, paragraphs: list[str], published: datetime, seen: datetime = T0) -> dict[str, Any]:
    return sighting("media", paragraphs, _id=aid, info_code="NW" + aid, published_at=published,
                    seen=seen, url=f"https://finews.withounder.com/x/2021/12/31/NW{aid}.html")


def reprint_of(paragraphs: list[str]) -> list[str]:
    """Another medium's copy: a paragraph cut, one added, punctuation changed."""
    return [p.replace("，", ",") for p in paragraphs[:-1]] + ["本文来源：都市快报，转载请注明出处。"]


def links(db: Database[dict[str, Any]]) -> dict[str, str | None]:
    return {doc["_id"]: (doc.get("near_duplicate_of") or {}).get("_id")
            for doc in db["articles"].find({}, {"near_duplicate_of": 1})}


@pytest.fixture
def db(mongo_db: Database[dict[str, Any]]) -> Database[dict[str, Any]]:
    ensure_indexes(mongo_db, "articles", "rejects")
    return mongo_db


@pytest.mark.integration
def test_a_reprint_in_a_later_run_links_the_original_and_an_earlier_original_takes_over(
        db: Database[dict[str, Any]], mongo_uri: str, capabilities: Capabilities) -> None:
    text = story(20)
    first = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    first.write([article(REPRINT, reprint_of(text), PUBLISHED + timedelta(hours=1)),
                 article(OTHER, story(21), PUBLISHED)])
    first.close()
    assert links(db) == {REPRINT: None, OTHER: None}
    # The next run finds the original, published before the reprint.
    second = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    second.write([article(ORIGINAL, text, PUBLISHED + timedelta(minutes=5))])
    second.close()
    assert links(db) == {REPRINT: ORIGINAL, OTHER: None, ORIGINAL: None}
    link = db["articles"].find_one({"_id": REPRINT})["near_duplicate_of"]  # type: ignore[index]
    expected = neardup.similarity("\n".join(reprint_of(text)), "\n".join(text))
    assert link["similarity"] == pytest.approx(expected, abs=1e-4) and expected < 1.0
    assert link["published_at"] == PUBLISHED + timedelta(minutes=5)
    # An exact copy is a near-duplicate too, and keeps duplicate_of.
    third = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    third.write([article("202112310000000014", text, PUBLISHED + timedelta(hours=2))])
    third.close()
    copy = db["articles"].find_one({"_id": "202112310000000014"})
    assert copy is not None and copy["duplicate_of"] == ORIGINAL
    assert copy["near_duplicate_of"]["_id"] == ORIGINAL and copy["near_duplicate_of"]["similarity"] == 1.0


@pytest.mark.integration
def test_a_later_run_keeps_a_reprint_linked_to_the_earliest_original(
        db: Database[dict[str, Any]], mongo_uri: str, capabilities: Capabilities) -> None:
    # Run 1 stores A and its reprint C, two hours later: C names A. Run 2 stores B, an hour
    # after A and similar to both: C keeps naming A, the earliest (B names A too). (The band
    # index loaded at a run's start once knew no stored link, and C was rewritten to name B.)
    text = story(50)
    a_text, b_text, c_text = text, [*text, "（来源：证券时报）"], reprint_of(text)
    joined = {name: "\n".join(p) for name, p in (("a", a_text), ("b", b_text), ("c", c_text))}
    assert min(neardup.similarity(joined["b"], joined[other]) for other in "ac") >= neardup.THRESHOLD
    a, b, c = ORIGINAL, REPRINT, OTHER
    first = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    first.write([article(a, a_text, PUBLISHED), article(c, c_text, PUBLISHED + timedelta(hours=2))])
    first.close()
    assert links(db) == {a: None, c: a}
    second = ArticleStore.connect(mongo_uri, db.name, capabilities=capabilities)
    second.write([article(b, b_text, PUBLISHED + timedelta(hours=1))])
    second.close()
    assert links(db) == {a: None, b: a, c: a}


WRITER = textwrap.dedent("""
    import sys
    from datetime import timedelta
    from pipelines.config import mongo_client
    from pipelines.storage import ArticleStore
    from tests.test_neardup import article, reprint_of, story
    from tests.helpers import PUBLISHED, capabilities_named
    uri, name, which, capabilities = sys.argv[1:5]
    store = ArticleStore.connect(uri, name, capabilities=capabilities_named(
        capabilities, mongo_client(uri)[name]))
    store.write([article("202112310000000020", story(30), PUBLISHED + timedelta(minutes=7))])
    if which == "original":
        doc = article("202112310000000021", story(31), PUBLISHED)
    else:
        doc = article("202112310000000022", reprint_of(story(31)), PUBLISHED + timedelta(hours=3))
    print("ready", flush=True)
    sys.stdin.readline()  # both write at the same moment
    store.write([doc])
    print("written", flush=True)
    sys.stdin.readline()
    store.close()
""")


@pytest.mark.integration
def test_two_processes_writing_a_story_and_its_reprint_at_once_link_them(
        db: Database[dict[str, Any]], mongo_uri: str, capabilities: Capabilities,
        request: pytest.FixtureRequest) -> None:
    way = request.node.callspec.params["capabilities"]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, mongo_uri, db.name, which, way],
                              cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for which in ("original", "reprint")]
    for proc in procs:  # each has loaded what was stored before either wrote its story
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for step in range(2):
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        if step == 0:  # both writes done before either closes
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    assert links(db) == {"202112310000000020": None, "202112310000000021": None,
                         "202112310000000022": "202112310000000021"}


@pytest.mark.integration
def test_a_record_whose_text_changes_is_linked_anew(db: Database[dict[str, Any]],
                                                    capabilities: Capabilities) -> None:
    store = ArticleStore(db, capabilities=capabilities)
    text = story(40)
    store.write([article(ORIGINAL, text, PUBLISHED),
                 article(REPRINT, reprint_of(text), PUBLISHED + timedelta(hours=1)),
                 article(OTHER, story(41), PUBLISHED + timedelta(hours=2))])
    assert links(db) == {ORIGINAL: None, REPRINT: ORIGINAL, OTHER: None}
    # The original is edited into another story: the reprint no longer names it.
    later = T0 + timedelta(hours=5)
    store.write([article(ORIGINAL, story(42), PUBLISHED, seen=later)], now=later)
    assert links(db) == {ORIGINAL: None, REPRINT: None, OTHER: None}
    # The other article is edited into a copy of the reprint's story: it names the reprint,
    # the earliest record of that story now.
    store.write([article(OTHER, text, PUBLISHED + timedelta(hours=2), seen=later)], now=later)
    assert links(db) == {ORIGINAL: None, REPRINT: None, OTHER: REPRINT}


@pytest.mark.integration
def test_the_reprint_mirror_says_which_articles_are_one_story(tmp_path: Any) -> None:
    import json

    from fixtures.generate import build_mirror

    build_mirror(tmp_path, articles=300, reprints=True)
    truth = json.loads((tmp_path / "truth" / "reprints.json").read_text(encoding="utf-8"))
    articles = {json.loads(line)["_id"]: json.loads(line) for line in
                (tmp_path / "truth" / "articles.jsonl").read_text(encoding="utf-8").splitlines()}
    assert len(truth["stories"]) == 6 and len(truth["unrelated"]) >= 2
    assert {edit for story in truth["stories"] for edit in story["edits"].values()} == set(
        ["attribution", "paragraph_added", "paragraph_removed", "punctuation", "sentence"])
    for story in truth["stories"]:
        original, *reprints = (articles[aid] for aid in story["ids"])
        for reprint in reprints:
            assert reprint["published_at"] >= original["published_at"]
            assert reprint["source"] != original["source"]
            assert neardup.similarity(original["text"], reprint["text"]) >= neardup.THRESHOLD, (
                story["edits"][reprint["_id"]])
    for group in truth["unrelated"]:
        texts = [articles[aid]["text"] for aid in group["ids"]]
        assert all(neardup.similarity(texts[0], other) < neardup.THRESHOLD for other in texts[1:])
