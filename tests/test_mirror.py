"""The mirror generator and server: determinism, ground truth, pages, HTTP and faults."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from fixtures import jekyll, media
from fixtures.generate import Manifest, build_mirror
from fixtures.server import Fault, MirrorServer
from tests.helpers import PROJECT_ROOT

# Every test but test_slugs_and_registry builds a mirror with Jekyll, serves one or runs a process.
pytestmark = pytest.mark.integration

ARTICLES = 60
SEED = 20211231
AGGREGATOR = "finews.withounder.com"
SHARE = "finews.zning.xyz"
SHANGHAI = timezone(timedelta(hours=8))
CONTRACT_FIELDS = [
    "_id", "info_code", "title", "paragraphs", "text", "body_kind", "published_at",
    "published_at_raw", "source", "source_slug", "categories", "tags", "urls", "share_url",
    "origin_url", "content_hash", "duplicate_of",
]
UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@dataclass
class Built:
    root: Path
    manifest: Manifest

    def truth(self, name: str) -> list[dict[str, Any]]:
        text = (self.root / "truth" / f"{name}.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    def articles(self) -> dict[str, dict[str, Any]]:
        return {record["_id"]: record for record in self.truth("articles")}

    def page(self, url: str) -> str:
        """A served file by its real URL, read from disk."""
        parts = urlsplit(url)
        return (self.root / (parts.hostname or "") / unquote(parts.path).lstrip("/")).read_text(
            encoding="utf-8"
        )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("mirror")
    return Built(root, build_mirror(root, articles=ARTICLES, seed=SEED))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("hostile")
    return Built(root, build_mirror(root, articles=ARTICLES, seed=SEED, hostile=True))


@pytest.fixture(scope="module")
def server(built: Built) -> Iterator[MirrorServer]:
    with MirrorServer(built.root) as running:
        yield running


@pytest.fixture
def clean_server(server: MirrorServer) -> Iterator[MirrorServer]:
    server.clear_faults()
    server.clear_requests()
    yield server
    server.clear_faults()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def fetch(base: str, target: str, *, method: str = "GET", headers: dict[str, str] | None = None,
          body: bytes | None = None) -> Reply:
    """One raw HTTP exchange: no redirects followed, no header rewriting."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def files_of(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*")) if path.is_file()
    }


# --- generator -------------------------------------------------------------------


def test_two_builds_are_byte_identical(built: Built, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build_mirror(again, articles=ARTICLES, seed=SEED, cache=False)  # Jekyll renders it again
    first, second = files_of(built.root), files_of(again)
    assert sorted(first) == sorted(second)
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []
    other = tmp_path / "other-seed"
    build_mirror(other, articles=ARTICLES, seed=SEED + 1)
    assert files_of(other)["truth/articles.jsonl"] != first["truth/articles.jsonl"]


def test_cli_build_in_another_process_matches(tmp_path: Path) -> None:
    # Another interpreter with another hash seed: no set or dict order may leak in.
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "fixtures.generate", str(out), "--articles", "60", "--seed", "7",
         "--no-cache"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.splitlines()[-1])
    here = tmp_path / "here"
    manifest = build_mirror(here, articles=60, seed=7, cache=False)
    assert counts == manifest.counts
    assert files_of(out) == files_of(here)


def test_rebuild_replaces_a_mirror_but_refuses_other_dirs(tmp_path: Path) -> None:
    target = tmp_path / "m"
    build_mirror(target, articles=60, seed=3)
    stale = target / AGGREGATOR / "stale.html"
    stale.write_text("old")
    build_mirror(target, articles=60, seed=3)
    assert not stale.exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_mirror(foreign, articles=60, seed=3)
    assert (foreign / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError):
        build_mirror(tmp_path / "tiny", articles=5)


