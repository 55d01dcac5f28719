"""What each page of the console shows, as functions of the database and the request's
parameters. No web framework here: `app` calls these and renders the result.

Articles are read through `newscrawl.ops.query` (`Filters`, `build_query`, `find_articles`):
the console asks the same questions as `newscrawl query`. Deep pages use a keyset cursor
(`published_at`, `_id`) on top of build_query's filter, served by the same indexes.
"""

from __future__ import annotations

import dataclasses
import math
import socket
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from newscrawl.components.run_recorder import job_name
from newscrawl.ops import query as q
from newscrawl.ops.runs import format_duration, logged_errors, run_outcome

Document = dict[str, Any]

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Fields of the list page: the rest of an article is read on its own page.
LIST_FIELDS = ("title", "source", "source_slug", "published_at", "published_at_proof",
               "categories", "duplicate_of", "near_duplicate_of")
MAX_CHART_HOURS = 24 * 14
OTHER_SOURCES = "other"
CHART_SOURCES = 10


class BadRequest(ValueError):
    """A parameter the user gave is wrong: shown to them as it is."""


class DatabaseMissing(RuntimeError):
    """No database is configured: every page that reads one says so (503)."""


# --- filters from a query string -------------------------------------------------------------

FILTER_PARAMS = ("source", "category", "since", "until", "words", "phrase")


def filters_from_params(params: Mapping[str, Any], phrases: Sequence[str], registry: Any,
                        text_index: bool) -> q.Filters:
    """`newscrawl query`'s filters from the page's or the API's parameters (empty ones
    ignored); BadRequest with `newscrawl query`'s message when one is wrong."""
    def value(name: str) -> str | None:
        text = str(params.get(name) or "").strip()
        return text or None

    try:
        source = value("source")
        filters = q.Filters(
            source_slug=q.source_slug(source, registry) if source else None,
            category=value("category"),
            since=q.since_bound(v) if (v := value("since")) else None,
            until=q.until_bound(v) if (v := value("until")) else None,
            text=value("words"),
            phrases=tuple(p.strip() for p in phrases if p.strip()),
            text_index=text_index)
        q.validate(filters)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return filters


