"""What a SIGKILL loses: a plain crawl, and one process of a distributed crawl (issue 13, 10).

plain: `scrapy crawl finews -s JOBDIR=…` of a served mirror, SIGKILLed once a third of
the articles are stored. Counted at the kill: articles whose post page the mirror served
but that are not in the database (the pipeline's buffer and the write in flight: lost
by that run). Then the crawl is resumed from its JOBDIR to the end: articles still
missing are lost for good.

distributed: two processes of one run (Redis frontier), a database of the bench's own
(a FerretDB started here) that goes away once a tenth of the articles are stored, so
every write retries (MONGO_RETRY_TIMES=6, 31.5 s of backoff); `--kill-after` seconds
later one process is SIGKILLed, then the database comes back. The other process ends
the run. Counted: articles of the mirror missing once it has ended. `--code-root DIR`
runs the crawls from another checkout (e.g. `git archive <commit> | tar -x -C DIR`) to
measure the code before a change.

    .local/venv/bin/python bench/kill_loss.py --articles 1000 --runs 3
    .local/venv/bin/python bench/kill_loss.py --scenario distributed --code-root /tmp/before
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, WORK_DIR, bench_parser, figures, machine, show, write_json
from bench.database import database_name, database_uri, drop_database
from bench.mirror import mirror_dir

POST_PATH = r"/\d{4}/\d{2}/\d{2}/[^/]+\.html$"


def truth_ids(mirror: Path) -> dict[str, str]:
    """Post page path -> article id, for every article of the mirror's ground truth."""
    paths: dict[str, str] = {}
    for line in (mirror / "truth" / "articles.jsonl").read_text(encoding="utf-8").splitlines():
        if line:
            record = json.loads(line)
            for url in record["urls"]:
                paths[urlsplit(url).path] = record["_id"]
    return paths


def stored_ids(uri: str, database: str) -> set[str]:
    from pipelines.config import mongo_client

    client = mongo_client(uri, appname="newscrawl-bench")
    try:
        return {doc["_id"] for doc in client[database]["articles"].find({}, {"_id": 1})}
    finally:
        client.close()


def count_stored(uri: str, database: str) -> int:
    from pipelines.config import mongo_client

    client = mongo_client(uri, appname="newscrawl-bench", timeout_ms=2000)
    try:
        return client[database]["articles"].count_documents({})
    except Exception:  # the database is away on purpose
        return -1
    finally:
        client.close()


