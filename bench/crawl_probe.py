"""`scrapy` with every database command timed: `python -m bench.crawl_probe crawl finews ...`.

A profiling wrapper for bench/profile_crawl.py, not a bench: it registers a
pymongo CommandListener before Scrapy starts (the product is untouched), runs
Scrapy's command line, and at exit writes to BENCH_COMMANDS_FILE the count and
total server round-trip time of each command kind, keyed by command name and
the shape of its filter (field names and operators, not values).
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from collections import defaultdict
from typing import Any

from pymongo import monitoring

COMMANDS_FILE_ENV = "BENCH_COMMANDS_FILE"


def shape(value: Any) -> Any:
    """A filter's structure without its values: {"_id": {"$in": "[200]"}}."""
    if isinstance(value, dict):
        return {key: shape(inner) for key, inner in sorted(value.items())}
    if isinstance(value, list):
        return f"[{len(value)}]"
    return type(value).__name__


def command_key(name: str, command: Any) -> tuple[str, int]:
    """(command name and filter shape, statements or documents it carries)."""
    if name == "find":
        return f"find {json.dumps(shape(command.get('filter', {})))}", 1
    if name in ("update", "delete"):
        statements = command.get("updates") or command.get("deletes") or []
        kinds = sorted({
            json.dumps(shape(s.get("q", {})))
            + (" replace" if name == "update" and not any(str(k).startswith("$") for k in s.get("u", {}))
               else "")
            for s in statements})
        return f"{name} " + " | ".join(kinds), len(statements)
    if name == "insert":
        return "insert", len(command.get("documents", []))
    return name, 1


class Timings(monitoring.CommandListener):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[int, tuple[str, int]] = {}
        # commands, statements, seconds, slowest command's seconds
        self.totals: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self.lock:
            self.pending[event.request_id] = command_key(event.command_name, event.command)

    def _done(self, request_id: int, seconds: float) -> None:
        with self.lock:
            pending = self.pending.pop(request_id, None)
            if pending is None:
                return
            key, statements = pending
            entry = self.totals[key]
            entry[0] += 1
            entry[1] += statements
            entry[2] += seconds
            entry[3] = max(entry[3], seconds)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event.request_id, event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event.request_id, event.duration_micros / 1e6)

    def dump(self, path: str) -> None:
        with self.lock:
            rows: list[dict[str, Any]] = [{"command": key, "count": int(n), "statements": int(statements),
                     "seconds": round(total, 4), "max_seconds": round(worst, 4)}
                    for key, (n, statements, total, worst) in self.totals.items()]
        rows.sort(key=lambda row: -row["seconds"])
        with open(path, "w", encoding="utf-8") as out:
            json.dump(rows, out, indent=1)


def main() -> None:
    path = os.environ.get(COMMANDS_FILE_ENV)
    if path:
        timings = Timings()
        monitoring.register(timings)
        atexit.register(timings.dump, path)
    from scrapy.cmdline import execute

    sys.argv[0] = "scrapy"
    execute()


if __name__ == "__main__":
    main()
