"""`newscrawl metrics`: Prometheus' text format over HTTP (prometheus-client), read from the
database at each scrape by a custom collector, with indexed queries only:

- per job (label `crawl_job`: Prometheus keeps `job` for its own scrape job), its last
  judged run: counts, outcome, duration, start and end, health and the monitors that failed;
- articles by source and by category, unproven times, rejects by reason, and the age of
  those counts.

All of it is in the small `metrics_summary` collection runs keep (newscrawl.monitoring.summary),
read whole with one query: a scrape costs the same at 1,000 or 1,000,000 articles.

README "Operating it" lists the metric names.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from newscrawl.database import one_line
from newscrawl.monitoring.monitors import EXIT_CODES, duration
from newscrawl.monitoring.summary import DEFAULT_INTERVAL, age_seconds, read_all, refresh_summary
from pipelines.config import StorageConfig

logger = logging.getLogger(__name__)

Document = dict[str, Any]
DEFAULT_PORT = 9410
RUN_COUNTS = ("pages", "article_pages", "listing_pages", "items", "stored", "updated", "unchanged",
              "skipped_stored", "skipped_rejected", "rejected", "spooled", "internal_errors",
              "requests", "retries", "unproven")


def timestamp(value: Any) -> float | None:
    if not isinstance(value, datetime):
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class NewscrawlCollector(Collector):
    """Reads the metrics summary at every scrape."""

    def __init__(self, client: MongoClient[Document], config: StorageConfig) -> None:
        self.client = client
        self.config = config

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        runs, articles = read_all(self.client[self.config.database])
        yield from self.run_metrics(runs, now)
        yield from self.summary_metrics(articles, now)

    @staticmethod
    def run_metrics(runs: list[tuple[str, Document]], now: datetime) -> Iterator[Metric]:
        counts = GaugeMetricFamily("newscrawl_last_run_count",
                                   "What the job's last run counted (crawl_runs counts)",
                                   labels=["crawl_job", "count"])
        outcome = GaugeMetricFamily("newscrawl_last_run_outcome",
                                    "1 for the job's last run's finish reason and status",
                                    labels=["crawl_job", "outcome", "status"])
        took = GaugeMetricFamily("newscrawl_last_run_duration_seconds",
                                 "How long the job's last run took (so far, while running)",
                                 labels=["crawl_job"])
        started = GaugeMetricFamily("newscrawl_last_run_start_timestamp_seconds",
                                    "When the job's last run started", labels=["crawl_job"])
        ended = GaugeMetricFamily("newscrawl_last_run_end_timestamp_seconds",
                                  "When the job's last run ended", labels=["crawl_job"])
        health = GaugeMetricFamily("newscrawl_last_run_health",
                                   "The monitors' verdict on the job's last run: 0 ok, 1 warn, 2 fail "
                                   "(absent: not judged)", labels=["crawl_job"])
        failed = GaugeMetricFamily("newscrawl_last_run_monitor_value",
                                   "The figure of each monitor the job's last run failed",
                                   labels=["crawl_job", "monitor", "level"])
        for job, run in runs:
            for name in RUN_COUNTS:
                value = (run.get("counts") or {}).get(name)
                if isinstance(value, int | float):
                    counts.add_metric([job, name], value)
            outcome.add_metric([job, str(run.get("outcome") or ""), str(run.get("status") or "")], 1)
            if (seconds := duration(run, now)) is not None:
                took.add_metric([job], seconds)
            if (start := timestamp(run.get("started_at"))) is not None:
                started.add_metric([job], start)
            if (end := timestamp(run.get("finished_at"))) is not None:
                ended.add_metric([job], end)
            verdict = run.get("health") or {}
            if verdict.get("status") in EXIT_CODES:
                health.add_metric([job], EXIT_CODES[verdict["status"]])
            for failure in verdict.get("failed") or []:
                failed.add_metric([job, str(failure["monitor"]), str(failure["level"])], failure["value"])
        yield from (counts, outcome, took, started, ended, health, failed)

    @staticmethod
    def summary_metrics(summary: Document | None, now: datetime) -> Iterator[Metric]:
        if summary is None:
            return
        total = GaugeMetricFamily("newscrawl_articles", "Articles stored", value=summary["total"])
        by_source = GaugeMetricFamily("newscrawl_articles_by_source", "Articles stored, by source",
                                      labels=["source"])
        by_category = GaugeMetricFamily("newscrawl_articles_by_category", "Articles stored, by category",
                                        labels=["category"])
        for row in summary["by_source"]:
            by_source.add_metric([row["key"]], row["n"])
        for row in summary["by_category"]:
            by_category.add_metric([row["key"]], row["n"])
        unproven = sum(r["n"] for r in summary["by_proof"] if r["key"] == "unproven")
        times = GaugeMetricFamily("newscrawl_articles_unproven_times",
                                  "Articles whose time only the page shows (published_at_proof unproven)",
                                  value=unproven)
        rejects = GaugeMetricFamily("newscrawl_rejects", "Rejects, by reason", labels=["reason"])
        for row in summary["rejects_by_reason"]:
            rejects.add_metric([row["key"]], row["n"])
        age = GaugeMetricFamily("newscrawl_summary_age_seconds",
                                "Age of the articles counts (by source, category, proof, reject reason)",
                                value=age_seconds(summary, now))
        yield from (total, by_source, by_category, times, rejects, age)


def keep_counting(client: MongoClient[Document], config: StorageConfig, interval: float,
                  stop: threading.Event) -> None:
    """Count the articles summary whenever it is older than `interval` (at once when missing)."""
    while not stop.is_set():
        try:
            refresh_summary(client[config.database], config, datetime.now(UTC), interval=interval)
        except PyMongoError as exc:
            logger.warning("articles summary not counted: %s", one_line(exc))
        stop.wait(min(interval, 60.0))


def registry_for(client: MongoClient[Document], config: StorageConfig) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NewscrawlCollector(client, config))
    return registry


def cmd_metrics(args: argparse.Namespace) -> int:
    from prometheus_client import generate_latest, start_http_server

    from newscrawl.ops.command import connect, print_lines

    client, config = connect(args.database)
    try:
        if args.refresh:
            summary = refresh_summary(client[config.database], config, datetime.now(UTC), interval=0)
            assert summary is not None
            print(f"metrics summary counted: {summary['total']} articles in {summary['took_ms']} ms")
        registry = registry_for(client, config)
        if args.once:
            print_lines([generate_latest(registry).decode("utf-8").rstrip("\n")])
            return 0
        if args.refresh:
            return 0
        server, _ = start_http_server(args.port, addr=args.host, registry=registry)
        print(f"serving Prometheus metrics on http://{args.host}:{server.server_port}/metrics", flush=True)
        stop = threading.Event()
        interval = float(os.environ.get("NEWSCRAWL_METRICS_SUMMARY_INTERVAL") or DEFAULT_INTERVAL)
        threading.Thread(target=keep_counting, args=(client, config, interval, stop), daemon=True,
                         name="articles-summary").start()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        stop.wait()
        server.shutdown()
        return 0
    finally:
        client.close()


def add_command(sub: Any) -> None:
    metrics = sub.add_parser(
        "metrics", help="serve Prometheus metrics: last runs, health, articles",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve Prometheus' text format on /metrics until SIGTERM or Ctrl-C, read from "
                    "the database at every scrape (one query on the metrics_summary collection "
                    "runs keep): each job's last judged run (counts, outcome, duration, health) and "
                    "the articles by source and category, unproven times and rejects by reason, "
                    "which this server counts in the background at most every "
                    "NEWSCRAWL_METRICS_SUMMARY_INTERVAL seconds (default 3600; --refresh: now).",
        epilog="examples:\n  newscrawl metrics --port 9410\n  newscrawl metrics --once\n"
               "  newscrawl metrics --refresh   # count the articles summary now")
    metrics.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    metrics.add_argument("--port", type=int, default=DEFAULT_PORT,
                         help=f"port (default {DEFAULT_PORT}; 0: any)")
    metrics.add_argument("--once", action="store_true", help="print the metrics once and exit")
    metrics.add_argument("--refresh", action="store_true",
                         help="count the articles summary now (a whole-collection $group), then exit "
                              "(or, with --once, print)")
    metrics.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    metrics.set_defaults(func=cmd_metrics)