def page_size(params: Mapping[str, Any], default: int = PAGE_SIZE) -> int:
    raw = str(params.get("limit") or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise BadRequest(f"limit: expected a whole number from 1 to {MAX_PAGE_SIZE}, got {raw!r}")
    return int(raw)


# --- cursors ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after (published_at, _id) in newest-first order; or, for a
    word search (ranked by score), after `offset` results."""
    published_at: datetime | None = None
    article_id: str | None = None
    offset: int | None = None

    def encode(self) -> str:
        if self.offset is not None:
            return f"o{self.offset}"
        assert self.published_at is not None
        millis = round(self.published_at.timestamp() * 1000)
        return f"{millis}_{self.article_id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            if text.startswith("o"):
                offset = int(text[1:])
                if offset < 0:
                    raise ValueError
                return cls(offset=offset)
            millis, _, article_id = text.partition("_")
            if not article_id:
                raise ValueError
            return cls(published_at=datetime.fromtimestamp(int(millis) / 1000, UTC),
                       article_id=article_id)
        except ValueError:
            raise BadRequest(f"cursor: {text!r} is not a cursor this console made") from None


@dataclass
class Page:
    articles: list[Document]
    next: Cursor | None


def older_than(query: Document, moment: datetime) -> Document:
    """`query` with its upper bound on published_at tightened to before `moment`: a range
    on the field of its index (an `$or` would read no index on FerretDB)."""
    bounded = dict(query)
    published = dict(bounded.get("published_at") or {})
    upper = published.get("$lt", published.get("$lte"))
    if upper is None or upper >= moment:
        published.pop("$lte", None)
        published["$lt"] = moment
    bounded["published_at"] = published
    return bounded


def newest_first(collection: Collection[Document], query: Document, want: int,
                 fields: list[str] | None) -> list[Document]:
    """The `want` newest articles of `query`: one read, sorted and limited by the index.
    With a date range too: the range is bounded at both ends in the index, also under an
    equality on the multikey `categories` (MongoDB records multikey per field, and so does
    the project's FerretDB patch: `published_at` is never an array)."""
    return list(collection.find(query, fields).sort("published_at", DESCENDING).limit(want))


def at_moment(query: Document, moment: datetime) -> Document:
    return {**query, "published_at": moment}


def _key(doc: Mapping[str, Any]) -> tuple[datetime, str]:
    return doc["published_at"], str(doc["_id"])


def keyset_page(collection: Collection[Document], query: Document, after: Cursor | None,
                size: int, projection: Sequence[str] | None = None) -> Page:
    """`size` articles of `query`, newest first (ties by `_id`, highest first), after
    `after`. Two or three indexed reads whatever the depth: the articles of the cursor's
    own second with a lower id, those older than it (sort and limit by the index), and, when
    the page ends inside one second, every article of that second (so ties are never cut)."""
    fields = list(projection) if projection else None
    found: list[Document] = []
    rest = query
    if after is not None:
        assert after.published_at is not None
        found = [d for d in collection.find(at_moment(query, after.published_at), fields)
                 if str(d["_id"]) < str(after.article_id)]
        rest = older_than(query, after.published_at)
    want = size + 1 - len(found)
    if want > 0:
        found += newest_first(collection, rest, want, fields)
    found = [d for d in found if isinstance(d.get("published_at"), datetime)]
    found.sort(key=_key, reverse=True)
    if len(found) > size and found[size]["published_at"] == found[size - 1]["published_at"]:
        moment = found[size - 1]["published_at"]
        same = list(collection.find(at_moment(query, moment), fields))
        if after is not None and moment == after.published_at:
            same = [d for d in same if str(d["_id"]) < str(after.article_id)]
        found = sorted([d for d in found if d["published_at"] != moment] + same, key=_key,
                       reverse=True)
    page = found[:size]
    more = len(found) > size
    return Page(page, Cursor(*_key(page[-1])) if more and page else None)


def article_page(collection: Collection[Document], filters: q.Filters, after: Cursor | None,
                 size: int, projection: Sequence[str] | None = None) -> Page:
    """A page of `newscrawl query`'s answer for `filters`: newest first by keyset; a word
    search in find_articles' order (best score first), by offset."""
    if filters.text:
        if after is not None and after.offset is None:
            raise BadRequest("cursor: a word search pages by position")
        offset = after.offset or 0 if after is not None else 0
        ranked = list(q.find_articles(collection, filters, limit=offset + size + 1))
        page = ranked[offset:offset + size]
        return Page(page, Cursor(offset=offset + size) if len(ranked) > offset + size else None)
    query = q.narrowed(collection, filters, q.build_query(filters)[0])
    return keyset_page(collection, query, after, size, projection)


def all_articles(collection: Collection[Document], filters: q.Filters, limit: int = 0,
                 batch: int = 500) -> Iterator[Document]:
    """Every article of `filters` (at most `limit`; 0: all), in page order, for exports:
    a word search as find_articles ranks it, else keyset pages of `batch` (a cursor never
    stays open between pages)."""
    if filters.text:
        yield from q.find_articles(collection, filters, limit=limit)
        return
    query = q.narrowed(collection, filters, q.build_query(filters)[0])
    after: Cursor | None = None
    sent = 0
    while True:
        size = min(batch, limit - sent) if limit else batch
        page = keyset_page(collection, query, after, size)
        yield from page.articles
        sent += len(page.articles)
        if page.next is None or (limit and sent >= limit):
            return
        after = page.next


# --- one article -------------------------------------------------------------------------------

@dataclass
class ArticleView:
    article: Document
    duplicate_of: Document | None  # the same text, earlier
    copies: list[Document]  # records whose duplicate_of is this one
    first_of_story: Document | None  # the earlier record it is a reprint of
    similarity: float | None
    reprints: list[Document]  # records naming it as their near_duplicate_of


LINK_FIELDS = ["title", "source", "published_at", "near_duplicate_of"]


def article_view(collection: Collection[Document], article_id: str) -> ArticleView | None:
    """The article and its links both ways: its twin or duplicate (`duplicate_of`, and the
    copies naming it), the record it reprints (`near_duplicate_of`) and its reprints.
    Indexes: `_id_`, `near_duplicate_of_id`; copies by `content_hash`."""
    article = collection.find_one({"_id": article_id}, {"minhash": 0, "minhash_bands": 0, "words": 0})
    if article is None:
        return None
    duplicate = None
    if article.get("duplicate_of"):
        duplicate = collection.find_one({"_id": article["duplicate_of"]}, LINK_FIELDS)
    copies: list[Document] = []
    if article.get("content_hash"):
        copies = [d for d in collection.find({"content_hash": article["content_hash"]},
                                             [*LINK_FIELDS, "duplicate_of"])
                  if d.get("duplicate_of") == article_id]
    near = article.get("near_duplicate_of") or {}
    first = collection.find_one({"_id": near["_id"]}, LINK_FIELDS) if near.get("_id") else None
    reprints = sorted(collection.find({"near_duplicate_of._id": article_id}, LINK_FIELDS),
                      key=lambda d: (d.get("published_at") or datetime.min.replace(tzinfo=UTC),
                                     str(d["_id"])))
    return ArticleView(article, duplicate, copies, first, near.get("similarity"), reprints)


# --- articles per hour -------------------------------------------------------------------------

@dataclass
class HourlyChart:
    since: datetime
    until: datetime
    hours: list[str]
    series: dict[str, list[int]]
    total: int


def default_range(collection: Collection[Document]) -> tuple[datetime, datetime]:
    """The 24 hours up to the newest article's hour (index `published_at`)."""
    newest = collection.find_one({}, ["published_at"], sort=[("published_at", DESCENDING)])
    end = newest["published_at"] if newest and newest.get("published_at") else datetime.now(UTC)
    end = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return end - timedelta(hours=24), end


def hourly_counts(collection: Collection[Document], filters: q.Filters, since: datetime,
                  until: datetime) -> HourlyChart:
    """Articles per hour (Asia/Shanghai) by source over [since, until): one range read on
    `published_at` (or `source_slug_published_at`), two fields each; the `CHART_SOURCES`
    biggest sources by name, the rest as `other`."""
    since = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours_n = math.ceil((until - since).total_seconds() / 3600)
    if hours_n <= 0:
        raise BadRequest("the range is empty: `until` must come after `since`")
    if hours_n > MAX_CHART_HOURS:
        raise BadRequest(f"the range is {hours_n} hours: at most {MAX_CHART_HOURS} (14 days)")
    bounded = dataclasses.replace(filters, since=q.TimeBound(since), until=q.TimeBound(until, False),
                                  text=None, phrases=())
    query, _ = q.build_query(bounded)
    counts: dict[str, Counter[int]] = defaultdict(Counter)
    total = 0
    for doc in collection.find(query, ["published_at", "source"]):
        slot = int((doc["published_at"] - since).total_seconds() // 3600)
        counts[str(doc.get("source") or "?")][slot] += 1
        total += 1
    ranked = sorted(counts, key=lambda s: (-sum(counts[s].values()), s))
    series: dict[str, list[int]] = {}
    for source in ranked[:CHART_SOURCES]:
        series[source] = [counts[source][i] for i in range(hours_n)]
    if len(ranked) > CHART_SOURCES:
        series[OTHER_SOURCES] = [sum(counts[s][i] for s in ranked[CHART_SOURCES:]) for i in range(hours_n)]
    labels = [(since + timedelta(hours=i)).astimezone(q.SHANGHAI).strftime("%m-%d %H:00")
              for i in range(hours_n)]
    return HourlyChart(since, until, labels, series, total)


# --- runs ----------------------------------------------------------------------------------------

def job_arguments(arguments: Mapping[str, Any]) -> dict[str, str]:
    """A run's `-a` arguments as a job names them (scrapyd's own `_job` and the like left out)."""
    return {str(k): str(v) for k, v in arguments.items() if not str(k).startswith("_")}


def job_of_run(run: Mapping[str, Any], jobs: Sequence[Any]) -> str:
    """The run's recorded job; for a run recorded before runs named their job, the schedule's
    job with its spider and arguments, else `spider k=v …` as RunRecorder names it."""
    if run.get("job"):
        return str(run["job"])
    arguments = job_arguments(run.get("arguments") or {})
    for job in jobs:
        if job.spider == run.get("spider") and {k: str(v) for k, v in job.args.items()} == arguments:
            return str(job.name)
    return job_name(str(run.get("spider", "?")), arguments)


def run_seconds(run: Mapping[str, Any]) -> float | None:
    started, finished = run.get("started_at"), run.get("finished_at")
    if isinstance(started, datetime) and isinstance(finished, datetime):
        return (finished - started).total_seconds()
    return None


def health_status(run: Mapping[str, Any]) -> str:
    """The monitors' verdict (`ok`, `warn`, `fail`), or `—` for a run checked by none."""
    health = run.get("health")
    if isinstance(health, Mapping) and health.get("status"):
        return str(health["status"])
    return "—"


@dataclass
class RunRow:
    run: Document
    job: str
    outcome: str
    health: str
    duration: str
    seconds: float | None
    errors: int

    @property
    def counts(self) -> Mapping[str, Any]:
        return self.run.get("counts") or {}


def run_rows(runs: Sequence[Document], jobs: Sequence[Any]) -> list[RunRow]:
    host = socket.gethostname()
    rows = []
    for run in runs:
        seconds = run_seconds(run)
        rows.append(RunRow(run, job_of_run(run, jobs), run_outcome(run, host), health_status(run),
                           format_duration(seconds) if seconds is not None else
                           ("running" if run.get("status") == "running" else "-"),
                           seconds, logged_errors(run)))
    return rows


def runs_by_job(rows: Sequence[RunRow], per_job: int = 30) -> dict[str, list[RunRow]]:
    """The `per_job` newest runs of each job, oldest first (a chart's left to right)."""
    grouped: dict[str, list[RunRow]] = defaultdict(list)
    for row in rows:  # newest first
        if len(grouped[row.job]) < per_job:
            grouped[row.job].append(row)
    return {job: list(reversed(found)) for job, found in grouped.items()}


def chart_points(rows: Sequence[RunRow]) -> tuple[list[dict[str, float]], list[str]]:
    points, labels = [], []
    for row in rows:
        counts = row.counts
        points.append({"stored": float(counts.get("stored", 0) or 0),
                       "updated": float(counts.get("updated", 0) or 0),
                       "rejected": float(counts.get("rejected", 0) or 0),
                       "duration": float(row.seconds or 0)})
        started = row.run.get("started_at")
        labels.append(f"{started:%Y-%m-%d %H:%M:%S}Z" if isinstance(started, datetime) else "?")
    return points, labels


def run_log(run: Mapping[str, Any], jobs: Sequence[Any], log_dir: Path | None) -> Path | None:
    """The log of a scheduled run of this host: the job's log in the schedule's log_dir."""
    if log_dir is None or run.get("host") != socket.gethostname():
        return None
    name = job_of_run(run, jobs)
    if not any(job.name == name for job in jobs):
        return None
    path = log_dir / f"{name}.log"
    return path if path.is_file() else None


def log_tail(path: Path, limit: int = 200_000) -> str:
    """The end of a log (at most `limit` bytes), as text."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(max(size - limit, 0))
        return handle.read().decode("utf-8", errors="replace")


# --- the schedule ------------------------------------------------------------------------------

@dataclass
class JobRow:
    spec: Any
    state: str  # scheduled, paused, not started (no stored timetable)
    next_firing: datetime | None
    next_from: str  # where next_firing comes from
    last_run: RunRow | None
    skipped: int
    recent_skips: list[Document] = field(default_factory=list)
    commands: list[Document] = field(default_factory=list)


def schedule_rows(db: Database[Document], config: Any, runs_collection: str,
                  now: datetime | None = None) -> list[JobRow]:
    """Each job of schedule.toml with its state and next firing (from `schedule_jobs`, which
    the running scheduler keeps; else from the trigger), last run, skipped firings and the
    console's recent commands. The stored job states are never unpickled: only
    `next_run_time` is read."""
    from newscrawl.ops.schedule.commands import COMMANDS_COLLECTION
    from newscrawl.ops.schedule.config import JOBS_COLLECTION, SKIPS_COLLECTION

    now = now or datetime.now(UTC)
    stored = {d["_id"]: d for d in db[JOBS_COLLECTION].find({}, ["next_run_time"])}
    rows = []
    for spec in config.jobs:
        doc = stored.get(spec.name)
        if doc is not None:
            when = doc.get("next_run_time")
            state = "paused" if when is None else "scheduled"
            next_firing = datetime.fromtimestamp(when, UTC) if when is not None else None
            origin = JOBS_COLLECTION
        else:
            from zoneinfo import ZoneInfo

            state = "not in the job store"
            local_now = now.astimezone(ZoneInfo(spec.timezone))
            next_firing = spec.trigger(now).get_next_fire_time(None, local_now)
            origin = "schedule.toml"
        last = db[runs_collection].find_one({"job": spec.name}, sort=[("started_at", DESCENDING)])
        if last is None:  # runs recorded before runs named their job
            runs = db[runs_collection].find({"spider": spec.spider, "job": {"$exists": False}},
                                            sort=[("started_at", DESCENDING)], limit=200)
            last = next((r for r in runs if job_of_run(r, [spec]) == spec.name), None)
        skips = list(db[SKIPS_COLLECTION].find({"job": spec.name}, sort=[("scheduled_at", DESCENDING)],
                                               limit=5))
        skipped = db[SKIPS_COLLECTION].count_documents({"job": spec.name})
        commands = list(db[COMMANDS_COLLECTION].find({"job": spec.name},
                                                     sort=[("requested_at", DESCENDING)], limit=3))
        rows.append(JobRow(spec, state, next_firing, origin,
                           run_rows([last], [spec])[0] if last else None, skipped, skips, commands))
    return rows


def load_schedule(path: Path) -> tuple[Any, str | None]:
    """schedule.toml, or None and why not (the page says so; runs still show)."""
    from newscrawl.ops.schedule.config import ConfigError, load_config

    if not path.is_file():
        return None, f"{path}: no such file (newscrawl web --schedule FILE)"
    try:
        return load_config(path), None
    except (ConfigError, OSError) as exc:
        return None, str(exc)


def proof_text(article: Mapping[str, Any]) -> str:
    return str(article.get("published_at_proof") or "unproven")


def words_index(collection: Collection[Document]) -> bool:
    return q.has_text_index(collection)