def test_manifest_counts_match_truth_files_and_pages(built: Built) -> None:
    manifest, root = built.manifest, built.root / AGGREGATOR
    assert Manifest.load(built.root) == manifest
    counts = manifest.counts
    for name in ("articles", "unlisted", "digest_backfill", "rejects"):
        assert counts[name] == len(built.truth(name)), name
    assert counts["articles"] == ARTICLES + counts["corpus_articles"]
    assert counts["rejects"] == counts["rejects_crawl"] + counts["rejects_share"]
    # Category pages: one per category, all of its posts, the tag in <h2>.
    assert len(manifest.categories) == counts["categories"] >= len(media.ALWAYS_CARRIED)
    assert len(list((root / "category").glob("*.html"))) == counts["categories"]
    for category in manifest.categories:
        page = (root / "category" / f"{category['slug']}.html").read_text(encoding="utf-8")
        assert page.count("<li>") == category["posts"] > 0
        assert f'<h2 id="{category["tag"]}">{category["tag"]}</h2>' in page
        title = re.search(r"<title>(.*?)</title>", page)
        assert title and title.group(1) == category["title"]
        assert category["title_is_wrong"] == (category["title"] != f"{category['tag']} | 金融消息")
    wrong = [c for c in manifest.categories if c["title_is_wrong"]]
    assert [c["slug"] for c in wrong] == ["21caijing"]
    assert wrong[0]["title"] == manifest.cases["wrong_title_category"]["title"] == "湖南日报新闻 | 金融消息"
    # The rolling-news index and the home page.
    emnews = (root / "emnews" / "index.html").read_text(encoding="utf-8")
    assert emnews.count("<li>") == manifest.rolling["posts"] == counts["rolling_posts"]
    assert "202205262391921712" not in emnews  # no date in its file name: never published
    home = (root / "index.html").read_text(encoding="utf-8")
    sections = re.findall(r'<h2 id="[^"]*">[^<]*</h2>\s*<ul>((?:\s*<li>.*</li>)*)\s*</ul>', home)
    # Jekyll splits a tag with a space into two: each word is a heading of its own.
    words = {word for c in manifest.categories for word in c["tag"].split()} | {"东财滚动新闻"}
    assert counts["tags"] == counts["categories"] + 1
    assert len(sections) == len(words) > counts["tags"]
    assert all(1 <= section.count("<li>") <= 5 for section in sections)
    # Post pages on disk: every file that is not an index or category page.
    listings = {"index.html", "emnews/index.html"}
    post_files = [
        p for p in root.rglob("*.html")
        if p.relative_to(root).as_posix() not in listings and p.parent.name != "category"
    ]
    assert len(post_files) == counts["posts"] == counts["media_posts"] + counts["rolling_posts"]
    shares = list((built.root / SHARE / "NewsData" / "GetNewsText").glob("NW*.json"))
    assert len(shares) == counts["share_json"]
    feed = (root / "feed.xml").read_text(encoding="utf-8")
    assert feed.count("<entry>") == 10
    assert "Disallow: /assets/" in (root / "robots.txt").read_text()


def test_truth_records_follow_the_contract(built: Built) -> None:
    records = {name: built.truth(name) for name in ("articles", "unlisted", "digest_backfill")}
    for name, rows in records.items():
        ids = [row["_id"] for row in rows]
        assert ids == sorted(ids) and len(ids) == len(set(ids)), name
        for row in rows:
            assert list(row) == CONTRACT_FIELDS
            assert re.fullmatch(r"\d{18}", row["_id"]) and row["info_code"] == "NW" + row["_id"]
            assert row["text"] == "\n".join(row["paragraphs"])
            assert row["content_hash"] == hashlib.sha256(row["text"].encode("utf-8")).hexdigest()
            assert all(p and p == p.strip() and "  " not in p for p in row["paragraphs"])
            assert not re.search(r"[\u3000\u00a0\u200b\u200c\u200d\u2060\ufeff\t\r]", row["text"])
            assert row["body_kind"] in {"media", "share", "rolling", "digest"}
            assert UTC_STAMP.fullmatch(row["published_at"])
            for key in ("categories", "tags", "urls"):
                assert row[key] == sorted(set(row[key]))
            assert all(u.startswith(f"https://{AGGREGATOR}/") for u in row["urls"])
            assert row["share_url"] in (None, f"http://{SHARE}/html_News/NewsShare.html"
                                        f"?infoCode={row['info_code']}")
            assert row["title"] and row["source"] and row["source_slug"]
            # The id's date is the publication date in Shanghai.
            published = datetime.strptime(row["published_at"], "%Y-%m-%dT%H:%M:%SZ")
            local = published.replace(tzinfo=UTC).astimezone(SHANGHAI)
            assert row["_id"][:8] == f"{local:%Y%m%d}"
    articles = built.articles()
    for record in articles.values():
        original = record["duplicate_of"]
        if original:
            first = articles[original]
            assert first["text"] == record["text"]
            assert (first["published_at"], first["_id"]) < (record["published_at"], record["_id"])
    by_text: dict[str, list[str]] = {}
    for record in articles.values():
        by_text.setdefault(record["text"], []).append(record["_id"])
    assert sum(len(ids) - 1 for ids in by_text.values()) == built.manifest.counts["duplicates"] > 0


