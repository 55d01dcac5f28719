"""Where a mirror crawl spends its time: the profile behind bench/RESULTS.md.

    .local/venv/bin/python bench/profile_crawl.py --articles 10000 [--no-py-spy] [--json PATH]

One crawl as bench/end_to_end.py runs it, with two probes:
- every database command timed from the client (bench/crawl_probe.py registers a
  pymongo CommandListener; the product is not changed), grouped by command and
  filter shape;
- py-spy (the venv's dev tool, when present) sampling every thread of the crawl
  process, idle time included, summarised as the top functions per thread group.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import json
import os
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from bench.common import WORK_DIR, bench_parser, machine, show_machine, write_json
from bench.crawl_probe import COMMANDS_FILE_ENV
from bench.crawls import crawl_mirror, crawl_phases
from bench.database import database_name, database_uri, drop_database
from bench.mirror import mirror_counts, mirror_dir, served_mirror

_THREAD = re.compile(r"^thread \(\d+\): (?P<name>[^;]*)")
_LINE = re.compile(r":\d+\)$")
# Leaf frames that mean waiting: for the network, the reactor's poll, a lock or a sleep.
_IDLE_LEAVES = frozenset({"EpollSelector.select", "select", "Condition.wait", "Lock.acquire",
                          "Thread._wait_for_tstate_lock", "PeriodicExecutor._run", "sleep",
                          "NetworkingInterface.recv_into", "sendall", "_run"})


def thread_group(name: str, frames: Sequence[str]) -> str:
    if name == "MainThread":
        return "reactor (MainThread)"
    if any(frame.startswith("ThreadWorker.") for frame in frames):
        return "Twisted thread pool (MongoPipeline writes)"
    if any(frame.startswith("PeriodicExecutor.") for frame in frames):
        return "pymongo monitor threads"
    return "other threads"


def project_frame(frame: str) -> bool:
    return "(newscrawl/" in frame or "(pipelines/" in frame


def summarize_py_spy(raw: Path, top: int) -> dict[str, Any]:
    """Samples per thread group; top functions by inclusive and by self samples."""
    samples: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    leaf: dict[str, Counter[str]] = defaultdict(Counter)
    idle: Counter[str] = Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        match = _THREAD.match(stack)
        if not match or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")[1:]]
        group = thread_group(match["name"], frames)
        samples[group] += count
        if frames and frames[-1].split(" ")[0] in _IDLE_LEAVES:
            idle[group] += count
        for frame in set(frames):
            inclusive[group][frame] += count
        if frames:
            leaf[group][frames[-1]] += count
    return {
        group: {
            "samples": total,
            "idle": round(idle[group] / total, 3),
            "inclusive": [(frame, n, round(n / total, 3)) for frame, n in inclusive[group].most_common(top)],
            "project_inclusive": [(frame, n, round(n / total, 3)) for frame, n
                                  in inclusive[group].most_common() if project_frame(frame)][:top],
            "self": [(frame, n, round(n / total, 3)) for frame, n in leaf[group].most_common(top)],
        }
        for group, total in samples.most_common()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, articles=10_000, repeat=None)
    parser.add_argument("-s", "--set", dest="extra", action="append", default=[],
                        metavar="NAME=VALUE", help="a Scrapy setting for the crawl")
    parser.add_argument("--no-py-spy", action="store_true", help="only time the database commands")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    uri = database_uri()
    facts = machine(uri)
    print(show_machine(facts))
    out = mirror_dir(args.articles)
    counts = mirror_counts(out)
    database = database_name("profile")
    profile_dir = WORK_DIR / "profile"
    profile_dir.mkdir(parents=True, exist_ok=True)
    commands_file = profile_dir / f"{database}.commands.json"
    raw_file = profile_dir / f"{database}.py-spy.txt"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    wrapper: list[str] = []
    if not args.no_py_spy and Path(py_spy).exists():
        wrapper = [py_spy, "record", "--threads", "--idle", "--rate", str(args.rate),
                   "--format", "raw", "-o", str(raw_file), "--"]
    os.environ[COMMANDS_FILE_ENV] = str(commands_file)
    try:
        with served_mirror(out) as host_map:
            run = crawl_mirror(host_map, uri, database, label="profile", settings=args.extra,
                               wrapper=wrapper, python_args=("-m", "bench.crawl_probe"))
    finally:
        del os.environ[COMMANDS_FILE_ENV]
        drop_database(uri, database)
    phases = crawl_phases(run.logstats)
    print(f"crawl: {run.pages} pages, {run.articles_stored} stored of {counts['articles']} in "
          f"{run.elapsed:.1f} s ({run.pages_per_second:.1f} pages/s); last page at "
          f"{phases.get('download_seconds', 0):.0f} s; CPU s: crawl (+py-spy) {run.crawl_cpu_seconds:.1f}, "
          f"database {run.database_cpu_seconds or 0:.1f}")
    print("stored documents over time (s: n): " + ", ".join(
        f"{s['t']:.0f}: {s['stored']}" for s in run.samples if s.get("stored") is not None))

    commands: list[dict[str, Any]] = []
    if commands_file.exists():
        commands = json.loads(commands_file.read_text())
        total = sum(row["seconds"] for row in commands)
        print(f"\n== database commands, timed from the crawl process (total {total:.1f} s) ==")
        print("  seconds  commands  statements  ms/command  max ms  command and filter shape")
        for row in commands[:args.top]:
            mean = 1000 * row["seconds"] / row["count"]
            print(f"{row['seconds']:9.1f} {row['count']:9d} {row['statements']:11d} {mean:11.1f} "
                  f"{1000 * row['max_seconds']:7.0f}  {row['command']}")
    spy: dict[str, Any] = {}
    if wrapper and raw_file.exists():
        spy = summarize_py_spy(raw_file, args.top)
        for group, data in spy.items():
            print(f"\n== py-spy: {group}, {data['samples']} samples ({args.rate}/s), "
                  f"{data['idle']:.0%} of them waiting ==")
            print("  inclusive:")
            for frame, n, share in data["inclusive"]:
                print(f"    {share:6.1%} {n:7d}  {frame}")
            print("  inclusive, project code:")
            for frame, n, share in data["project_inclusive"]:
                print(f"    {share:6.1%} {n:7d}  {frame}")
            print("  self:")
            for frame, n, share in data["self"][:8]:
                print(f"    {share:6.1%} {n:7d}  {frame}")
        print(f"\nraw py-spy samples: {raw_file}")
    write_json(args.json, {"bench": "profile_crawl", "command": " ".join(sys.argv), "machine": facts,
                           "articles": args.articles, "run": run.summary(), "phases": phases,
                           "samples": run.samples, "commands": commands, "py_spy": spy})
    return 0


if __name__ == "__main__":
    sys.exit(main())
