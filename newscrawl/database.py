"""Which database, for every caller: the one place that resolves it.

MONGO_URI (a crawl's setting, else the environment) names the server; unset,
the project's local FerretDB (`newscrawl db start`) is used while it runs.
`connect` gives a pinged client with the project's options
(pipelines.config.mongo_client) and errors that never show a password;
`storage_config` gives commands the StorageConfig (pipelines.config) of that
server.
Crawls get the same answer through the `LocalDatabase` add-on, which fills
MONGO_URI and NEWSCRAWL_SPOOL_DIR before the crawl starts, so the pipelines
read both from their settings and know nothing of this project's folders.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from newscrawl.local import ferretdb
from newscrawl.local.server import local_dir
from newscrawl.redaction import redact
from pipelines.config import NO_DATABASE, StorageConfig

if TYPE_CHECKING:
    from pathlib import Path

    from pymongo import MongoClient
    from scrapy.settings import BaseSettings

class DatabaseError(RuntimeError):
    """No database is configured, or the one configured cannot be reached."""


class DatabaseNotConfigured(DatabaseError):
    """MONGO_URI is unset and no local database runs, or MONGO_URI cannot be parsed."""


class DatabaseUnreachable(DatabaseError):
    """The configured database did not answer."""


def configured_uri(configured: str | None = None) -> str | None:
    """`configured`, else MONGO_URI from the environment, else the local server's URI if it
    runs; None when there is none."""
    return configured or ferretdb.running_uri()


def resolve_uri(configured: str | None = None) -> str:
    """As configured_uri, with a clear error when there is no database."""
    uri = configured_uri(configured)
    if uri is None:
        raise DatabaseNotConfigured(NO_DATABASE)
    return uri


def spool_dir(configured: str | Path | None = None) -> Path:
    """Where items wait during an outage: `configured`, else NEWSCRAWL_SPOOL_DIR, else
    .local/spool."""
    from pathlib import Path

    return Path(configured or os.environ.get("NEWSCRAWL_SPOOL_DIR") or local_dir() / "spool")


def storage_config(*, require_server: bool = True, **overrides: Any) -> StorageConfig:
    """A command's StorageConfig: the environment's, with `overrides` (its options, by field
    name; None: not given), and the server resolved as above: DatabaseNotConfigured when there
    is none, or with `require_server=False` an empty `uri`. (The spool folder is spool_dir's.)"""
    from dataclasses import replace

    config = StorageConfig.from_env(**overrides)
    uri = resolve_uri(config.uri) if require_server else configured_uri(config.uri) or ""
    return replace(config, uri=uri)


def one_line(error: BaseException | str) -> str:
    """A pymongo error in one line, without its topology dump (and without passwords)."""
    text = " ".join(str(error).split())
    return redact(text.split(", Timeout: ")[0].split(", Topology Description: ")[0])


def connect(appname: str, *, uri: str | None = None, timeout_ms: int = 5000,
            socket_timeout_ms: int | None = 120_000) -> MongoClient[dict[str, Any]]:
    """A client of the resolved database (`uri`, else as resolve_uri), checked with a ping;
    DatabaseNotConfigured or DatabaseUnreachable (within `timeout_ms`) otherwise."""
    from pymongo.errors import ConfigurationError, PyMongoError

    from pipelines.config import mongo_client

    uri = resolve_uri(uri)
    try:
        client = mongo_client(uri, appname=appname, timeout_ms=timeout_ms,
                              socket_timeout_ms=socket_timeout_ms)
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise DatabaseNotConfigured(f"MONGO_URI {redact(uri)}: {one_line(exc)}") from None
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        client.close()
        raise DatabaseUnreachable(f"cannot reach the database at {redact(uri)} (MONGO_URI): "
                            f"{one_line(exc)}") from None
    return client


class LocalDatabase:
    """Scrapy add-on: a crawl's MONGO_URI and NEWSCRAWL_SPOOL_DIR, resolved as above when
    the settings leave them empty (a crawl without any database fails in MongoPipeline,
    with NO_DATABASE)."""

    def update_settings(self, settings: BaseSettings) -> None:
        # An empty value is replaced at its own priority, so a later `-s` still wins.
        if not settings.get("MONGO_URI"):
            uri = configured_uri()
            if uri:
                settings.set("MONGO_URI", uri, priority=settings.getpriority("MONGO_URI") or 0)
        if not settings.get("NEWSCRAWL_SPOOL_DIR"):
            settings.set("NEWSCRAWL_SPOOL_DIR", str(spool_dir()),
                         priority=settings.getpriority("NEWSCRAWL_SPOOL_DIR") or 0)
