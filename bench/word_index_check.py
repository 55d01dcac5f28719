"""The word index's answers against the scan's, whole, on a stored collection (issue 22).

    .local/venv/bin/python bench/word_index_check.py --database demo_fresh \\
        [--text 净利润 --text "央行 降准" --phrase 投资者互动平台 ...]

For each `--text` (and each `--phrase`) this runs `newscrawl query`'s search with no
limit twice on the database of `MONGO_URI` (else the local FerretDB): through the word
index and as the scan with the documented formula, and prints how many records each
returned, whether they are the same records with the same scores in the same order
(phrases: the same records), and the seconds each took. A collection written by
`newscrawl demo --articles 20000` is the size where one record in a thousand shows.
Exits 1 if any answer differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repo root, not bench/, on the path
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

DEFAULT_TEXTS = ["净利润", "央行 降准", "公司"]
DEFAULT_PHRASES = ["投资者互动平台"]


def answers(collection: Any, filters: Any, indexed: bool) -> tuple[list[tuple[str, Any]], float]:
    from newscrawl.ops.query import find_articles

    started = time.perf_counter()
    chosen = (dataclasses.replace(filters, word_index=True) if indexed
              else dataclasses.replace(filters, word_index=False, text_index=False))
    found = [(doc["_id"], doc.get("score")) for doc in find_articles(collection, chosen, limit=0)]
    return found, time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--text", action="append", help=f"words (default {DEFAULT_TEXTS})")
    parser.add_argument("--phrase", action="append", help=f"a phrase (default {DEFAULT_PHRASES})")
    args = parser.parse_args(argv)

    from bench.database import database_uri
    from newscrawl.ops.query import Filters
    from pipelines.config import mongo_client
    from pipelines.word_index import WordIndex

    client = mongo_client(database_uri(), appname="newscrawl-bench")
    collection = client[args.database]["articles"]
    if not WordIndex(collection).complete():
        print(f"{args.database}: the word index does not cover the collection (newscrawl index-words)")
        return 1
    cases = ([Filters(text=text) for text in args.text or DEFAULT_TEXTS]
             + [Filters(phrases=(phrase,)) for phrase in args.phrase or DEFAULT_PHRASES])
    differ = 0
    for filters in cases:
        indexed, indexed_s = answers(collection, filters, True)
        scanned, scanned_s = answers(collection, filters, False)
        if not filters.text:  # no score: the same records (their order is the index's own)
            indexed, scanned = sorted(indexed), sorted(scanned)
        same = indexed == scanned
        differ += not same
        print(f"{filters.text or filters.phrases[0]}: {len(indexed):,} indexed, {len(scanned):,} scanned, "
              f"{'the same' if same else 'DIFFERENT'} (index {indexed_s:.2f} s, scan {scanned_s:.2f} s)",
              flush=True)
    client.close()
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
