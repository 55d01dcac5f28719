"""`newscrawl db` and `newscrawl redis`: the project's local servers (newscrawl.local)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from newscrawl.local import ferretdb
from newscrawl.redaction import redact

if TYPE_CHECKING:
    pass


def manage_server(action: str, *, start: Any, stop: Any, running: Any, ping: Any,
                  env_name: str) -> int:
    """start / stop / status of a local server (FerretDB or Redis); exit 3: not running."""
    if action == "start":
        url = start()
        print(redact(url))  # a local server has no password; one given in env_name may
        if not os.environ.get(env_name):
            print(f"export {env_name}={url}", file=sys.stderr)
        return 0
    if action == "stop":
        print("stopped" if stop() else "not running")
        return 0
    url = running()
    if url and ping(url):
        print(f"running {redact(url)}")
        return 0
    print("not running")
    return 3


def cmd_db(args: argparse.Namespace) -> int:
    return manage_server(args.action, start=ferretdb.start, stop=ferretdb.stop,
                         running=ferretdb.running_uri, ping=ferretdb.ping, env_name="MONGO_URI")


def cmd_redis(args: argparse.Namespace) -> int:
    from newscrawl.local import redis_server

    return manage_server(args.action, start=redis_server.start, stop=redis_server.stop,
                         running=redis_server.running_url, ping=redis_server.ping,
                         env_name="NEWSCRAWL_REDIS_URL")


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
