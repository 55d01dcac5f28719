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

Every crawl records itself in `crawl_runs` (newscrawl.components.run_recorder.RunRecorder): the
scheduler only logs one line per start and end.

`config` reads the TOML (pure), `jobstore` chooses where the timetable lives,
`runner` runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from newscrawl.ops.command import UsageError, print_lines

# --- the command --------------------------------------------------------------------------------

def cmd_schedule(args: argparse.Namespace) -> int:
    from newscrawl.ops.schedule import config as schedule_config
    from newscrawl.ops.schedule import runner

    try:
        config = schedule_config.load_config(Path(args.config))
        lines = runner.check_and_describe(config)
    except schedule_config.ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.check:
        print_lines(lines)
        return 0
    runner.setup_logging()
    return runner.serve(config, database=args.database)


def add_command(sub: Any) -> None:
    sched = sub.add_parser(
        "schedule", help="run crawls on a timetable (schedule.toml) until stopped",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the jobs of a TOML file on their cron expressions or intervals, "
                    "each crawl in its own process (target \"local\") or on a scrapyd server "
                    "(target \"scrapyd\"). A job never overlaps itself: a firing that comes "
                    "while its previous crawl is still going is skipped, logged and recorded in "
                    "the schedule_skips collection. The timetable is kept in schedule_jobs "
                    "(MONGO_DATABASE) when the server can hold it, so firings missed while the "
                    "scheduler was down run once when it is back. SIGTERM or Ctrl-C stops the "
                    "running crawls cleanly and exits 0.",
        epilog="schedule.toml:\n"
               "  [scheduler]                       # all optional\n"
               "  timezone = \"Asia/Shanghai\"       # of the cron expressions\n"
               "  misfire_grace_time = \"1h\"        # how late a missed firing may still run\n"
               "  job_store = \"auto\"               # auto | mongodb | memory\n"
               "  log_dir = \".local/logs/schedule\" # one log per job, appended\n"
               "  stop_timeout = \"60s\"             # then running crawls are killed\n"
               "  scrapyd_url = \"http://127.0.0.1:6800/\"\n"
               "  [[job]]\n"
               "  name = \"media\"\n"
               "  spider = \"finews\"\n"
               "  args = {categories = \"jingzhouribao,emnews\"}\n"
               "  cron = \"*/15 * * * *\"             # or interval = \"10m\" (or seconds)\n"
               "  target = \"local\"                 # or \"scrapyd\"\n"
               "  monitors = {empty_pages = {warn = 0.1, fail = 0.6}}  # thresholds (README)\n"
               "examples:\n"
               "  newscrawl schedule --check\n"
               "  newscrawl schedule --config /etc/newscrawl/schedule.toml")
    sched.add_argument("--config", default="schedule.toml", metavar="FILE",
                       help="the jobs (default schedule.toml in the current folder)")
    sched.add_argument("--check", action="store_true",
                       help="check the file, print the jobs and their next firing, and exit")
    sched.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    sched.set_defaults(func=cmd_schedule)
