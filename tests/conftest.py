"""Shared fixtures: the real database server, the mirror, and crawls of it.

Integration tests talk to a real MongoDB-compatible server over TCP: MONGO_URI
when set, else the project's local FerretDB (started here if needed). Each
test gets its own database, dropped afterwards.

A test is marked `integration` when it uses one of SERVER_FIXTURES (directly or through
another fixture); tests that start a server or a process some other way carry the mark
themselves. `-m "not integration"` selects the unit tests. Plain helpers: tests/helpers.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from newscrawl.local import ferretdb
from newscrawl.ops.crawl import crawl_env, read_stats, start_crawl, stop_crawl
from pipelines.capabilities import Capabilities
from pipelines.config import mongo_client as open_client
from tests.helpers import CAPABILITY_SETS, capabilities_named

MIRROR_ARTICLES = 120
MIRROR_SEED = 20211231

# Fixtures that start or reach a server: the database, the mirror (rendered by Jekyll) and
# its HTTP server, Redis.
SERVER_FIXTURES = frozenset({"mongo_uri", "mirror", "mirror_server", "redis_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    if os.environ.get("MONGO_URI"):
        yield os.environ["MONGO_URI"]
        return
    started = ferretdb.read_state() is None
    uri = ferretdb.start()
    yield uri
    if started:
        ferretdb.stop()


@pytest.fixture(scope="session")
def mongo_client(mongo_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    client = open_client(mongo_uri, appname="newscrawl-test", timeout_ms=10_000)
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


@pytest.fixture(params=CAPABILITY_SETS)
def capabilities(request: pytest.FixtureRequest, mongo_db: Database[dict[str, Any]]) -> Capabilities:
    """Each way of storing that the server can honour: a test taking this runs once with each."""
    found = capabilities_named(request.param, mongo_db)
    if found is None:
        pytest.skip(f"{request.param}: the server cannot replace atomically under a guard (FerretDB)")
    return found


@dataclass
class Mirror:
    root: Path

    def truth(self, name: str = "articles") -> list[dict[str, Any]]:
        path = self.root / "truth" / f"{name}.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(json.loads((self.root / "truth" / "manifest.json").read_text(encoding="utf-8")))


@pytest.fixture(scope="session")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    from fixtures.generate import build_mirror

    root = tmp_path_factory.mktemp("mirror")
    build_mirror(root, articles=MIRROR_ARTICLES, seed=MIRROR_SEED)
    return Mirror(root)


@pytest.fixture(scope="session")
def mirror_server(mirror: Mirror) -> Iterator[Any]:
    from fixtures.server import MirrorServer

    server = MirrorServer(mirror.root)
    server.start()
    yield server
    server.stop()


@dataclass
class CrawlResult:
    returncode: int
    stats: dict[str, Any]
    log: str


@dataclass
class CrawlRunner:
    """Runs spiders against the mirror into one test's database, each in its own process."""

    mongo_uri: str
    host_map: dict[str, str]
    database: str
    workdir: Path
    runs: int = 0

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        # A developer's exported frontier must not make every crawl test distributed.
        return crawl_env({
            "NEWSCRAWL_HOST_MAP": json.dumps(self.host_map),
            "MONGO_URI": self.mongo_uri,
            "MONGO_DATABASE": self.database,
            "NEWSCRAWL_SPOOL_DIR": str(self.workdir / "spool"),
            **(extra or {}),
        }, isolated=True)

    def start(self, spider: str, *, args: dict[str, str] | None = None,
              settings: dict[str, str] | None = None,
              env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Path, Path]:
        """Start a crawl (newscrawl.ops.crawl); returns the process, its stats file and its
        log file (which also takes its output)."""
        self.runs += 1
        stats_file = self.workdir / f"stats-{self.runs}.json"
        log_file = self.workdir / f"crawl-{self.runs}.log"
        proc = start_crawl(spider, args, {"AUTOTHROTTLE_ENABLED": "False", "MONGO_FLUSH_INTERVAL": "0.5",
                                          **(settings or {})},
                           log_file=log_file, stats_file=stats_file, env=self.env(env))
        return proc, stats_file, log_file

    @staticmethod
    def finish(started: tuple[subprocess.Popen[bytes], Path, Path], *, check: bool = True,
               timeout: float = 600) -> CrawlResult:
        """Wait for a crawl from `start`; with `check`, it must end well, with no error logged."""
        proc, stats_file, log_file = started
        try:
            proc.wait(timeout)
        finally:
            if proc.poll() is None:
                stop_crawl(proc, 10)
        result = CrawlResult(proc.returncode, read_stats(stats_file),
                             log_file.read_text(encoding="utf-8") if log_file.exists() else "")
        if check:
            assert proc.returncode == 0, result.log[-5000:]
            errors = [line for line in result.log.splitlines() if " ERROR: " in line]
            assert not errors, "\n".join(errors[:20])
        return result

    def __call__(self, spider: str, *, args: dict[str, str] | None = None,
                 settings: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 check: bool = True) -> CrawlResult:
        return self.finish(self.start(spider, args=args, settings=settings, env=env), check=check)


@pytest.fixture
def crawl(mongo_uri: str, mirror_server: Any, mongo_db: Database[dict[str, Any]],
          tmp_path: Path) -> CrawlRunner:
    """Run a spider against the mirror into this test's database, in its own process."""
    return CrawlRunner(mongo_uri, mirror_server.host_map, mongo_db.name, tmp_path)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The Redis of distributed crawls: NEWSCRAWL_REDIS_URL when set, else the local one."""
    from newscrawl.local import redis_server

    if os.environ.get("NEWSCRAWL_REDIS_URL"):
        yield os.environ["NEWSCRAWL_REDIS_URL"]
        return
    started = redis_server.read_state() is None
    url = redis_server.start()
    yield url
    if started:
        redis_server.stop()
