"""`newscrawl backfill`: one date range, as completely as the two hosts allow.

The crawls run one after the other, each in its own process (as `scrapy
crawl` would), against MONGO_URI / MONGO_DATABASE:

1. `finews -a since -a until [-a categories]`: what the aggregator still lists;
2. `share -a ids_file=F` (with `--ids-file`): articles the aggregator no longer lists;
3. `share -a from_db=1 -a since -a until`: the full text of articles stored
   with a rolling-news digest only (step 1 may have stored some).

Every crawl is incremental, so a second backfill of the same range fetches
listings only and stores nothing new. Progress comes from each crawl's log
(Scrapy's LogStats line: pages crawled, items scraped) while it runs, and from
its final stats (NEWSCRAWL_STATS_FILE) when it ends; the summary adds the
crawls' final stats up.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

from newscrawl.local.server import local_dir
from newscrawl.ops.command import connect, day_option, fail, list_option, seconds_option, setting_option
from newscrawl.ops.crawl import STOP_TIMEOUT, crawl_settings, read_stats, start_crawl, stop_crawl
from newscrawl.ops.runs import counts_text, format_duration

LOGSTATS_LINE = re.compile(r"\] INFO: Crawled (\d+) pages \(.*?\), scraped (\d+) items")
TTY_REFRESH = 0.5


class BackfillStopped(RuntimeError):
    """A crawl did not finish: the later steps were not run."""


# --- the plan (pure) -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    spider: str
    args: dict[str, str]
    why: str

    def describe(self) -> str:
        return " ".join([self.spider, *(f"{k}={v}" for k, v in self.args.items())])


def plan(since: date, until: date, *, categories: Sequence[str] = (),
         ids_file: Path | None = None) -> list[Step]:
    if since > until:
        raise ValueError(f"--since {since} is after --until {until}: an empty range")
    days = {"since": since.isoformat(), "until": until.isoformat()}
    finews = dict(days)
    if categories:
        finews["categories"] = ",".join(categories)
    steps = [Step("finews", finews, "what the aggregator lists")]
    if ids_file is not None:
        steps.append(Step("share", {"ids_file": str(ids_file)}, "the ids given"))
    steps.append(Step("share", {"from_db": "1", **days}, "full texts of digest-only articles"))
    return steps


def read_ids(path: Path) -> list[str]:
    """The ids of an ids file, checked as the share spider will read them."""
    from newscrawl.spiders.share import normalise_ids, read_ids_file

    try:
        ids = normalise_ids(read_ids_file(str(path)))
    except OSError as exc:
        raise ValueError(f"--ids-file {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"--ids-file {path}: {exc}") from None
    if not ids:
        raise ValueError(f"--ids-file {path}: no ids in it (one a line, NW prefix optional)")
    return ids


# --- counting (pure) -----------------------------------------------------------------------------

def retry_http_codes(settings: Mapping[str, str] | None = None) -> frozenset[int]:
    """The statuses the crawls retry: RETRY_HTTP_CODES of the project's settings, with the
    backfill's `-s` overrides."""
    return frozenset(int(code) for code in crawl_settings(settings).getlist("RETRY_HTTP_CODES"))


def failed_count(stats: Mapping[str, Any], retry_codes: Collection[int]) -> int:
    """Pages a crawl gave up on: requests that failed after every retry (timeouts, refused
    connections, the `retry_codes`: 5xx, 429, …), answers with another error status (a 404
    share text, …) and pages whose callback raised. Each page once."""
    given_up = int(stats.get("retry/max_reached") or 0)
    prefix = "httperror/response_ignored_status_count/"
    error_answers = sum(int(value or 0) for key, value in stats.items()
                        if key.startswith(prefix) and key[len(prefix):].isdigit()
                        and int(key[len(prefix):]) not in retry_codes)
    raised = sum(int(value or 0) for key, value in stats.items()
                 if key.startswith("spider_exceptions/") and key != "spider_exceptions/count")
    return given_up + error_answers + raised


def step_counts(stats: Mapping[str, Any], retry_codes: Collection[int]) -> dict[str, int]:
    from newscrawl.components.run_recorder import counts_from_stats

    return {**counts_from_stats(stats), "failed": failed_count(stats, retry_codes)}


def totals(counts: Sequence[Mapping[str, int]]) -> dict[str, int]:
    keys = {key for c in counts for key in c}
    return {key: sum(c.get(key, 0) for c in counts) for key in sorted(keys)}


# --- progress ------------------------------------------------------------------------------------