def test_corpus_post_truth_is_the_hand_written_record(built: Built) -> None:
    record = built.articles()["202112312232339262"]
    assert record["published_at"] == "2021-12-31T00:58:25Z"
    assert record["published_at_raw"] == "(GMT+8, Asia/Shanghai, CST) 2021-12-31 08:58:25"
    assert (record["source"], record["source_slug"]) == ("荆州日报", "jingzhouribao")
    assert record["categories"] == ["jingzhouribao"] and record["tags"] == ["荆州日报新闻"]
    assert record["urls"] == [
        "https://finews.withounder.com/jingzhouribao/2021/12/31/NW202112312232339262.html"
    ]
    assert record["share_url"] == (
        "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202112312232339262"
    )
    assert record["body_kind"] == "media" and record["origin_url"] is None
    assert len(record["paragraphs"]) == 20
    assert record["paragraphs"][0].startswith("本报讯(记者李天然夏雨彬特约记者张星星)12月30日上午")
    assert record["paragraphs"][-1].startswith("大舸中流下，青山两岸移。")
    assert "用奋进开创新局以拼搏赢得“荆彩”" in record["paragraphs"]  # the second piece stays
    assert not any("文章来源" in p for p in record["paragraphs"])
    rolling = built.articles()["202112082206928461"]
    assert rolling["body_kind"] == "digest" and rolling["source_slug"] == "emnews"
    assert rolling["origin_url"] == "http://finance.eastmoney.com/news/1344,202112082206928461.html"
    assert rolling["published_at"] == "2021-12-08T04:41:23Z"  # written 12:41:23 in Shanghai
    # Shown 8 h late: the post's date has no offset.
    assert rolling["published_at_raw"] == "(GMT+8, Asia/Shanghai, CST) 2021-12-08 20:41:23"
    # The broken post has no date in its file name: Jekyll never publishes it.
    assert built.manifest.cases["unpublished"] == ["202205262391921712"]
    assert not [r for r in built.truth("rejects") if r["_id"] == "202205262391921712"]
    assert not list((built.root / AGGREGATOR).rglob("*202205262391921712*"))


def test_corpus_posts_are_kept_verbatim(built: Built) -> None:
    for name in built.manifest.corpus["files"]:
        category = "emnews" if "NW" not in name else "jingzhouribao"
        copied = (built.root / "site" / "_posts" / category / name).read_bytes()
        assert copied == (PROJECT_ROOT / "fixtures" / "corpus" / name).read_bytes()
    page = built.page("https://finews.withounder.com/jingzhouribao/2021/12/31/NW202112312232339262.html")
    assert "<small>(GMT+8, Asia/Shanghai, CST) 2021-12-31 08:58:25</small>" in page
    assert '<meta property="og:url" content="https://finews.zning.me/jingzhouribao/2021/12/31/' in page
    assert '"datePublished":"2021-12-31T08:58:25+08:00"' in page
    assert '<link rel="canonical" href="https://finews.withounder.com/jingzhouribao/' in page
    assert "<small>tags: <em>荆州日报新闻</em></small>" in page
    assert '<p><a href="//finews.withounder.com/category/jingzhouribao.html">返回荆州日报新闻</a>' in page
    assert '<h1><a href="https://finews.withounder.com/">金融消息</a></h1>' in page
    share = json.loads((built.root / SHARE / "NewsData" / "GetNewsText" /
                        "NW202112312232339262.json").read_text(encoding="utf-8"))
    assert share["text"].startswith("<p>\u3000\u3000本报讯") and share["medianame"] == "荆州日报"


def test_titles_and_dates_of_the_truth_are_on_the_pages(built: Built) -> None:
    # Light cross-check with the pages (no cleaning): h1 and <small> date.
    for record in built.articles().values():
        pages = [built.page(url) for url in record["urls"]]
        # Jekyll prints `{{ page.title }}` as written: `《<证券法>实施细则》` stays raw.
        assert any(f"<h1>{record['title']}</h1>" in page for page in pages), record["_id"]
        assert any(f"<small>{record['published_at_raw']}</small>" in page for page in pages)
        if record["share_url"]:  # linked by an autolink on a media post
            assert any(f'<p><a href="{record["share_url"]}">' in page for page in pages)


