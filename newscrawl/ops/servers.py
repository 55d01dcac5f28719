"""`newscrawl db` and `newscrawl redis`: the project's local servers (newscrawl.local)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from newscrawl.local import ferretdb
from newscrawl.local.server import LocalServer
from newscrawl.redaction import redact


def manage_server(action: str, server: LocalServer[Any], start: Callable[[], str]) -> int:
    """start / stop / status of a local server (FerretDB or Redis); exit 3: not running."""
    if action == "start":
        url = start()
        print(redact(url))  # a local server has no password; one given in server.env may
        if not os.environ.get(server.env):
            print(f"export {server.env}={url}", file=sys.stderr)
        return 0
    if action == "stop":
        print("stopped" if server.stop() else "not running")
        return 0
    running = server.running_address()
    if running and server.ping(running):
        print(f"running {redact(running)}")
        return 0
    print("not running")
    return 3


def cmd_db(args: argparse.Namespace) -> int:
    return manage_server(args.action, ferretdb.SERVER, ferretdb.start)


def cmd_redis(args: argparse.Namespace) -> int:
    from newscrawl.local import redis_server

    return manage_server(args.action, redis_server.SERVER, redis_server.start)


def add_command(sub: Any) -> None:
    db = sub.add_parser("db", help="start, stop or check the local database (FerretDB)",
                        description="The local FerretDB on 127.0.0.1, data under .local/. "
                                    "With MONGO_URI set, that server is used and nothing starts.")
    db.add_argument("action", choices=["start", "stop", "status"])
    db.set_defaults(func=cmd_db)

    redis = sub.add_parser("redis", help="start, stop or check the local Redis (distributed crawls)",
                           description="Debian's redis-server on 127.0.0.1, data under .local/redis/. "
                                       "With NEWSCRAWL_REDIS_URL set, that server is used and "
                                       "nothing starts.")
    redis.add_argument("action", choices=["start", "stop", "status"])
    redis.set_defaults(func=cmd_redis)
