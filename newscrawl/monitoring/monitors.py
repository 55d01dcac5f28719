"""Monitors: is a finished crawl healthy? Pure functions over a run's document (its counts,
errors and times, newscrawl.components.run_recorder) and the same job's recent runs.

Each monitor computes one figure and compares it with a `warn` and a `fail` threshold
(either may be None: not checked). `evaluate` returns the `health` field of the run's
document:

    {"status": "ok"|"warn"|"fail",
     "failed": [{"monitor", "level", "value", "threshold", "message"}],
     "checked_at": datetime, "alerts": []}

Thresholds come from DEFAULT_THRESHOLDS, overridden by the NEWSCRAWL_MONITORS setting and
by a job's `monitors` table in schedule.toml (README, "Operating it", says how the defaults
were chosen from the mirror's runs).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Document = dict[str, Any]
Figures = Mapping[str, Any]

OK, WARN, FAIL = "ok", "warn", "fail"
LEVELS = (OK, WARN, FAIL)
EXIT_CODES = {OK: 0, WARN: 1, FAIL: 2}  # Nagios: OK, WARNING, CRITICAL
NO_RUNS_EXIT = 3  # Nagios' UNKNOWN: nothing to judge

# Runs of a job the history monitors compare with (median of their figures), and how many
# of them are needed before those monitors speak.
DEFAULT_HISTORY = 10
MIN_HISTORY = 3
LOGGED_ERROR_TYPES = ("log/ERROR", "log/CRITICAL")


@dataclass(frozen=True)
class Limit:
    """`above`: the figure is bad when it reaches the threshold (a share, a count of errors);
    else when it falls below it (what was seen, a ratio to the usual)."""

    warn: float | None
    fail: float | None


@dataclass(frozen=True)
class Monitor:
    name: str
    above: bool
    what: str  # the figure, for the message
    unit: str  # "share", "count", "seconds", "ratio"
    figure: Callable[[Document, Sequence[Document]], float | None]  # None: nothing to judge


# --- the figures (pure) ---------------------------------------------------------------------

def counts_of(run: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(v or 0) for k, v in (run.get("counts") or {}).items() if isinstance(v, int | float)}


def seen(counts: Mapping[str, int]) -> int:
    """Articles the run saw: written (stored, updated, unchanged), rejected, or skipped as
    already stored (an incremental rerun sees them without fetching)."""
    return sum(counts.get(name, 0) for name in ("stored", "updated", "unchanged", "rejected",
                                                "skipped_stored"))


def taken(counts: Mapping[str, int]) -> int:
    """Articles the item pipeline took (cleaned or rejected by the cleaner)."""
    return counts.get("cleaned", 0) + counts.get("clean_rejected", 0)


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def duration(run: Mapping[str, Any], now: datetime | None = None) -> float | None:
    started, finished = run.get("started_at"), run.get("finished_at") or now
    if not isinstance(started, datetime) or not isinstance(finished, datetime):
        return None
    return max((finished - started).total_seconds(), 0.0)


def logged_errors(run: Mapping[str, Any]) -> int:
    return sum(int(e.get("count", 0)) for e in run.get("errors") or []
               if e.get("type") in LOGGED_ERROR_TYPES)


def median_of(history: Sequence[Document], figure: Callable[[Document], float | None]) -> float | None:
    values = [v for run in history if (v := figure(run)) is not None]
    return statistics.median(values) if len(values) >= MIN_HISTORY else None


def _seen_vs_usual(run: Document, history: Sequence[Document]) -> float | None:
    usual = median_of(history, lambda r: seen(counts_of(r)))
    return seen(counts_of(run)) / usual if usual else None


def _duration_vs_usual(run: Document, history: Sequence[Document]) -> float | None:
    usual = median_of(history, duration)
    took = duration(run)
    return took / usual if usual and took is not None else None


def _empty_pages(run: Document, history: Sequence[Document]) -> float | None:
    c = counts_of(run)
    nothing = c.get("clean_rejected", 0) + c.get("no_title", 0) + c.get("no_article_id", 0)
    return share(nothing, taken(c))


def _missing(*names: str) -> Callable[[Document, Sequence[Document]], float | None]:
    def figure(run: Document, history: Sequence[Document]) -> float | None:
        c = counts_of(run)
        return share(sum(c.get(name, 0) for name in names), taken(c))
    return figure


def _share_ratio(name: str) -> Callable[[Document, Sequence[Document]], float | None]:
    def figure(run: Document, history: Sequence[Document]) -> float | None:
        c = counts_of(run)
        asked = c.get("share_answered", 0) + c.get("share_not_found", 0) + c.get("share_failed", 0)
        return share(c.get(name, 0), asked)
    return figure


def _retries(run: Document, history: Sequence[Document]) -> float | None:
    c = counts_of(run)
    return share(c.get("retries", 0), c.get("requests", 0))


MONITORS: tuple[Monitor, ...] = (
    Monitor("seen", False, "articles seen", "count", lambda r, h: float(seen(counts_of(r)))),
    Monitor("stored", False, "articles stored or updated", "count",
            lambda r, h: float(counts_of(r).get("stored", 0) + counts_of(r).get("updated", 0))),
    Monitor("seen_vs_usual", False, "articles seen, to the median of the job's recent runs", "ratio",
            _seen_vs_usual),
    Monitor("empty_pages", True, "article pages that parsed to no article", "share", _empty_pages),
    Monitor("missing_paragraphs", True, "records without paragraphs", "share", _missing("empty_body")),
    Monitor("missing_time", True, "records without a time", "share",
            _missing("no_date", "unreadable_date")),
    Monitor("missing_source", True, "records without a source", "share", _missing("no_source")),
    Monitor("share_failures", True, "share-host requests that failed", "share",
            _share_ratio("share_failed")),
    Monitor("share_rejects", True, "share-host requests refused (404/410)", "share",
            _share_ratio("share_not_found")),
    Monitor("errors", True, "errors logged", "count", lambda r, h: float(logged_errors(r))),
    Monitor("retries", True, "requests retried", "share", _retries),
    Monitor("backoff", True, "seconds backed off", "seconds",
            lambda r, h: counts_of(r).get("backoff_ms", 0) / 1000),
    Monitor("duration_vs_usual", True, "duration, to the median of the job's recent runs", "ratio",
            _duration_vs_usual),
)
MONITOR_NAMES = (*(m.name for m in MONITORS), "lost")

# Chosen from the mirror's runs (README, "Operating it"): a healthy crawl of the 300- and
# 20,000-article mirrors has no empty page, no record missing a field, no error, no retry,
# no backoff, and 5.5-9 % of its share-host requests answered 404 (articles the share host
# lacks); reruns see as many articles as the first run.
DEFAULT_THRESHOLDS: dict[str, Limit] = {
    "seen": Limit(warn=None, fail=1),           # saw nothing: the site or the spider is broken
    "stored": Limit(warn=None, fail=None),      # a rerun of an unchanged site stores nothing
    "seen_vs_usual": Limit(warn=0.5, fail=0.2),
    "empty_pages": Limit(warn=0.05, fail=0.5),  # a layout change: every page parses to nothing
    "missing_paragraphs": Limit(warn=0.05, fail=0.5),
    "missing_time": Limit(warn=0.05, fail=0.5),
    "missing_source": Limit(warn=0.05, fail=0.5),
    "share_failures": Limit(warn=0.1, fail=0.5),
    "share_rejects": Limit(warn=0.25, fail=0.6),
    "errors": Limit(warn=1, fail=100),
    "retries": Limit(warn=0.1, fail=0.5),
    "backoff": Limit(warn=300, fail=1800),
    "duration_vs_usual": Limit(warn=3, fail=10),
    "lost": Limit(warn=None, fail=1),           # the run never recorded its end
}


class ThresholdError(ValueError):
    """A monitor threshold that cannot be used: one line that says which and why."""


def parse_thresholds(value: object, what: str = "NEWSCRAWL_MONITORS",
                     base: Mapping[str, Limit] | None = None) -> dict[str, Limit]:
    """`base` (default DEFAULT_THRESHOLDS) with `value` over it: a mapping (or its JSON) of
    monitor name to {"warn": x, "fail": y}; a level given as null (JSON) or false (TOML) is
    not checked, a level left out keeps its value in `base`."""
    limits = dict(DEFAULT_THRESHOLDS if base is None else base)
    if value in (None, "", {}):
        return limits
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ThresholdError(f"{what}: not JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ThresholdError(f"{what}: expected a table of monitor = {{warn = …, fail = …}}")
    for name, levels in value.items():
        if name not in MONITOR_NAMES:
            raise ThresholdError(f"{what}: unknown monitor {name!r} (known: {', '.join(MONITOR_NAMES)})")
        if not isinstance(levels, Mapping) or set(levels) - {"warn", "fail"}:
            raise ThresholdError(f"{what}.{name}: expected {{warn = number, fail = number}} "
                                 f"(false: not checked), got {levels!r}")
        current = limits[name]
        given: dict[str, float | None] = {"warn": current.warn, "fail": current.fail}
        for level, threshold in levels.items():
            if threshold is None or threshold is False:
                given[level] = None
            elif isinstance(threshold, int | float) and not isinstance(threshold, bool):
                given[level] = float(threshold)
            else:
                raise ThresholdError(f"{what}.{name}.{level}: expected a number or false, "
                                     f"got {threshold!r}")
        limits[name] = Limit(warn=given["warn"], fail=given["fail"])
    return limits


def thresholds_json(limits: Mapping[str, Limit]) -> str:
    """The form NEWSCRAWL_MONITORS takes on a command line (`-s NEWSCRAWL_MONITORS=…`)."""
    return json.dumps({name: {"warn": limit.warn, "fail": limit.fail} for name, limit in limits.items()},
                      sort_keys=True)


# --- judging ------------------------------------------------------------------------------

def crossed(value: float, threshold: float, above: bool) -> bool:
    return value >= threshold if above else value < threshold


def format_figure(value: float, unit: str) -> str:
    if unit == "share":
        return f"{value:.1%}"
    if unit == "ratio":
        return f"{value:.2f}x"
    if unit == "seconds":
        return f"{value:.0f} s"
    return f"{value:g}"


def judge(monitor: Monitor, value: float | None, limit: Limit) -> Document | None:
    """The failure of one monitor, or None when it passes (or has nothing to judge)."""
    if value is None:
        return None
    for level, threshold in ((FAIL, limit.fail), (WARN, limit.warn)):
        if threshold is not None and crossed(value, threshold, monitor.above):
            side = "at least" if monitor.above else "below"
            return {"monitor": monitor.name, "level": level, "value": round(value, 6),
                    "threshold": threshold,
                    "message": f"{monitor.what}: {format_figure(value, monitor.unit)} "
                               f"({level}: {side} {format_figure(threshold, monitor.unit)})"}
    return None


def health_document(failed: Sequence[Document], checked_at: datetime) -> Document:
    levels = {f["level"] for f in failed}
    status = FAIL if FAIL in levels else WARN if WARN in levels else OK
    return {"status": status, "failed": list(failed), "checked_at": checked_at, "alerts": []}


def evaluate(run: Document, history: Sequence[Document], limits: Mapping[str, Limit],
             checked_at: datetime) -> Document:
    """The `health` of an ended run; `history`: the same job's earlier ended runs, newest first."""
    failed = [failure for monitor in MONITORS
              if (failure := judge(monitor, monitor.figure(run, history), limits[monitor.name]))]
    return health_document(failed, checked_at)


