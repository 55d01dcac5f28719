"""How long `newscrawl query` takes, start included: the wall time of the whole command.

    .local/venv/bin/python bench/cli_start.py [--articles 1000] [--repeat 5] [--checkout PATH]
        [--json PATH]

Into a fresh database (MONGO_URI, else the local server), the mirror's ground-truth
records with their `words` field and the pipeline's indexes; then each command below
`--repeat` times as a new process (`python -m newscrawl.ops.cli …`, as the
`newscrawl` script runs it): its wall time from spawn to exit and its CPU time
(user + system, the child's rusage), median and each run. `-X importtime` of the
first shows what the start imports (the ten dearest modules). `--checkout` runs
another checkout's commands with this bench (main's, for a before/after).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import json
import os
import resource
import statistics
import subprocess
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bench.common import bench_parser, machine, show_machine, write_json
from bench.database import database_name, database_uri, drop_database
from bench.mirror import mirror_dir

COMMANDS = {
    "query --limit 5": ["query", "--limit", "5"],
    "query --source 荆州日报 --limit 5": ["query", "--source", "荆州日报", "--limit", "5"],
    "query --text 公司 --limit 5": ["query", "--text", "公司", "--limit", "5"],
    "query --help": ["query", "--help"],
}


def load(uri: str, database: str, articles: int) -> None:
    from pipelines.config import mongo_client
    from pipelines.search import search_words
    from pipelines.storage import ensure_indexes

    lines = (mirror_dir(articles) / "truth" / "articles.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line]
    client = mongo_client(uri, appname="newscrawl-bench")
    try:
        db = client[database]
        ensure_indexes(db, "articles", "rejects")
        docs = [{**r, "published_at": datetime.fromisoformat(r["published_at"].replace("Z", "+00:00")),
                 "words": search_words(r["title"], r["text"])} for r in records]
        for start in range(0, len(docs), 100):
            db["articles"].insert_many(docs[start:start + 100])
    finally:
        client.close()


def importtime(env: dict[str, str], args: Sequence[str]) -> list[tuple[int, str]]:
    """The ten modules whose import (with their own imports) took longest, microseconds."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "newscrawl.ops.cli", *args],
                          cwd=env["PYTHONPATH"], env=env, capture_output=True, text=True, check=False)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].strip()))
    return sorted(rows, reverse=True)[:10]


def child_cpu_seconds() -> float:
    """User + system CPU of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=1000, repeat=5)
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="run the commands of this checkout (e.g. a worktree of main: before)")
    args = parser.parse_args(argv)
    uri = database_uri()
    facts = machine(uri)
    print(show_machine(facts))
    database = database_name("cli_start")
    commit = subprocess.run(["git", "-C", str(args.checkout), "describe", "--always", "--dirty"],
                            capture_output=True, text=True, check=False).stdout.strip()
    print(f"commands of {args.checkout} ({commit})")
    payload: dict[str, Any] = {"machine": facts, "argv": sys.argv, "commands": {},
                               "checkout": {"path": str(args.checkout), "commit": commit}}
    env = {**os.environ, "MONGO_URI": uri, "MONGO_DATABASE": database,
           "PYTHONPATH": str(args.checkout)}
    where = subprocess.run([sys.executable, "-c", "import newscrawl.ops.cli as m; print(m.__file__)"],
                           cwd=args.checkout, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(args.checkout.resolve())), where.stdout  # not the editable install's
    try:
        load(uri, database, args.articles)
        payload["imports_of_query_limit_5"] = importtime(env, COMMANDS["query --limit 5"])
        for name, command in COMMANDS.items():
            walls, cpus = [], []
            for _ in range(args.repeat):
                cpu_before = child_cpu_seconds()
                started = time.perf_counter()
                # cwd: `python -m` puts the working directory first on sys.path
                proc = subprocess.run([sys.executable, "-m", "newscrawl.ops.cli", *command],
                                      cwd=args.checkout, env=env, capture_output=True, text=True,
                                      check=False)
                walls.append(time.perf_counter() - started)
                cpus.append(child_cpu_seconds() - cpu_before)
                assert proc.returncode == 0, proc.stderr
            payload["commands"][name] = {"median_s": statistics.median(walls), "runs_s": walls,
                                         "cpu_median_s": statistics.median(cpus), "cpu_runs_s": cpus}
            print(f"  newscrawl {name}: wall median {statistics.median(walls):.3f} s "
                  f"({', '.join(f'{w:.2f}' for w in walls)}), CPU median "
                  f"{statistics.median(cpus):.3f} s", flush=True)
        print("  dearest imports of `query --limit 5` (cumulative µs): " + ", ".join(
            f"{name} {us:,}" for us, name in payload["imports_of_query_limit_5"]))
    finally:
        drop_database(uri, database)
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
