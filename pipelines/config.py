"""Where articles are stored: one frozen StorageConfig for crawls and commands alike.

A crawl builds it from its Scrapy settings (`from_settings`), a command from the
environment (`from_env`), with the same names and the same defaults, written here
and nowhere else. Which server an unset MONGO_URI means (the local FerretDB) is
newscrawl.database's to decide; this module only reads what it is given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo.write_concern import WriteConcern

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.database import Database

Document = dict[str, Any]

DEFAULT_DATABASE = "newscrawl"
DEFAULT_COLLECTION = "articles"
DEFAULT_REJECTS_COLLECTION = "rejects"
DEFAULT_RUNS_COLLECTION = "crawl_runs"

# The setting (and environment variable) of each field.
SETTING_NAMES: dict[str, str] = {
    "uri": "MONGO_URI",
    "database": "MONGO_DATABASE",
    "collection": "MONGO_COLLECTION",
    "rejects": "MONGO_REJECTS_COLLECTION",
    "runs": "MONGO_RUNS_COLLECTION",
    "spool_dir": "NEWSCRAWL_SPOOL_DIR",
    "write_concern": "MONGO_WRITE_CONCERN",
}

WRITE_CONCERN_FORMS = ("`majority` or a number of members (1, 2, …), optionally followed by "
                       "`,journal` (e.g. `majority,journal`); empty: the server's default")


class StorageConfigError(ValueError):
    """A storage setting whose value cannot be used."""


def parse_write_concern(text: str) -> WriteConcern | None:
    """MONGO_WRITE_CONCERN as pymongo's WriteConcern: `majority`, `1`, `majority,journal`, …;
    None (the server's default) when empty."""
    words = [word.strip() for word in text.lower().split(",")]
    if words == [""]:
        return None
    members, options = words[0], words[1:]
    if options not in ([], ["journal"]) or not (members == "majority" or (members.isascii()
                                                                            and members.isdigit())):
        raise StorageConfigError(f"MONGO_WRITE_CONCERN={text!r}: expected {WRITE_CONCERN_FORMS}")
    if members.isdigit() and int(members) == 0:
        # Unacknowledged writes return no result: the store reads every write's (matches,
        # duplicate keys) and an outage would go unnoticed instead of spooled.
        raise StorageConfigError(f"MONGO_WRITE_CONCERN={text!r}: 0 (unacknowledged writes) cannot "
                                 f"be used: expected {WRITE_CONCERN_FORMS}")
    return WriteConcern(w=members if members == "majority" else int(members), j=True if options else None)


@dataclass(frozen=True)
class StorageConfig:
    """The server, the database, its three collections, the spool folder, the write concern."""

    # Not in the repr: a URI may hold a password.
    uri: str = field(default="", repr=False)  # "": none given
    database: str = DEFAULT_DATABASE
    collection: str = DEFAULT_COLLECTION
    rejects: str = DEFAULT_REJECTS_COLLECTION
    runs: str = DEFAULT_RUNS_COLLECTION
    spool_dir: Path | None = None  # None: none given (a crawl cannot run without one)
    write_concern: WriteConcern | None = None  # None: the server's default

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> StorageConfig:
        """From setting names to values (a crawl's settings, the environment); a name unset or
        empty takes its default."""
        given = {name: values.get(setting) for name, setting in SETTING_NAMES.items()}
        text = {name: str(value) if value not in (None, "") else "" for name, value in given.items()}
        return cls(
            uri=text["uri"],
            database=text["database"] or DEFAULT_DATABASE,
            collection=text["collection"] or DEFAULT_COLLECTION,
            rejects=text["rejects"] or DEFAULT_REJECTS_COLLECTION,
            runs=text["runs"] or DEFAULT_RUNS_COLLECTION,
            spool_dir=Path(text["spool_dir"]) if text["spool_dir"] else None,
            write_concern=parse_write_concern(text["write_concern"]),
        )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> StorageConfig:
        """A crawl's: its Scrapy settings (newscrawl.settings reads them from the environment;
        its LocalDatabase add-on fills MONGO_URI and NEWSCRAWL_SPOOL_DIR when they are unset)."""
        return cls.from_values(settings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> StorageConfig:
        """A command's: the environment, with `overrides` by field name as the environment would
        write them (`database="x"`, `spool_dir=path`; None: not given, as a command's option)."""
        unknown = sorted(set(overrides) - set(SETTING_NAMES))
        if unknown:
            raise TypeError(f"not a storage setting: {', '.join(unknown)} (one of "
                            f"{', '.join(f.name for f in fields(cls))})")
        given = {SETTING_NAMES[name]: value for name, value in overrides.items() if value is not None}
        return cls.from_values({**environ, **given})

    def database_on(self, client: MongoClient[Document]) -> Database[Document]:
        """This configuration's database on `client`: its collections write with the write concern."""
        db = client[self.database]
        return db if self.write_concern is None else db.with_options(write_concern=self.write_concern)


NO_DATABASE = "no database: set MONGO_URI, or start the local one with `newscrawl db start`"


def mongo_client(uri: str, *, appname: str = "newscrawl", timeout_ms: int = 5000,
                 socket_timeout_ms: int | None = 120_000, **options: Any) -> MongoClient[Document]:
    """A client with the project's options, for every caller: times in UTC (tz_aware), and
    a server that stops answering fails an operation (to retry, then spool), never hangs it.
    `options` go to MongoClient as they are (event_listeners, …). (Here, not in
    pipelines.storage, so that a command that only reads does not import the store.)"""
    from pymongo import MongoClient

    return MongoClient(uri, tz_aware=True, appname=appname, serverSelectionTimeoutMS=timeout_ms,
                       connectTimeoutMS=timeout_ms, socketTimeoutMS=socket_timeout_ms, **options)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (owned by anyone): a spool file's claimant,
    a local server. (Here, not in pipelines.storage, for the same reason as mongo_client.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
