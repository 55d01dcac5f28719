"""`newscrawl web` in a real Chromium (Debian's chromium and chromium-driver, via Selenium),
over a crawl of the hostile mirror with reprints, with a real `newscrawl schedule` behind the
Schedule page. Also: the JSON API against `newscrawl query --format jsonl`, and deep pages.

Screenshots of each page go to artifacts/screenshots/ (NEWSCRAWL_SCREENSHOTS to change it),
which CI keeps; docs/screenshots/ has a few for the README."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from fixtures.generate import build_mirror
from fixtures.server import MirrorServer
from newscrawl.local.server import free_port
from tests.conftest import MIRROR_SEED, CrawlRunner, Mirror
from tests.helpers import PROJECT_ROOT, newscrawl, wait_until

pytestmark = pytest.mark.integration

TOKEN = "test-token-0123456789abcdef"
SCREENSHOTS = Path(os.environ.get("NEWSCRAWL_SCREENSHOTS", PROJECT_ROOT / "artifacts" / "screenshots"))
# A record as a hostile store could hold it (the crawler strips scripts; the console must not
# rely on that): markup in every text field, and a script that would set a marker.
HOSTILE_ID = "202112319999999999"
HOSTILE_TITLE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">标题'
HOSTILE_PARAGRAPH = ('<b>粗体</b><script>window.__pwned = 3</script>&lt;escaped&gt; '
                     '<a href="javascript:alert(1)">x</a>')


HEALTH_RUN = "finews-20211230T000000.000Z-1"


def earlier_runs(crawled: dict[str, Any]) -> list[dict[str, Any]]:
    """Four earlier runs of the crawl's job: one recorded before the monitors existed (no
    `health`), then ok, warn, and fail with its failed monitors (one message holding
    markup), as the monitors (issue 20) record them."""
    unjudged = {key: value for key, value in crawled.items() if key != "health"}
    runs = []
    for n, status in enumerate((None, "ok", "warn", "fail")):
        started = crawled["started_at"] - timedelta(hours=4 - n)
        counts = {**crawled["counts"], "stored": 40 * (n + 1), "updated": n, "rejected": 3 - n}
        run = {**unjudged, "_id": HEALTH_RUN if status == "fail" else f"finews-earlier-{n}",
               "started_at": started, "finished_at": started + timedelta(seconds=30 + 20 * n),
               "counts": counts}
        if status is not None:
            failed = [] if status == "ok" else [{
                "monitor": "stored_below_median", "level": status, "value": counts["stored"],
                "threshold": 100, "message": "<b>stored</b> far below the job's median"}]
            run["health"] = {"status": status, "failed": failed,
                             "checked_at": started + timedelta(minutes=5), "alerts": []}
        runs.append(run)
    return runs


@dataclass
class Site:
    db: Database[dict[str, Any]]
    mirror: Mirror
    server: MirrorServer
    uri: str
    workdir: Path


@pytest.fixture(scope="module")
def site(mongo_uri: str, mongo_client: MongoClient[dict[str, Any]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The hostile mirror with reprints, crawled once by finews into a database of its own."""
    root = tmp_path_factory.mktemp("web-mirror")
    build_mirror(root, articles=120, seed=MIRROR_SEED, hostile=True, reprints=True)
    mirror = Mirror(root)
    db = mongo_client[f"test_web_{os.getpid()}"]
    mongo_client.drop_database(db.name)
    workdir = tmp_path_factory.mktemp("web")
    with MirrorServer(root) as server:
        CrawlRunner(mongo_uri, server.host_map, db.name, workdir)("finews", check=False)
        stored = db["articles"].find_one({}, sort=[("published_at", -1)])
        assert stored is not None
        db["articles"].insert_one({
            **{k: v for k, v in stored.items() if k not in ("_id", "near_duplicate_of", "duplicate_of")},
            "_id": HOSTILE_ID, "title": HOSTILE_TITLE, "paragraphs": [HOSTILE_PARAGRAPH],
            "text": HOSTILE_PARAGRAPH, "source": "<i>媒体</i>", "near_duplicate_of": None,
            "duplicate_of": None, "content_hash": "hostile", "words": "hostile",
            "published_at": datetime(2021, 12, 31, 15, 0, tzinfo=UTC)})
        crawled = db["crawl_runs"].find_one({"spider": "finews"})
        assert crawled is not None
        db["crawl_runs"].insert_many(earlier_runs(crawled))
        yield Site(db, mirror, server, mongo_uri, workdir)
    mongo_client.drop_database(db.name)


