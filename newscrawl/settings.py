"""Scrapy settings for newscrawl.

Values that differ between machines come from the environment (MONGO_URI,
MONGO_DATABASE, MONGO_COLLECTION, NEWSCRAWL_HOST_MAP, …) so one project
serves development, CI and production; `-s NAME=value` overrides any of them.
"""

from __future__ import annotations

import os

from newscrawl import __version__
from newscrawl.redaction import install_log_redaction
from pipelines import config as storage

# Every log line of a crawl goes through newscrawl.redaction: no URI's password is logged.
install_log_redaction()

BOT_NAME = "newscrawl"
LOG_LEVEL = os.environ.get("NEWSCRAWL_LOG_LEVEL", "INFO")
SPIDER_MODULES = ["newscrawl.spiders"]
NEWSPIDER_MODULE = "newscrawl.spiders"

# --- where the sites are ----------------------------------------------------
# JSON object from real host name to base URL, e.g.
# {"finews.withounder.com": "http://127.0.0.1:8801"}; unset means the live sites.
NEWSCRAWL_HOST_MAP = os.environ.get("NEWSCRAWL_HOST_MAP", "")

# --- politeness and robustness ----------------------------------------------
USER_AGENT = f"newscrawl/{__version__} (+https://github.com/newscrawl/newscrawl)"
ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 8
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.5
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 4.0
DOWNLOAD_TIMEOUT = 30
DOWNLOAD_MAXSIZE = 16 * 1024 * 1024
# Responses held by the scraper (1 MB: 50-200 of this site's pages, plenty to keep busy).
# When the database is slow, items wait in MongoPipeline with their responses and parsed
# trees: Scrapy's 5 MB default let that backlog take 145-250 MB more (bench/RESULTS.md, 6).
SCRAPER_SLOT_MAX_ACTIVE_SIZE = 1_000_000
DOWNLOAD_WARNSIZE = 4 * 1024 * 1024
RETRY_ENABLED = True
RETRY_TIMES = 4
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]
# A retry waits, holding no downloader slot, the server's Retry-After (capped), else
# base * 2**retries (capped): 0.25, 0.5, 1, 2 s for RETRY_TIMES = 4. A host that is
# failing (most of its answers) is slowed as a whole by its download delay instead.
NEWSCRAWL_RETRY_BACKOFF_BASE = 0.25
NEWSCRAWL_RETRY_BACKOFF_MAX = 60.0
NEWSCRAWL_RETRY_AFTER_MAX = 120.0
NEWSCRAWL_HOST_FAILING_RATIO = 0.5  # share of a host's recent answers failing that slows it
NEWSCRAWL_HOST_DELAY_START = 0.5  # its first delay between requests, doubled per failure
NEWSCRAWL_HOST_DELAY_MAX = 30.0
# Requests queued in a slowed host's download slot count as active downloads
# (CONCURRENT_REQUESTS): the scheduler hands out first the hosts with fewest of them,
# so a slowed host cannot fill the downloader and hold up the other's pages.
SCHEDULER_PRIORITY_QUEUE = "scrapy.pqueues.DownloaderAwarePriorityQueue"
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
FEED_EXPORT_ENCODING = "utf-8"

# JOBDIR's request queue in SQLite: a crawl killed mid-write (SIGKILL, power
# loss) leaves a consistent queue; the default pickle files can be left torn.
SCHEDULER_DISK_QUEUE = "scrapy.squeues.PickleFifoSQLiteQueue"
# In-run deduplication only; across runs the database decides (newscrawl.components.incremental).
DUPEFILTER_CLASS = "newscrawl.components.dupefilters.RunDupeFilter"
# Articles stored with their full text are not fetched again (spider argument refresh=1 does).
NEWSCRAWL_INCREMENTAL = True
SPIDER_MIDDLEWARES = {
    "newscrawl.components.incremental.StoredArticleFilter": 500,
}

# http and https through the host map (NEWSCRAWL_HOST_MAP): the download alone goes to the
# mirror, so every other component (robots, retries, redirects, stats) sees the real URL.
# Hosts not in the map, and everything when it is empty, go to Scrapy's own handler.
DOWNLOAD_HANDLERS = {
    "http": "newscrawl.components.hostmap.HostMapDownloadHandler",
    "https": "newscrawl.components.hostmap.HostMapDownloadHandler",
}

DOWNLOADER_MIDDLEWARES = {
    # Scrapy's RetryMiddleware, whose retries wait on a timer outside the downloader and
    # whose failing hosts slow down alone (README "Retries and backoff").
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "newscrawl.components.middlewares.BackoffRetryMiddleware": 550,
}