class Progress:
    """One updating line on a terminal; elsewhere a plain line every `every` seconds
    (when something changed) and one when a crawl ends."""

    def __init__(self, out: TextIO, *, tty: bool, every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.tty = tty
        self.every = every
        self.clock = clock
        self.last_text = ""
        self.last_at = clock()
        self.width = 0

    def update(self, text: str) -> None:
        now = self.clock()
        if self.tty:
            self._overwrite(text)
        elif text != self.last_text and now - self.last_at >= self.every:
            self.out.write(f"backfill: {text}\n")
            self.out.flush()
            self.last_at = now
        self.last_text = text

    def line(self, text: str) -> None:
        if self.tty:
            self._overwrite(text)
            self.out.write("\n")
            self.width = 0
        else:
            self.out.write(f"backfill: {text}\n")
        self.out.flush()
        self.last_text = ""
        self.last_at = self.clock()

    def _overwrite(self, text: str) -> None:
        line = f"backfill: {text}"
        self.out.write("\r" + line + " " * max(self.width - len(line), 0))
        self.out.flush()
        self.width = len(line)


class LogTail:
    """The newest LogStats numbers (pages, items) of a crawl's log, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.rest = ""
        self.pages = 0
        self.items = 0

    def poll(self) -> tuple[int, int]:
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                chunk = log.read()
        except OSError:
            return self.pages, self.items
        self.offset += len(chunk)
        lines = (self.rest + chunk.decode("utf-8", errors="replace")).split("\n")
        self.rest = lines.pop()
        for line in lines:
            match = LOGSTATS_LINE.search(line)
            if match:
                self.pages, self.items = int(match[1]), int(match[2])
        return self.pages, self.items


# --- running -------------------------------------------------------------------------------------

@dataclass
class StepResult:
    step: Step
    returncode: int
    stats: dict[str, Any]
    seconds: float
    log_file: Path
    counts: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def outcome(self) -> str:
        return str(self.stats.get("finish_reason") or "no stats")

    @property
    def ok(self) -> bool:
        from newscrawl.components.run_recorder import run_status

        return self.returncode == 0 and run_status(self.outcome) == "finished"


def run_step(step: Step, label: str, *, env: Mapping[str, str], settings: Mapping[str, str],
             log_file: Path, stats_file: Path, progress: Progress) -> StepResult:
    logstats = min(max(progress.every, 1.0), 10.0) if not progress.tty else 2.0
    tail = LogTail(log_file)
    started = time.monotonic()
    process = start_crawl(step.spider, step.args, {"LOGSTATS_INTERVAL": f"{logstats:g}", **settings},
                          log_file=log_file, stats_file=stats_file, env=env)
    progress.line(f"{label} {step.describe()} ({step.why}); log {log_file}")
    interrupted = False
    try:
        while True:
            try:
                code = process.wait(TTY_REFRESH)
                break
            except subprocess.TimeoutExpired:
                pages, items = tail.poll()
                took = format_duration(time.monotonic() - started)
                progress.update(f"{label} {step.spider}: {pages} pages, {items} items ({took})")
    except KeyboardInterrupt:
        code = interrupt_crawl(process, progress, label)
        interrupted = True
    stats = read_stats(stats_file)
    result = StepResult(step, code, stats, time.monotonic() - started, log_file,
                        step_counts(stats, retry_http_codes(settings)) if stats else {},
                        interrupted=interrupted)
    took = format_duration(result.seconds)
    progress.line(f"{label} {step.spider} {result.outcome} in {took}: {counts_text(result.counts)}")
    return result


def interrupt_crawl(process: subprocess.Popen[bytes], progress: Progress, label: str) -> int:
    """Interrupted: one SIGTERM (Scrapy stops cleanly and records the run), then wait; a
    second interrupt, or STOP_TIMEOUT, kills it. Its exit code."""
    progress.line(f"{label} interrupted: stopping the crawl (pid {process.pid}) ...")
    interrupted_again = False

    def force() -> bool:
        return interrupted_again

    while True:
        try:
            return stop_crawl(process, STOP_TIMEOUT, force=force)
        except KeyboardInterrupt:
            interrupted_again = True


@dataclass
class Backfill:
    since: date
    until: date
    categories: Sequence[str] = ()
    ids_file: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)
    log_dir: Path = field(default_factory=lambda: local_dir() / "logs" / "backfill")
    results: list[StepResult] = field(default_factory=list)

    def steps(self) -> list[Step]:
        if self.ids_file is not None:
            read_ids(self.ids_file)
        return plan(self.since, self.until, categories=self.categories,
                    ids_file=self.ids_file.resolve() if self.ids_file else None)

    def run(self, progress: Progress) -> dict[str, int]:
        """Run every step; the summed counts. Raises BackfillStopped when a crawl fails, and
        KeyboardInterrupt (SIGINT, SIGTERM) once the running crawl has stopped."""
        steps = self.steps()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for number, step in enumerate(steps, 1):
            label = f"[{number}/{len(steps)}]"
            log_file = self.log_dir / f"{stamp}-{number}-{step.spider}.log"
            stats_file = self.log_dir / f"{stamp}-{number}-{step.spider}.stats.json"
            result = run_step(step, label, env=self.env, settings=self.settings,
                              log_file=log_file, stats_file=stats_file, progress=progress)
            self.results.append(result)
            if result.interrupted:
                raise KeyboardInterrupt
            if not result.ok:
                raise BackfillStopped(
                    f"backfill stopped at step {number} of {len(steps)}: the {step.spider} crawl "
                    f"ended with exit code {result.returncode} ({result.outcome}); see {log_file}")
        return self.summary()

    def summary(self) -> dict[str, int]:
        return totals([result.counts for result in self.results])


def summary_line(counts: Mapping[str, int], crawls: int, seconds: float) -> str:
    return f"total ({crawls} crawl{'s' if crawls != 1 else ''}, {format_duration(seconds)}): " \
        + counts_text(counts)


# --- the command --------------------------------------------------------------------------------

def cmd_backfill(args: argparse.Namespace) -> int:
    import signal
    import time

    from newscrawl.ops import backfill
    from newscrawl.ops.crawl import crawl_env

    job = backfill.Backfill(
        since=args.since, until=args.until, categories=args.categories or (),
        ids_file=args.ids_file,
        env=crawl_env({"MONGO_DATABASE": args.database} if args.database else None),
        settings=dict(args.set or ()),
        log_dir=args.log_dir or local_dir() / "logs" / "backfill")
    job.steps()  # arguments and the ids file checked before anything runs
    client, _ = connect(args.database)  # so is the database
    client.close()
    progress = backfill.Progress(sys.stdout, tty=sys.stdout.isatty(), every=args.progress_every)
    started = time.monotonic()

    def summary() -> None:
        progress.line(backfill.summary_line(job.summary(), len(job.results),
                                            time.monotonic() - started))

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C
    try:
        job.run(progress)
    except backfill.BackfillStopped as exc:
        summary()
        return fail(exc, 1)
    except KeyboardInterrupt:
        summary()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary()
    return 0


def add_command(sub: Any) -> None:
    back = sub.add_parser(
        "backfill", help="crawl one date range completely: finews, then share by ids and digests",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run, one after the other: the finews spider over --since/--until (and "
                    "--categories); the share spider over the ids of --ids-file; the share "
                    "spider for the articles of the range stored with a digest only. Shows "
                    "progress, then the summed counts: stored, updated, unchanged, rejected, "
                    "failed (pages given up). Crawls are incremental: running it again stores "
                    "nothing new.",
        epilog="days are in Asia/Shanghai (the site's zone), both inclusive.\n"
               "examples:\n"
               "  newscrawl backfill --since 2021-12-29 --until 2021-12-31\n"
               "  newscrawl backfill --since 2021-12-01 --until 2021-12-31 "
               "--categories jingzhouribao,emnews --ids-file ids.txt")
    back.add_argument("--since", type=day_option, required=True, metavar="DAY",
                      help="first day (YYYY-MM-DD)")
    back.add_argument("--until", type=day_option, required=True, metavar="DAY",
                      help="last day (YYYY-MM-DD), inclusive")
    back.add_argument("--categories", type=list_option, metavar="SLUGS",
                      help="only these category slugs for finews (jingzhouribao,emnews)")
    back.add_argument("--ids-file", type=Path, metavar="FILE",
                      help="article ids for the share spider, one a line (NW prefix optional)")
    back.add_argument("-s", "--set", type=setting_option, action="append", metavar="NAME=VALUE",
                      help="a Scrapy setting for every crawl (repeatable)")
    back.add_argument("--log-dir", type=Path, metavar="DIR",
                      help="the crawls' logs (default .local/logs/backfill)")
    back.add_argument("--progress-every", type=seconds_option, default=10.0, metavar="SECONDS",
                      help="when stdout is not a terminal: a progress line at most this often "
                           "(default 10)")
    back.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    back.set_defaults(func=cmd_backfill)