def crawl(code_root: Path, host_map: dict[str, str], uri: str, database: str, log: Path,
          settings: dict[str, str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    from newscrawl.ops.crawl import crawl_env, start_crawl

    return start_crawl("finews", {}, {"AUTOTHROTTLE_ENABLED": "False", "LOG_LEVEL": "INFO", **settings},
                       log_file=log, cwd=code_root,
                       env=crawl_env({"PYTHONPATH": str(code_root),
                                      "NEWSCRAWL_HOST_MAP": json.dumps(host_map),
                                      "MONGO_URI": uri, "MONGO_DATABASE": database,
                                      "NEWSCRAWL_SPOOL_DIR": str(log.parent / "spool"), **(env or {})},
                                     isolated=True))


def wait_for(condition: Any, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise RuntimeError("the crawl ended before the bench could strike")
        if time.monotonic() > deadline:
            raise RuntimeError("the crawl did not get far enough in time")
        time.sleep(0.1)


def plain_run(code_root: Path, mirror: Path, logs: Path) -> dict[str, int]:
    from fixtures.server import MirrorServer

    uri = database_uri()
    database = database_name("kill_loss")
    paths = truth_ids(mirror)
    total = len(set(paths.values()))
    jobdir = logs / f"job-{uuid.uuid4().hex[:8]}"
    try:
        with MirrorServer(mirror) as server:
            proc = crawl(code_root, server.host_map, uri, database, logs / "plain-1.log",
                         {"JOBDIR": str(jobdir)})
            wait_for(lambda: count_stored(uri, database) >= total // 3, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            fetched = {paths[urlsplit(target).path] for host, target, status in server.requests
                       if status == 200 and urlsplit(target).path in paths}
            at_kill = stored_ids(uri, database)
            resumed = crawl(code_root, server.host_map, uri, database, logs / "plain-2.log",
                            {"JOBDIR": str(jobdir)})
            resumed.wait(timeout=1200)
            final = stored_ids(uri, database)
    finally:
        drop_database(uri, database)
    return {"articles": total, "stored_at_kill": len(at_kill),
            "fetched_not_stored_at_kill": len(fetched - at_kill),
            "missing_after_resume": total - len(final & set(paths.values()))}


def distributed_run(code_root: Path, mirror: Path, logs: Path, kill_after: float) -> dict[str, int]:
    import redis

    from fixtures.server import Fault, MirrorServer
    from newscrawl.local import ferretdb, redis_server
    from newscrawl.local.server import free_port

    redis_url = redis_server.start()
    paths = truth_ids(mirror)
    total = len(set(paths.values()))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    base = Path(tempfile.mkdtemp(prefix="kill-loss-", dir=WORK_DIR))
    port, data_dir = free_port(), base / "ferretdb"
    server, uri = ferretdb.launch(port, data_dir, base / "ferretdb.log", quiet=True)
    settings = {"NEWSCRAWL_REDIS_PREFIX": prefix, "NEWSCRAWL_REDIS_WORKER_TIMEOUT": "5",
                "CONCURRENT_REQUESTS": "4", "MONGO_RETRY_TIMES": "6", "MONGO_RETRY_BACKOFF": "0.5"}
    env = {"NEWSCRAWL_REDIS_URL": redis_url, "NEWSCRAWL_RUN_ID": prefix}
    try:
        with MirrorServer(mirror) as mirror_server:
            # Slow post pages: the crawl still runs through the outage.
            mirror_server.add_fault(Fault(path=POST_PATH, delay=0.1, times=None))
            victim, survivor = (crawl(code_root, mirror_server.host_map, uri, "bench", logs / f"dist-{n}.log",
                                      settings, env) for n in (1, 2))
            wait_for(lambda: count_stored(uri, "bench") >= total // 10, victim)
            server.terminate()  # the database goes away: every write retries
            server.wait()
            time.sleep(kill_after)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            server, _ = ferretdb.launch(port, data_dir, base / "ferretdb.log", quiet=True)
            survivor.wait(timeout=1200)
            final = stored_ids(uri, "bench")
    finally:
        server.terminate()
        server.wait()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()
        shutil.rmtree(base, ignore_errors=True)  # the bench's own database
    return {"articles": total, "missing_after_run": total - len(final & set(paths.values()))}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=1000, repeat=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenario", choices=("plain", "distributed", "both"), default="both")
    parser.add_argument("--kill-after", type=float, default=12.0,
                        help="seconds between the database going away and the SIGKILL (distributed)")
    parser.add_argument("--code-root", type=Path, default=ROOT, help="the checkout the crawls run from")
    args = parser.parse_args(argv)
    mirror = mirror_dir(args.articles)
    logs = WORK_DIR / "logs" / "kill_loss"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"articles": args.articles, "code_root": str(args.code_root),
                               "machine": machine()}
    print(f"code: {args.code_root}; mirror: {args.articles} generated articles")
    if args.scenario in ("plain", "both"):
        runs = [plain_run(args.code_root, mirror, logs) for _ in range(args.runs)]
        results["plain"] = runs
        print("plain crawl, SIGKILL once a third is stored, then resumed from JOBDIR:")
        print("  fetched but not stored at the kill:",
              show(figures(r["fetched_not_stored_at_kill"] for r in runs), "articles", 0))
        print("  missing after the resumed crawl:",
              show(figures(r["missing_after_resume"] for r in runs), "articles", 0))
    if args.scenario in ("distributed", "both"):
        runs = [distributed_run(args.code_root, mirror, logs, args.kill_after) for _ in range(args.runs)]
        results["distributed"] = runs
        print(f"distributed, 2 processes, database away, one SIGKILLed {args.kill_after:.0f} s later:")
        print("  missing once the other process ended the run:",
              show(figures(r["missing_after_run"] for r in runs), "articles", 0))
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