# --- the API equals `newscrawl query` -------------------------------------------------------

def api_client(site: Site) -> Any:
    from starlette.testclient import TestClient

    from newscrawl.web.app import Console, create_app
    from newscrawl.web.security import Guard
    from pipelines.config import mongo_client
    from pipelines.sources import SourceRegistry

    client = mongo_client(site.uri, appname="newscrawl-web-test", timeout_ms=5000)
    console = Console(client, site.db.name, "articles", "crawl_runs", PROJECT_ROOT / "schedule.toml",
                      Guard(TOKEN, open_reads=True), SourceRegistry.load())
    return TestClient(create_app(console))


FILTER_CASES = [
    ({}, []),
    ({"source": "荆州日报"}, ["--source", "荆州日报"]),
    ({"category": "emnews", "since": "2021-12-30"}, ["--category", "emnews", "--since", "2021-12-30"]),
    ({"until": "2021-12-30T12:00"}, ["--until", "2021-12-30T12:00"]),
    ({"phrase": "公司", "source": "荆州日报"}, ["--phrase", "公司", "--source", "荆州日报"]),
    ({"words": "公司", "source": "荆州日报"}, ["--text", "公司", "--source", "荆州日报"]),
]


@pytest.mark.parametrize(("params", "argv"), FILTER_CASES)
def test_the_api_answers_what_newscrawl_query_prints(site: Site, params: dict[str, str],
                                                      argv: list[str]) -> None:
    client = api_client(site)
    cli = newscrawl("query", *argv, "--limit", "0", "--format", "jsonl",
                    env={"MONGO_URI": site.uri, "MONGO_DATABASE": site.db.name})
    assert cli.returncode == 0, cli.stderr
    expected = [json.loads(line) for line in cli.stdout.splitlines()]
    assert expected, "the case selects nothing: a weak test"
    export = client.get("/api/articles", params={**params, "format": "jsonl"})
    assert export.status_code == 200
    exported = [json.loads(line) for line in export.text.splitlines()]

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["published_at"], doc["_id"]

    if "words" in params:  # ranked by find_articles, as the command ranks them
        assert exported == expected
    else:
        # The same documents, field for field, newest first (the command leaves equal times in
        # the server's order; the console orders those by id).
        assert sorted(exported, key=key, reverse=True) == exported
        assert sorted(expected, key=key, reverse=True) == exported
    # Paged by cursor: the same, page after page.
    paged: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = client.get("/api/articles", params={**params, "limit": "7",
                                                     **({"cursor": cursor} if cursor else {})}).json()
        paged += answer["articles"]
        cursor = answer["next"]
        if cursor is None:
            break
    assert paged == exported
    csv = client.get("/api/articles", params={**params, "format": "csv"}).text.splitlines()
    assert csv[0] == "_id,published_at,source,title,categories,url"
    assert len(csv) == len(expected) + 1 or any("\n" in d.get("title", "") for d in expected)


def test_api_article_runs_and_errors(site: Site) -> None:
    client = api_client(site)
    one = client.get(f"/api/articles/{HOSTILE_ID}").json()
    assert one["title"] == HOSTILE_TITLE
    assert client.get("/api/articles/nope").status_code == 404
    runs = client.get("/api/runs").json()
    assert runs["runs"] and runs["runs"][0]["spider"] == "finews"
    bad = client.get("/api/articles", params={"since": "yesterday"})
    assert bad.status_code == 400 and "expected a date" in bad.json()["error"]


def test_a_stopped_database_gives_a_503_page(site: Site) -> None:
    from starlette.testclient import TestClient

    from newscrawl.web.app import Console, create_app
    from newscrawl.web.security import Guard
    from pipelines.config import mongo_client
    from pipelines.sources import SourceRegistry

    port = free_port()  # nothing listens there
    client = mongo_client(f"mongodb://127.0.0.1:{port}/", appname="newscrawl-web-test", timeout_ms=300)
    console = Console(client, "x", "articles", "crawl_runs", PROJECT_ROOT / "schedule.toml",
                      Guard(TOKEN, open_reads=True), SourceRegistry.load())
    web = TestClient(create_app(console), raise_server_exceptions=False)
    for path in ("/runs", "/articles", "/schedule", "/chart"):
        answer = web.get(path)
        assert answer.status_code == 503, path
        assert "The database is not answering" in answer.text and "Traceback" not in answer.text
    assert web.get("/api/articles").json()["error"].startswith("newscrawl could not read")


