"""What the store's first crawl costs per article: this checkout against another, run in turn.

    .local/venv/bin/python bench/first_crawl.py --against PATH [--articles 100000] [--repeat 2]
        [--json PATH]

bench/scaling.py's first crawl alone: its synthetic records of `--articles` articles,
`ArticleStore.write` in batches of 200 into a fresh database, then `close` (which waits
for the word index's merges); wall time of those calls, ms per article. Each run is a new
process importing one checkout's code (`--against`: e.g. a worktree of main before a
change), the two checkouts in turn, `--repeat` times each. This machine's speed drifts by
10-15 % between runs minutes apart: runs in turn are what makes two checkouts comparable.
Prints each run and the change of the medians.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import json
import os
import statistics
import subprocess
from collections.abc import Sequence
from typing import Any

from bench.common import ROOT, bench_parser, machine, show_machine, write_json
from bench.database import database_name, database_uri

# Run in the checkout measured (its own pipelines and generator), by `python -c`.
CHILD = """
import json, sys, time
from bench.scaling import Articles
from pipelines.config import mongo_client
from pipelines.storage import ArticleStore, ensure_indexes
import pipelines.storage
uri, database, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
batches = list(Articles(size).post_sightings())
store = ArticleStore.connect(uri, database)
ensure_indexes(store.db, "articles", "rejects")
try:
    started = time.perf_counter()
    for batch in batches:
        store.write(batch)
    store.close()
    seconds = time.perf_counter() - started
finally:
    client = mongo_client(uri, appname="newscrawl-bench")
    client.drop_database(database)
    client.close()
print(json.dumps({"ms_per_article": 1000 * seconds / size, "storage": pipelines.storage.__file__}))
"""


def run(checkout: Path, uri: str, articles: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.run([sys.executable, "-c", CHILD, uri, database_name("first_crawl"), str(articles)],
                          cwd=checkout, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["storage"].startswith(str(checkout.resolve())), result  # not the editable install's
    return float(result["ms_per_article"])


def commit_of(checkout: Path) -> str:
    return subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False).stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=100_000, repeat=2)
    parser.add_argument("--against", type=Path, required=True,
                        help="the other checkout (e.g. `git worktree add /tmp/before <commit>`)")
    args = parser.parse_args(argv)
    uri = database_uri()
    facts = machine(uri)
    print(show_machine(facts))
    checkouts = {"this": ROOT, "against": args.against.resolve()}
    runs: dict[str, list[float]] = {name: [] for name in checkouts}
    for name, path in checkouts.items():
        print(f"{name}: {path} ({commit_of(path)})")
    for round_ in range(args.repeat):
        for name, path in (checkouts.items() if round_ % 2 == 0 else reversed(checkouts.items())):
            runs[name].append(run(path, uri, args.articles))
            print(f"  round {round_ + 1}, {name}: {runs[name][-1]:.2f} ms/article", flush=True)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    change = medians["this"] / medians["against"] - 1
    print(f"first crawl of {args.articles:,} articles, median ms/article: this {medians['this']:.2f}, "
          f"against {medians['against']:.2f}: {100 * change:+.1f} %")
    payload: dict[str, Any] = {"machine": facts, "argv": sys.argv, "articles": args.articles,
                               "checkouts": {name: {"path": str(path), "commit": commit_of(path)}
                                             for name, path in checkouts.items()},
                               "runs_ms_per_article": runs, "medians": medians, "change": change}
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
