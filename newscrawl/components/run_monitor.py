"""RunMonitor: the monitors (newscrawl.monitoring) after every crawl, as a Scrapy extension.

It waits for RunRecorder's `run_recorded` signal (the run's end and counts are in
`crawl_runs` by then), judges the run in a thread and writes its `health`, sending the
alerts a warning or failing run calls for. Nothing here fails the crawl: a database or an
alert channel that cannot be reached costs a log line.

Settings: NEWSCRAWL_MONITORS (thresholds, JSON or a dict: README "Operating it"),
NEWSCRAWL_MONITORS_HISTORY (runs of the job compared with), NEWSCRAWL_ALERT_* (alerts).
It then writes the job's last judged run where `newscrawl metrics` reads it
(newscrawl.monitoring.summary).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import PyMongoError
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import threads

from newscrawl.components.run_recorder import CONNECT_TIMEOUT_MS, Document, run_recorded
from newscrawl.database import one_line
from newscrawl.monitoring.alerts import AlertConfig
from newscrawl.monitoring.check import monitor_run
from newscrawl.monitoring.monitors import Limit, ThresholdError, parse_thresholds
from newscrawl.monitoring.summary import record_last_run
from pipelines.config import StorageConfig, mongo_client

logger = logging.getLogger(__name__)


class RunMonitor:
    def __init__(self, crawler: Crawler, config: StorageConfig, limits: dict[str, Limit],
                 alerts: AlertConfig, history: int) -> None:
        self.crawler = crawler
        self.config = config
        self.limits = limits
        self.alerts = alerts
        self.history = history

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RunMonitor:
        from pipelines.mongo import storage_config

        settings = crawler.settings
        if not settings.getbool("NEWSCRAWL_MONITORS_ENABLED", True):
            raise NotConfigured("monitors off (NEWSCRAWL_MONITORS_ENABLED)")
        try:
            config = storage_config(settings)
        except NotConfigured as exc:
            raise NotConfigured(f"no monitors: {exc}") from None
        try:  # a bad threshold stops the crawl before it starts, as any bad setting
            limits = parse_thresholds(settings.get("NEWSCRAWL_JOB_MONITORS"), "the job's monitors",
                                      base=parse_thresholds(settings.get("NEWSCRAWL_MONITORS")))
            alerts = AlertConfig.from_values(settings, os.environ)
        except (ThresholdError, ValueError) as exc:
            raise ValueError(f"monitors: {exc}") from None
        monitor = cls(crawler, config, limits, alerts, settings.getint("NEWSCRAWL_MONITORS_HISTORY", 10))
        crawler.signals.connect(monitor.run_recorded, signal=run_recorded)
        return monitor

    async def run_recorded(self, run: Document | None) -> None:
        if run is None:
            return
        await maybe_deferred_to_future(threads.deferToThread(self.check, run))

    def check(self, run: Document, now: datetime | None = None) -> Document | None:
        client: Any = None
        try:
            client = mongo_client(self.config.uri, appname="newscrawl-monitors",
                                  timeout_ms=CONNECT_TIMEOUT_MS, socket_timeout_ms=60_000)
            collection = self.config.database_on(client)[self.config.runs]
            now = now or datetime.now(UTC)
            judged = monitor_run(collection, run, self.limits, self.alerts, now,
                                 history_size=self.history)
            if judged is not None:
                record_last_run(self.config.database_on(client), judged)
        except PyMongoError as exc:
            logger.warning("monitors: run %s not judged: %s", run.get("_id"), one_line(exc))
            return None
        except Exception:  # a bug of ours must not fail the crawl either
            logger.exception("monitors: run %s not judged", run.get("_id"))
            return None
        finally:
            if client is not None:
                client.close()
        if judged is None:
            return None
        health: Document = judged["health"]
        stats = self.crawler.stats
        if stats is not None:
            stats.set_value("newscrawl/health", health["status"])
        failed = "; ".join(f["message"] for f in health["failed"])
        log = logger.info if health["status"] == "ok" else logger.warning
        log("monitors: run %s: %s%s", run.get("_id"), health["status"], f": {failed}" if failed else "")
        return health
