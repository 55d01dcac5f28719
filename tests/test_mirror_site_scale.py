"""A mirror with the real site's shape (issue 19, point 2), scaled down.

The site doc (`shared/docs/finews-site.md`, Site A): about 2,000 category pages and about
17,000 posts live at once; a category page lists every live post of its category, no
pagination; the home page lists each tag's 5 newest posts; media posts link their share
page; the same article can be under several categories. `SITE_SCALE_ARTICLES` in
`SITE_SCALE_CATEGORIES` is that size (bench/site_scale.py builds and crawls it); here a
tenth of it, with the same proportions, rendered by Jekyll, is checked against what the
generator meant (its truth and manifest), and the pages Jekyll made against both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from fixtures import media
from fixtures.generate import SITE_SCALE_ARTICLES, SITE_SCALE_CATEGORIES, build_mirror
from fixtures.jekyll import quote_segment
from fixtures.site import AGGREGATOR_HOST, SHARE_HOST

pytestmark = pytest.mark.integration  # Jekyll renders the mirror

SEED = 20211231
SCALE = 10  # a tenth of the site: 1,580 articles in 200 categories
ARTICLES, CATEGORIES = SITE_SCALE_ARTICLES // SCALE, SITE_SCALE_CATEGORIES // SCALE
SITE_POSTS, SITE_CATEGORY_PAGES = 17_000, 2_000  # the site doc's "about"
LINK = re.compile(r'<li><a href="([^"]+)">')


def manifest(root: Path) -> dict[str, Any]:
    return dict(json.loads((root / "truth" / "manifest.json").read_text(encoding="utf-8")))


def truth(root: Path) -> dict[str, dict[str, Any]]:
    lines = (root / "truth" / "articles.jsonl").read_text(encoding="utf-8").splitlines()
    return {record["_id"]: record for record in map(json.loads, filter(None, lines))}


def page(root: Path, url: str) -> str:
    path = unquote(urlsplit(url).path).lstrip("/")
    target = root / AGGREGATOR_HOST / path
    return (target / "index.html" if target.is_dir() else target).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site-scale")
    build_mirror(root, articles=ARTICLES, seed=SEED, categories=CATEGORIES)
    return root


def test_the_site_has_the_docs_proportions(site: Path) -> None:
    counts = manifest(site)["counts"]
    assert counts["categories"] == CATEGORIES
    # ~17,000 posts in ~2,000 category pages: 8.5 posts a category, within 10 %.
    per_category = counts["posts"] / counts["categories"]
    assert 0.9 * SITE_POSTS / SITE_CATEGORY_PAGES <= per_category <= 1.1 * SITE_POSTS / SITE_CATEGORY_PAGES
    # The full size, from the same proportions: about 17,000 posts (the site's _posts: 16,903).
    assert 0.95 * SITE_POSTS <= counts["posts"] / ARTICLES * SITE_SCALE_ARTICLES <= 1.05 * SITE_POSTS
    # Every medium's category is one; the ones beyond the registry are unregistered outlets.
    categories = manifest(site)["categories"]
    assert len({c["slug"] for c in categories}) == CATEGORIES
    assert all(c["slug"] == media.slugify(c["medium"]) for c in categories)
    assert all(c["posts"] >= 1 for c in categories)
    unregistered = [c for c in categories if not c["registered"]]
    assert {c["medium"] for c in unregistered} >= set(media.UNREGISTERED) & {
        c["medium"] for c in categories}
    assert len(unregistered) >= CATEGORIES - len(media.SITE_MEDIA)
    # Listings of every length: most categories short, a few long.
    posts = sorted(c["posts"] for c in categories)
    assert posts[len(posts) // 2] <= per_category < posts[-1] / 5


def test_jekyll_lists_every_post_of_a_category_on_its_page(site: Path) -> None:
    """What Jekyll rendered, against the generator's truth: a category page links exactly
    the post pages of its category (no pagination), under the URL Jekyll gives them."""
    expected: dict[str, set[str]] = {}
    for record in truth(site).values():
        for category in record["categories"]:
            prefix = "/" + "/".join(quote_segment(w.lower()) for w in category.split()) + "/"
            expected.setdefault(category, set()).update(
                urlsplit(url).path for url in record["urls"]
                if re.match(re.escape(prefix) + r"\d{4}/", urlsplit(url).path))
    listed = 0
    for category in manifest(site)["categories"]:
        links = LINK.findall(page(site, category["url"]))
        assert len(links) == category["posts"]
        assert {urlsplit(link).path for link in links} == expected[category["slug"]]
        listed += len(links)
    rolling = manifest(site)["rolling"]
    assert len(LINK.findall(page(site, rolling["url"]))) == rolling["posts"]
    assert listed + rolling["posts"] == manifest(site)["counts"]["posts"]


def test_the_home_page_lists_five_newest_of_each_tag(site: Path) -> None:
    home = page(site, "/")
    sections = re.findall(r'<h2 id="([^"]+)">[^<]*</h2>\s*<ul>(.*?)</ul>', home, re.S)
    assert len(sections) >= CATEGORIES  # a tag with a space is two of Jekyll's tags
    assert all(1 <= len(LINK.findall(body)) <= 5 for _, body in sections)


def test_posts_link_their_share_page_and_some_have_two_categories(site: Path) -> None:
    records = truth(site)
    media_records = [r for r in records.values() if r["body_kind"] in ("media", "share")]
    with_share = [r for r in media_records if r["share_url"]]
    assert len(with_share) >= 0.9 * len(media_records)
    answers = site / SHARE_HOST / "NewsData" / "GetNewsText"
    sample = with_share[:: max(1, len(with_share) // 50)]
    for record in sample:
        assert f'href="{record["share_url"]}"' in page(site, record["urls"][0])
        assert (answers / f"{record['info_code']}.json").is_file() or record["_id"] in manifest(
            site)["cases"]["share_missing"]
    two = [r for r in records.values() if len(r["categories"]) >= 2]
    assert 0.02 * len(records) <= len(two) <= 0.08 * len(records)
    ids = list(records)
    assert all(re.fullmatch(r"\d{18}", i) for i in ids)


def test_a_schedules_next_runs_add_posts_and_drop_a_category(tmp_path: Path) -> None:
    base, grown, gone = tmp_path / "base", tmp_path / "grown", tmp_path / "gone"
    build_mirror(base, articles=300, seed=SEED, categories=40)
    build_mirror(grown, articles=300, seed=SEED, categories=40, new_posts=5)
    first, more = truth(base), truth(grown)
    new = manifest(grown)["shape"]["new_posts"]
    assert len(new) == 5 and set(more) == set(first) | set(new)
    assert all(more[i] == first[i] for i in first)  # nothing else changes
    categories = {c["slug"]: c for c in manifest(grown)["categories"]}
    slug = next(s for s, c in sorted(categories.items(), key=lambda sc: -sc[1]["posts"])
                if s not in {media.slugify(n) for n in media.ALWAYS_CARRIED})
    build_mirror(gone, articles=300, seed=SEED, categories=40, new_posts=5, drop_category=slug)
    left = truth(gone)
    assert slug not in {c["slug"] for c in manifest(gone)["categories"]}
    assert not (gone / AGGREGATOR_HOST / "category" / f"{slug}.html").exists()
    only_there = {i for i, r in more.items() if r["categories"] == [slug]}
    assert only_there and set(left) == set(more) - only_there
    with pytest.raises(ValueError):
        build_mirror(tmp_path / "bad", articles=300, seed=SEED, categories=40,
                     drop_category="Wind", cache=False)
