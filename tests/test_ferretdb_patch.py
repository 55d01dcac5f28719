"""The project's patches to FerretDB pass FerretDB's own tests of the code they change, and
a compound index on an array field then a date answers as MongoDB does."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import DESCENDING
from pymongo.database import Database

from newscrawl.local import ferretdb

# The packages the patches change and whose tests run here (internal/backends has tests too,
# but they need a PostgreSQL server).
PATCHED_PACKAGES = ["./internal/backends/sqlite/...", "./internal/handler/"]

pytestmark = pytest.mark.integration  # builds with Go and runs `go test`; a real server


def test_patches_apply_and_pass_ferretdbs_own_tests() -> None:
    if not ferretdb.patch_files():
        pytest.skip("no patches")
    source = ferretdb.patched_source(quiet=True)
    proc = subprocess.run(["go", "test", "-count=1", *PATCHED_PACKAGES], cwd=source,
                          env=ferretdb.go_env(), capture_output=True, text=True, timeout=1800)
    failures = [line for line in proc.stdout.splitlines() if line.startswith(("--- FAIL", "FAIL"))]
    assert proc.returncode == 0, "\n".join(failures) + proc.stderr[-3000:]
    assert proc.stdout.count("\nok ") + proc.stdout.startswith("ok ") == 4, proc.stdout


START = datetime(2021, 1, 1, tzinfo=UTC)
CATEGORIES = ["emnews", "stock", "fund", "bond", "forex"]


def articles(n: int = 600) -> list[dict[str, Any]]:
    """Two categories each (an array: the index is multikey on it), some one or none; one
    date each, all different, so that a sort has a single answer (some none: null)."""
    docs: list[dict[str, Any]] = []
    for i in range(n):
        categories: Any = [CATEGORIES[i % 5], CATEGORIES[(i // 5) % 5]]
        if i % 37 == 0:
            categories = []
        elif i % 41 == 0:
            categories = CATEGORIES[i % 5]  # a scalar
        docs.append({"_id": f"a{i:04d}", "categories": categories,
                     "published_at": START + timedelta(minutes=(i * 7919) % n)})
        if i % 43 == 0:
            del docs[-1]["published_at"]
    return docs


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def reference(docs: list[dict[str, Any]], category: str, since: datetime, until: datetime,
              limit: int) -> list[str]:
    """What MongoDB answers, computed here: an array field matches a condition when one
    element does (each bound by any element), and sorts newest first by its latest element."""
    def matches(doc: dict[str, Any]) -> bool:
        dates = [d for d in as_list(doc.get("published_at")) if isinstance(d, datetime)]
        return (category in as_list(doc.get("categories"))
                and any(d >= since for d in dates) and any(d < until for d in dates))

    found = sorted((d for d in docs if matches(d)), key=lambda d: max(as_list(d["published_at"])),
                   reverse=True)
    return [d["_id"] for d in found[:limit]]


def newest(coll: Any, category: str, since: datetime, until: datetime, limit: int) -> list[str]:
    query = {"categories": category, "published_at": {"$gte": since, "$lt": until}}
    return [d["_id"] for d in coll.find(query, ["_id"]).sort("published_at", DESCENDING).limit(limit)]


def ferretdb_plan(coll: Any, category: str, since: datetime, until: datetime,
                  limit: int) -> dict[str, Any] | None:
    """FerretDB's explain of `newest`'s read (None on MongoDB, whose plans say it otherwise)."""
    explain = coll.database.command("explain", {
        "find": coll.name, "filter": {"categories": category,
                                      "published_at": {"$gte": since, "$lt": until}},
        "sort": {"published_at": -1}, "limit": limit})
    return explain if "ferretdbVersion" in explain.get("serverInfo", {}) else None


CASES = [("emnews", 50, 400, 20), ("stock", 0, 600, 7), ("bond", 300, 310, 20), ("forex", 590, 900, 5)]


def test_a_date_range_under_an_array_field_is_bounded_and_sorted_by_the_index(
        mongo_db: Database[dict[str, Any]]) -> None:
    coll = mongo_db["articles"]
    coll.create_index([("categories", 1), ("published_at", DESCENDING)])
    docs = articles()
    coll.insert_many(docs)
    for category, since_min, until_min, limit in CASES:
        since, until = START + timedelta(minutes=since_min), START + timedelta(minutes=until_min)
        want = reference(docs, category, since, until, limit)
        assert want, "a case with no answer tests nothing"
        assert newest(coll, category, since, until, limit) == want
        plan = ferretdb_plan(coll, category, since, until, limit)
        if plan is not None:  # both ends of the range, then the index's order and the limit
            assert "v1>? AND v1<?" in json.dumps(plan["queryPlanner"]), plan
            assert "TEMP B-TREE" not in json.dumps(plan["queryPlanner"]), plan
            assert plan["sortPushdown"] and plan["limitPushdown"], plan


def test_a_date_that_becomes_an_array_is_still_found_as_mongodb_finds_it(
        mongo_db: Database[dict[str, Any]]) -> None:
    coll = mongo_db["articles"]
    coll.create_index([("categories", 1), ("published_at", DESCENDING)])
    docs = articles()
    coll.insert_many(docs)
    since, until = START + timedelta(minutes=100), START + timedelta(minutes=200)
    before = newest(coll, "emnews", since, until, 20)
    assert before == reference(docs, "emnews", since, until, 20)
    # An emnews article outside the range gets two dates: one before it (meets `$lt`), one
    # after it (meets `$gte`). It matches, and sorts first by its later date.
    changed = next(d for d in docs if "emnews" in as_list(d["categories"]) and "published_at" in d
                   and d["_id"] not in before and not since <= d["published_at"] < until)
    changed["published_at"] = [START, START + timedelta(days=30)]
    coll.update_one({"_id": changed["_id"]}, {"$set": {"published_at": changed["published_at"]}})
    want = reference(docs, "emnews", since, until, 20)
    assert want[0] == changed["_id"]
    assert newest(coll, "emnews", since, until, 20) == want
    for category, since_min, until_min, limit in CASES:
        since, until = START + timedelta(minutes=since_min), START + timedelta(minutes=until_min)
        assert newest(coll, category, since, until, limit) == reference(docs, category, since,
                                                                        until, limit)
    plan = ferretdb_plan(coll, "emnews", since, until, 20)
    if plan is not None:  # the safe plan: the lower end only, sorted by the handler
        assert "v1<?" not in json.dumps(plan["queryPlanner"]), plan
        assert not plan["sortPushdown"], plan