def test_special_cases_are_all_present(built: Built) -> None:
    cases, articles = built.manifest.cases, built.articles()
    for key in ("rolling_and_media", "two_categories", "duplicates", "cut_short", "share_missing",
                "no_attribution", "alias_attribution", "digest_only", "digest_backfill",
                "rolling_full", "utc_day_before", "date_without_offset", "unregistered_source"):
        assert cases[key], key
    for article_id in cases["rolling_and_media"]:
        record = articles[article_id]
        assert "emnews" in record["categories"] and len(record["categories"]) == 2
        assert record["body_kind"] == "media"
        assert any(f"/NW{article_id}.html" in u for u in record["urls"])
        assert any(u.endswith(f"/{article_id}.html") for u in record["urls"])
    for article_id in cases["two_categories"]:
        assert len(articles[article_id]["urls"]) == 2 == len(articles[article_id]["categories"])
    for first, second in cases["duplicates"]:
        pair = sorted([articles[first], articles[second]],
                      key=lambda r: (r["published_at"], r["_id"]))
        assert pair[0]["duplicate_of"] is None and pair[1]["duplicate_of"] == pair[0]["_id"]
    for article_id in cases["cut_short"]:
        assert articles[article_id]["body_kind"] == "share"
    for article_id in cases["share_missing"]:
        assert not (built.root / SHARE / "NewsData" / "GetNewsText" / f"NW{article_id}.json").exists()
        assert articles[article_id]["share_url"] and articles[article_id]["body_kind"] == "media"
    for article_id in cases["utc_day_before"]:
        record = articles[article_id]
        assert record["published_at"][:10].replace("-", "") < article_id[:8]
    for article_id in cases["digest_only"]:
        assert articles[article_id]["body_kind"] == "digest"
        assert articles[article_id]["source"] == "东方财富"
    for article_id in cases["unregistered_source"]:
        assert not media.is_registered(articles[article_id]["source"])
    unregistered = [c for c in built.manifest.categories if not c["registered"]]
    assert {c["medium"] for c in unregistered} == set(media.UNREGISTERED)
    slugs = {c["slug"] for c in built.manifest.categories}
    assert {"21shijijingjibaodao 21caijingAPP", "anxinguojizhengquan(xianggang)", "36ke",
            "Wind", "jingzhouribao"} <= slugs
    # Jekyll lower-cases categories in post URLs and splits them at spaces.
    assert any(u.startswith("https://finews.withounder.com/21shijijingjibaodao/21caijingapp/")
               for r in articles.values() for u in r["urls"])
    assert any(u.startswith("https://finews.withounder.com/wind/") and r["categories"] == ["Wind"]
               for r in articles.values() for u in r["urls"])
    at_midnight = [a for a in articles.values() if a["published_at_raw"].endswith(" 00:00:00")]
    assert at_midnight, "a post shown exactly at midnight in Shanghai"


def test_backfill_and_unlisted_truth(built: Built) -> None:
    articles = built.articles()
    for record in built.truth("digest_backfill"):
        listed = articles[record["_id"]]
        assert listed["body_kind"] == "digest" and listed["share_url"] is None
        assert record["body_kind"] == "share" and record["share_url"]
        for key in ("title", "published_at", "urls", "categories", "tags", "origin_url"):
            assert record[key] == listed[key]
        assert len(record["text"]) > len(listed["text"])
    unlisted = built.truth("unlisted")
    share_rejects = [r for r in built.truth("rejects") if r["scope"] == "share"]
    assert sorted(built.manifest.unlisted_info_codes) == sorted(
        "NW" + r["_id"] for r in unlisted + share_rejects
    )
    assert {r["reason"] for r in share_rejects} >= {"missing_title", "missing_date",
                                                     "missing_title_and_date"}
    for record in unlisted:
        assert record["_id"] not in articles
        assert record["urls"] == record["categories"] == record["tags"] == []
        assert record["body_kind"] == "share" and record["share_url"]
        payload = json.loads((built.root / SHARE / "NewsData" / "GetNewsText" /
                              f"{record['info_code']}.json").read_text(encoding="utf-8"))
        assert payload["title"] == record["title"]
        assert payload["showtime"] == record["published_at_raw"]
        assert record["published_at"] < built.manifest.window["start"]


