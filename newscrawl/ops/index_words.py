"""`newscrawl index-words`: build the word index of a collection written before it (FerretDB).

Where the server has no text index, `newscrawl query --text` and `--phrase` read
the word index (pipelines.word_index), which the store keeps from the collection's
first record on. A collection written by an earlier version has records the
index does not hold: until this command has run, word search scans (and says so).
It also repairs an index after records were written by other means than the store.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def cmd_index_words(args: argparse.Namespace) -> int:
    from newscrawl.database import storage_config
    from pipelines.capabilities import Capabilities
    from pipelines.config import mongo_client
    from pipelines.word_index import WordIndex

    config = storage_config(database=args.database)
    client = mongo_client(config.uri)
    try:
        db = config.database_on(client)
        if Capabilities.detect(db).text_index and not args.force:
            print("the server has text indexes: `newscrawl query --text` uses `words_text`, "
                  "no word index is needed (--force builds one anyway)")
            return 0
        started = time.monotonic()
        index = WordIndex(db[config.collection])
        done = index.rebuild(progress=lambda n: print(f"  {n:,} records indexed", file=sys.stderr))
        size = index.size()
        print(f"word index of {config.collection}: {done:,} records, {size['postings']:,} postings "
              f"in {size['segments']} segments, {time.monotonic() - started:.1f} s")
    finally:
        client.close()
    return 0


def add_command(sub: Any) -> None:
    cmd = sub.add_parser("index-words", help="build the word index of an older collection (FerretDB)",
                         description=__doc__.splitlines()[0].partition(": ")[2])
    cmd.add_argument("--database", help="database name (default MONGO_DATABASE or newscrawl)")
    cmd.add_argument("--force", action="store_true",
                     help="build it even where the server has text indexes")
    cmd.set_defaults(func=cmd_index_words)
