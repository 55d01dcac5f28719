"""`newscrawl web`: the console (newscrawl.web) served by uvicorn."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from newscrawl.ops.command import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8321
DB_TIMEOUT_MS = 2000  # a stopped database shows as a 503 page after this long


def build_console(args: argparse.Namespace, token: str) -> Any:
    from newscrawl.database import one_line, storage_config
    from newscrawl.web.app import Console
    from newscrawl.web.security import Guard, is_loopback
    from pipelines.config import mongo_client
    from pipelines.sources import SourceRegistry

    config = storage_config(database=args.database, require_server=False)
    client = problem = None
    if config.uri:
        try:
            client = mongo_client(config.uri, appname="newscrawl-web", timeout_ms=DB_TIMEOUT_MS,
                                  socket_timeout_ms=30_000)
        except Exception as exc:
            problem = one_line(exc)
    else:
        problem = "no database configured (MONGO_URI unset and no local database running)"
    extra = os.environ.get("NEWSCRAWL_SOURCES_FILE")
    try:
        registry = SourceRegistry.load(*([extra] if extra else []))
    except (OSError, ValueError) as exc:
        raise UsageError(f"source registry (NEWSCRAWL_SOURCES_FILE): {exc}") from None
    return Console(client, config.database, config.collection, config.runs, Path(args.schedule),
                   Guard(token, open_reads=is_loopback(args.host)), registry, problem)


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    from newscrawl.web.app import create_app
    from newscrawl.web.security import TOKEN_ENV, StartRefused, is_loopback, start_token

    try:
        token, made_here = start_token(args.host, os.environ.get(TOKEN_ENV))
    except StartRefused as exc:
        raise UsageError(str(exc)) from None
    console = build_console(args, token)
    allowed = (["127.0.0.1", "localhost", "::1", "[::1]"] if is_loopback(args.host) else None)
    app = create_app(console, allowed_hosts=allowed)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"newscrawl web: http://{shown}:{args.port}/ (database {console.database}, "
          f"schedule {args.schedule})", file=sys.stderr)
    if made_here:
        print(f"newscrawl web: actions (run, pause, resume) need a login; this run's token: {token} "
              f"(set {TOKEN_ENV} to choose one)", file=sys.stderr)
    sys.stderr.flush()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", server_header=False,
                proxy_headers=False)
    return 0


def add_command(sub: Any) -> None:
    web = sub.add_parser(
        "web", help="serve the web console: runs, schedule, articles, charts, JSON API",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A console in the browser: the runs with their charts, the schedule with "
                    "its actions (run now, pause, resume), the articles with `newscrawl query`'s "
                    "filters, articles per hour by source, and a JSON API (/api/articles, "
                    "/api/articles/ID, /api/runs) with JSONL and CSV export.",
        epilog="safety: it binds 127.0.0.1 by default; bound to any other address it starts only "
               "with NEWSCRAWL_WEB_TOKEN set (16 characters or more) and every request then needs it "
               "(the login form, or `Authorization: Bearer TOKEN`). Actions always need a login.\n"
               "examples:\n"
               "  newscrawl web\n"
               "  NEWSCRAWL_WEB_TOKEN=... newscrawl web --host 0.0.0.0 --port 8080")
    web.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    web.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    web.add_argument("--schedule", default="schedule.toml", metavar="FILE",
                     help="the scheduler's jobs (default schedule.toml in the current folder)")
    web.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    web.set_defaults(func=cmd_web)
