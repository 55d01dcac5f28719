"""`newscrawl schedule`: crawls on a timetable, with APScheduler 3.

A TOML file (`schedule.toml`) names the jobs: a spider, its `-a` arguments,
a cron expression or an interval, and where the crawl runs: here (`local`: a
`python -m scrapy crawl` process with this process's environment) or on a
scrapyd server (`scrapyd`: `schedule.json`, then `listjobs.json` until it ends).

- A job never overlaps itself (`max_instances=1`): a firing that comes while
  the job's previous crawl is still going is skipped, logged, counted, and
  recorded in the `schedule_skips` collection (reason `running`).
- The timetable is kept in the `schedule_jobs` collection (APScheduler's
  MongoDBJobStore) when the server can hold it (checked at start; else the
  memory store, with one warning). Firings missed while the scheduler was
  down then run once when it is back (`coalesce`), if the last of them is
  within `misfire_grace_time`; the others are recorded as skipped (`coalesced`,
  or `missed` when even the last is too late).
- SIGTERM or SIGINT: no new crawls; running local crawls get one SIGTERM
  (Scrapy's graceful stop: the run is recorded with outcome `shutdown`) and
  are killed after `stop_timeout`; crawls on scrapyd go on there. Exit 0.

Every crawl records itself in `crawl_runs` (newscrawl.components.runs.RunRecorder): the
scheduler only logs one line per start and end.

`config` reads the TOML (pure), `jobstore` chooses where the timetable lives,
`runner` runs it.
"""
