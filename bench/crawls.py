"""A crawl of the served mirror, measured (wall, CPU, RSS, LogStats), and `scrapy bench`
for the yardstick."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PYTHON, WORK_DIR
from bench.database import cpu_seconds, database_pid, own_cpu_seconds

# Scrapy's LogStats line: `Crawled 1478 pages (at 6900 pages/min), scraped 0 items (at 0 items/min)`
_LOGSTATS = re.compile(
    r"^(?P<stamp>\S+ \S+) \[scrapy\.extensions\.logstats\] INFO: Crawled (?P<pages>\d+) pages "
    r"\(at (?P<rate>\d+) pages/min\), scraped (?P<items>\d+) items \(at (?P<irate>\d+) items/min\)"
)


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
        from pipelines.config import mongo_client

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


# --- a share host failing as real ones do (issue 19) ----------------------------------
SHARE_REFUSED_EVERY = 13  # one answer in 13 refused (503) for the whole first crawl
SHARE_503_ONCE_EVERY = 6  # one in 6 of the others answers 503 once, then its text
SHARE_GBK_EVERY = 3  # a third of the answers come in GBK (said so in Content-Type)


def share_answer_codes(mirror: Path) -> list[str]:
    """The info codes the mirror's share host answers (`NW` + 18 digits), sorted."""
    answers = mirror / "finews.zning.xyz" / "NewsData" / "GetNewsText"
    return sorted(path.stem for path in answers.glob("NW*.json"))


def share_host_faults(mirror: Path, *, first_run: bool = True) -> list[Any]:
    """The share host failing as real ones do, as `fixtures.server.Fault`s to add, in order
    (a request takes the first that matches):

    - one answer in 13 refused with a 503 (no Retry-After) on every ask: until the next
      run, so only when `first_run` (its text is asked again by the rerun);
    - one in 6 of the others answers 503 once (no Retry-After), then its text;
    - a third of all answers in GBK.

    Install them with `add_share_host_faults(server, mirror)`. Every answer by its code,
    so the set is the same for every run of a mirror.
    """
    from fixtures.server import SHARE_HOST, Fault

    codes = share_answer_codes(mirror)
    refused = set(codes[::SHARE_REFUSED_EVERY]) if first_run else set()
    faults: list[Fault] = []
    if refused:
        faults.append(Fault(host=SHARE_HOST, path=_answer_of(sorted(refused)), status=503, times=None))
    for code in codes[SHARE_503_ONCE_EVERY // 2::SHARE_503_ONCE_EVERY]:
        if code not in refused:
            faults.append(Fault(host=SHARE_HOST, path=_answer_of([code]), status=503, times=1))
    faults.append(Fault(host=SHARE_HOST, path=_answer_of(codes[1::SHARE_GBK_EVERY]), charset="gbk",
                        times=None))
    return faults


def add_share_host_faults(server: Any, mirror: Path, *, first_run: bool = True) -> list[Any]:
    """Clear the served mirror's faults and add `share_host_faults`; returns them."""
    server.clear_faults()
    faults = share_host_faults(mirror, first_run=first_run)
    for fault in faults:
        server.add_fault(fault)
    return faults


def _answer_of(codes: Sequence[str]) -> str:
    return r"^/NewsData/GetNewsText\.do\?id=(?:" + "|".join(codes) + ")$"


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
