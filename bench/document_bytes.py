"""What FerretDB charges for documents of bytes: insert, read, delete (issue 22).

    .local/venv/bin/python bench/document_bytes.py [--megabytes 2.6] [--repeat 3]

The word index stores postings as documents of compressed bytes, and a merge
inserts, reads and deletes them. Into a fresh collection of the database of
`MONGO_URI` (else the local FerretDB), this inserts `--megabytes` of random bytes
as documents of three sizes (260 of 10 KB, 65 of 40 KB, 16 of 160 KB; in
`insert_many` commands of 16, as the index writes them), reads them back by `_id`
(`$in`), then deletes them (`$in`), with and without a second index on the
collection (the index's registry has one on `kind`), and reports MB/s of each. Then
the cost of reading records by `_id` in the articles' shape: 1,000 documents of
7 KB read whole, with one 400-character field, and with `_id` alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def timed(action: Callable[[], Any], repeat: int, reset: Callable[[], Any] = lambda: None) -> float:
    """Median seconds of `action`, `reset` run (untimed) before each."""
    seconds = []
    for _ in range(repeat):
        reset()
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def bytes_rates(database: Any, size: int, count: int, second_index: bool, repeat: int) -> str:
    """Insert, read and delete `count` documents of `size` random bytes: MB/s of each."""
    collection = database["bytes"]
    blob = os.urandom(size)
    docs = [{"_id": f"s/{n}", "data": blob} for n in range(count)]
    ids = [doc["_id"] for doc in docs]

    def reset() -> None:
        database.drop_collection("bytes")
        if second_index:
            collection.create_index("kind")
        collection.insert_one({"_id": "registry", "kind": "segment"})

    def insert() -> None:
        for start in range(0, count, 16):
            collection.insert_many(docs[start:start + 16], ordered=False)

    def filled() -> None:
        reset()
        insert()

    insert_s = timed(insert, repeat, reset)
    read_s = timed(lambda: list(collection.find({"_id": {"$in": ids}})), repeat, filled)
    delete_s = timed(lambda: collection.delete_many({"_id": {"$in": ids}}), repeat, filled)
    database.drop_collection("bytes")
    megabytes = count * size / 1e6
    return (f"{count} x {size // 1000} KB ({megabytes:.1f} MB), second index {second_index}: "
            f"insert {megabytes / insert_s:.1f} MB/s, read {megabytes / read_s:.1f} MB/s, "
            f"delete {megabytes / delete_s:.1f} MB/s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=2.6)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    from bench.database import database_name, database_uri, drop_database
    from pipelines.config import mongo_client

    uri = database_uri()
    database = database_name("document_bytes")
    client = mongo_client(uri, appname="newscrawl-bench")
    try:
        for second_index in (False, True):
            for size in (10_000, 40_000, 160_000):
                print(bytes_rates(client[database], size, int(args.megabytes * 1e6 / size), second_index,
                                  args.repeat), flush=True)
        articles = client[database]["articles"]
        filler = "字" * 2000
        articles.insert_many([{"_id": f"{n:018d}", "text": "文" * 400, "words": filler, "other": filler}
                              for n in range(1000)])
        ids = [f"{n:018d}" for n in range(1000)]
        projections: list[tuple[str, dict[str, int] | None]] = [
            ("whole", None), ("one field", {"text": 1}), ("_id alone", {"_id": 1})]
        for label, projection in projections:

            def read(projection: dict[str, int] | None = projection) -> None:
                for start in range(0, len(ids), 500):
                    list(articles.find({"_id": {"$in": ids[start:start + 500]}}, projection))

            seconds = timed(read, args.repeat)
            print(f"{len(ids):,} records of 7 KB by _id, {label}: {seconds * 1000:.0f} ms "
                  f"({seconds * 1000 / len(ids):.3f} ms a record)", flush=True)
    finally:
        client.close()
        drop_database(uri, database)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