def test_slugs_and_registry() -> None:
    assert media.slugify("21世纪经济报道 21财经APP") == "21shijijingjibaodao 21caijingAPP"
    assert media.slugify("安信国际证券(香港)") == "anxinguojizhengquan(xianggang)"
    assert media.slugify("36氪") == "36ke" and media.slugify("荆州日报") == "jingzhouribao"
    assert media.resolve_source("东财滚动") == ("东方财富", "emnews")
    assert media.resolve_source("上证报") == ("上海证券报", "shanghaizhengquanbao")
    assert media.resolve_source("21财经") == ("21世纪经济报道 21财经APP",
                                              "21shijijingjibaodao 21caijingAPP")
    assert media.resolve_source("e公司") == ("e公司", "egongsi")
    for name in ("荆州日报", "上海证券报", "21世纪经济报道 21财经APP", "36氪", "Wind", "证券时报",
                 "中国证券报", "第一财经", "财新网", "经济参考报"):
        assert media.is_registered(name), name
    assert not any(media.is_registered(name) for name in media.UNREGISTERED)
    site_slugs = [media.slugify(name) for name in media.SITE_MEDIA]
    assert len(site_slugs) == len(set(site_slugs)) >= 300
    registry_slugs = [source.slug for source in media.REGISTRY]
    assert len(registry_slugs) == len(set(registry_slugs))


def test_hostile_inputs_land_in_truth_or_rejects(hostile: Built, built: Built) -> None:
    ids = hostile.manifest.cases["hostile"]
    rejects = {r["_id"]: r for r in hostile.truth("rejects")}
    articles = hostile.articles()
    assert rejects[ids["no_title"]]["reason"] == "missing_title"
    assert rejects[ids["empty_body"]]["reason"] == "empty_body"
    for key in ("oversized", "dollar_keys", "script"):
        assert ids[key] in articles and ids[key] not in rejects
    emnews = (hostile.root / AGGREGATOR / "emnews" / "index.html").read_text(encoding="utf-8")
    for key in ("no_title", "empty_body"):
        assert rejects[ids[key]]["url"].removeprefix(f"https://{AGGREGATOR}") in emnews
    oversized = articles[ids["oversized"]]
    assert len(hostile.page(oversized["urls"][0]).encode("utf-8")) > 5 * 1024 * 1024
    assert oversized["body_kind"] == "rolling"
    payload = json.loads((hostile.root / SHARE / "NewsData" / "GetNewsText" /
                          f"NW{ids['dollar_keys']}.json").read_text(encoding="utf-8"))
    assert {"$where", "meta.source"} <= set(payload) and "$gt" in payload["stats"]
    script_page = hostile.page(articles[ids["script"]]["urls"][0])
    assert "<script type=\"text/javascript\">var adText" in script_page
    assert not any("广告" in record["text"] or "adText" in record["text"]
                   for record in articles.values())
    # Hostile additions leave the rest of the mirror alone.
    for name, added in (("articles", 3), ("rejects", 2), ("unlisted", 0), ("digest_backfill", 0)):
        normal = {json.dumps(row, ensure_ascii=False) for row in built.truth(name)}
        with_hostile = {json.dumps(row, ensure_ascii=False) for row in hostile.truth(name)}
        assert normal <= with_hostile and len(with_hostile) - len(normal) == added, name


# --- server ------------------------------------------------------------------------


def test_every_truth_url_is_served(built: Built, server: MirrorServer) -> None:
    def status(url: str) -> int:
        try:
            with urllib.request.urlopen(server.mirror_url(url), timeout=10) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    share_dir = built.root / SHARE / "NewsData" / "GetNewsText"
    for record in built.truth("articles") + built.truth("unlisted"):
        for url in record["urls"]:
            assert status(url) == 200, url
        if record["share_url"]:
            assert status(record["share_url"]) == 200
            json_url = f"http://{SHARE}/NewsData/GetNewsText.do?id={record['info_code']}"
            expected = 200 if (share_dir / f"{record['info_code']}.json").exists() else 404
            assert status(json_url) == expected
    for category in built.manifest.categories:
        assert status(category["url"]) == 200
    for url in (f"https://{AGGREGATOR}/", f"https://{AGGREGATOR}/emnews/",
                f"https://{AGGREGATOR}/feed.xml", f"https://{AGGREGATOR}/robots.txt"):
        assert status(url) == 200
    for reject in built.truth("rejects"):
        assert status(reject["url"]) == 200


