"""What the benches share: figures, machine facts, the mirror cache, the database, crawls.

Nothing here changes the product: crawls run the project's own `scrapy crawl
finews` in a subprocess with `-s` overrides only, as `newscrawl demo` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK_DIR = ROOT / ".local" / "bench"  # mirrors, logs, stats files (ignored by git)
MIRROR_SEED = 20211231  # the demo's seed
PYTHON = sys.executable

# Scrapy's LogStats line: `Crawled 1478 pages (at 6900 pages/min), scraped 0 items (at 0 items/min)`
_LOGSTATS = re.compile(
    r"^(?P<stamp>\S+ \S+) \[scrapy\.extensions\.logstats\] INFO: Crawled (?P<pages>\d+) pages "
    r"\(at (?P<rate>\d+) pages/min\), scraped (?P<items>\d+) items \(at (?P<irate>\d+) items/min\)"
)


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


# --- the database --------------------------------------------------------------
def database_uri() -> str:
    """MONGO_URI when set, else the project's local FerretDB (started if need be)."""
    from newscrawl.local import ferretdb

    return ferretdb.start(quiet=True)


_names = iter(range(1_000_000))


def database_name(bench: str) -> str:
    """A fresh database name of this bench process: bench_<name>_<pid>_<n>."""
    return f"bench_{bench}_{os.getpid()}_{next(_names)}"


def drop_database(uri: str, name: str) -> None:
    from pipelines.storage import mongo_client

    client = mongo_client(uri, appname="newscrawl-bench")
    try:
        client.drop_database(name)
    finally:
        client.close()


def server_version(uri: str) -> str:
    from pipelines.storage import mongo_client

    client = mongo_client(uri, appname="newscrawl-bench")
    try:
        info = client.admin.command("buildInfo")
    finally:
        client.close()
    if "ferretdbVersion" in info:
        version = info["ferretdbVersion"]
        if version == "unknown":  # built from the embeddable package: no version stamped in
            pinned = re.search(r"FerretDB/FerretDB (v\S+)", (ROOT / "tools/ferretdb/go.mod").read_text())
            version = f"{pinned[1]} (tools/ferretdb/go.mod)" if pinned else version
        return f"FerretDB {version}, SQLite backend (MongoDB wire {info.get('version')})"
    return f"MongoDB {info.get('version')}"