# --- the browser ----------------------------------------------------------------------------

@dataclass
class Console:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def start_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "newscrawl.ops.cli", *args], cwd=PROJECT_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})


@pytest.fixture(scope="module")
def scheduled(site: Site) -> Iterator[tuple[Console, subprocess.Popen[bytes], Path]]:
    """`newscrawl schedule` with a job that fires only when asked (once a week), and
    `newscrawl web` over the same database and schedule file."""
    toml = site.workdir / "schedule.toml"
    toml.write_text(f"[scheduler]\nlog_dir = '{site.workdir / 'logs'}'\nstop_timeout = '30s'\n"
                    "[[job]]\nname = 'feed'\nspider = 'feed'\ninterval = '7d'\n"
                    'settings = {AUTOTHROTTLE_ENABLED = "False", MONGO_FLUSH_INTERVAL = "0.5"}\n',
                    encoding="utf-8")
    env = {"MONGO_URI": site.uri, "MONGO_DATABASE": site.db.name,
           "NEWSCRAWL_HOST_MAP": json.dumps(site.server.host_map),
           "NEWSCRAWL_SPOOL_DIR": str(site.workdir / "spool"), "NEWSCRAWL_WEB_TOKEN": TOKEN}
    scheduler_log = site.workdir / "scheduler.log"
    scheduler = start_process(["schedule", "--config", str(toml)], env, scheduler_log)
    port = free_port()
    web_log = site.workdir / "web.log"
    web = start_process(["web", "--port", str(port), "--schedule", str(toml)], env, web_log)
    console = Console(f"http://127.0.0.1:{port}", web, web_log)
    import urllib.request

    def answers() -> bool:
        assert web.poll() is None, web_log.read_text()
        try:
            with urllib.request.urlopen(console.url + "/runs", timeout=5) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    wait_until(answers, 60, "the console to answer", interval=0.3)
    wait_until(lambda: "next firing" in scheduler_log.read_text(), 60, "the scheduler to start")
    yield console, scheduler, scheduler_log
    for process in (web, scheduler):
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not shutil.which("chromium") or not shutil.which("chromedriver"):
        pytest.fail("chromium and chromium-driver are needed (scripts/bootstrap installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                 "--lang=zh-CN"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def visit(driver: Any, url: str, shot: str | None = None) -> None:
    """Open `url`; no console error (CSP violations, failed loads, script errors) allowed."""
    driver.get(url)
    check_console(driver, url)
    if shot:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / f"{shot}.png"))


def check_console(driver: Any, where: str) -> None:
    errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert not errors, f"{where}: {errors}"


def click_to_next_page(driver: Any, element: Any, where: str) -> None:
    """Click a link or a form's button, and wait until the page it leads to has loaded.

    WebDriver's click can return before a form's navigation (or a post's redirect) has replaced
    the page: CI runs under load found the old page's rows still there. So wait until the old
    document is gone and the new one complete, then check its console.
    """
    from selenium.common.exceptions import StaleElementReferenceException

    old_root = driver.find_element("tag name", "html")
    element.click()

    def old_page_gone() -> bool:
        try:
            old_root.is_enabled()  # any call on an element of a replaced document is stale
        except StaleElementReferenceException:
            return True
        return False

    wait_until(old_page_gone, 30, f"{where}: the next page", interval=0.1)
    wait_until(lambda: driver.execute_script("return document.readyState") == "complete", 30,
               f"{where}: the page loaded", interval=0.1)
    check_console(driver, where)


