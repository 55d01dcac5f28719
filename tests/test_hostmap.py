"""The host map: requests go to the mirror, every URL the spiders see stays real."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from fixtures.server import AGGREGATOR_HOST, Fault
from newscrawl.components.hostmap import HostMapError, parse_host_map, to_mirror, to_real
from newscrawl.ops.crawl import crawl_env
from tests.conftest import CrawlRunner, Mirror
from tests.helpers import PROJECT_ROOT, assert_truth_stored

HOST_MAP = {"finews.withounder.com": "http://127.0.0.1:8801",
            "finews.zning.xyz": "http://127.0.0.1:8802"}


def test_parse_host_map_reads_json_and_rejects_garbage() -> None:
    assert parse_host_map('{"Finews.Withounder.com": "http://127.0.0.1:8801/"}') == {
        "finews.withounder.com": "http://127.0.0.1:8801"}
    assert parse_host_map("") == {}
    with pytest.raises(HostMapError, match="not valid JSON"):
        parse_host_map("{nope")
    with pytest.raises(HostMapError, match="JSON object"):
        parse_host_map('["a"]')
    with pytest.raises(HostMapError, match="not an http"):
        parse_host_map('{"a": "ftp://x"}')


def test_to_mirror_keeps_path_and_query() -> None:
    assert to_mirror("https://finews.withounder.com/category/21shijijingjibaodao%2021caijingAPP.html",
                     HOST_MAP) == "http://127.0.0.1:8801/category/21shijijingjibaodao%2021caijingAPP.html"
    assert to_mirror("http://finews.zning.xyz/NewsData/GetNewsText.do?id=NW1", HOST_MAP) == (
        "http://127.0.0.1:8802/NewsData/GetNewsText.do?id=NW1")
    assert to_mirror("https://example.com/", HOST_MAP) is None


def test_to_real_maps_mirror_redirects_back() -> None:
    real = "https://finews.withounder.com/emnews/"
    assert to_real("http://127.0.0.1:8801/emnews/x.html", real, HOST_MAP) == (
        "https://finews.withounder.com/emnews/x.html")
    assert to_real("https://elsewhere.org/a", real, HOST_MAP) == "https://elsewhere.org/a"


def test_a_crawl_through_the_map_sees_real_urls_through_redirects_and_retries(
        crawl: CrawlRunner, mirror_server: Any, mirror: Mirror,
        mongo_db: Database[dict[str, Any]]) -> None:
    post = next(url for record in mirror.truth("articles") for url in record["urls"]
                if "/emnews/" not in url)
    post_path = re.escape(post.split(AGGREGATOR_HOST, 1)[1])
    # A listing page answers once with a redirect to the mirror's own address (an absolute
    # Location, which only the host map can take back to the real host), a post page once
    # with a 503.
    base = mirror_server.host_map[AGGREGATOR_HOST]
    mirror_server.add_fault(Fault(path=r"^/emnews/$", redirect_to=f"{base}/emnews/"))
    mirror_server.add_fault(Fault(path=f"^{post_path}$", status=503, times=1))
    try:
        result = crawl("finews", settings={"LOG_LEVEL": "DEBUG", "NEWSCRAWL_RETRY_BACKOFF_BASE": "0.05"})
    finally:
        mirror_server.clear_faults()
    assert_truth_stored(mongo_db, mirror.truth("articles"))
    stats = result.stats
    assert stats["downloader/response_status_count/302"] == 1
    assert stats["downloader/response_status_count/503"] == 1
    assert stats["retry/count"] == 1
    # Every download (robots.txt too) went to the mirror; no request ever named it.
    assert stats["newscrawl/hostmap/requests"] == stats["downloader/request_count"]
    assert "offsite/filtered" not in stats
    mirrors = tuple(base.split("://", 1)[1] for base in mirror_server.host_map.values())
    events = [line for line in result.log.splitlines()
              if re.search(r"\] DEBUG: (Crawled|Redirecting|Retrying) ", line)]
    # One line a download: its response, else the redirect or retry it became.
    assert len(events) == stats["downloader/request_count"]
    assert not [line for line in events if any(m in line for m in mirrors)]
    assert f"Redirecting (302) to <GET https://{AGGREGATOR_HOST}/emnews/> from " \
           f"<GET https://{AGGREGATOR_HOST}/emnews/>" in result.log
    assert f"Retrying <GET {post}>" in result.log


def fetch(url: str, host_map: dict[str, str], database: str, mongo_uri: str,
          tmp_path: Path) -> bytes:
    """`scrapy fetch URL` with the project's settings: the body Scrapy downloaded (the command
    prints it with a newline)."""
    env = crawl_env({"NEWSCRAWL_HOST_MAP": json.dumps(host_map), "MONGO_URI": mongo_uri,
                     "MONGO_DATABASE": database, "NEWSCRAWL_SPOOL_DIR": str(tmp_path / "spool")},
                    isolated=True)
    proc = subprocess.run([sys.executable, "-m", "scrapy", "fetch", "--nolog", url], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    assert proc.stdout.endswith(b"\n")
    return proc.stdout[:-1]


def test_a_redirect_from_the_mirror_is_followed_on_the_real_host_and_others_are_left_alone(
        mirror_server: Any, mirror: Mirror, mongo_uri: str, mongo_db: Database[dict[str, Any]],
        tmp_path: Path) -> None:
    index = (mirror.root / AGGREGATOR_HOST / "emnews" / "index.html").read_bytes()
    mirror_server.clear_requests()
    # The mirror answers /emnews with a 301 to "/emnews/", which is the real host's.
    assert fetch(f"https://{AGGREGATOR_HOST}/emnews", mirror_server.host_map, mongo_db.name,
                 mongo_uri, tmp_path) == index
    assert [(host, target, status) for host, target, status in mirror_server.requests
            if target.startswith("/emnews")] == [(AGGREGATOR_HOST, "/emnews", 301),
                                                 (AGGREGATOR_HOST, "/emnews/", 200)]
    # A host the map does not name (here the mirror's own address) is fetched as it is.
    base = mirror_server.host_map[AGGREGATOR_HOST]
    assert fetch(f"{base}/emnews/", mirror_server.host_map, mongo_db.name, mongo_uri, tmp_path) == index
    # And with no map at all, everything is.
    assert fetch(f"{base}/emnews/", {}, mongo_db.name, mongo_uri, tmp_path) == index
