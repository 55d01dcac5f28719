"""The `newscrawl` command: the Scrapy project for the people who run it.

  newscrawl db start|stop|status   the local database (FerretDB), unless MONGO_URI is set
  newscrawl redis start|stop|status  the local Redis (distributed crawls)
  newscrawl demo                   the main job: database + mirror + crawl + summary
  newscrawl replay                 write what an outage spooled to disk
  newscrawl runs                   the recorded crawls, newest first, with the monitors' verdict
  newscrawl health                 each job's last run: one line, Nagios exit code (0/1/2/3)
  newscrawl metrics                Prometheus metrics: last runs, health, articles
  newscrawl query                  stored articles by source, category, dates or text
  newscrawl schedule               run crawls on a timetable (schedule.toml)
  newscrawl backfill               crawl one date range completely: finews, then share
  newscrawl web                    the web console: runs, schedule, articles, charts, JSON API

The database is MONGO_URI (else the local one) and MONGO_DATABASE (default newscrawl).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from newscrawl.local import ferretdb
from newscrawl.ops.command import Parser, UsageError, fail
from newscrawl.redaction import install_log_redaction

# One module per command (newscrawl.ops.<name>.add_command), in the order --help lists them.
COMMAND_MODULES = ("servers", "demo", "replay", "prove_times", "index_words", "runs", "health",
                   "metrics", "query", "schedule", "backfill", "web")
# The commands a module adds, where they are not its name (`prove_times` adds `prove-times`).
MODULE_COMMANDS = {"servers": ("db", "redis")}
# Commands that only read and print: once their output is out, the process ends at once
# (`run`) rather than in Python's exit, where pymongo's atexit joins its monitor threads,
# which sleep in 0.5 s steps: a 0.3 s `newscrawl query` took 0.8 s.
QUICK_EXIT_COMMANDS = frozenset({"query", "runs", "health"})


def command_module(argv: Sequence[str]) -> str | None:
    """The module of the command `argv` names (its first word), or None (no command, an
    unknown one, or --help alone): a command's start imports its own module only, not
    every command's dependencies (Scrapy, the web framework, the segmenter)."""
    first = next((word for word in argv if not word.startswith("-")), None)
    for name in COMMAND_MODULES:
        if first in MODULE_COMMANDS.get(name, (name.replace("_", "-"),)):
            return name
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Every command's parser (for --help and errors), or only the one `argv` names."""
    parser = Parser(prog="newscrawl", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    only = command_module(argv) if argv is not None else None
    for name in COMMAND_MODULES:
        if only is None or name == only:
            importlib.import_module(f"newscrawl.ops.{name}").add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Errors are one `newscrawl: error:` line on stderr and a non-zero exit, never a
    traceback (NEWSCRAWL_DEBUG=1 shows it for unexpected ones)."""
    from pymongo.errors import PyMongoError

    from newscrawl.database import DatabaseNotConfigured, DatabaseUnreachable

    install_log_redaction()
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        args = build_parser(words).parse_args(words)
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except DatabaseUnreachable as exc:
        return fail(exc, 1)
    except (UsageError, DatabaseNotConfigured, ferretdb.LocalDBError, ValueError) as exc:
        return fail(exc, 2)
    except PyMongoError as exc:
        from newscrawl.database import one_line

        return fail(f"database: {one_line(exc)}", 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, like any Unix filter.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        if os.environ.get("NEWSCRAWL_DEBUG"):
            raise
        return fail(f"{type(exc).__name__}: {exc} (NEWSCRAWL_DEBUG=1 shows the traceback)", 1)


def run() -> None:
    """The `newscrawl` console script: `main`, and a read command's quick exit."""
    code = main()
    if command_module(sys.argv[1:]) in QUICK_EXIT_COMMANDS:
        with contextlib.suppress(OSError):  # what an error cut short (a gone reader: code 141)
            sys.stdout.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