def test_the_console_in_a_browser(site: Site, scheduled: tuple[Console, Any, Path], browser: Any) -> None:
    from selenium.webdriver.common.by import By

    console, scheduler, scheduler_log = scheduled
    url = console.url
    # Runs: the crawl's run, with its chart.
    visit(browser, url + "/runs", "runs")
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")
    runs_before = len(browser.find_elements(By.CSS_SELECTOR, "table.runs tbody tr"))
    click_to_next_page(browser, browser.find_element(By.CSS_SELECTOR, "table.runs tbody tr a"), "a run")
    assert "finews" in browser.find_element(By.CSS_SELECTOR, "dl.facts").text
    browser.save_screenshot(str(SCREENSHOTS / "run.png"))
    # Health from the monitors: the verdict in the table, the failed monitors on the run's page.
    visit(browser, url + "/runs")
    assert {"ok", "warn", "fail", "—"} <= {td.text for td in browser.find_elements(
        By.CSS_SELECTOR, "table.runs td[class^=health-]")}
    visit(browser, f"{url}/runs/{HEALTH_RUN}", "run-health")
    page_text = browser.find_element(By.TAG_NAME, "main").text
    assert "stored_below_median" in page_text and "<b>stored</b> far below" in page_text

    # Articles: filters, then the next page.
    visit(browser, url + "/articles", "articles")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.articles tbody tr")
    assert len(rows) == 50
    browser.find_element(By.ID, "f-source").send_keys("荆州日报")
    click_to_next_page(browser, browser.find_element(By.ID, "f-submit"), "filtered articles")
    sources = {r.find_elements(By.TAG_NAME, "td")[2].text
               for r in browser.find_elements(By.CSS_SELECTOR, "table.articles tbody tr")}
    assert sources == {"荆州日报"}
    browser.save_screenshot(str(SCREENSHOTS / "articles-filtered.png"))
    visit(browser, url + "/articles")
    first_page = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "a.title")]
    click_to_next_page(browser, browser.find_element(By.ID, "next-page"), "page 2")
    second_page = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "a.title")]
    assert second_page and not set(second_page) & set(first_page) - {"(no title)"}

    # A reprint, and back to its original.
    reprint = site.db["articles"].find_one({"near_duplicate_of": {"$ne": None}})
    assert reprint is not None
    original = reprint["near_duplicate_of"]["_id"]
    visit(browser, f"{url}/articles/{reprint['_id']}", "article")
    click_to_next_page(browser, browser.find_element(By.CSS_SELECTOR, "a.link-original"), "the original")
    assert browser.current_url.endswith(f"/articles/{original}")
    back = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a.link-reprint")]
    assert any(h.endswith(f"/articles/{reprint['_id']}") for h in back)

    # Hostile fields are text, and no script ran.
    visit(browser, f"{url}/articles/{HOSTILE_ID}", "hostile")
    assert browser.find_element(By.ID, "article-title").text == HOSTILE_TITLE
    assert HOSTILE_PARAGRAPH in browser.find_element(By.ID, "article-body").text
    assert browser.execute_script("return window.__pwned === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "#article-body b, #article-body script, img[src='x']")
    script_case = site.mirror.manifest["cases"]["hostile"]["script"]
    visit(browser, f"{url}/articles/{script_case}")
    assert browser.execute_script("return window.__pwned === undefined")

    # Per hour.
    visit(browser, url + "/chart?since=2021-12-30&until=2021-12-31", "chart")
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")

    # Schedule: log in, start the job, see its run appear.
    visit(browser, url + "/schedule", "schedule")
    assert not browser.find_elements(By.ID, "run-feed")  # actions need a login
    visit(browser, url + "/login?next=/schedule", "login")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    click_to_next_page(browser, browser.find_element(By.ID, "login"), "login")
    assert browser.find_elements(By.ID, "run-feed"), "the schedule, signed in"
    click_to_next_page(browser, browser.find_element(By.ID, "run-feed"), "run now")

    def feed_run_shown() -> bool:
        assert scheduler.poll() is None, scheduler_log.read_text()
        browser.get(url + "/runs")
        rows = browser.find_elements(By.CSS_SELECTOR, "table.runs tbody tr")
        return len(rows) > runs_before and any(
            "feed" in r.text and "finished" in r.text for r in rows)

    wait_until(feed_run_shown, 240, "the feed job's run on the Runs page", interval=2)
    check_console(browser, "runs after the job")
    browser.save_screenshot(str(SCREENSHOTS / "runs-after-job.png"))
    # The scheduled run's page links its log, which is this machine's.
    feed_run = site.db["crawl_runs"].find_one({"spider": "feed"})
    assert feed_run is not None
    visit(browser, f"{url}/runs/{feed_run['_id']}")
    click_to_next_page(browser, browser.find_element(By.PARTIAL_LINK_TEXT, "feed.log"), "the run's log")
    assert "Spider opened" in browser.find_element(By.TAG_NAME, "body").text
    command = site.db["schedule_commands"].find_one({"job": "feed", "action": "run"})
    assert command is not None and command["status"] == "done"
    # Pause and resume reach the scheduler too.
    visit(browser, url + "/schedule")
    click_to_next_page(browser, browser.find_element(By.ID, "pause-feed"), "pause")
    wait_until(lambda: site.db["schedule_jobs"].find_one({"_id": "feed", "next_run_time": None}),
               30, "the job paused in schedule_jobs")
    visit(browser, url + "/schedule", "schedule-paused")
    assert "paused" in browser.find_element(By.ID, "job-feed").text
    click_to_next_page(browser, browser.find_element(By.ID, "resume-feed"), "resume")
    wait_until(lambda: site.db["schedule_jobs"].find_one({"_id": "feed", "next_run_time": {"$ne": None}}),
               30, "the job resumed in schedule_jobs")


def test_an_action_without_the_csrf_token_is_refused(site: Site,
                                                     scheduled: tuple[Console, Any, Path]) -> None:
    import urllib.error
    import urllib.parse
    import urllib.request

    console, _, _ = scheduled
    before = site.db["schedule_commands"].count_documents({})
    request = urllib.request.Request(console.url + "/schedule/feed/run", method="POST",
                                     data=urllib.parse.urlencode({"csrf": "x"}).encode())
    with urllib.request.urlopen(request, timeout=10) as reply:  # no session: to the login page
        assert "/login" in reply.url
    assert site.db["schedule_commands"].count_documents({}) == before


def test_bound_beyond_this_machine_it_needs_a_token() -> None:
    refused = newscrawl("web", "--host", "0.0.0.0", "--port", str(free_port()),
                        unset=["NEWSCRAWL_WEB_TOKEN"])
    assert refused.returncode == 2
    assert "NEWSCRAWL_WEB_TOKEN" in refused.stderr and "Traceback" not in refused.stderr


def test_keyset_pages_never_cut_or_repeat_articles_of_one_second(mongo_db: Database[dict[str, Any]]) -> None:
    from newscrawl.ops import query as q
    from newscrawl.web import views
    from pipelines.storage import ensure_indexes

    ensure_indexes(mongo_db, "articles", "rejects")
    base = datetime(2021, 12, 31, 8, 0, tzinfo=UTC)
    # Ten articles in each of five seconds spread over 40 days, two sources.
    docs = [{"_id": f"2021123100000{s}{k:04d}", "published_at": base - timedelta(days=10 * s),
             "source_slug": "a" if k % 2 else "b", "title": f"{s}-{k}", "categories": ["c"]}
            for s in range(5) for k in range(10)]
    mongo_db["articles"].insert_many(docs)
    for filters in (q.Filters(), q.Filters(source_slug="a"),
                    q.Filters(category="c", since=q.since_bound("2021-12-01"))):
        query, _ = q.build_query(filters)
        expected = sorted((d for d in mongo_db["articles"].find(query)),
                          key=lambda d: (d["published_at"], d["_id"]), reverse=True)
        pages, after = [], None
        while True:
            page = views.keyset_page(mongo_db["articles"], query, after, 4)
            assert len(page.articles) <= 4
            pages += [d["_id"] for d in page.articles]
            if page.next is None:
                break
            after = page.next
        assert pages == [d["_id"] for d in expected], filters


def test_beyond_this_machine_every_read_needs_the_token(site: Site) -> None:
    from starlette.testclient import TestClient

    from newscrawl.web.app import Console, create_app
    from newscrawl.web.security import Guard
    from pipelines.config import mongo_client
    from pipelines.sources import SourceRegistry

    client = mongo_client(site.uri, appname="newscrawl-web-test", timeout_ms=5000)
    console = Console(client, site.db.name, "articles", "crawl_runs", PROJECT_ROOT / "schedule.toml",
                      Guard(TOKEN, open_reads=False), SourceRegistry.load())
    web = TestClient(create_app(console), follow_redirects=False)
    assert web.get("/articles").status_code == 303
    assert web.get("/articles").headers["location"].startswith("/login")
    assert web.get("/api/articles").status_code == 401
    assert web.get("/api/articles", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.get("/api/articles", headers={"Authorization": f"Bearer {TOKEN}"}).json()["articles"]
    assert web.post("/login", data={"token": "wrong", "next": "/articles"}).status_code == 401
    signed = web.post("/login", data={"token": TOKEN, "next": "/articles"})
    assert signed.status_code == 303 and signed.headers["location"] == "/articles"
    assert "HttpOnly" in signed.headers["set-cookie"] and "SameSite=strict" in signed.headers["set-cookie"]
    web.cookies.set("newscrawl_session", signed.cookies["newscrawl_session"])
    page = web.get("/articles")
    assert page.status_code == 200 and "script-src" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # An action with the session but without the form's CSRF token is refused.
    refused = web.post("/schedule/media/pause", data={"csrf": "forged"})
    assert refused.status_code == 403
    assert site.db["schedule_commands"].count_documents({"job": "media"}) == 0
