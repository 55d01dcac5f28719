"""What every bench shares: its arguments, figures, and the machine it ran on.

The database, the mirror and crawls have modules of their own (bench/database.py,
bench/mirror.py, bench/crawls.py).

Nothing here changes the product: crawls run the project's own `scrapy crawl
finews` in a subprocess with `-s` overrides only, as `newscrawl demo` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = ROOT / ".local" / "bench"  # mirrors, logs, stats files (ignored by git)
MIRROR_SEED = 20211231  # the demo's seed
PYTHON = sys.executable

# --- figures -----------------------------------------------------------------
def figures(values: Iterable[float]) -> dict[str, Any]:
    """Median, min, max and the spread ((max - min) / median) of repeated measures."""
    data = sorted(float(v) for v in values)
    if not data:
        return {"n": 0, "median": None, "min": None, "max": None, "spread": None, "values": []}
    median = statistics.median(data)
    spread = (data[-1] - data[0]) / median if median else None
    return {"n": len(data), "median": median, "min": data[0], "max": data[-1], "spread": spread,
            "values": [round(v, 6) for v in data]}


def show(fig: dict[str, Any], unit: str = "", digits: int = 1) -> str:
    """`1234.5 unit (min 1200.0 .. max 1300.0, spread 8%, n=5)`."""
    if not fig["n"]:
        return "n/a"
    text = f"{fig['median']:.{digits}f}{' ' + unit if unit else ''}"
    if fig["n"] > 1:
        spread = f", spread {fig['spread']:.0%}" if fig["spread"] is not None else ""
        text += f" (min {fig['min']:.{digits}f} .. max {fig['max']:.{digits}f}{spread}, n={fig['n']})"
    return text


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1, default=str) + "\n")
    print(f"figures written to {path}")


# --- the machine ---------------------------------------------------------------
def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _meminfo_mb(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(uri: str | None = None) -> dict[str, Any]:
    """nproc, memory, CPU, load, and the versions that matter to the figures."""
    facts: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "mem_total_mb": _meminfo_mb("MemTotal"),
        "mem_available_mb": _meminfo_mb("MemAvailable"),
        "cpu": _cpu_model(),
        "loadavg_at_start": os.getloadavg(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **{name: _version(name) for name in
           ("scrapy", "twisted", "lxml", "parsel", "pymongo", "dateparser")},
    }
    facts["git"] = _git_state()
    if uri is not None:
        from bench.database import server_version

        facts["database"] = server_version(uri)
    return facts


def _git_state() -> dict[str, Any]:
    """The commit measured, and the files changed beside it (others edit the tree meanwhile)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.rstrip("\n")

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()
               if not line[3:].startswith("bench/")]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed_files": changed}


def show_machine(facts: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.2f}" for x in facts["loadavg_at_start"])
    return (f"machine: {facts['nproc']} cores ({facts['cpu']}), {facts['mem_total_mb']} MB, "
            f"load {load}; Python {facts['python']}, Scrapy {facts['scrapy']}, "
            f"Twisted {facts['twisted']}, lxml {facts['lxml']}, pymongo {facts['pymongo']}"
            + (f"; database {facts['database']}" if facts.get("database") else "")
            + f"; git {facts['git']['commit']} (+{len(facts['git']['changed_files'])} changed files)")


def bench_parser(doc: str | None, *, articles: int | list[int] | None = 10_000,
                 repeat: int | None = 3) -> argparse.ArgumentParser:
    """The arguments every bench shares: --articles (the generated mirror's size; a list
    when `articles` is one), --repeat, --json (the figures written there too)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if isinstance(articles, list):
        parser.add_argument("--articles", type=int, nargs="+", default=articles,
                            help="mirror sizes (generated articles)")
    elif articles is not None:
        parser.add_argument("--articles", type=int, default=articles, help="mirror size (generated articles)")
    if repeat is not None:
        parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--json", type=Path, help="also write the figures there (JSON)")
    return parser