def database_pid(uri: str) -> int | None:
    """The local FerretDB's pid when `uri` is the project's local server (for its CPU time)."""
    from newscrawl.local import ferretdb

    state = ferretdb.read_state()
    return state.pid if state is not None and state.uri == uri else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process, all threads (here: the mirror server's)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the mirror ------------------------------------------------------------------
def mirror_dir(articles: int, seed: int = MIRROR_SEED) -> Path:
    """A built mirror of `articles` generated articles, cached under .local/bench/mirror/
    by everything it is made from (fixtures.generate.mirror_key)."""
    from fixtures.generate import build_mirror, mirror_key

    out = WORK_DIR / "mirror" / mirror_key(articles, seed, False)
    if not (out / "truth" / "manifest.json").exists():
        print(f"building a mirror of {articles} articles in {out} (cached for later runs) ...",
              flush=True)
        started = time.monotonic()
        build_mirror(out, articles=articles, seed=seed)
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


# --- crawls --------------------------------------------------------------------
@dataclass
class CrawlRun:
    """One `scrapy crawl finews` of the mirror, as the bench saw it."""

    label: str
    settings: list[str]
    returncode: int
    wall_seconds: float
    stats: dict[str, Any]
    peak_rss_kb: int  # ru_maxrss of the crawl process (exact, from wait4)
    crawl_cpu_seconds: float  # user + system of the crawl process
    mirror_cpu_seconds: float  # this process (the mirror server's threads) meanwhile
    database_cpu_seconds: float | None  # the local FerretDB meanwhile, when known
    log_file: str
    # every sample_interval: {"t": s, "rss_kb": VmRSS, "hwm_kb": VmHWM, "stored": documents}
    samples: list[dict[str, Any]] = field(default_factory=list)
    logstats: list[LogStat] = field(default_factory=list)  # the crawl's LogStats lines

    @property
    def pages(self) -> int:
        return int(self.stats.get("response_received_count", 0))

    @property
    def elapsed(self) -> float:
        return float(self.stats.get("elapsed_time_seconds") or self.wall_seconds)

    @property
    def articles_stored(self) -> int:
        return int(self.stats.get("newscrawl/articles/stored", 0))

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.elapsed

    @property
    def articles_per_second(self) -> float:
        return self.articles_stored / self.elapsed

    def summary(self) -> dict[str, Any]:
        keys = ("response_received_count", "elapsed_time_seconds", "item_scraped_count",
                "item_dropped_count", "newscrawl/articles/stored", "newscrawl/articles/rejected",
                "newscrawl/storage/batches", "newscrawl/storage/spooled", "memusage/max",
                "finish_reason", "downloader/response_status_count/200", "log_count/ERROR")
        return {
            "label": self.label, "settings": self.settings, "returncode": self.returncode,
            "pages": self.pages, "elapsed_seconds": round(self.elapsed, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "pages_per_second": round(self.pages_per_second, 2),
            "articles_stored": self.articles_stored,
            "articles_per_second": round(self.articles_per_second, 2),
            "peak_rss_mb": round(self.peak_rss_kb / 1024, 1),
            "crawl_cpu_seconds": round(self.crawl_cpu_seconds, 2),
            "crawl_cpu_ms_per_page": round(1000 * self.crawl_cpu_seconds / max(self.pages, 1), 3),
            "mirror_cpu_seconds": round(self.mirror_cpu_seconds, 2),
            "database_cpu_seconds": (None if self.database_cpu_seconds is None
                                     else round(self.database_cpu_seconds, 2)),
            "stats": {k: self.stats.get(k) for k in keys},
            "log_file": self.log_file,
        }


def _proc_status_kb(pid: int, keys: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in keys:
                found[name] = int(value.split()[0])
    except OSError:
        pass
    return found


@dataclass(frozen=True)
class LogStat:
    t: float  # seconds since the first LogStats line (the log's 1 s resolution)
    pages: int
    items: int
    pages_per_second: float  # over the last interval, as LogStats computed it


def parse_logstats(lines: Iterable[str]) -> list[LogStat]:
    points: list[LogStat] = []
    first: float | None = None
    for line in lines:
        match = _LOGSTATS.match(line)
        if match is None:
            continue
        stamp = time.mktime(time.strptime(match["stamp"], "%Y-%m-%d %H:%M:%S"))
        first = stamp if first is None else first
        points.append(LogStat(stamp - first, int(match["pages"]), int(match["items"]),
                              int(match["rate"]) / 60))
    return points


def crawl_phases(points: Sequence[LogStat]) -> dict[str, Any]:
    """When the last page arrived, and the crawl's own steady rate while pages came in
    (median of the 1 s LogStats rates, less the ramp-up), as for scrapy bench."""
    if not points:
        return {}
    final = points[-1].pages
    done = next(p for p in points if p.pages == final)
    crawling = [p.pages_per_second for p in points if p.t <= done.t]
    return {"download_seconds": done.t, "pages_at_download_end": final,
            "items_at_download_end": done.items, "items_final": points[-1].items,
            "steady_pages_per_second": steady_rate([0.0, *crawling[1:]], warmup=2),
            "after_download_seconds": points[-1].t - done.t}


def logstats_rates(lines: Iterable[str]) -> list[float]:
    """The `(at X pages/min)` rates of the LogStats lines, in pages per second."""
    return [int(m["rate"]) / 60 for m in map(_LOGSTATS.match, lines) if m is not None]


def steady_rate(rates: Sequence[float], *, warmup: int = 2) -> float | None:
    """Median of per-interval rates, leaving out the start (0 pages, ramp-up) and the
    last line (logged at close, over a partial interval)."""
    body = list(rates[1 + warmup:-1])
    if not body:
        body = [r for r in rates if r > 0]
    return statistics.median(body) if body else None


class _StoredCounter:
    """Documents in the articles collection, from collStats (a cheap count on FerretDB)."""

    def __init__(self, uri: str, database: str) -> None:
        from pipelines.storage import mongo_client

        self.client = mongo_client(uri, appname="newscrawl-bench", timeout_ms=2000)
        self.db = self.client[database]

    def __call__(self) -> int | None:
        from pymongo.errors import PyMongoError

        try:
            return int(self.db.command("collStats", "articles").get("count", 0))
        except PyMongoError:  # not created yet
            return None

    def close(self) -> None:
        self.client.close()


def crawl_mirror(
    host_map: dict[str, str], uri: str, database: str, *, label: str,
    settings: Sequence[str] = (), logstats_interval: float = 1.0,
    sample_interval: float = 0.5, count_interval: float = 5.0,
    spider_args: dict[str, str] | None = None, wrapper: Sequence[str] = (),
    python_args: Sequence[str] = ("-m", "scrapy"),
) -> CrawlRun:
    """`python -m scrapy crawl finews` of the served mirror into `database`, measured.

    Peak RSS is the process's ru_maxrss (wait4); VmRSS/VmHWM are also sampled
    every `sample_interval` seconds, and the stored documents every
    `count_interval` seconds, to show how both grow. `python_args` replaces
    `-m scrapy` (e.g. a profiling wrapper module).
    """
    from newscrawl.ops.crawl import crawl_env, start_crawl

    logs = WORK_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{database}.log"
    stats_file = WORK_DIR / "stats" / f"{database}.json"
    log_file.unlink(missing_ok=True)
    env = crawl_env({"NEWSCRAWL_HOST_MAP": json.dumps(host_map), "MONGO_URI": uri,
                     "MONGO_DATABASE": database,
                     "NEWSCRAWL_SPOOL_DIR": str(WORK_DIR / "spool" / database)})
    crawl_settings = {"LOG_LEVEL": "INFO", "AUTOTHROTTLE_ENABLED": "False",
                      "LOGSTATS_INTERVAL": str(logstats_interval),
                      **dict(setting.split("=", 1) for setting in settings)}
    db_pid = database_pid(uri)
    db_cpu_before = cpu_seconds(db_pid) if db_pid else None
    own_before = own_cpu_seconds()
    started = time.monotonic()
    proc = start_crawl("finews", spider_args, crawl_settings, log_file=log_file, stats_file=stats_file,
                       env=env, python_args=python_args, wrapper=wrapper)
    samples: list[dict[str, Any]] = []
    counter = _StoredCounter(uri, database)
    next_count = 0.0
    watched = proc.pid
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            elapsed = time.monotonic() - started
            if wrapper and watched == proc.pid:  # measure the Python under the wrapper
                watched = _only_child(proc.pid) or proc.pid
            sample: dict[str, Any] = {"t": round(elapsed, 2)}
            now = _proc_status_kb(watched, ("VmRSS", "VmHWM"))
            sample.update(rss_kb=now.get("VmRSS"), hwm_kb=now.get("VmHWM"))
            if elapsed >= next_count:
                sample["stored"] = counter()
                next_count = elapsed + count_interval
            samples.append(sample)
            time.sleep(sample_interval)
    finally:
        counter.close()
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it
    db_cpu_after = cpu_seconds(db_pid) if db_pid else None
    stats: dict[str, Any] = {}
    if stats_file.exists():
        stats = json.loads(stats_file.read_text(encoding="utf-8"))
    log_lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    return CrawlRun(
        label=label, settings=list(settings), returncode=proc.returncode, wall_seconds=wall,
        stats=stats, peak_rss_kb=usage.ru_maxrss,
        crawl_cpu_seconds=usage.ru_utime + usage.ru_stime,
        mirror_cpu_seconds=own_cpu_seconds() - own_before,
        database_cpu_seconds=(db_cpu_after - db_cpu_before
                              if db_cpu_after is not None and db_cpu_before is not None else None),
        log_file=str(log_file), samples=samples, logstats=parse_logstats(log_lines),
    )


def _only_child(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if len(children) == 1 else None


@contextmanager
def served_mirror(out: Path) -> Iterator[dict[str, str]]:
    """The mirror served on two free ports of 127.0.0.1; yields the host map."""
    from fixtures.server import MirrorServer

    with MirrorServer(out) as server:
        yield server.host_map


# --- scrapy bench ------------------------------------------------------------------
@dataclass
class ScrapyBench:
    rates: list[float]  # pages/s of each LogStats interval
    pages: int
    elapsed: float

    @property
    def steady(self) -> float | None:
        return steady_rate(self.rates)

    @property
    def overall(self) -> float:
        return self.pages / self.elapsed if self.elapsed else 0.0


_BENCH_STAT = re.compile(r"'(?P<key>response_received_count|elapsed_time_seconds)': (?P<value>[\d.]+)")


def scrapy_bench(settings: Sequence[str] = ()) -> ScrapyBench:
    """`scrapy bench` (its own local server, 10 s of crawling), outside any project
    so it runs on Scrapy's defaults."""
    command = [PYTHON, "-m", "scrapy", "bench"]
    for setting in settings:
        command += ["-s", setting]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPY_")}
    with tempfile.TemporaryDirectory(prefix="scrapy-bench-") as neutral:
        done = subprocess.run(command, env=env, cwd=neutral, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)
    lines = done.stderr.splitlines()
    if done.returncode != 0:
        raise RuntimeError("scrapy bench failed:\n" + "\n".join(lines[-20:]))
    values = {m["key"]: float(m["value"]) for m in _BENCH_STAT.finditer(done.stderr)}
    return ScrapyBench(rates=logstats_rates(lines), pages=int(values.get("response_received_count", 0)),
                       elapsed=values.get("elapsed_time_seconds", 0.0))