def test_share_host_answers(clean_server: MirrorServer) -> None:
    share = clean_server.host_map[SHARE]
    with_prefix = fetch(share, "/NewsData/GetNewsText.do?id=NW202112312232339262")
    without = fetch(share, "/NewsData/GetNewsText.do?id=202112312232339262")
    assert with_prefix.status == without.status == 200
    assert with_prefix.body == without.body
    assert with_prefix.headers["Content-Type"] == "application/json; charset=utf-8"
    assert int(with_prefix.headers["Content-Length"]) == len(with_prefix.body)
    assert json.loads(with_prefix.body)["title"].startswith("稳中求进")
    unknown = fetch(share, "/NewsData/GetNewsText.do?id=NW209901010000000000")
    assert unknown.status == 404 and json.loads(unknown.body)["code"] == 404
    assert fetch(share, "/NewsData/GetNewsText.do?id=../../etc/passwd").status == 404
    page = fetch(share, "/html_News/NewsShare.html?infoCode=NW202112312232339262")
    assert page.status == 200 and b"GetNewsText.do" in page.body
    assert fetch(share, "/").status == 404
    assert fetch(share, "/NewsData/GetNewsText/NW202112312232339262.json").status == 404


def test_paths_map_to_files_safely(clean_server: MirrorServer, built: Built) -> None:
    base = clean_server.host_map[AGGREGATOR]
    for target in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc/passwd",
                   "/category/%00.html", "/nothing-here.html", "/feed.xml/..%2f..%2f..%2f"):
        assert fetch(base, target).status == 404, target
    moved = fetch(base, "/emnews")
    assert moved.status == 301 and moved.headers["Location"] == "/emnews/"
    encoded = fetch(base, "/category/21shijijingjibaodao%2021caijingAPP.html")
    assert encoded.status == 200
    assert "<h2 id=\"21世纪经济报道 21财经APP新闻\">".encode() in encoded.body
    parens = fetch(base, "/category/anxinguojizhengquan%28xianggang%29.html")
    assert parens.status == 200
    home = fetch(base, "/")
    assert home.status == 200 and home.headers["Content-Type"] == "text/html; charset=utf-8"
    assert home.body == (built.root / AGGREGATOR / "index.html").read_bytes()
    assert home.headers["Last-Modified"] and home.headers["ETag"]
    cached = fetch(base, "/", headers={"If-None-Match": home.headers["ETag"]})
    assert cached.status == 304 and cached.body == b""
    head = fetch(base, "/", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(len(home.body))


def test_host_header_selects_the_host_on_either_port(clean_server: MirrorServer) -> None:
    aggregator, share = clean_server.host_map[AGGREGATOR], clean_server.host_map[SHARE]
    json_target = "/NewsData/GetNewsText.do?id=NW202112312232339262"
    assert fetch(aggregator, json_target).status == 404
    as_share = fetch(aggregator, json_target, headers={"Host": SHARE})
    assert as_share.status == 200 and json.loads(as_share.body)["medianame"] == "荆州日报"
    as_aggregator = fetch(share, "/", headers={"Host": f"{AGGREGATOR}:443"})
    assert as_aggregator.status == 200 and "金融消息".encode() in as_aggregator.body
    assert fetch(share, "/", headers={"Host": "elsewhere.example"}).status == 404
    assert clean_server.requests == [
        (AGGREGATOR, json_target, 404), (SHARE, json_target, 200), (AGGREGATOR, "/", 200),
        (SHARE, "/", 404),
    ]


def test_request_log_is_thread_safe_and_served(clean_server: MirrorServer) -> None:
    base = clean_server.host_map[AGGREGATOR]

    def hammer(worker: int) -> None:
        for attempt in range(15):
            fetch(base, f"/robots.txt?w={worker}&n={attempt}")

    workers = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    log = clean_server.requests
    assert len(log) == 120 and len(set(log)) == 120
    served = json.loads(fetch(base, "/__mirror__/log").body)
    assert [tuple(entry) for entry in served] == log  # the control call itself is not logged
    assert fetch(base, "/__mirror__/log", method="DELETE").status == 200
    assert clean_server.requests == [] and json.loads(fetch(base, "/__mirror__/log").body) == []


def test_fault_status_with_retry_after_for_times(clean_server: MirrorServer) -> None:
    base = clean_server.host_map[AGGREGATOR]
    clean_server.add_fault(Fault(path=r"^/robots\.txt$", status=503, retry_after=7, times=2))
    first, second, third = (fetch(base, "/robots.txt") for _ in range(3))
    assert (first.status, second.status, third.status) == (503, 503, 200)
    assert first.headers["Retry-After"] == "7"
    clean_server.add_fault(Fault(path="robots", status=429, times=None))
    assert [fetch(base, "/robots.txt").status for _ in range(3)] == [429, 429, 429]
    clean_server.clear_faults()
    assert fetch(base, "/robots.txt").status == 200


def test_fault_matches_host_and_query(clean_server: MirrorServer) -> None:
    aggregator, share = clean_server.host_map[AGGREGATOR], clean_server.host_map[SHARE]
    clean_server.add_fault(Fault(host=SHARE, path=r"id=NW202112312232339262", status=500))
    assert fetch(aggregator, "/robots.txt?id=NW202112312232339262").status == 200
    target = "/NewsData/GetNewsText.do?id=NW202112312232339262"
    assert fetch(share, target).status == 500
    assert fetch(share, target).status == 200


def test_fault_delay(clean_server: MirrorServer) -> None:
    base = clean_server.host_map[AGGREGATOR]
    clean_server.add_fault(Fault(path="robots", delay=0.4))
    started = time.monotonic()
    assert fetch(base, "/robots.txt").status == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    fetch(base, "/robots.txt")
    assert time.monotonic() - started < 0.4


def test_fault_truncate_breaks_the_promised_length(clean_server: MirrorServer) -> None:
    base = clean_server.host_map[AGGREGATOR]
    full = fetch(base, "/feed.xml").body
    clean_server.add_fault(Fault(path="feed", truncate=100))
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    connection.request("GET", "/feed.xml")
    response = connection.getresponse()
    assert int(response.headers["Content-Length"]) == len(full)
    with pytest.raises(http.client.IncompleteRead) as broken:
        response.read()
    assert broken.value.partial == full[:100]
    connection.close()


def test_fault_charset_reencodes_html_and_json(clean_server: MirrorServer) -> None:
    aggregator, share = clean_server.host_map[AGGREGATOR], clean_server.host_map[SHARE]
    original = fetch(aggregator, "/").body.decode("utf-8")
    clean_server.add_fault(Fault(path=r"^/$", charset="gbk"))
    reply = fetch(aggregator, "/")
    assert reply.headers["Content-Type"] == "text/html; charset=gbk"
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    decoded = reply.body.decode("gbk")
    assert '<meta charset="gbk">' in decoded
    assert decoded.replace('<meta charset="gbk">', '<meta charset="UTF-8">') == original
    target = "/NewsData/GetNewsText.do?id=NW202112312232339262"
    clean_server.add_fault(Fault(host=SHARE, path="GetNewsText", charset="gbk"))
    answer = fetch(share, target)
    assert answer.headers["Content-Type"] == "application/json; charset=gbk"
    assert json.loads(answer.body.decode("gbk")) == json.loads(fetch(share, target).body)


def test_fault_redirect_loop(clean_server: MirrorServer) -> None:
    base = clean_server.host_map[AGGREGATOR]
    clean_server.add_fault(Fault(path="robots", redirect_loop=True, times=None))
    reply = fetch(base, "/robots.txt?x=1")
    assert reply.status == 302 and reply.headers["Location"] == "/robots.txt?x=1"
    with pytest.raises(urllib.error.HTTPError) as looped:
        urllib.request.urlopen(base + "/robots.txt", timeout=10)
    assert looped.value.code == 302
    clean_server.clear_faults()
    clean_server.add_fault(Fault(path="^/emnews$", redirect_to=f"{base}/emnews/"))
    moved = fetch(base, "/emnews")
    assert moved.status == 302 and moved.headers["Location"] == f"{base}/emnews/"
    assert fetch(base, "/emnews").status == 301  # once: then the mirror's own answer


def test_faults_over_http(clean_server: MirrorServer) -> None:
    base = clean_server.host_map[SHARE]
    fault = {"path": "robots", "status": 404, "times": 1}
    added = fetch(base, "/__mirror__/faults", method="POST", body=json.dumps(fault).encode(),
                  headers={"Content-Type": "application/json"})
    assert added.status == 201
    listed = json.loads(fetch(base, "/__mirror__/faults").body)
    assert [entry["status"] for entry in listed] == [404]
    aggregator = clean_server.host_map[AGGREGATOR]
    assert fetch(aggregator, "/robots.txt").status == 404
    assert fetch(aggregator, "/robots.txt").status == 200
    bad = fetch(base, "/__mirror__/faults", method="POST", body=b'{"path": "x", "nope": 1}')
    assert bad.status == 400
    no_action = fetch(base, "/__mirror__/faults", method="POST", body=b'{"path": "x"}')
    assert no_action.status == 400
    fetch(base, "/__mirror__/faults", method="POST", body=b'{"path": ".*", "status": 500, "times": null}')
    assert fetch(aggregator, "/").status == 500
    assert fetch(base, "/__mirror__/faults", method="DELETE").status == 200
    assert fetch(aggregator, "/").status == 200 and clean_server.faults == []
    with pytest.raises(ValueError):
        Fault(path="x", charset="no-such-charset")


def test_server_cli_prints_the_host_map_and_stops_on_sigterm(built: Built) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "fixtures.server", "--root", str(built.root)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        host_map = json.loads(process.stdout.readline())
        assert set(host_map) == {AGGREGATOR, SHARE}
        assert fetch(host_map[AGGREGATOR], "/robots.txt").status == 200
        assert fetch(host_map[SHARE], "/html_News/NewsShare.html").status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- what the real engine does (Jekyll renders the mirror) ---------------------------


def test_jekyll_shows_an_offset_less_time_8_hours_late(built: Built) -> None:
    """Engine fact: a front-matter time without an offset is read as UTC, printed in Shanghai."""
    shifted = built.manifest.cases["shifted_times"]
    assert set(shifted) == {"00:00", "15:59", "16:00", "23:59"}
    for label, kinds in shifted.items():
        article_id = kinds["rolling_alone"]
        written = datetime.strptime(f"2021-12-30 {label}", "%Y-%m-%d %H:%M").replace(tzinfo=SHANGHAI)
        shown = written + timedelta(hours=8)
        source = next((built.root / "site" / "_posts" / "emnews").glob(f"*-{article_id}.md"))
        assert f"date: 2021-12-30 {label}:00\n" in source.read_text(encoding="utf-8")
        url = f"https://{AGGREGATOR}/emnews/{shown:%Y/%m/%d}/{article_id}.html"
        page = built.page(url)  # the URL's date is the shown one
        assert f"<small>(GMT+8, Asia/Shanghai, CST) {shown:%Y-%m-%d %H:%M:%S}</small>" in page
        assert f'"datePublished":"{shown:%Y-%m-%dT%H:%M:%S}+08:00"' in page
        record = built.articles()[article_id]
        assert record["published_at"] == f"{written.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
        assert record["urls"] == [url]
    # With `+0800` the page shows the writer's time.
    twin = built.articles()[shifted["00:00"]["media_and_rolling_twin"]]
    media_url = next(u for u in twin["urls"] if "/emnews/" not in u)
    assert "<small>(GMT+8, Asia/Shanghai, CST) 2021-12-30 00:00:00</small>" in built.page(media_url)
    feed = (built.root / AGGREGATOR / "feed.xml").read_text(encoding="utf-8")
    assert "<updated>2022-01-01T00:00:00+08:00</updated>" in feed  # site.time pinned


def test_jekyll_lower_cases_and_splits_categories_in_post_urls_only(built: Built) -> None:
    """Engine fact: `categories: Wind` -> /wind/…; a name with a space -> two segments;
    the category page and the post's back link keep the name as written."""
    articles = built.articles()
    spaced = "21shijijingjibaodao 21caijingAPP"
    for name, path in (("Wind", "/wind/"), (spaced, "/21shijijingjibaodao/21caijingapp/")):
        records = [r for r in articles.values() if name in r["categories"]]
        assert len(records) > 5  # more than home lists under its tag
        page = (built.root / AGGREGATOR / "category" / f"{name}.html").read_text(encoding="utf-8")
        for record in records:
            url = next(u for u in record["urls"] if u.startswith(f"https://{AGGREGATOR}{path}"))
            assert f'<a href="{url.removeprefix(f"https://{AGGREGATOR}")}">' in page
            back = f'<a href="//{AGGREGATOR}/category/{name}.html">返回'
            assert back in built.page(url)
        assert not (built.root / AGGREGATOR / "category" / f"{name.lower()}.html").exists()
    # Tags split too: the home page has a heading for each word of a spaced tag.
    home = (built.root / AGGREGATOR / "index.html").read_text(encoding="utf-8")
    assert '<h2 id="21世纪经济报道">' in home and '<h2 id="21财经APP新闻">' in home


def test_the_speed_plugin_changes_nothing_jekyll_makes(built: Built, tmp_path: Path) -> None:
    """fixtures/jekyll.py's plugin only replaces Jekyll's quadratic file walk."""
    source = built.root / "site"
    assert (source / jekyll.SPEED_PLUGIN_PATH).is_file()
    plain = tmp_path / "plain-source"
    shutil.copytree(source, plain)
    (plain / jekyll.SPEED_PLUGIN_PATH).unlink()
    jekyll.build(plain, tmp_path / "without")
    assert files_of(tmp_path / "without") == files_of(built.root / AGGREGATOR)
