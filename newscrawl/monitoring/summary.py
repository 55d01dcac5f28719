"""What `newscrawl metrics` serves, kept by runs in one small collection (`metrics_summary`)
that a scrape reads whole with one query:

- `_id: "job:<job>"`: the job's last judged run (`run`: its crawl_runs document, a distributed
  run's processes combined, with its `health`), written by the monitors when a run ends;
- `_id: "articles"`: articles by source and by category, unproven times, rejects by reason.

Counting by source or category needs a `$group` over the whole collection, which no index
serves (FerretDB answers `$group` by reading every document: about 30 s for 30,000 articles
on the development machine, bench/RESULTS.md section 14). So the count is never made at
scrape time, nor by a crawl (which would wait for it): the `newscrawl metrics` server counts
in a thread of its own, at most once per NEWSCRAWL_METRICS_SUMMARY_INTERVAL (default an
hour: these figures move slowly; several servers share one count through a claim);
`newscrawl_summary_age_seconds` says how old it is and `newscrawl metrics --refresh` counts
now. The pipelines use `$group` with `$sum` only (FerretDB has no other accumulator).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from pipelines.config import StorageConfig

logger = logging.getLogger(__name__)

Document = dict[str, Any]
SUMMARY_COLLECTION = "metrics_summary"
SUMMARY_ID = "articles"
DEFAULT_INTERVAL = 3600.0


def reason_kind(reason: object) -> str:
    """`unreadable date: …` -> `unreadable date`, `not stored: DocumentTooLarge: …` -> `not stored`:
    a reject's reason without its particulars (one label value per kind)."""
    return str(reason or "unknown").split(":", 1)[0].strip() or "unknown"


def counted(rows: Iterable[Document]) -> list[Document]:
    """`[{"key": value, "n": count}]`: keys as values (a source's name may hold a dot)."""
    return sorted(({"key": str(row["_id"]) if row["_id"] is not None else "", "n": int(row["n"])}
                   for row in rows), key=lambda r: (-r["n"], r["key"]))


def compute_summary(db: Database[Document], config: StorageConfig, now: datetime) -> Document:
    started = time.perf_counter()
    articles = db[config.collection]
    by_source = counted(articles.aggregate([{"$group": {"_id": "$source", "n": {"$sum": 1}}}]))
    by_category = counted(articles.aggregate([{"$unwind": "$categories"},
                                              {"$group": {"_id": "$categories", "n": {"$sum": 1}}}]))
    by_proof = counted(articles.aggregate([{"$group": {"_id": "$published_at_proof", "n": {"$sum": 1}}}]))
    reasons: Counter[str] = Counter()
    for row in db[config.rejects].aggregate([{"$group": {"_id": "$reason", "n": {"$sum": 1}}}]):
        reasons[reason_kind(row["_id"])] += int(row["n"])
    return {
        "_id": SUMMARY_ID,
        "computed_at": now,
        "took_ms": round((time.perf_counter() - started) * 1000),
        "total": sum(r["n"] for r in by_source),
        "by_source": by_source,
        "by_category": by_category,
        "by_proof": by_proof,
        "rejects_by_reason": [{"key": k, "n": n} for k, n in sorted(reasons.items())],
    }


def refresh_summary(db: Database[Document], config: StorageConfig, now: datetime, *,
                    interval: float = DEFAULT_INTERVAL) -> Document | None:
    """Count again when the summary is older than `interval` (0: always); the claim
    (`refreshing_at`) keeps two processes from counting at once. None when not due."""
    summaries = db[SUMMARY_COLLECTION]
    if interval > 0:
        due = now - timedelta(seconds=interval)
        summaries.update_one({"_id": SUMMARY_ID}, {"$setOnInsert": {"computed_at": None}}, upsert=True)
        claimed = summaries.find_one_and_update(
            {"_id": SUMMARY_ID, "$and": [
                {"$or": [{"computed_at": None}, {"computed_at": {"$lt": due}}]},
                {"$or": [{"refreshing_at": None}, {"refreshing_at": {"$lt": due}}]}]},
            {"$set": {"refreshing_at": now}})
        if claimed is None:
            return None
    summary = compute_summary(db, config, now)
    summaries.replace_one({"_id": SUMMARY_ID}, summary, upsert=True)
    logger.info("metrics summary counted: %d articles in %d ms", summary["total"], summary["took_ms"])
    return summary


def record_last_run(db: Database[Document], run: Document) -> None:
    job = str(run.get("job") or run["spider"])
    db[SUMMARY_COLLECTION].replace_one({"_id": f"job:{job}"},
                                       {"_id": f"job:{job}", "job": job, "run": dict(run)}, upsert=True)


def read_all(db: Database[Document]) -> tuple[list[tuple[str, Document]], Document | None]:
    """The jobs' last runs (by job name) and the articles summary (None until counted): one
    query on the small collection."""
    runs: list[tuple[str, Document]] = []
    articles: Document | None = None
    for document in db[SUMMARY_COLLECTION].find():
        if document["_id"] == SUMMARY_ID:
            articles = document if document.get("computed_at") else None
        elif "run" in document:
            runs.append((str(document["job"]), document["run"]))
    return sorted(runs), articles


def age_seconds(summary: Document, now: datetime | None = None) -> float:
    computed: datetime = summary["computed_at"]
    if computed.tzinfo is None:
        computed = computed.replace(tzinfo=UTC)
    return max(((now or datetime.now(UTC)) - computed).total_seconds(), 0.0)