def lost_health(run: Document, checked_at: datetime, limits: Mapping[str, Limit]) -> Document:
    """The `health` of a run that never recorded its end (its process is gone)."""
    limit = limits["lost"]
    level = FAIL if limit.fail is not None else WARN if limit.warn is not None else None
    if level is None:
        return health_document([], checked_at)
    host, pid = run.get("host"), run.get("pid")
    return health_document([{
        "monitor": "lost", "level": level, "value": 1, "threshold": 1,
        "message": f"did not end: its process ({host}, pid {pid}) is gone without recording an end"}],
        checked_at)


def overdue(run: Document, history: Sequence[Document], limits: Mapping[str, Limit],
            now: datetime) -> Document | None:
    """A running run that has gone on far longer than usual: its duration_vs_usual failure."""
    usual = median_of(history, duration)
    took = duration(run, now)
    if not usual or took is None:
        return None
    monitor = next(m for m in MONITORS if m.name == "duration_vs_usual")
    return judge(monitor, took / usual, limits["duration_vs_usual"])


def combined_run(parts: Sequence[Document]) -> Document:
    """The processes of one distributed run as one run: counts and errors summed, from the
    first start to the last end."""
    first = min(parts, key=lambda p: p["started_at"])
    counts: dict[str, int] = {}
    errors: dict[str, int] = {}
    for part in parts:
        for name, value in counts_of(part).items():
            counts[name] = counts.get(name, 0) + value
        for error in part.get("errors") or []:
            errors[error["type"]] = errors.get(error["type"], 0) + int(error.get("count", 0))
    ends = [p["finished_at"] for p in parts if isinstance(p.get("finished_at"), datetime)]
    return {**first, "counts": counts, "errors": [{"type": t, "count": n} for t, n in sorted(errors.items())],
            "finished_at": max(ends) if ends else None}


def summary_line(job: str, run: Mapping[str, Any] | None, health: Mapping[str, Any] | None) -> str:
    """`JOB STATUS: run <id>: message; message` (newscrawl health, the alerts' text)."""
    if run is None:
        return f"{job} UNKNOWN: no runs recorded"
    status = (health or {}).get("status")
    word = {OK: "OK", WARN: "WARNING", FAIL: "CRITICAL"}.get(str(status), "UNKNOWN")
    messages = [f["message"] for f in (health or {}).get("failed") or []]
    detail = "; ".join(messages) if messages else ("all monitors passed" if status == OK
                                                   else "not checked yet")
    return f"{job} {word}: run {run.get('_id')} ({run.get('outcome') or run.get('status')}): {detail}"