# --- storage ------------------------------------------------------------------
# Unset MONGO_URI means the project's local database (`newscrawl db start`): the
# LocalDatabase add-on below fills it in, and NEWSCRAWL_SPOOL_DIR (.local/spool).
# The storage pipeline, the run recorder and the commands read these through
# pipelines.config.StorageConfig, which holds the defaults.
MONGO_URI = os.environ.get("MONGO_URI", "")
MONGO_DATABASE = os.environ.get("MONGO_DATABASE", storage.DEFAULT_DATABASE)
MONGO_COLLECTION = os.environ.get("MONGO_COLLECTION", storage.DEFAULT_COLLECTION)
MONGO_REJECTS_COLLECTION = os.environ.get("MONGO_REJECTS_COLLECTION", storage.DEFAULT_REJECTS_COLLECTION)
MONGO_RUNS_COLLECTION = os.environ.get("MONGO_RUNS_COLLECTION", storage.DEFAULT_RUNS_COLLECTION)
# majority, 1, majority,journal, …; empty: the server's default (pipelines.config)
MONGO_WRITE_CONCERN = os.environ.get("MONGO_WRITE_CONCERN", "")
MONGO_BATCH_SIZE = 200
MONGO_MAX_PENDING = 2000  # sightings buffered while a write runs; beyond, items wait for it
MONGO_FLUSH_INTERVAL = 2.0  # seconds; a partial batch never waits longer
MONGO_RETRY_TIMES = 5
MONGO_RETRY_BACKOFF = 0.5  # seconds, doubled per try
NEWSCRAWL_SPOOL_DIR = os.environ.get("NEWSCRAWL_SPOOL_DIR", "")  # "" = .local/spool
NEWSCRAWL_SOURCES_FILE = os.environ.get("NEWSCRAWL_SOURCES_FILE", "")

# Clean first (the hash needs paragraphs), identity before dates (the id's year
# dates `12月30日`), storage last.
ITEM_PIPELINES = {
    "pipelines.steps.CleanPipeline": 100,
    "pipelines.steps.IdentityPipeline": 200,
    "pipelines.steps.DatePipeline": 300,
    "pipelines.steps.SourcePipeline": 400,
    "pipelines.mongo.MongoPipeline": 900,
}

EXTENSIONS = {
    # What every stored record holds, read once for the crawl at the first component's
    # asking: the incremental filter, the finews spider and MongoPipeline's store share it.
    "newscrawl.components.stored.StoredRecords": 0,
    "newscrawl.components.extensions.StatsFile": 500,
    "newscrawl.components.run_recorder.RunRecorder": 510,  # one crawl_runs document per crawl
    # The monitors after the run's end is recorded (its `run_recorded` signal), and the alerts.
    "newscrawl.components.run_monitor.RunMonitor": 520,
}

# --- monitors and alerts (README "Operating it") ---------------------------------
# Thresholds over newscrawl.monitoring.monitors.DEFAULT_THRESHOLDS, JSON:
# {"empty_pages": {"warn": 0.05, "fail": 0.5}, "stored": {"warn": 1}}; per job in schedule.toml.
NEWSCRAWL_MONITORS = os.environ.get("NEWSCRAWL_MONITORS", "")
NEWSCRAWL_MONITORS_HISTORY = 10  # recent runs of the job the usual count and duration come from
NEWSCRAWL_JOB = os.environ.get("NEWSCRAWL_JOB", "")  # "": the spider and its arguments
NEWSCRAWL_JOB_MONITORS = ""  # a scheduled job's `monitors` table (JSON), over NEWSCRAWL_MONITORS
# Alerts: the webhook URL and the SMTP password are read from the environment alone
# (NEWSCRAWL_ALERT_WEBHOOK_URL, NEWSCRAWL_ALERT_SMTP_PASSWORD); these may also be set with -s.
NEWSCRAWL_ALERT_SMTP_HOST = os.environ.get("NEWSCRAWL_ALERT_SMTP_HOST", "")
NEWSCRAWL_ALERT_SMTP_PORT = os.environ.get("NEWSCRAWL_ALERT_SMTP_PORT", "587")
NEWSCRAWL_ALERT_SMTP_USER = os.environ.get("NEWSCRAWL_ALERT_SMTP_USER", "")
NEWSCRAWL_ALERT_SMTP_STARTTLS = os.environ.get("NEWSCRAWL_ALERT_SMTP_STARTTLS", "1")
NEWSCRAWL_ALERT_SMTP_CAFILE = os.environ.get("NEWSCRAWL_ALERT_SMTP_CAFILE", "")
NEWSCRAWL_ALERT_EMAIL_FROM = os.environ.get("NEWSCRAWL_ALERT_EMAIL_FROM", "")
NEWSCRAWL_ALERT_EMAIL_TO = os.environ.get("NEWSCRAWL_ALERT_EMAIL_TO", "")  # comma-separated
NEWSCRAWL_ALERT_LEVEL = os.environ.get("NEWSCRAWL_ALERT_LEVEL", "warn")  # warn: warn and fail
NEWSCRAWL_ALERT_RETRIES = os.environ.get("NEWSCRAWL_ALERT_RETRIES", "3")
NEWSCRAWL_ALERT_BACKOFF = os.environ.get("NEWSCRAWL_ALERT_BACKOFF", "1.0")  # seconds, doubled per try
NEWSCRAWL_ALERT_TIMEOUT = os.environ.get("NEWSCRAWL_ALERT_TIMEOUT", "10")

NEWSCRAWL_STATS_FILE = os.environ.get("NEWSCRAWL_STATS_FILE", "")

# --- distributed crawling (README "Distributed crawling") -----------------------
# With a Redis URL, the request queue and the dupefilter are the run's in Redis,
# shared by every process given the same NEWSCRAWL_RUN_ID; empty, the add-on does nothing.
ADDONS = {
    "newscrawl.database.LocalDatabase": 0,
    "newscrawl.distributed.frontier.RedisFrontier": 10,
}
NEWSCRAWL_REDIS_URL = os.environ.get("NEWSCRAWL_REDIS_URL", "")
NEWSCRAWL_RUN_ID = os.environ.get("NEWSCRAWL_RUN_ID", "")  # "" = a fresh run of this process alone
