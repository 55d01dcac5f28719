"""What every `newscrawl` command shares: one-line errors, argument types, the database.

The commands live one per module in newscrawl.ops (servers, demo, replay, runs,
query, schedule, backfill), each with `add_command(subparsers)`; newscrawl.ops.cli
assembles them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from newscrawl.redaction import redact

if TYPE_CHECKING:
    from pymongo import MongoClient

    from pipelines.config import StorageConfig

CLI_TIMEOUT_MS = 3000  # an unreachable server is reported after this long


class UsageError(Exception):
    """An error in arguments or configuration: one line, non-zero exit."""


class Parser(argparse.ArgumentParser):
    """Argument errors as one `newscrawl: error:` line (no usage dump), exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def count_option(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {value!r}")
    return number


def connect(database: str | None = None) -> tuple[MongoClient[dict[str, Any]], StorageConfig]:
    """A client of the configured server, checked with a ping, and the storage configuration
    (`database`: the command's --database, None when not given)."""
    from newscrawl.database import connect as connect_database
    from newscrawl.database import storage_config

    config = storage_config(database=database)
    client = connect_database("newscrawl-cli", uri=config.uri, timeout_ms=CLI_TIMEOUT_MS,
                              socket_timeout_ms=None)
    return client, config


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(line if line.endswith("\n") else line + "\n")


def day_option(value: str) -> Any:
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a day YYYY-MM-DD (Asia/Shanghai), "
                                         f"got {value!r}") from None


def list_option(value: str) -> list[str]:
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected slugs separated by commas, got {value!r}")
    return parts


def setting_option(value: str) -> tuple[str, str]:
    name, sep, setting = value.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {value!r}")
    return name.strip(), setting


def seconds_option(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {value!r}")
    return seconds


def time_option(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def fail(message: object, code: int) -> int:
    print("newscrawl: error: " + redact(" ".join(str(message).split())), file=sys.stderr)
    return code
