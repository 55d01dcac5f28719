"""The mirror a bench runs on: built once per size and seed (cached), its counts, the raw
items of its post pages, served over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import MIRROR_SEED, WORK_DIR


# --- the mirror ------------------------------------------------------------------
def mirror_dir(articles: int, seed: int = MIRROR_SEED, *, categories: int | None = None,
               new_posts: int = 0, drop_category: str | None = None) -> Path:
    """A built mirror of `articles` generated articles, cached under .local/bench/mirror/
    by everything it is made from (fixtures.generate.mirror_key); the shape arguments are
    build_mirror's (categories, new posts of the last hour, a category gone)."""
    from fixtures.generate import build_mirror, mirror_key, shape_key

    shape = shape_key(categories, new_posts, drop_category)
    out = WORK_DIR / "mirror" / mirror_key(articles, seed, False, shape=shape)
    if not (out / "truth" / "manifest.json").exists():
        print(f"building a mirror of {articles} articles{' (' + shape + ')' if shape else ''} "
              f"in {out} (cached for later runs) ...", flush=True)
        started = time.monotonic()
        build_mirror(out, articles=articles, seed=seed, categories=categories,
                     new_posts=new_posts, drop_category=drop_category)
        print(f"  built in {time.monotonic() - started:.1f} s", flush=True)
    return out


def mirror_counts(out: Path) -> dict[str, int]:
    manifest = json.loads((out / "truth" / "manifest.json").read_text(encoding="utf-8"))
    counts: dict[str, int] = manifest["counts"]
    return counts


def raw_items(out: Path, limit: int | None = None) -> list[Any]:
    """The raw ArticleItems a crawl of the mirror yields to the pipelines: every post
    page a full crawl fetches (the ground truth's post URLs, rejected ones included)
    through `post_item`, with its share JSON merged in as `parse_share` does (once per
    share code; a missing answer is what `share_failed` leaves)."""
    from urllib.parse import unquote, urlsplit

    from scrapy.http import HtmlResponse, Request, TextResponse

    from newscrawl.parsers import PostPage
    from newscrawl.spiders.base import merge_share, post_item, share_json_url

    truth = out / "truth"
    urls: set[str] = set()
    for name in ("articles", "rejects"):
        for line in (truth / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            if not line:
                continue
            record = json.loads(line)
            if name == "articles":
                urls.update(record["urls"])
            elif record["scope"] == "crawl":
                urls.add(record["url"])
    aggregator = out / "finews.withounder.com"
    answers = out / "finews.zning.xyz" / "NewsData" / "GetNewsText"
    items: list[Any] = []
    share_codes: set[str] = set()
    for url in sorted(urls)[:limit]:
        page = aggregator / unquote(urlsplit(url).path).lstrip("/")
        response = HtmlResponse(url, body=page.read_bytes(), encoding="utf-8",
                                request=Request(url))
        parsed = PostPage.parse(response.selector, url)
        item = post_item(response, parsed)
        code = parsed.share_code
        if code and code not in share_codes:
            share_codes.add(code)
            answer = answers / f"{code}.json"
            if answer.is_file():
                share = TextResponse(share_json_url(code), body=answer.read_bytes(),
                                     encoding="utf-8")
                item = merge_share(item, share)
            else:
                item.extra["share_error"] = "404"
        items.append(item)
    return items


@contextmanager
def served_mirror(out: Path) -> Iterator[dict[str, str]]:
    """The mirror served on two free ports of 127.0.0.1; yields the host map."""
    with mirror_server(out) as server:
        yield server.host_map


@contextmanager
def mirror_server(out: Path) -> Iterator[Any]:
    """The mirror served on two free ports of 127.0.0.1; yields the MirrorServer (its
    host_map, add_fault)."""
    from fixtures.server import MirrorServer

    with MirrorServer(out) as server:
        yield server


